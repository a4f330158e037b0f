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
batch). Ties: the pair (i, j), i < j, with the smallest distance, the first in row-major order
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
    the cluster's smallest token index (so `label[i] == i` marks the K = `clusters` representatives)."""
    tokens = dist.shape[0]
    upper = jnp.triu(jnp.ones((tokens, tokens), bool), k=1)
    index = jnp.arange(tokens)

    def join(_, state):
        d, size, label = state
        flat = jnp.argmin(jnp.where(upper, d, jnp.inf))  # first minimum in row-major order: i < j
        i, j = flat // tokens, flat % tokens
        if linkage == "average":
            row = (size[i] * d[i] + size[j] * d[j]) / (size[i] + size[j])
        elif linkage == "complete":
            row = jnp.maximum(d[i], d[j])
        else:
            row = jnp.minimum(d[i], d[j])
        row = jnp.where((index == i) | (index == j), jnp.inf, row)
        d = d.at[i].set(row).at[:, i].set(row).at[j].set(jnp.inf).at[:, j].set(jnp.inf)
        return d, size.at[i].add(size[j]).at[j].set(0.0), jnp.where(label == j, i, label)

    d0 = jnp.where(jnp.eye(tokens, dtype=bool), jnp.inf, dist.astype(jnp.float32))
    state = (d0, jnp.ones(tokens, jnp.float32), index)
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
