"""ATC's clustering keeps each row's nearest cluster (O(T) per join); it must make exactly the joins,
in the same order, that scanning the whole distance matrix makes, ties included."""

import jax
import numpy as np

from tome_jax.methods.atc import agglomerate


def scan_reference(dist: np.ndarray, clusters: int, linkage: str) -> np.ndarray:
    """Join the closest pair (first in row-major order over i < j) T - K times, scanning the whole
    matrix each time; label = the cluster's smallest token."""
    d = dist.astype(np.float32).copy()
    tokens = len(d)
    np.fill_diagonal(d, np.inf)
    size, label = np.ones(tokens, np.float32), np.arange(tokens)
    upper = np.triu(np.ones((tokens, tokens), bool), k=1)
    for _ in range(tokens - clusters):
        i, j = divmod(int(np.argmin(np.where(upper, d, np.inf))), tokens)
        if linkage == "average":
            row = (size[i] * d[i] + size[j] * d[j]) / (size[i] + size[j])
        else:
            row = (np.maximum if linkage == "complete" else np.minimum)(d[i], d[j])
        row[[i, j]] = np.inf
        d[i], d[:, i], d[j], d[:, j] = row, row, np.inf, np.inf
        size[i] += size[j]
        size[j] = 0
        label[label == j] = i
    return label


def test_nearest_neighbour_joins_equal_the_full_scan_with_ties():
    rng = np.random.default_rng(0)
    batch, tokens, clusters = 6, 14, 4
    points = np.round(rng.standard_normal((batch, tokens, 3)))  # few distinct distances: many ties
    dist = np.round(np.linalg.norm(points[:, :, None] - points[:, None], axis=-1) * 2) / 2
    # image 0, single linkage: two far groups of 5 join first (8 joins), then 1 and 3; row 0 then ties
    # between 1 (new) and its old nearest 2, and the full scan's last join is (0, 1): the kept nearest
    # must switch to the lower column.
    far = np.full((tokens, tokens), 30.0)
    far[4:9, 4:9] = far[9:, 9:] = 0.5
    far[4:9, 9:] = far[9:, 4:9] = 50.0
    far[:4, :4] = [[0, 5, 2, 2], [5, 0, 9, 1], [2, 9, 0, 9], [2, 1, 9, 0]]
    dist[0] = far
    dist = dist.astype(np.float32)
    linkages = ("average", "complete", "single")
    run = jax.jit(lambda d: [jax.vmap(lambda e, k=k: agglomerate(e, clusters, k))(d) for k in linkages])  # one compile
    for linkage, labels in zip(linkages, run(dist)):
        for b in range(batch):
            np.testing.assert_array_equal(np.asarray(labels[b]), scan_reference(dist[b], clusters, linkage),
                                          err_msg=f"{linkage}, image {b}")
