"""Properties every registered token-reduction method has, parametrized over `METHODS` (a method
added in another file joins automatically). A method that lacks a property by design says so in
`EXCEPTIONS`, the one place, with the reason.

Each test runs the method through `TokenReduction` as a block does (plan from the block's inputs,
then reduce), on B=2 images of 13 tokens (1 protected class token), 8 channels, 2 heads, r=4.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tome_jax
from tome_jax.reduction import METHODS, TokenReduction

BATCH, TOKENS, DIM, HEADS, PROTECTED, R = 2, 13, 8, 2, 1, 4

# method -> {property: why it does not hold}. Properties: "sizes_sum" (sizes add up to the tokens in),
# "sources_partition" (every input token is in exactly one output token, sizes = group sizes),
# "undo_groups" (undo gives each input token its output token's value), "batch_independent",
# "unmerge_all_tokens" (a model's unmerge returns every input token),
# "values_reach_output" (every input token's value reaches an output token: gradients reach all of x).
# "bf16_same_sizes" (sizes in bfloat16 equal float32's to 1e-6, else to 1e-2).
EXCEPTIONS = {
    "prune": {"sizes_sum": "dropped tokens leave; kept tokens keep size 1",
              "sources_partition": "dropped tokens belong to no output token",
              "undo_groups": "a dropped token is restored from the token it matched, not a group it is in"},
    "random": {"batch_independent": "one key draws the whole batch's noise: an image's draw depends on "
                                    "its position in the batch (as the paper's ablation)"},
    "diffrate": {"sizes_sum": "pruned tokens leave, and a merged source adds its size times its similarity "
                              "(the authors' sizes; options similarity_size=False counts tokens)",
                 "sources_partition": "pruned tokens belong to no output token",
                 "bf16_same_sizes": "sizes are weighted by the similarity of x itself, which bf16 rounds"},
    "kth": {"unmerge_all_tokens": "the last (T - protected) mod k tokens are dropped, not merged (the paper's kth); "
                                  "unmerge returns the tokens before them"},
    "tofu": {"values_reach_output": "a pruning block (the first half of the blocks; here the only one) drops "
                                    "the matched tokens' values; they still count in their destination's "
                                    "size and source, as the published source tracking has it"},
    "dct": {"undo_groups": "an output token mixes every input token (its sources are the chunk it samples); "
                           "undo is the inverse resampling, not a copy per group"},
}


def holds(method: str, prop: str) -> bool:
    return prop not in EXCEPTIONS.get(method, {})


def block_inputs(dtype=jnp.float32, batch=BATCH, seed=0):
    """x [B, T, C] (dtype), metric [B, T, C] float32, attn [B, H, T, T] softmax probabilities, key."""
    kx, km, ka = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (batch, TOKENS, DIM)).astype(dtype)
    metric = jax.random.normal(km, (batch, TOKENS, DIM))
    attn = jax.nn.softmax(jax.random.normal(ka, (batch, HEADS, TOKENS, TOKENS)), axis=-1)
    return x, metric, attn, jax.random.key(7)


def reduction_of(method: str, r: int = R, trace_source: bool = True) -> TokenReduction:
    return TokenReduction(method=method, r=(r,), trace_source=trace_source, protected=PROTECTED)


def run(reduction, x, metric, attn, key):
    """One block's reduction: (x [B, T', C], size [B, T', 1], source [B, T', T], plan)."""
    plan = reduction.plan(0, metric, key, x=x, size=None, attn=attn)
    out, size, source = reduction.reduce(plan, x, None, None)
    return out, size, source, plan


def everything(reduction, x, metric, attn, key):
    """All that the tests look at, from one jitted program per method: the reduction of the batch,
    its undo, the second image alone, the batch in bfloat16, and d(sum(out * w))/dx."""
    out, size, source, plan = run(reduction, x, metric, attn, key)
    results = dict(out=out, size=size, source=source, plan=plan,
                   back=None if plan is None else reduction.undo(plan, out),
                   alone=run(reduction, x[1:], metric[1:], attn[1:], key)[:3],
                   bf16=run(reduction, x.astype(jnp.bfloat16), metric, attn, key)[:2])
    weights = jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)
    results["grad"] = jax.grad(lambda v: (run(reduction, v, metric, attn, key)[0] * weights).sum())(x)
    return results


@pytest.fixture(scope="module", params=list(METHODS))
def case(request):
    """(method, reduction, inputs, results of `everything`), computed once per method."""
    method = request.param
    reduction = reduction_of(method)
    inputs = block_inputs()
    return method, reduction, inputs, jax.jit(lambda *a: everything(reduction, *a))(*inputs)


def close(got, want, **tol):
    assert (got is None) == (want is None)
    if got is not None:
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), **tol)


def test_token_count_is_tokens_after_and_sizes_and_sources_add_up(case):
    method, reduction, _, res = case
    expected = reduction.tokens_after(0, TOKENS)
    size, source = res["size"], res["source"]
    assert res["out"].shape == (BATCH, expected, DIM)
    if expected == TOKENS:  # "none", or a method whose r=4 does nothing here
        assert res["plan"] is None
        return
    assert size.shape == (BATCH, expected, 1) and source.shape == (BATCH, expected, TOKENS)
    np.testing.assert_array_equal(np.asarray(size[:, :PROTECTED]), 1.0)  # the class token stays alone
    if holds(method, "sizes_sum"):
        np.testing.assert_allclose(np.asarray(size).sum(axis=(1, 2)), TOKENS, rtol=1e-5)
    if holds(method, "sources_partition"):
        s = np.asarray(source)
        assert set(np.unique(s)) <= {0.0, 1.0}
        np.testing.assert_array_equal(s.sum(axis=1), 1.0)  # each input token in exactly one output token
        np.testing.assert_array_equal(s.sum(axis=2), np.asarray(size)[..., 0])


def test_undo_gives_each_token_its_output_tokens_value(case):
    method, _, _, res = case
    if res["plan"] is None:
        return
    assert res["back"].shape == (BATCH, TOKENS, DIM)
    if holds(method, "undo_groups"):
        close(res["back"], np.einsum("bot,boc->btc", np.asarray(res["source"]), np.asarray(res["out"])),
              rtol=1e-5, atol=1e-6)


def test_r0_is_the_identity(case):
    method, _, (x, metric, attn, key), _ = case
    reduction = reduction_of(method, r=0)
    assert reduction.tokens_after(0, TOKENS) == TOKENS
    out, size, source, plan = run(reduction, x, metric, attn, key)
    assert plan is None and out is x and size is None and source is None


def test_jit_equals_eager(case):
    _, reduction, inputs, res = case
    eager = run(reduction, *inputs)
    for got, want in zip((res["out"], res["size"], res["source"]), eager[:3]):
        close(got, want, rtol=1e-5, atol=1e-6)


def test_batch_elements_are_independent(case):
    method, _, _, res = case
    if not holds(method, "batch_independent"):
        pytest.skip(EXCEPTIONS[method]["batch_independent"])
    for got, want in zip(res["alone"], (res["out"], res["size"], res["source"])):
        close(None if got is None else got[0], None if want is None else want[1], rtol=1e-5, atol=1e-6)


def test_bfloat16_runs_and_stays_close_to_float32(case):
    method, _, _, res = case
    out16, size16 = res["bf16"]
    assert out16.dtype == jnp.bfloat16 and out16.shape == res["out"].shape
    close(out16, res["out"], rtol=0.05, atol=0.05)
    close(size16, res["size"], rtol=1e-6 if holds(method, "bf16_same_sizes") else 1e-2)


def test_gradients_flow_to_x(case):
    method, _, _, res = case
    g = np.asarray(res["grad"])
    assert np.isfinite(g).all() and np.abs(g).sum() > 0
    if holds(method, "sizes_sum") and holds(method, "values_reach_output"):  # nothing dropped
        assert (np.abs(g).sum(-1) > 0).all()


def test_every_method_is_hashable_and_rejects_unknown_options():
    for method in METHODS:
        reduction = reduction_of(method)
        assert hash(reduction) == hash(dataclasses.replace(reduction))
        with pytest.raises(ValueError, match=rf"Unknown tome.options \(method '{method}'\) field\(s\) \['no_such'\]"):
            dataclasses.replace(reduction, options=dict(no_such=1))


@pytest.fixture(scope="module")
def abstract_model():
    """A 4-block ViT (1 + 64 tokens) as shapes only (nnx.eval_shape: nothing runs)."""
    return nnx.eval_shape(lambda: tome_jax.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4,
                                                        embed_dim=16, depth=4, num_heads=2, num_classes=2))


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_traces_through_a_model_and_its_unmerge(abstract_model, method):
    model = tome_jax.apply_tome(abstract_model, method=method, r=6, trace_source=True)
    counts = model.token_counts()

    def forward(m, images):
        logits, info = m(images, return_info=True)
        return logits, info["size"], info["source"], m.unmerge(info["plans"], info["size"])
    logits, size, source, back = nnx.eval_shape(forward, model, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
    assert logits.shape == (2, 2) and size.shape == (2, counts[-1], 1)
    assert source.shape == (2, counts[-1], 65) if counts[-1] < 65 else source is None  # None: nothing reduced
    if holds(method, "unmerge_all_tokens"):
        assert back.shape == (2, 65, 1)  # every token back at its place


def test_choose_r_reaches_a_flop_target_with_every_method(abstract_model):
    model = abstract_model
    for method in METHODS:
        model.method = method
        if model.token_counts(model.num_patches)[-1] == model.num_tokens:
            continue  # reduces nothing ("none")
        choice = tome_jax.choose_r(model, target_flops_ratio=0.6)
        assert choice.flops_ratio <= 0.6 < tome_jax.count_flops(model, choice.r - 1) / tome_jax.count_flops(model, 0)
