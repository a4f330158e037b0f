"""mixup_cutmix: identity when off, targets consistent with the mixed pixels, jit-compatible."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from tome_jax.data import mixup_cutmix
from tome_jax.data.mixup import sample_beta

B, H, W, K = 6, 8, 10, 6
# One compilation per (mixup_alpha, cutmix_alpha, switch_prob): XLA compiles slowly on small CPUs.
mix = jax.jit(mixup_cutmix, static_argnames=("mixup_alpha", "cutmix_alpha", "switch_prob"))


def batch():
    """Image k is the constant k, label k: mixed pixels reveal which examples were combined."""
    images = jnp.broadcast_to(jnp.arange(B, dtype=jnp.float32)[:, None, None, None], (B, H, W, 3))
    return images, jax.nn.one_hot(jnp.arange(B), K)


def test_both_alphas_zero_is_identity():
    images, labels = batch()
    out, targets = mixup_cutmix(images, labels, jax.random.key(0), mixup_alpha=0.0, cutmix_alpha=0.0)
    assert out is images and targets is labels


def test_mixup_targets_match_the_pixel_blend():
    images, labels = batch()
    out, targets = map(np.asarray, mix(images, labels, jax.random.key(1), mixup_alpha=0.8, cutmix_alpha=0.0))
    lam = targets[0, 0]
    assert 0 < lam < 1
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets[0, B - 1], 1 - lam, rtol=1e-5)  # Partner: the reversed batch.
    np.testing.assert_allclose(out[0], (1 - lam) * (B - 1), rtol=1e-5)


def test_cutmix_target_weight_equals_pasted_area():
    images, labels = batch()
    for seed in range(6):
        out, targets = map(
            np.asarray, mix(images, labels, jax.random.key(seed), mixup_alpha=0.0, cutmix_alpha=1.0)
        )
        for k in range(B):
            partner = B - 1 - k
            pasted = np.mean(out[k, ..., 0] == partner)
            assert np.all((out[k] == k) | (out[k] == partner))
            np.testing.assert_allclose(targets[k, partner], pasted, atol=1e-6)
            np.testing.assert_allclose(targets[k].sum(), 1.0, rtol=1e-6)


def test_switch_picks_cutmix_or_mixup_per_batch():
    images, labels = batch()
    own = np.arange(B, dtype=np.float32)[:, None, None, None]
    modes = set()
    for seed in range(12):
        out, targets = map(
            np.asarray,
            mix(images, labels, jax.random.key(seed), mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5),
        )
        modes.add(bool(np.all((out == own) | (out == own[::-1]))))  # CutMix copies pixels, never blends.
        np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    assert modes == {True, False}


def test_sample_beta_has_the_beta_law():
    a, b = 0.8, 2.0
    draws = np.asarray(
        jax.jit(jax.vmap(lambda k: sample_beta(k, a, b)))(jax.random.split(jax.random.key(0), 8000))
    )
    assert np.isfinite(draws).all() and draws.min() >= 0 and draws.max() <= 1
    assert stats.kstest(draws, stats.beta(a, b).cdf).pvalue > 1e-3
    np.testing.assert_allclose(draws.mean(), a / (a + b), atol=0.01)
