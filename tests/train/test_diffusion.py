"""The diffusion process (tome_jax/models/diffusion.py) and the "diffusion" task: schedule, DDIM with
classifier-free guidance against an exact denoiser, and a short training run of a tiny DiT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tome_jax.models import diffusion


def test_linear_schedule_is_dits():
    """DiT's linear betas over 1000 steps: 1e-4 .. 0.02; alpha_bar at the last step ~4.04e-5."""
    betas = diffusion.linear_betas(1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    abar = diffusion.alphas_cumprod(1000)
    assert abar[0] == pytest.approx(1 - 1e-4) and abar[-1] == pytest.approx(4.0358e-5, rel=1e-3)
    np.testing.assert_array_equal(diffusion.sample_timesteps(50), np.arange(0, 1000, 20))
    x0, noise = jnp.full((1, 2, 2, 1), 0.5), jnp.ones((1, 2, 2, 1))
    x_t = diffusion.q_sample(x0, jnp.array([999]), noise)
    np.testing.assert_allclose(x_t, np.sqrt(abar[-1]) * 0.5 + np.sqrt(1 - abar[-1]), rtol=1e-6)


class ExactDenoiser(nnx.Module):
    """Predicts the noise exactly for data that is one image per label: x_0 = y / 10 everywhere, and
    0 for the null class (10)."""

    null_class = 10

    def __call__(self, x, t, y):
        abar = jnp.asarray(diffusion.alphas_cumprod(), jnp.float32)[t][:, None, None, None]
        target = jnp.where(y == self.null_class, 0.0, y / 10.0)[:, None, None, None]
        return (x - jnp.sqrt(abar) * target) / jnp.sqrt(1.0 - abar)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_ddim_with_an_exact_denoiser_lands_on_the_data(guidance):
    """Deterministic DDIM from any noise returns the data point the exact denoiser describes; with
    classifier-free guidance s it returns null + s (conditional - null) = s y / 10 (clipped to 1)."""
    noise = jax.random.normal(jax.random.key(0), (3, 4, 4, 1))
    y = jnp.array([2, 4, 7])
    run, state = diffusion.sampler(ExactDenoiser(), sample_steps=10, guidance=guidance)
    out = run(state, noise, y, jax.random.key(1))
    expected = np.minimum(guidance * np.array([0.2, 0.4, 0.7]), 1.0)[:, None, None, None] * np.ones((3, 4, 4, 1))
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_training_a_tiny_dit_on_digits_lowers_the_loss():
    """The recipe's train step (task "diffusion") on a tiny DiT and the digits at 16x16: the epsilon
    loss starts at ~1 (adaLN-Zero: the model predicts 0) and falls well below it in 30 steps of 16; a broken
    noising, loss or model (e.g. the timestep not reaching the blocks) stays near 1."""
    from benchmarks.common import recipe_train_step
    from configs import dit_tome
    from tome_jax.data.images import load_digits
    from tome_jax.train import loop

    config = dit_tome.get_config("runlocal")
    config.model.update(dict(hidden_size=32, depth=2, num_heads=2))
    config.optimizer.update(dict(lr=3e-3, min_lr=3e-3, ema_decay=0.0))
    digits = load_digits("train")
    images = jax.image.resize(jnp.asarray(digits.images[:256]), (256, 16, 16, 1), "bilinear")
    model = loop.build_model(config)
    model.train()
    train_step, state, _ = recipe_train_step(config, model)
    losses = []
    for step in range(30):
        rows = (np.arange(16) + 16 * step) % 256
        batch = dict(image=images[rows], label=jnp.asarray(digits.labels[rows]), mask=jnp.ones(16, bool))
        state, metrics = train_step(state, batch)
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[:3]) > 0.9
    assert np.mean(losses[-5:]) < 0.5, losses  # ~0.2-0.3 when it works
