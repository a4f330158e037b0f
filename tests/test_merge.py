"""Tests of tome_jax.merge against an independent NumPy reference and by properties.

The reference (tests/merge_reference.py) is written from docs/semantics.md only.
Matching decisions near a tie can legitimately flip under float32 rounding
(see "Ties" in docs/semantics.md), so every equivalence test picks its
random inputs deterministically: the first seed whose reference decision
margin is above MARGIN.
"""

import functools
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import merge_reference as ref  # noqa: E402

from tome_jax import merge  # noqa: E402

MARGIN = 1e-4  # decision margin (in cosine-similarity units) demanded of test inputs
CM, CX = 8, 12  # metric channels differ from x channels on purpose
ATOL = RTOL = 2e-5
MODES = ("sum", "mean", "amax")
pytestmark = pytest.mark.accelerator  # the NumPy reference on a GPU/TPU too (benchmarks/accelerator.sh)


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _randn(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def _pick(make, margin_fn, tries=500):
    """First seed whose inputs have reference margin > MARGIN (deterministic)."""
    for seed in range(tries):
        inputs = make(np.random.default_rng(seed))
        if margin_fn(*inputs) > MARGIN:
            return inputs
    raise AssertionError("no seed with a large enough decision margin")


def _bip_inputs(b, t, r, class_token=False, distill_token=False, cx=CX):
    def make(rng):
        return _randn(rng, (b, t, CM)), _randn(rng, (b, t, cx))

    metric, x = _pick(make, lambda m, _x: ref.matching_margin(m, r, class_token, distill_token))
    assert ref.matching_margin(metric, r, class_token, distill_token) > MARGIN
    return metric, x


def _close(got, want, atol=ATOL, rtol=RTOL):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)


# Backend optimization level 0 halves XLA:CPU compile time for these tiny
# programs; it changes nothing but float rounding, which the margins cover.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _jit(f, *args):
    """Run f once under jax.jit.

    One (fast) compilation per test case is much cheaper than eager op-by-op
    compilation of many small shapes.  Eager execution is covered by
    test_jit_matches_eager (jit there uses default compiler options) and the
    bad-input tests.
    """
    return jax.jit(f, compiler_options=_FAST_COMPILE)(*args)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _perm_jit(key, b, t):
    # exactly the permutation the JAX implementation defines (integer ops: jit == eager)
    return jax.vmap(lambda k: jax.random.permutation(k, t))(jax.random.split(key, b))


def _perm(key, b, t):
    return np.asarray(_perm_jit(key, b, t))


# ----------------------------------------------------------------------------
# reference self-checks (hand-worked example; partition structure)
# ----------------------------------------------------------------------------

# T = 6, 2-D metric.  A = tokens 0, 2, 4 ; B = tokens 1, 3, 5.
#   t0 = (1, 0)    -> best t3 (cos 1.000)
#   t2 = (1, 0.3)  -> best t3 (cos 0.958), t5 0.880, t1 0.287
#   t4 = (0.2, 1)  -> best t1 (cos 0.981), t5 0.832, t3 0.196
#   t1 = (0, 1), t3 = (1, 0), t5 = (0.7, 0.7)
# Edge order (descending): t0, t4, t2.  x[t] = 2**t so sums identify groups.
HAND_METRIC = np.array([[[1, 0], [0, 1], [1, 0.3], [1, 0], [0.2, 1], [0.7, 0.7]]], np.float32)
HAND_X = (2.0 ** np.arange(6, dtype=np.float32)).reshape(1, 6, 1)
HAND_CASES = [
    # (r, class_token, distill_token, expected "sum" output)
    (1, False, False, [16, 4, 2, 8 + 1, 32]),  # unm = [t4, t2] stays in score order
    (2, False, False, [4, 2 + 16, 8 + 1, 32]),
    (1, True, False, [1, 4, 2 + 16, 8, 32]),  # t0 protected -> t4 merges; unm re-sorted [t0, t2]
    # class + distill: t1 excluded as partner; t2 -> t3 (0.958), t4 -> t5 (0.832).
    # Output order [unm0, B0, unm1:, B1:] = [t0, t1, t4, t3+t2, t5]
    (1, True, True, [1, 2, 16, 8 + 4, 32]),
    (2, True, True, [1, 2, 8 + 4, 32 + 16]),
]


@pytest.mark.parametrize("r,cls,dist,want", HAND_CASES)
def test_reference_hand_example(r, cls, dist, want):
    mfn, _ = ref.bipartite_soft_matching(HAND_METRIC, r, cls, dist)
    np.testing.assert_array_equal(mfn(HAND_X, "sum")[0, :, 0], want)


@pytest.mark.parametrize("r,cls,dist,want", HAND_CASES)
def test_hand_example(r, cls, dist, want):
    y = np.arange(len(want), dtype=np.float32).reshape(1, -1, 1)

    def f(metric, x, y):
        mfn, ufn = merge.bipartite_soft_matching(metric, r, class_token=cls, distill_token=dist)
        return mfn(x, "sum"), ufn(y)

    out, uy = _jit(f, jnp.asarray(HAND_METRIC), jnp.asarray(HAND_X), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(out)[0, :, 0], want, rtol=1e-6)
    # unmerge sends every original position the row of its group
    _, rufn = ref.bipartite_soft_matching(HAND_METRIC, r, cls, dist)
    _close(uy, rufn(y))


def test_reference_hand_unmerge():
    _, ufn = ref.bipartite_soft_matching(HAND_METRIC, 1)
    # output rows are tokens [t4, t2, t1, t3+t0, t5]
    y = np.array([[[10], [11], [12], [13], [14]]], np.float64)
    np.testing.assert_array_equal(ufn(y)[0, :, 0], [13, 12, 11, 13, 10, 14])
    _, ufn = ref.bipartite_soft_matching(HAND_METRIC, 1, True, True)
    # output rows are tokens [t0, t1, t4, t3+t2, t5]
    np.testing.assert_array_equal(ufn(y)[0, :, 0], [10, 11, 13, 13, 12, 14])


@pytest.mark.parametrize(
    "kind,arg",
    [("bip", (17, 5, True, True)), ("bip", (16, 7, False, False)), ("kth", 3), ("rand", 6)],
)
def test_reference_groups_partition(kind, arg):
    rng = np.random.default_rng(0)
    t = 17
    metric = _randn(rng, (2, t, CM))
    if kind == "bip":
        t, r, cls, dist = arg
        metric = metric[:, :t]
        mfn, ufn = ref.bipartite_soft_matching(metric, r, cls, dist)
        n_tok, n_out = t, t - min(r, (t - cls - dist) // 2)
    elif kind == "kth":
        mfn, ufn = ref.kth_bipartite_soft_matching(metric, arg)
        n_tok, n_out = t // arg * arg, t // arg
    else:
        perm = np.stack([rng.permutation(t) for _ in range(2)])
        mfn, ufn = ref.random_matching_from_perm(metric, perm, arg)
        n_tok, n_out = t, t - arg
    for row in mfn.groups:
        assert len(row) == n_out
        assert sorted(tok for g in row for tok in g) == list(range(n_tok))
    # merge of the identity source == groups as indicator rows; wavg keeps a constant
    src = ref.merge_source(mfn, metric)
    assert src.shape == (2, n_out, t)
    np.testing.assert_array_equal(src.sum(-1), [[len(g) for g in row] for row in mfn.groups])
    xw, size = ref.merge_wavg(mfn, np.ones((2, t, 3)) * 2.5)
    np.testing.assert_allclose(xw, 2.5)
    np.testing.assert_allclose(size.sum(1), n_tok)
    assert ufn(mfn(metric)).shape == (2, n_tok, CM)


def test_reference_margin_detects_ties():
    m = np.zeros((1, 4, 2))
    m[0, :, 0] = 1.0  # every score identical
    assert ref.matching_margin(m, 1) == 0.0
    assert ref.matching_margin(m, 0) == math.inf


# ----------------------------------------------------------------------------
# equivalence with the reference: bipartite soft matching
# ----------------------------------------------------------------------------

BIP_CASES = [
    # (B, T, r, class_token, distill_token)
    pytest.param(2, 16, 4, False, False, id="plain"),
    pytest.param(3, 25, 7, False, False, id="plain_odd_T"),
    pytest.param(2, 17, 5, True, False, id="cls_odd_T"),
    pytest.param(2, 16, 6, True, False, id="cls_even_T"),
    pytest.param(2, 17, 8, True, False, id="cls_r_at_clamp"),
    pytest.param(2, 11, 100, True, False, id="cls_r_above_clamp"),
    pytest.param(2, 10, 100, False, False, id="r_above_clamp"),
    pytest.param(2, 18, 5, True, True, id="cls_distill"),
    pytest.param(2, 17, 100, True, True, id="cls_distill_r_above_clamp"),
    pytest.param(2, 15, 4, False, True, id="distill_only"),
    pytest.param(2, 12, 0, True, False, id="r0"),
    pytest.param(2, 3, 5, True, True, id="clamped_to_0"),
]


@pytest.mark.parametrize("b,t,r,cls,dist", BIP_CASES)
def test_bipartite_matches_reference(b, t, r, cls, dist):
    metric, x = _bip_inputs(b, t, r, cls, dist)
    r_eff = max(0, min(r, (t - cls - dist) // 2))
    y = _randn(np.random.default_rng(123), (b, t - r_eff, 5))
    rm, ru = ref.bipartite_soft_matching(metric, r, cls, dist)

    def f(metric, x, y):
        jm, ju = merge.bipartite_soft_matching(metric, r, class_token=cls, distill_token=dist)
        outs = {mode: jm(x, mode) for mode in MODES}
        outs["default"] = jm(x)
        outs["unmerge_merged"] = ju(outs["mean"])
        outs["unmerge_y"] = ju(y)
        return outs

    outs = _jit(f, jnp.asarray(metric), jnp.asarray(x), jnp.asarray(y))
    for mode in MODES:
        got = outs[mode]
        assert got.shape == (b, t - r_eff, CX), (mode, got.shape)
        assert got.dtype == jnp.float32
        _close(got, rm(x, mode))
    _close(outs["default"], rm(x, "mean"))  # default mode is mean
    # unmerge: of the merged tokens, and of arbitrary rows with yet another width
    _close(outs["unmerge_merged"], ru(rm(x, "mean")))
    uy = outs["unmerge_y"]
    assert uy.shape == (b, t, 5)
    _close(uy, ru(y))
    if r_eff == 0:
        np.testing.assert_array_equal(np.asarray(outs["sum"]), x)
        np.testing.assert_array_equal(np.asarray(uy), y)


@pytest.mark.parametrize("cls,dist", [(False, False), (True, False), (True, True)])
def test_merge_wavg_and_source_match_reference_chained(cls, dist):
    """Two consecutive merges with a fresh metric each time, carrying size and source."""
    b, t, r1, r2 = 2, 21, 5, 4

    def make(rng):
        return _randn(rng, (b, t, CM)), _randn(rng, (b, t - r1, CM)), _randn(rng, (b, t, CX))

    def margin(m1, m2, _x):
        return min(ref.matching_margin(m1, r1, cls, dist), ref.matching_margin(m2, r2, cls, dist))

    m1, m2, x = _pick(make, margin)

    rm1, _ = ref.bipartite_soft_matching(m1, r1, cls, dist)
    rx1, rs1 = ref.merge_wavg(rm1, x)
    rsrc1 = ref.merge_source(rm1, x)
    rm2, _ = ref.bipartite_soft_matching(m2, r2, cls, dist)
    rx2, rs2 = ref.merge_wavg(rm2, rx1, rs1)
    rsrc2 = ref.merge_source(rm2, rx1, rsrc1)

    def f(m1, m2, x):
        jm1, _ = merge.bipartite_soft_matching(m1, r1, class_token=cls, distill_token=dist)
        jx1, js1 = merge.merge_wavg(jm1, x)
        jsrc1 = merge.merge_source(jm1, x)
        jm2, _ = merge.bipartite_soft_matching(m2, r2, class_token=cls, distill_token=dist)
        jx2, js2 = merge.merge_wavg(jm2, jx1, js1)
        jsrc2 = merge.merge_source(jm2, jx1, jsrc1)
        return jx1, js1, jsrc1, jx2, js2, jsrc2

    jx1, js1, jsrc1, jx2, js2, jsrc2 = _jit(f, jnp.asarray(m1), jnp.asarray(m2), jnp.asarray(x))

    _close(jx1, rx1)
    _close(js1, rs1)
    _close(jsrc1, rsrc1, atol=0, rtol=0)
    _close(jx2, rx2)
    _close(js2, rs2)
    _close(jsrc2, rsrc2, atol=0, rtol=0)
    assert js2.shape == (b, t - r1 - r2, 1) and jsrc2.shape == (b, t - r1 - r2, t)


def test_merge_wavg_explicit_size_matches_reference():
    b, t, r = 2, 14, 5
    metric, x = _bip_inputs(b, t, r, True)
    size = np.random.default_rng(7).integers(1, 5, (b, t, 1)).astype(np.float32)
    rm, _ = ref.bipartite_soft_matching(metric, r, True)

    def f(metric, x, size):
        jm, _ = merge.bipartite_soft_matching(metric, r, class_token=True)
        return merge.merge_wavg(jm, x, size)

    jx, js = _jit(f, jnp.asarray(metric), jnp.asarray(x), jnp.asarray(size))
    rx, rs = ref.merge_wavg(rm, x, size)
    _close(jx, rx)
    _close(js, rs)


# ----------------------------------------------------------------------------
# equivalence with the reference: kth and random matching
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("k,t", [(2, 16), (3, 17), (4, 19), (4, 12), (1, 9)])
def test_kth_matches_reference(k, t):
    b = 2

    def make(rng):
        return _randn(rng, (b, t, CM)), _randn(rng, (b, t, CX))

    metric, x = _pick(make, lambda m, _x: ref.kth_margin(m, k))
    y = _randn(np.random.default_rng(5), (b, t // k, 5))
    rm, ru = ref.kth_bipartite_soft_matching(metric, k)

    def f(metric, x, y):
        jm, ju = merge.kth_bipartite_soft_matching(metric, k)
        outs = {mode: jm(x, mode) for mode in MODES}
        outs["wavg"] = merge.merge_wavg(jm, x)
        outs["source"] = merge.merge_source(jm, x)
        outs["unmerge_y"] = ju(y)
        return outs

    outs = _jit(f, jnp.asarray(metric), jnp.asarray(x), jnp.asarray(y))
    for mode in MODES:
        got = outs[mode]
        assert got.shape == ((b, t // k, CX) if k > 1 else (b, t, CX))
        _close(got, rm(x, mode))
    rx, rs = ref.merge_wavg(rm, x)
    _close(outs["wavg"][0], rx)
    _close(outs["wavg"][1], rs)
    _close(outs["source"], ref.merge_source(rm, x), atol=0, rtol=0)
    uy = outs["unmerge_y"]
    assert uy.shape == (b, t // k * k, 5)
    _close(uy, ru(y))


@pytest.mark.parametrize("r", [3, 8, 0, 100])
def test_random_matches_reference(r):
    b, t = 3, 13
    rng = np.random.default_rng(11)
    metric = _randn(rng, (b, t, CM))
    x = _randn(rng, (b, t, CX))
    for seed in range(200):
        key = jax.random.PRNGKey(seed)
        perm = _perm(key, b, t)
        if ref.random_margin(metric, perm, r) > MARGIN:
            break
    else:
        raise AssertionError("no key with a large enough margin")
    r_eff = min(r, t - 1)
    y = _randn(np.random.default_rng(5), (b, t - r_eff, 5))
    rm, ru = ref.random_matching_from_perm(metric, perm, r)

    def f(metric, x, y, key):
        jm, ju = merge.random_bipartite_soft_matching(metric, r, key)
        outs = {mode: jm(x, mode) for mode in MODES}
        outs["wavg"] = merge.merge_wavg(jm, x)
        outs["source"] = merge.merge_source(jm, x)
        outs["unmerge_y"] = ju(y)
        return outs

    outs = _jit(f, jnp.asarray(metric), jnp.asarray(x), jnp.asarray(y), key)
    for mode in MODES:
        got = outs[mode]
        assert got.shape == (b, t - r_eff, CX)
        _close(got, rm(x, mode))
    rx, rs = ref.merge_wavg(rm, x)
    _close(outs["wavg"][0], rx)
    _close(outs["wavg"][1], rs)
    _close(outs["source"], ref.merge_source(rm, x), atol=0, rtol=0)
    _close(outs["unmerge_y"], ru(y))
    if r == 0:
        np.testing.assert_array_equal(np.asarray(outs["mean"]), x)


def test_random_typed_key_and_determinism():
    b, t, r = 2, 12, 4
    rng = np.random.default_rng(3)
    metric, x = jnp.asarray(_randn(rng, (b, t, CM))), jnp.asarray(_randn(rng, (b, t, CX)))
    f = jax.jit(
        lambda m, xx, key: merge.random_bipartite_soft_matching(m, r, key)[0](xx, "sum"),
        compiler_options=_FAST_COMPILE,
    )
    out1 = f(metric, x, jax.random.PRNGKey(4))
    out2 = f(metric, x, jax.random.PRNGKey(4))
    out3 = f(metric, x, jax.random.key(4))
    out4 = f(metric, x, jax.random.PRNGKey(5))
    np.testing.assert_array_equal(np.asarray(out1), np.asarray(out2))
    np.testing.assert_array_equal(np.asarray(out1), np.asarray(out3))
    assert not np.array_equal(np.asarray(out1), np.asarray(out4))  # the key matters
    # the whole sum is conserved by any matching
    _close(out1.sum(1), x.sum(1), atol=1e-4)


# ----------------------------------------------------------------------------
# properties
# ----------------------------------------------------------------------------


def test_repeated_merges_sizes_sources_and_class_token():
    """Several merge_wavg/merge_source steps with class + distill tokens."""
    b, t = 3, 25
    rs = (4, 5, 100, 3)
    rng = np.random.default_rng(0)
    x = _randn(rng, (b, t, CX))
    x[:, 0] = 100.0  # class token marker
    x[:, 1] = -50.0  # distill token marker
    metrics = []
    n = t
    for r in rs:
        metrics.append(jnp.asarray(_randn(rng, (b, n, CM))))
        n -= min(r, (n - 2) // 2)

    def f(metrics, x):
        size = source = None
        steps = []
        for r, metric in zip(rs, metrics):
            mfn, _ = merge.bipartite_soft_matching(metric, r, class_token=True, distill_token=True)
            source = merge.merge_source(mfn, x, source)
            x, size = merge.merge_wavg(mfn, x, size)
            steps.append((x, size, source))
        return steps

    lengths = []
    for xs, s, src in _jit(f, metrics, jnp.asarray(x)):
        xs, s, src = np.asarray(xs), np.asarray(s), np.asarray(src)
        n = xs.shape[1]
        lengths.append(n)
        assert s.shape == (b, n, 1) and src.shape == (b, n, t)
        np.testing.assert_allclose(s.sum(axis=(1, 2)), t, rtol=1e-6)
        assert set(np.unique(src).tolist()) <= {0.0, 1.0}
        np.testing.assert_array_equal(src.sum(axis=1), 1.0)  # rows partition the T tokens
        np.testing.assert_allclose(src.sum(axis=2), s[..., 0], rtol=1e-6)  # size == patches per token
        np.testing.assert_allclose(xs[:, 0], 100.0, rtol=1e-6)
        np.testing.assert_allclose(xs[:, 1], -50.0, rtol=1e-6)
        np.testing.assert_array_equal(s[:, :2, 0], 1.0)
        np.testing.assert_array_equal(src[:, 0], np.eye(t)[0][None].repeat(b, 0))
        np.testing.assert_array_equal(src[:, 1], np.eye(t)[1][None].repeat(b, 0))
    # r = 100 at 16 tokens clamps to (16 - 2) // 2 = 7; r = 3 at 9 tokens stays 3
    assert lengths == [21, 16, 9, 6]


@pytest.mark.parametrize("cls", [False, True])
def test_unmerge_of_merge_gives_group_values(cls):
    b, t, r = EAGER_B, EAGER_T, EAGER_R
    rng = np.random.default_rng(1)
    metric = jnp.asarray(_randn(rng, (b, t, CM)))
    x = _randn(rng, (b, t, CX))

    def f(metric, x):
        mfn, ufn = merge.bipartite_soft_matching(metric, r, class_token=cls)
        merged = mfn(x, "mean")
        return merge.merge_source(mfn, x), merged, ufn(merged)

    outs = _jit(f, metric, jnp.asarray(x))
    src, merged, back = (np.asarray(o) for o in outs)  # src: [b, t - r, t]
    assert back.shape == (b, t, CX)
    for bi in range(b):
        for tok in range(t):
            g = int(np.argmax(src[bi, :, tok]))
            members = np.nonzero(src[bi, g])[0]
            assert tok in members
            np.testing.assert_allclose(back[bi, tok], merged[bi, g], rtol=0, atol=0)
            np.testing.assert_allclose(back[bi, tok], x[bi, members].mean(0), atol=2e-5, rtol=2e-5)
    if cls:
        np.testing.assert_array_equal(back[:, 0], x[:, 0])


# Eager tests share these shapes so that eager per-op compilations are reused.
EAGER_B, EAGER_T, EAGER_R = 2, 19, 7


def test_jit_matches_eager():
    b, t, r = EAGER_B, EAGER_T, EAGER_R
    metric, x = _bip_inputs(b, t, r, True)

    def f(metric, x, r):
        mfn, ufn = merge.bipartite_soft_matching(metric, r, class_token=True)
        xm, size = merge.merge_wavg(mfn, x)
        src = merge.merge_source(mfn, x)
        return xm, size, src, ufn(xm)

    jitted = jax.jit(f, static_argnames="r")
    got = jitted(jnp.asarray(metric), jnp.asarray(x), r=r)
    eager = f(jnp.asarray(metric), jnp.asarray(x), r)
    for g, e in zip(got, eager):
        assert g.shape == e.shape
        _close(g, e, atol=1e-6, rtol=1e-6)
    rm, ru = ref.bipartite_soft_matching(metric, r, True)
    rx, rs = ref.merge_wavg(rm, x)
    _close(got[0], rx)
    _close(got[3], ru(rx))


@pytest.mark.parametrize("cls", [False, True])
def test_constant_tokens_unchanged(cls):
    b, t, r = 2, 16, 5
    rng = np.random.default_rng(2)
    metric = jnp.asarray(_randn(rng, (b, t, CM)))
    row = _randn(rng, (b, 1, CX))
    x = jnp.asarray(np.repeat(row, t, axis=1))
    size = jnp.asarray(rng.integers(1, 6, (b, t, 1)).astype(np.float32))

    def f(metric, x, size):
        mfn, _ = merge.bipartite_soft_matching(metric, r, class_token=cls)
        return mfn(x, "mean"), mfn(x, "amax"), merge.merge_wavg(mfn, x)[0], merge.merge_wavg(mfn, x, size)[0]

    mean, amax, wavg, wavg_size = _jit(f, metric, x, size)
    want = np.repeat(row, t - r, axis=1)
    _close(mean, want, atol=1e-6, rtol=1e-6)
    _close(amax, want, atol=0, rtol=0)
    _close(wavg, want, atol=1e-6, rtol=1e-6)
    _close(wavg_size, want, atol=1e-5, rtol=1e-5)


def test_bfloat16_x():
    b, t, r = 2, 18, 6
    metric, x = _bip_inputs(b, t, r, True)
    xb = jnp.asarray(x, dtype=jnp.bfloat16)
    x_rounded = np.asarray(xb.astype(jnp.float32))
    rm, ru = ref.bipartite_soft_matching(metric, r, True)

    def f(metric, xb):
        mfn, ufn = merge.bipartite_soft_matching(metric, r, class_token=True)
        outs = {mode: mfn(xb, mode) for mode in MODES}
        outs["wavg"] = merge.merge_wavg(mfn, xb)
        outs["back"] = ufn(outs["wavg"][0])
        # a bfloat16 metric runs too (decisions may differ from float32: no value check)
        mfn16, _ = merge.bipartite_soft_matching(metric.astype(jnp.bfloat16), r, class_token=True)
        outs["metric16"] = mfn16(xb)
        return outs

    outs = _jit(f, jnp.asarray(metric), xb)
    for mode in MODES:
        got = outs[mode]
        assert got.dtype == jnp.bfloat16, (mode, got.dtype)
        _close(got.astype(jnp.float32), rm(x_rounded, mode), atol=2e-2, rtol=2e-2)
    xw, size = outs["wavg"]
    assert xw.dtype == jnp.bfloat16, xw.dtype
    rx, rs = ref.merge_wavg(rm, x_rounded)
    _close(xw.astype(jnp.float32), rx, atol=2e-2, rtol=2e-2)
    _close(size.astype(jnp.float32), rs, atol=0, rtol=0)
    back = outs["back"]
    assert back.dtype == jnp.bfloat16
    _close(back.astype(jnp.float32), ru(rx), atol=2e-2, rtol=2e-2)
    out = outs["metric16"]
    assert out.shape == (b, t - r, CX) and bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))


def test_grad_through_merge_wavg():
    b, t, r = 2, 14, 5
    metric, x = _bip_inputs(b, t, r, True)
    w = _randn(np.random.default_rng(9), (b, t - r, CX))

    def loss(metric, x):
        mfn, _ = merge.bipartite_soft_matching(metric, r, class_token=True)
        xm, _ = merge.merge_wavg(mfn, x)
        return jnp.sum(xm * w)

    gm, gx = _jit(jax.grad(loss, argnums=(0, 1)), jnp.asarray(metric), jnp.asarray(x))
    gm, gx = np.asarray(gm), np.asarray(gx)
    assert np.all(np.isfinite(gm)) and np.all(np.isfinite(gx))
    np.testing.assert_array_equal(gm, 0.0)
    # d loss / d x[t] = w[group(t)] / |group|
    rm, _ = ref.bipartite_soft_matching(metric, r, True)
    want = np.zeros_like(x, dtype=np.float64)
    for bi, row_groups in enumerate(rm.groups):
        for k, g in enumerate(row_groups):
            for tok in g:
                want[bi, tok] = w[bi, k] / len(g)
    _close(gx, want, atol=1e-6, rtol=1e-5)


def test_vmap_over_leading_axis():
    v, b, t, r = 2, 2, 15, 4

    def make(rng):
        return _randn(rng, (v, b, t, CM)), _randn(rng, (v, b, t, CX))

    metric, x = _pick(make, lambda m, _x: min(ref.matching_margin(m[i], r, True) for i in range(v)))

    def f(m, xx):
        mfn, ufn = merge.bipartite_soft_matching(m, r, class_token=True)
        xm, size = merge.merge_wavg(mfn, xx)
        return xm, size, ufn(xm)

    xm, size, back = _jit(jax.vmap(f), jnp.asarray(metric), jnp.asarray(x))
    assert xm.shape == (v, b, t - r, CX) and size.shape == (v, b, t - r, 1) and back.shape == (v, b, t, CX)
    for i in range(v):
        rm, ru = ref.bipartite_soft_matching(metric[i], r, True)
        rx, rs = ref.merge_wavg(rm, x[i])
        _close(xm[i], rx)
        _close(size[i], rs)
        _close(back[i], ru(rx))


# ----------------------------------------------------------------------------
# parse_r
# ----------------------------------------------------------------------------


def test_parse_r_int():
    assert merge.parse_r(12, 8) == [8] * 12
    assert merge.parse_r(3, 0) == [0, 0, 0]


@pytest.mark.parametrize("inflect", [-1, 0, 0.5, 1, -0.5])
@pytest.mark.parametrize("num_layers,r", [(12, 16), (12, 13), (24, 8), (4, 6)])
def test_parse_r_tuple_formula(num_layers, r, inflect):
    got = merge.parse_r(num_layers, (r, inflect))
    assert got == ref.parse_r(num_layers, (r, inflect))
    assert len(got) == num_layers and all(type(v) is int for v in got)


@pytest.mark.parametrize(
    "num_layers,r,want",
    [
        # hand-computed: lo = int(r (1 - inflect)), hi = 2r - lo, int(lo + (hi - lo) / (L - 1) * i)
        (12, (16, -1), [32, 29, 26, 23, 20, 17, 14, 11, 8, 5, 2, 0]),
        (12, (16, 1), [0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 32]),
        (12, (16, 0.5), [8, 9, 10, 12, 13, 15, 16, 18, 19, 21, 22, 24]),
        (12, (16, 0), [16] * 12),
        (12, (8, -1), [16, 14, 13, 11, 10, 8, 7, 5, 4, 2, 1, 0]),
        (4, (6, -1), [12, 8, 4, 0]),
    ],
)
def test_parse_r_tuple_hand(num_layers, r, want):
    assert merge.parse_r(num_layers, r) == want
    assert ref.parse_r(num_layers, r) == want


def test_parse_r_list():
    assert merge.parse_r(5, [3, 2]) == [3, 2, 0, 0, 0]
    assert merge.parse_r(3, [1, 2, 3]) == [1, 2, 3]
    assert merge.parse_r(4, []) == [0, 0, 0, 0]


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    return (
        jnp.asarray(_randn(rng, (EAGER_B, EAGER_T, CM))),
        jnp.asarray(_randn(rng, (EAGER_B, EAGER_T, CX))),
    )


def _constructor(kind, metric):
    if kind == "bip":
        return merge.bipartite_soft_matching(metric, EAGER_R, class_token=True)
    if kind == "kth":
        return merge.kth_bipartite_soft_matching(metric, 2)
    return merge.random_bipartite_soft_matching(metric, 3, jax.random.PRNGKey(0))


def _eager_or_traced(kind, fn, *args):
    # bipartite runs eagerly; kth/random only trace (jax.eval_shape), which
    # runs the same Python checks without compiling their per-op kernels
    return fn(*args) if kind == "bip" else jax.eval_shape(fn, *args)


@pytest.mark.parametrize("kind", ["bip", "kth", "rand"])
def test_bad_mode(small, kind):
    def f(metric, x):
        mfn, _ = _constructor(kind, metric)
        return mfn(x, "median")

    with pytest.raises(ValueError, match=r"(?i)mode|median"):
        _eager_or_traced(kind, f, *small)


@pytest.mark.parametrize("kind", ["bip", "kth", "rand"])
def test_token_count_mismatch(small, kind):
    pat = r"(?i)token|shape|match|length|\b(T|N)\b"

    def fewer(metric, x):
        return _constructor(kind, metric)[0](x[:, :-1])

    def more_wavg(metric, x):
        return merge.merge_wavg(_constructor(kind, metric)[0], jnp.concatenate([x, x[:, :2]], axis=1))

    with pytest.raises(ValueError, match=pat):
        _eager_or_traced(kind, fewer, *small)
    with pytest.raises(ValueError, match=pat):
        _eager_or_traced(kind, more_wavg, *small)


@pytest.mark.parametrize("bad_r", [2.5, -1])
def test_bad_r(small, bad_r):
    metric, _ = small
    pat = r"(?i)\br\b|int|negative|>= ?0"
    with pytest.raises(ValueError, match=pat):
        merge.bipartite_soft_matching(metric, bad_r)
    with pytest.raises(ValueError, match=pat):
        merge.random_bipartite_soft_matching(metric, bad_r, jax.random.PRNGKey(0))


@pytest.mark.parametrize("bad_k", [0, -2])
def test_bad_k(small, bad_k):
    metric, _ = small
    with pytest.raises(ValueError, match=r"(?i)\bk\b"):
        merge.kth_bipartite_soft_matching(metric, bad_k)


def test_non_3d(small):
    metric, x = small
    pat = r"(?i)3|dim|shape|rank"
    with pytest.raises(ValueError, match=pat):
        merge.bipartite_soft_matching(metric[0], EAGER_R)
    with pytest.raises(ValueError, match=pat):
        merge.bipartite_soft_matching(metric[None], EAGER_R)
    with pytest.raises(ValueError, match=pat):
        merge.kth_bipartite_soft_matching(metric[0], 2)
    with pytest.raises(ValueError, match=pat):
        merge.random_bipartite_soft_matching(metric[0], 3, jax.random.PRNGKey(0))
    mfn, _ = merge.bipartite_soft_matching(metric, EAGER_R, class_token=True)
    with pytest.raises(ValueError, match=pat):
        mfn(x[0])
    with pytest.raises(ValueError, match=pat):
        mfn(x[None])
