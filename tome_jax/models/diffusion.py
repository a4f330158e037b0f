"""The diffusion process a DiT is trained and sampled with: DDPM's forward noising, the epsilon loss,
and DDIM sampling with optional classifier-free guidance (pure functions; no training state).

As facebookresearch/DiT's `diffusion/` (`gaussian_diffusion.py`, `respace.py`) for what this project
uses: a linear beta schedule over `steps` (1000) diffusion steps, beta from 1e-4 to 0.02 (scaled by
1000 / steps), alpha_bar_t = prod_{s <= t} (1 - beta_s); noising x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps; the loss is the mean squared error of the predicted eps (DiT's "mse"
term; its learned-variance "vb" term is not trained here: a `learn_sigma` model's variance channels
are ignored). Sampling respaces to `sample_steps` evenly spaced timesteps (DiT's
`space_timesteps(1000, "ddim50")`: 0, 20, .., 980) and runs DDIM (eta 0, deterministic given the
starting noise): x_0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), clipped to [-1, 1] when `clip`, then
x_prev = sqrt(a_prev) x_0 + sqrt(1 - a_prev) eps. Classifier-free guidance with scale s runs the
conditional and the null-class inputs as one batch: eps = eps_null + s (eps_cond - eps_null).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

NUM_STEPS = 1000  # DiT's diffusion_steps


def linear_betas(steps: int = NUM_STEPS) -> np.ndarray:
    """DiT's linear schedule: float64 [steps] from 1e-4 to 0.02, scaled by 1000 / steps."""
    scale = 1000 / steps
    return np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)


@functools.lru_cache(maxsize=None)
def alphas_cumprod(steps: int = NUM_STEPS) -> np.ndarray:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s): float64 [steps]."""
    return np.cumprod(1.0 - linear_betas(steps))


def q_sample(x0: jax.Array, t: jax.Array, noise: jax.Array, steps: int = NUM_STEPS) -> jax.Array:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise; x0, noise [B, ...], t int [B]."""
    abar = jnp.asarray(alphas_cumprod(steps), jnp.float32)[t].reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def epsilon_loss(model, x0: jax.Array, y: jax.Array, key: jax.Array, steps: int = NUM_STEPS) -> jax.Array:
    """DDPM's simple loss per example [B]: t ~ U{0 .. steps - 1}, eps ~ N(0, I),
    mean over pixels of (model(x_t, t, y)[..., :C] - eps)**2. x0 [B, H, W, C], y int [B]."""
    t_key, noise_key = jax.random.split(key)
    t = jax.random.randint(t_key, (x0.shape[0],), 0, steps)
    noise = jax.random.normal(noise_key, x0.shape, jnp.float32)
    predicted = model(q_sample(x0, t, noise, steps), t, y)[..., :x0.shape[-1]].astype(jnp.float32)
    return ((predicted - noise) ** 2).reshape(x0.shape[0], -1).mean(axis=1)


def sample_timesteps(sample_steps: int, steps: int = NUM_STEPS) -> np.ndarray:
    """The respaced timesteps, int32 [sample_steps] ascending: DiT's "ddimN", stride steps // N."""
    if not 1 <= sample_steps <= steps or steps % sample_steps:
        raise ValueError(f"sample_steps must divide {steps}, got {sample_steps}.")
    return np.arange(0, steps, steps // sample_steps, dtype=np.int32)


def ddim_sample(model, noise: jax.Array, y: jax.Array, *, sample_steps: int = 50, guidance: float = 1.0,
                key: jax.Array | None = None, clip: bool = True, steps: int = NUM_STEPS) -> jax.Array:
    """DDIM (eta 0) from noise [B, H, W, C] with labels y int [B] -> samples x_0 [B, H, W, C].

    guidance > 1: classifier-free guidance against `model.null_class`. The model is called as it is
    (its merging setting included); with a "random" merging method its `reduction` stream is re-seeded
    from `key` at every step (tomesd draws new destinations per call). Traceable: wrap it in `jax.jit`
    with the model passed through `nnx.split` / `nnx.merge`, as `sampler` does.
    """
    timesteps = sample_timesteps(sample_steps, steps)
    abar = alphas_cumprod(steps)[timesteps]
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    batch = noise.shape[0]
    guided = guidance != 1.0
    labels = jnp.concatenate([y, jnp.full_like(y, model.null_class)]) if guided else y
    graphdef, state = nnx.split(model)
    key = jax.random.key(0) if key is None else key

    def step(x, inputs):
        index, t, a, a_prev = inputs
        m = nnx.merge(graphdef, jax.tree.map(lambda v: v, state))  # fresh variables: merge would reuse them
        nnx.reseed(m, reduction=jax.random.fold_in(key, index))
        x_in = jnp.concatenate([x, x]) if guided else x
        eps = m(x_in, jnp.full((x_in.shape[0],), t, jnp.int32), labels)[..., :x.shape[-1]].astype(jnp.float32)
        if guided:
            eps = eps[batch:] + guidance * (eps[:batch] - eps[batch:])
        x0 = (x - jnp.sqrt(1.0 - a) * eps) / jnp.sqrt(a)
        if clip:
            x0 = jnp.clip(x0, -1.0, 1.0)
            eps = (x - jnp.sqrt(a) * x0) / jnp.sqrt(1.0 - a)
        return jnp.sqrt(a_prev) * x0 + jnp.sqrt(1.0 - a_prev) * eps, None

    order = np.arange(sample_steps)[::-1]  # from the noisiest step down to t = 0
    inputs = (jnp.asarray(order), jnp.asarray(timesteps[order]), jnp.asarray(abar[order], jnp.float32),
              jnp.asarray(abar_prev[order], jnp.float32))
    x, _ = jax.lax.scan(step, noise.astype(jnp.float32), inputs)
    return x


def sampler(model, *, sample_steps: int = 50, guidance: float = 1.0, clip: bool = True):
    """A jit-compiled `ddim_sample` for this model's current settings (its merging included) ->
    (fn, state): fn(state, noise [B, H, W, C], y int [B], key) -> samples [B, H, W, C], with state the
    model's variables (`nnx.split`), an argument rather than a constant, so `fn.lower(...).compile()`
    works and one compile serves any weights of this shape."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, noise, y, key):
        return ddim_sample(nnx.merge(graphdef, state), noise, y, sample_steps=sample_steps, guidance=guidance,
                           key=key, clip=clip)

    return run, state
