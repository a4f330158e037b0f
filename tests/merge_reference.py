"""Independent NumPy reference for ToMe token merging (tests only).

Written from docs/semantics.md (and the official PyTorch semantics it
describes), deliberately *not* from ``tome_jax/merge.py``: plain Python loops
over batch rows and tokens, scores in float64.

Every matching is represented the same way: for each batch row ``b``,
``groups[b]`` is the list of output rows, in output order, and each output row
is the list of original token indices that are reduced into it.  ``merge``
reduces ``x`` over each group, ``unmerge`` copies each output row back to every
original position of its group.  The closures returned by the matching
functions carry that list as the attribute ``.groups`` (on both closures) so
tests can use it for property checks.
"""

from __future__ import annotations

import math

import numpy as np

MODES = ("sum", "mean", "amax")


# ----------------------------------------------------------------------------
# Generic "groups" machinery
# ----------------------------------------------------------------------------


def _reduce(rows: np.ndarray, mode: str) -> np.ndarray:
    if mode == "sum":
        return rows.sum(axis=0)
    if mode == "mean":
        # torch scatter_reduce(mean, include_self=True): (dst + sum(src)) / (1 + count)
        return rows.sum(axis=0) / rows.shape[0]
    if mode == "amax":
        return rows.max(axis=0)
    raise ValueError(f"unknown mode {mode!r}")


def _make_closures(groups, num_in: int, num_restore: int):
    """merge/unmerge closures for per-batch-row lists of token groups.

    num_in: token count merge expects; num_restore: token count unmerge produces.
    """

    def merge(x, mode="mean"):
        x = np.asarray(x, dtype=np.float64)
        assert x.ndim == 3 and x.shape[0] == len(groups) and x.shape[1] == num_in, x.shape
        n_out = len(groups[0])
        out = np.empty((x.shape[0], n_out, x.shape[2]), dtype=np.float64)
        for b, row_groups in enumerate(groups):
            for k, g in enumerate(row_groups):
                out[b, k] = _reduce(x[b, list(g)], mode)
        return out

    def unmerge(y):
        y = np.asarray(y, dtype=np.float64)
        assert y.ndim == 3 and y.shape[0] == len(groups) and y.shape[1] == len(groups[0]), y.shape
        out = np.full((y.shape[0], num_restore, y.shape[2]), np.nan, dtype=np.float64)
        for b, row_groups in enumerate(groups):
            for k, g in enumerate(row_groups):
                for t in g:
                    out[b, t] = y[b, k]
        assert not np.isnan(out).any(), "unmerge left a position unfilled"
        return out

    merge.groups = groups
    unmerge.groups = groups
    return merge, unmerge


def _identity(batch: int, num_tokens: int):
    groups = [[[t] for t in range(num_tokens)] for _ in range(batch)]
    return _make_closures(groups, num_tokens, num_tokens)


def _normalize(metric) -> np.ndarray:
    m = np.asarray(metric, dtype=np.float64)
    assert m.ndim == 3, m.shape
    return m / np.linalg.norm(m, axis=-1, keepdims=True)


def _check_r(r):
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
        raise ValueError(f"r must be an int, got {r!r}")
    if r < 0:
        raise ValueError(f"r must be >= 0, got {r}")
    return int(r)


# ----------------------------------------------------------------------------
# Bipartite soft matching
# ----------------------------------------------------------------------------


def _bipartite_decisions(metric, r, class_token, distill_token):
    """Per batch row: (a_tok, b_tok, scores, node_max, node_idx, edge_order, r_eff)."""
    m = _normalize(metric)
    batch, t, _ = m.shape
    protected = int(bool(class_token)) + int(bool(distill_token))
    r = min(_check_r(r), (t - protected) // 2)
    rows = []
    a_tok = list(range(0, t, 2))
    b_tok = list(range(1, t, 2))
    for b in range(batch):
        scores = np.empty((len(a_tok), len(b_tok)), dtype=np.float64)
        for i, ta in enumerate(a_tok):
            for j, tb in enumerate(b_tok):
                scores[i, j] = float(np.dot(m[b, ta], m[b, tb]))
        if class_token:
            scores[0, :] = -math.inf
        if distill_token:
            scores[:, 0] = -math.inf
        node_max = scores.max(axis=1) if len(b_tok) else np.full(len(a_tok), -math.inf)
        node_idx = scores.argmax(axis=1) if len(b_tok) else np.zeros(len(a_tok), int)
        # descending by node_max; Python's sort is stable so ties go by index
        edge_order = sorted(range(len(a_tok)), key=lambda i: -node_max[i])
        rows.append((a_tok, b_tok, scores, node_max, node_idx, edge_order))
    return rows, r


def bipartite_soft_matching(metric, r, class_token=False, distill_token=False):
    metric = np.asarray(metric)
    batch, t = metric.shape[0], metric.shape[1]
    rows, r = _bipartite_decisions(metric, r, class_token, distill_token)
    if r <= 0:
        return _identity(batch, t)
    groups = []
    for a_tok, b_tok, _scores, _nmax, node_idx, edge_order in rows:
        src = edge_order[:r]
        unm = list(edge_order[r:])
        if class_token:
            unm = sorted(unm)  # class token (A index 0) stays first
        b_groups = [[tb] for tb in b_tok]
        for i in src:
            b_groups[int(node_idx[i])].append(a_tok[i])
        unm_groups = [[a_tok[i]] for i in unm]
        if distill_token:
            out = [unm_groups[0], b_groups[0]] + unm_groups[1:] + b_groups[1:]
        else:
            out = unm_groups + b_groups
        assert len(out) == t - r
        groups.append(out)
    return _make_closures(groups, t, t)


def _partner_gap(score_row: np.ndarray) -> float:
    finite = np.sort(score_row[np.isfinite(score_row)])[::-1]
    if finite.size < 2:
        return math.inf
    return float(finite[0] - finite[1])


def matching_margin(metric, r, class_token=False, distill_token=False) -> float:
    """Smallest decision margin of the bipartite matching (min over batch rows).

    Includes: the gap between the r-th and (r+1)-th sorted edge score (which
    tokens are merged), each merged token's gap between its best and second
    best partner (where it goes), and -- when there is no class token, since
    then ``unm`` keeps score order and that order is visible in the output --
    the gaps between consecutive sorted scores of the unmerged tokens.
    Returns inf when the matching is the identity.
    """
    rows, r = _bipartite_decisions(metric, r, class_token, distill_token)
    if r <= 0:
        return math.inf
    margin = math.inf
    for _a, _b, scores, node_max, _nidx, edge_order in rows:
        vals = node_max[edge_order]
        if r < len(vals) and np.isfinite(vals[r]):
            margin = min(margin, float(vals[r - 1] - vals[r]))
        if not class_token:
            tail = vals[r:]
            tail = tail[np.isfinite(tail)]
            if tail.size >= 2:
                margin = min(margin, float(np.min(tail[:-1] - tail[1:])))
        for i in edge_order[:r]:
            margin = min(margin, _partner_gap(scores[i]))
    return margin


# ----------------------------------------------------------------------------
# k-th bipartite matching
# ----------------------------------------------------------------------------


def _kth_decisions(metric, k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    m = _normalize(metric)
    batch, t, _ = m.shape
    n_groups = t // k
    a_tok = [g * k + i for g in range(n_groups) for i in range(k - 1)]
    b_tok = [g * k + (k - 1) for g in range(n_groups)]
    rows = []
    for b in range(batch):
        scores = np.empty((len(a_tok), len(b_tok)), dtype=np.float64)
        for i, ta in enumerate(a_tok):
            for j, tb in enumerate(b_tok):
                scores[i, j] = float(np.dot(m[b, ta], m[b, tb]))
        rows.append((a_tok, b_tok, scores))
    return rows, n_groups * k


def kth_bipartite_soft_matching(metric, k):
    metric = np.asarray(metric)
    batch, t = metric.shape[0], metric.shape[1]
    rows, t_rnd = _kth_decisions(metric, k)
    if k == 1:
        return _identity(batch, t)
    groups = []
    for a_tok, b_tok, scores in rows:
        b_groups = [[tb] for tb in b_tok]
        for i, ta in enumerate(a_tok):
            b_groups[int(np.argmax(scores[i]))].append(ta)
        groups.append(b_groups)
    return _make_closures(groups, t, t_rnd)


def kth_margin(metric, k) -> float:
    """Smallest best-vs-second-best partner gap over all A tokens."""
    rows, _ = _kth_decisions(metric, k)
    if k == 1:
        return math.inf
    return min((_partner_gap(s[i]) for _a, _b, s in rows for i in range(s.shape[0])), default=math.inf)


# ----------------------------------------------------------------------------
# Random bipartite matching, with the permutation given explicitly
# ----------------------------------------------------------------------------


def _random_decisions(metric, perm, r):
    m = _normalize(metric)
    batch, t, _ = m.shape
    perm = np.asarray(perm)
    assert perm.shape == (batch, t), (perm.shape, m.shape)
    r = min(_check_r(r), t - 1)
    rows = []
    for b in range(batch):
        assert sorted(perm[b].tolist()) == list(range(t)), "perm row is not a permutation"
        a_tok = [int(v) for v in perm[b, :r]]
        b_tok = [int(v) for v in perm[b, r:]]
        scores = np.empty((len(a_tok), len(b_tok)), dtype=np.float64)
        for i, ta in enumerate(a_tok):
            for j, tb in enumerate(b_tok):
                scores[i, j] = float(np.dot(m[b, ta], m[b, tb]))
        rows.append((a_tok, b_tok, scores))
    return rows, r


def random_matching_from_perm(metric, perm, r):
    """Set A = perm[b, :r] (in that order), set B = perm[b, r:] (in that order).

    r is clamped to at most T - 1; r <= 0 is the identity (original order).
    Output = reduced B rows in B order; unmerge restores all T positions.
    """
    metric = np.asarray(metric)
    batch, t = metric.shape[0], metric.shape[1]
    rows, r = _random_decisions(metric, perm, r)
    if r <= 0:
        return _identity(batch, t)
    groups = []
    for a_tok, b_tok, scores in rows:
        b_groups = [[tb] for tb in b_tok]
        for i, ta in enumerate(a_tok):
            b_groups[int(np.argmax(scores[i]))].append(ta)
        groups.append(b_groups)
    return _make_closures(groups, t, t)


def random_margin(metric, perm, r) -> float:
    rows, r = _random_decisions(metric, perm, r)
    if r <= 0:
        return math.inf
    return min((_partner_gap(s[i]) for _a, _b, s in rows for i in range(s.shape[0])), default=math.inf)


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def merge_wavg(merge, x, size=None):
    x = np.asarray(x, dtype=np.float64)
    if size is None:
        size = np.ones(x.shape[:2] + (1,), dtype=np.float64)
    size = np.asarray(size, dtype=np.float64)
    x_sum = merge(x * size, "sum")
    size_sum = merge(size, "sum")
    return x_sum / size_sum, size_sum


def merge_source(merge, x, source=None):
    x = np.asarray(x)
    if source is None:
        b, t = x.shape[0], x.shape[1]
        source = np.broadcast_to(np.eye(t, dtype=np.float64), (b, t, t))
    return merge(np.asarray(source, dtype=np.float64), "amax")


def parse_r(num_layers, r):
    if isinstance(r, list):
        return list(r) + [0] * (num_layers - len(r))
    if isinstance(r, tuple):
        r, inflect = r
        lo = int(r * (1 - inflect))
        hi = 2 * r - lo
        if num_layers == 1:
            return [lo]
        return [int(lo + (hi - lo) / (num_layers - 1) * i) for i in range(num_layers)]
    return [r] * num_layers
