"""DCT token reduction: the Fourier Transformer's spectral filter (He et al., ACL 2023, "Fourier
Transformer: Fast Long Range Modeling by Removing Sequence Redundancy with FFT Operator";
github LUMIA-Group/FourierTransformer, `Summarization/transformer_dct/transformer_encoder.py::dc_transform`
and `dct.py`).

On the T unprotected tokens x [T, C] (the class / distill token is kept out, as their RoBERTa path
keeps CLS out), along the token axis:

    X = DCT-II_T(x)  (orthonormal, `norm='ortho'`)       X_k = s_k sum_n x_n cos(pi (2n + 1) k / 2T)
    x' = IDCT_T'(X[:T'])  (orthonormal DCT-III of length T')      s_0 = sqrt(1/T), s_k = sqrt(2/T)

so the sequence is low-pass filtered and resampled to T' tokens: x' = M x with the fixed matrix
M = C_T'^T C_T[:T'] [T', T] (C_N the orthonormal DCT-II matrix), applied as one matmul in float32
(their code computes the same transform with FFTs in float32). T' = T - r, or with `ratio < 1` their
ceil(T * ratio) (`dct_percentage`). Output tokens are not groups of input tokens:
- size and source: output token j stands for the input tokens nearest to where it samples the
  sequence, the chunk {i : floor(i T' / T) = j} (DCT-II samples at (j + 1/2) T / T'); sizes are the
  chunks' summed sizes (so they add up to the tokens in), sources the chunks' union (a partition,
  so `tome_jax.visualize` shows the chunks: runs of the token order).
- undo: the inverse resampling M^T (zero-padding the spectrum back to T, then the inverse DCT):
  exact for sequences with no content above T' frequencies, the low-pass projection otherwise.
Gradients flow through x (M is linear). See docs/methods.md for where we apply it in the block.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from tome_jax.methods.base import LayerInputs, ReductionMethod, register_method


@dataclasses.dataclass(frozen=True)
class DCTOptions:
    """ratio: 1.0 = a layer keeps T - r of its T unprotected tokens (choose_r and eval's r sweep
    apply); < 1 = the authors' `dct_percentage`: a layer whose r is > 0 keeps ceil(T * ratio)."""

    ratio: float = 1.0


def kept(r: int, unprotected: int, ratio: float) -> int:
    """Unprotected tokens a layer keeps: T - r, or ceil(T * ratio) with ratio < 1 (r = 0: all), >= 1."""
    if r <= 0 or unprotected <= 1:
        return unprotected
    keep = math.ceil(unprotected * ratio) if ratio < 1.0 else unprotected - r
    return max(1, min(keep, unprotected))


@functools.lru_cache(maxsize=None)
def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix C [n, n] (float64): X = C x, x = C^T X."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    scale = np.where(k == 0, np.sqrt(1.0 / n), np.sqrt(2.0 / n))
    return scale * np.cos(np.pi * (2 * i + 1) * k / (2 * n))


@functools.lru_cache(maxsize=None)
def resample_matrix(tokens: int, keep: int) -> np.ndarray:
    """M [keep, tokens] (float64): IDCT_keep of the first `keep` DCT-II_tokens coefficients."""
    return dct_matrix(keep).T @ dct_matrix(tokens)[:keep]


@functools.lru_cache(maxsize=None)
def chunk_matrix(tokens: int, keep: int) -> np.ndarray:
    """A [keep, tokens] 0/1: output j holds the inputs i with floor(i * keep / tokens) = j."""
    return (np.arange(tokens)[None, :] * keep // tokens == np.arange(keep)[:, None]).astype(np.float32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DCTPlan:
    """A DCT layer's plan: shapes only (the transform is fixed by them)."""

    protected: int = dataclasses.field(metadata=dict(static=True))
    tokens: int = dataclasses.field(metadata=dict(static=True))  # unprotected tokens in
    keep: int = dataclasses.field(metadata=dict(static=True))  # unprotected tokens out


def _along_tokens(matrix: np.ndarray, v: jax.Array, protected: int) -> jax.Array:
    """Apply matrix [T', T] along the tokens of v [B, p + T, C] (the p prefix rows kept): [B, p + T', C]."""
    out = jnp.einsum("ot,btc->boc", jnp.asarray(matrix, jnp.float32), v[:, protected:].astype(jnp.float32),
                     precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([v[:, :protected], out.astype(v.dtype)], axis=1)


@register_method("dct", options=DCTOptions)
class DCT(ReductionMethod):
    """Low-pass resampling of the token sequence (module docstring)."""

    def tokens_after(self, r: int, tokens: int, protected: int) -> int:
        return protected + kept(r, tokens - protected, self.options.ratio)

    def plan(self, inputs: LayerInputs) -> DCTPlan:
        tokens = inputs.metric.shape[1] - inputs.protected
        return DCTPlan(inputs.protected, tokens, kept(inputs.r, tokens, self.options.ratio))

    def reduce(self, plan: DCTPlan, x, size, source):
        p = plan.protected
        if size is None:
            size = jnp.ones((*x.shape[:2], 1), jnp.float32)
        chunks = chunk_matrix(plan.tokens, plan.keep)
        if source is not None:
            source = _along_tokens(chunks, source, p)
        return _along_tokens(resample_matrix(plan.tokens, plan.keep), x, p), _along_tokens(chunks, size, p), source

    def undo(self, plan: DCTPlan, y: jax.Array) -> jax.Array:
        return _along_tokens(resample_matrix(plan.tokens, plan.keep).T, y, plan.protected)

    def extra_flops(self, tokens_in: int, tokens_out: int, head_dim: int, dim: int) -> float:
        """The resampling matmul M x: T' x T x C."""
        return float(tokens_out * tokens_in * dim)
