"""Merge plans and token-reduction descriptions (tome_jax.merge plans, tome_jax.reduction)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tome_jax import merge
from tome_jax.reduction import METHODS, TokenReduction, resolve_schedule


def groups_of(plan, batch_row):
    """Output position -> the input rows reduced into it, from a plan's index arrays."""
    out_rows = np.asarray(plan.out_rows[batch_row])
    groups = {pos: [int(row)] for pos, row in enumerate(out_rows)}
    for row, pos in zip(np.asarray(plan.src_rows[batch_row]), np.asarray(plan.dst_pos[batch_row])):
        groups[int(pos)].append(int(row))
    return groups


def make_plan(method, x, r, class_token=False, distill_token=False):
    reduction = TokenReduction(method=method, r=(r,), protected=int(class_token) + int(distill_token))
    return reduction.plan(0, x, jax.random.key(3))


CASES = [("bipartite", False, False), ("bipartite", True, False), ("bipartite", True, True),
         ("prune", True, False), ("random", True, False), ("random", False, False), ("kth", True, False)]


@pytest.mark.parametrize("method, cls, dist", CASES)
def test_plan_round_trip_puts_each_group_mean_back(method, cls, dist):
    x = jax.random.normal(jax.random.key(0), (2, 11, 5))
    r = 3 if method == "kth" else 4
    plan = make_plan(method, x, r, cls, dist)
    back = np.asarray(merge.undo_plan(plan, merge.apply_plan(plan, x, "mean")))
    for b in range(2):
        groups = groups_of(plan, b)
        rows = sorted(row for group in groups.values() for row in group)
        assert rows == list(range(plan.num_tokens))  # the groups partition the rows
        for group in groups.values():
            for row in group:
                np.testing.assert_allclose(back[b, row], np.asarray(x)[b, group].mean(0), rtol=1e-5, atol=1e-6)
        if cls:  # protected tokens stay first, alone
            assert groups[0] == [0]
        if dist:
            assert groups[1] == [1]


def test_prune_keeps_t_minus_r_tokens_and_never_averages():
    x = jax.random.normal(jax.random.key(1), (2, 13, 4))
    reduction = TokenReduction(method="prune", r=(5,), protected=1)
    plan = reduction.plan(0, x)
    kept, size, _ = reduction.reduce(plan, x, None, None)
    assert kept.shape == (2, 8, 4) and size.shape == (2, 8, 1)
    np.testing.assert_array_equal(np.asarray(size), 1.0)  # nothing merged into anything
    for b in range(2):  # every output row is an input row, bit for bit
        np.testing.assert_array_equal(np.asarray(kept[b]), np.asarray(x)[b, np.asarray(plan.out_rows[b])])
    merged, _, _ = dataclasses.replace(reduction, method="bipartite").reduce(plan, x, None, None)
    assert not np.allclose(np.asarray(merged), np.asarray(kept))  # the same plan, merged, averages


def test_plans_are_pytrees_that_cross_jit():
    x = jax.random.normal(jax.random.key(2), (1, 9, 3))
    plan = jax.jit(lambda m: merge.bipartite_plan(m, 3, class_token=True))(x)
    np.testing.assert_array_equal(merge.apply_plan(plan, x), merge.bipartite_soft_matching(x, 3, True)[0](x))


def test_token_counts_use_one_clamp():
    red = TokenReduction(r=(100, 100, 100), protected=1)
    assert red.token_counts(65) == [65, 33, 17, 9]  # (T - 1) // 2 removed per layer
    assert merge.max_r(65, 1) == 32
    assert dataclasses.replace(red, method="none").token_counts(65) == [65] * 4
    assert dataclasses.replace(red, method="kth", r=(4, 1, 2)).token_counts(65) == [65, 17, 17, 9]
    assert dataclasses.replace(red, method="random", r=(10, 10, 10)).token_counts(12) == [12, 2, 2, 2]


def test_resolve_schedule_forms():
    red = TokenReduction(protected=1)
    assert resolve_schedule(8, 3, 65, red) == (8, 8, 8)
    assert resolve_schedule((8, -1), 3, 65, red) == tuple(merge.parse_r(3, (8, -1)))
    assert resolve_schedule([4, 0, 2], 3, 65, red) == (4, 0, 2)
    # A fraction of each layer's unprotected tokens: 64 -> 16 (48 left) -> 12 (36 left) -> 9.
    assert resolve_schedule(0.25, 3, 65, red) == (16, 12, 9)


def test_bad_reduction_input_names_the_fix():
    with pytest.raises(ValueError, match="unknown token reduction method 'merge'.*bipartite, prune"):
        TokenReduction(method="merge")
    with pytest.raises(ValueError, match="3 entries but the model has 4 blocks"):
        resolve_schedule([1, 2, 3], 4, 65, TokenReduction())
    with pytest.raises(ValueError, match="3 entries but the model has 2 blocks"):
        resolve_schedule([1, 2, 3], 2, 65, TokenReduction())
    with pytest.raises(ValueError, match="fractional r must be in"):
        resolve_schedule(1.5, 2, 65, TokenReduction())
    with pytest.raises(ValueError, match="PRNG key"):
        TokenReduction(method="random", r=(2,)).plan(0, jnp.ones((1, 8, 2)))
    assert set(METHODS) >= {"bipartite", "prune", "random", "kth", "none"}  # ToMe's; more in tome_jax/methods
