"""ATC: agglomerative token clustering (Haurum et al., ECCV 2024, "Agglomerative Token Clustering";
github JoakimHaurum/ATC, `ATC_Benchmark/models/atc.py::agglomerative_clustering`).

Per image, on the unprotected tokens' keys k (averaged over heads), normalized to unit length:
distances D = 1 - k k^T [T, T]; agglomerative clustering down to K = T - r clusters (the authors
call scikit-learn's `AgglomerativeClustering(n_clusters=K, metric="precomputed", linkage=...)`):
start from singletons and repeatedly join the two closest clusters, the distance between clusters
being, after joining i and j,

    average (UPGMA):  d(i+j, k) = (n_i d(i, k) + n_j d(j, k)) / (n_i + n_j)
    complete:         d(i+j, k) = max(d(i, k), d(j, k))
    single:           d(i+j, k) = min(d(i, k), d(j, k))

Each cluster becomes one token by the size-weighted mean (their `merge_wavg`), sources by union.
Here: a `lax.fori_loop` of T - K joins over the [T, T] matrix (static shapes, vmapped over the
batch), each row keeping its nearest cluster so a join costs O(T), not a scan of the matrix. Ties: the pair (i, j), i < j, with the smallest distance, the first in row-major order
(lowest i, then lowest j); j joins i, so a cluster is named by its smallest token index and the
output tokens are [protected, clusters by smallest member] (their order is scikit-learn's label ids;
the groups are the same).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

import tome_jax.merge as tome  # not `from tome_jax import`: that runs the package's lazy hook (models)
from tome_jax.methods.base import LayerInputs, ReductionMethod, register_method

LINKAGES = ("average", "complete", "single")


@dataclasses.dataclass(frozen=True)
class ATCOptions:
    """linkage: "average" (the authors' default), "complete" or "single"."""

    linkage: str = "average"

    def __post_init__(self):
        if self.linkage not in LINKAGES:
            raise ValueError(f"tome.options.linkage must be one of {LINKAGES} (method 'atc'), got {self.linkage!r}.")


def cosine_distances(metric: jax.Array) -> jax.Array:
    """metric [B, T, C'] -> 1 - cosine similarity [B, T, T] (float32, no gradient)."""
    k = jax.lax.stop_gradient(metric).astype(jnp.float32)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    return 1.0 - jnp.einsum("bic,bjc->bij", k, k, precision=jax.lax.Precision.HIGHEST)


def agglomerate(dist: jax.Array, clusters: int, linkage: str = "average") -> jax.Array:
    """Agglomerative clustering of one image: dist [T, T] -> label [T], each token's cluster named by
    the cluster's smallest token index (so `label[i] == i` marks the K = `clusters` representatives).

    Each row i keeps its nearest cluster to the right (`near[i]`, the first j > i at the row's
    smallest distance `near_d[i]`), so the closest pair, first in row-major order, is row
    argmin(near_d) and its `near`: O(T) per join instead of a scan of the [T, T] matrix. A join of
    i and j changes row i, column i and removes j; the rows whose nearest was i or j (and row i)
    are rescanned (O(T) each), every other row only compares its new distance to i (a joined
    distance is never below both old ones, for all three linkages, so an unaffected nearest stays
    nearest unless the new distance to i ties or beats it). Same joins, same order, as scanning the
    whole matrix each time."""
    tokens = dist.shape[0]
    index = jnp.arange(tokens)

    def nearest(row: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The smallest distance right of k in `row`, and its first column."""
        right = jnp.where(index > k, row, jnp.inf)
        j = jnp.argmin(right)
        return right[j], j

    def rescan(state):
        d, stale, near_d, near = state
        k = jnp.argmax(stale)
        value, j = nearest(d[k], k)
        return d, stale.at[k].set(False), near_d.at[k].set(value), near.at[k].set(j)

    def join(_, state):
        d, size, label, near_d, near = state
        i = jnp.argmin(near_d)  # the first row holding the smallest distance, then its first column
        j = near[i]
        if linkage == "average":
            row = (size[i] * d[i] + size[j] * d[j]) / (size[i] + size[j])
        elif linkage == "complete":
            row = jnp.maximum(d[i], d[j])
        else:
            row = jnp.minimum(d[i], d[j])
        row = jnp.where((index == i) | (index == j), jnp.inf, row)
        d = d.at[i].set(row).at[:, i].set(row).at[j].set(jnp.inf).at[:, j].set(jnp.inf)
        stale = (near == i) | (near == j) | (index == i)
        # a row left of i whose nearest stays: does its new distance to i beat (or tie, at a lower column) it?
        closer = ~stale & (index < i) & ((row < near_d) | ((row == near_d) & (i < near)))
        near_d, near = jnp.where(closer, row, near_d), jnp.where(closer, i, near)
        stale = stale.at[j].set(False)
        near_d, near = near_d.at[j].set(jnp.inf), near.at[j].set(j)  # j is gone: no row's nearest
        d, _, near_d, near = jax.lax.while_loop(lambda s: s[1].any(), rescan, (d, stale, near_d, near))
        return d, size.at[i].add(size[j]).at[j].set(0.0), jnp.where(label == j, i, label), near_d, near

    d0 = jnp.where(jnp.eye(tokens, dtype=bool), jnp.inf, dist.astype(jnp.float32))
    upper = jnp.where(index[None, :] > index[:, None], d0, jnp.inf)
    state = (d0, jnp.ones(tokens, jnp.float32), index, upper.min(axis=1), jnp.argmin(upper, axis=1))
    return jax.lax.fori_loop(0, tokens - clusters, join, state)[2]


def cluster_plan(label: jax.Array, clusters: int) -> tome.MergePlan:
    """label [B, T] (representative = smallest member) -> the plan that reduces each cluster into
    its representative, outputs ordered by representative."""
    batch, tokens = label.shape
    index = jnp.arange(tokens)
    is_rep = label == index
    order = jnp.argsort(~is_rep, axis=-1, stable=True)  # representatives first, each part by index
    position = jnp.cumsum(is_rep, axis=-1) - 1  # a representative's output position
    src_rows = order[:, clusters:]
    dst_pos = jnp.take_along_axis(position, jnp.take_along_axis(label, src_rows, axis=-1), axis=-1)
    return tome.MergePlan(order[:, :clusters], src_rows, dst_pos, tokens)


@register_method("atc", options=ATCOptions)
class ATC(ReductionMethod):
    """Agglomerative clustering of the unprotected tokens into T - r clusters (module docstring)."""

    def tokens_after(self, r: int, tokens: int, protected: int) -> int:
        return tokens - min(r, max(tokens - protected - 1, 0))

    def plan(self, inputs: LayerInputs) -> tome.MergePlan:
        p = inputs.protected
        tokens = inputs.metric.shape[1] - p
        clusters = tokens - min(inputs.r, tokens - 1)
        dist = cosine_distances(inputs.metric[:, p:])
        label = jax.vmap(lambda d: agglomerate(d, clusters, self.options.linkage))(dist)
        return tome.shift_plan(cluster_plan(label, clusters), p)

    def extra_flops(self, tokens_in: int, tokens_out: int, head_dim: int, dim: int) -> float:
        """The distance matrix k k^T (the joins compare, they do not multiply)."""
        return float(tokens_in * tokens_in * head_dim)
