"""How every dense layer and attention matmul runs in low precision: the matmul policy.

One decision, one place. A model computing in bfloat16 (`dtype=jnp.bfloat16`) multiplies bf16
operands; the policy says how:

- "float32_result" (the default): `lax.dot_general(a_bf16, b_bf16, preferred_element_type=float32)`,
  then a cast to bf16. XLA:CPU hands a dot with float32 output to its YNNPACK kernels, which use AMX
  on Intel Xeons with `amx_bf16` (issue 26: ~1,190 vs 191 GFLOP/s for one ViT-B MLP matmul). The
  backward goes the same way (a `custom_vjp`): the cotangent is cast to the operands' dtype and the
  input-gradient and weight-gradient dots also ask for float32 output, as PyTorch's bf16 autocast
  multiplies bf16 operands in its backward too.
- "native": XLA's default, output in the operands' dtype (with bf16 output XLA:CPU converts both
  inputs to float32 and runs a float32 dot); the backward is JAX's own transpose.

Float32 operands never see the policy: both names run the very same `lax.dot_general` /
`jnp.einsum` as before it existed (the same program). ToMe's matching scores are float32 anyway.

The policy is a static attribute of the dense layers (`nnx.Linear.dot_general`; an attention
multiplies as its qkv layer does), so a change recompiles once per value; `set_matmul(model, policy)` sets it on
every one of them (`model.matmul = "native"` on an `Encoder`, `create_model(..., matmul=...)`,
`config.model.matmul` in a recipe).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

POLICIES = ("float32_result", "native")
DEFAULT = "float32_result"


def check(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown matmul policy {policy!r}; use one of {', '.join(POLICIES)}.")
    return policy


def _routed(dtype) -> bool:
    """Operands of this dtype go through the policy (16-bit floats); float32 and wider never do."""
    return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32


# ----------------------------------------------------------------------------- einsum with 2 operands


def _parse(spec: str) -> tuple[str, str, str]:
    """"bhqd,bhkd->bhqk" -> ("bhqd", "bhkd", "bhqk"), checked to be a plain product of two operands:
    no ellipsis, no index repeated within an operand, every operand index in the other operand or
    the output (so each operand's gradient is again such an einsum)."""
    inputs, _, out = spec.replace(" ", "").partition("->")
    lhs, _, rhs = inputs.partition(",")
    ok = "." not in spec and "," not in rhs and all(len(set(s)) == len(s) for s in (lhs, rhs, out))
    ok = ok and set(lhs) <= set(rhs) | set(out) and set(rhs) <= set(lhs) | set(out)
    ok = ok and set(out) <= set(lhs) | set(rhs)
    if not (ok and lhs and rhs and out):
        raise ValueError(f"einsum spec {spec!r} is not a product of two operands with explicit output indices.")
    return lhs, rhs, out


def _einsum_f32(spec: str, a: jax.Array, b: jax.Array, out_dtype) -> jax.Array:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _float32_result_einsum(spec: str, a: jax.Array, b: jax.Array, out_dtype) -> jax.Array:
    return _einsum_f32(spec, a, b, out_dtype)


def _forward(spec, a, b, out_dtype):
    return _einsum_f32(spec, a, b, out_dtype), (a, b)


def _backward(spec, out_dtype, residuals, g):
    del out_dtype
    a, b = residuals
    lhs, rhs, out = _parse(spec)
    g = g.astype(a.dtype)  # bf16 operands for the backward's dots too
    return (_einsum_f32(f"{out},{rhs}->{lhs}", g, b, a.dtype),
            _einsum_f32(f"{lhs},{out}->{rhs}", a, g, b.dtype))


_float32_result_einsum.defvjp(_forward, _backward)


def einsum(spec: str, a: jax.Array, b: jax.Array, *, policy: str = DEFAULT,
           preferred_element_type=None) -> jax.Array:
    """`jnp.einsum(spec, a, b, preferred_element_type=...)` under the matmul policy.

    spec: two operands, explicit output ("bhqd,bhkd->bhqk"). Float32 operands or policy "native":
    exactly `jnp.einsum`. Otherwise (16-bit operands, "float32_result") the dot asks for float32 and
    the result is cast to `preferred_element_type` (default: a's dtype); its gradients likewise.
    """
    if check(policy) == "native" or not (_routed(a.dtype) and a.dtype == b.dtype):
        return jnp.einsum(spec, a, b, preferred_element_type=preferred_element_type)
    _parse(spec)
    return _float32_result_einsum(spec, a, b, jnp.dtype(preferred_element_type or a.dtype))


# ----------------------------------------------------------------------------- nnx.Linear's dot_general


def float32_result_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                               **kwargs):
    """`nnx.Linear(dot_general=...)` for "float32_result": a dense layer's x [..., K] @ W [K, N] with
    16-bit operands goes through the policy's einsum; anything else is `lax.dot_general` as given."""
    (contract_lhs, contract_rhs), batch = dimension_numbers
    dense = (tuple(contract_lhs) == (lhs.ndim - 1,) and tuple(contract_rhs) == (0,) and rhs.ndim == 2
             and batch == ((), ()) and lhs.ndim <= 8 and not kwargs.get("out_sharding"))
    if not (dense and precision is None and _routed(lhs.dtype) and lhs.dtype == rhs.dtype):
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type, **kwargs)
    rows = "abcdefg"[:lhs.ndim - 1]
    return einsum(f"{rows}k,kn->{rows}n", lhs, rhs, preferred_element_type=preferred_element_type)


# What each policy puts in `nnx.Linear.dot_general` (native: Flax's default).
DOT_GENERALS = {"float32_result": float32_result_dot_general, "native": jax.lax.dot_general}


def policy_of(dot_general) -> str:
    """The policy an `nnx.Linear.dot_general` implements."""
    return next((name for name, fn in DOT_GENERALS.items() if fn is dot_general), "native")


def linear(din: int, dout: int, *, policy: str = DEFAULT, **kwargs) -> nnx.Linear:
    """`nnx.Linear(din, dout, **kwargs)` that multiplies under `policy`."""
    return nnx.Linear(din, dout, dot_general=DOT_GENERALS[check(policy)], **kwargs)


def set_matmul(model: nnx.Module, policy: str) -> nnx.Module:
    """Set the matmul policy of every dense layer (`nnx.Linear`) in `model`, and so of every
    attention (which multiplies as its qkv layer does); returns the model. The next jit of it
    compiles the new program."""
    dot_general = DOT_GENERALS[check(policy)]
    for _, module in nnx.iter_graph(model):
        if isinstance(module, nnx.Linear):
            module.dot_general = dot_general
    return model
