"""Parts that follow limbs: clusters of the canonical Gaussians by geodesic distance over their k-NN graph, and
blend weights by the same distance (issue 21).

Why: k-means on positions cuts space, not the object. A raised forearm beside the head, two thighs side by side
or an arm against the torso fall into one cluster, and one rigid motion cannot follow both. Along the object's
surface (the k-NN graph of the Gaussians) the forearm is far from the head, so geodesic clusters and geodesic
blend weights keep them apart. A graph that links two surfaces only where they touch still lets the shortest
path across, so the graph's edges are limited to a few times the Gaussians' typical spacing.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

__all__ = ["geodesic_parts", "knn_graph"]


def knn_graph(points: np.ndarray, neighbours: int = 8, max_ratio: float = 3.0) -> csr_matrix:
    """Symmetric (N, N) graph of each point's ``neighbours`` nearest, edges weighted by length. An edge longer
    than ``max_ratio`` times the median nearest-neighbour distance costs its length times the square of that
    excess, so a path goes across a gap only where the object offers no way round (dropping such edges would
    split the Gaussians into hundreds of islands: stray Gaussians have no close neighbours)."""
    distance, index = cKDTree(points).query(points, k=neighbours + 1)
    distance, index = distance[:, 1:], index[:, 1:]
    limit = max_ratio * float(np.median(distance[:, 0]))
    cost = np.maximum(distance, 1e-9) * np.maximum(distance / limit, 1.0) ** 2
    rows = np.repeat(np.arange(len(points)), neighbours)
    graph = csr_matrix((cost.ravel(), (rows, index.ravel())), shape=(len(points), len(points)))
    return graph.maximum(graph.T).tocsr()


def _filled(geodesic: np.ndarray, points: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(K, N) geodesic distances with the unreachable (another component of the graph) replaced by a large
    multiple of the straight distance, so a stray component joins the nearest part rather than none."""
    out = geodesic.copy()
    missing = ~np.isfinite(out)
    if missing.any():
        reach = float(out[~missing].max()) if (~missing).any() else 0.0
        straight = np.linalg.norm(points[None, :, :] - points[seeds][:, None, :], axis=2)
        out[missing] = reach + 10.0 * straight[missing]
    return out


def geodesic_parts(
    points: np.ndarray, parts: int, neighbours: int = 8, iterations: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """(K,) indices of the points chosen as part centres and (K, N) geodesic distances from each centre.

    Farthest-point seeds by geodesic distance (from the point nearest the mean), then Lloyd steps on the graph:
    each point joins its geodesically nearest centre, each part's new centre is its member nearest its mean.
    Deterministic."""
    points = np.asarray(points, dtype=np.float64)
    k = min(parts, len(points))
    graph = knn_graph(points, neighbours)
    first = int(np.linalg.norm(points - points.mean(0), axis=1).argmin())
    seeds = [first]
    nearest = _filled(dijkstra(graph, indices=[first])[None, 0], points, np.array([first]))[0]
    for _ in range(k - 1):
        nxt = int(nearest.argmax())
        seeds.append(nxt)
        row = _filled(dijkstra(graph, indices=[nxt])[None, 0], points, np.array([nxt]))[0]
        nearest = np.minimum(nearest, row)
    centres = np.array(seeds)
    for _ in range(iterations):
        _, _, source = dijkstra(graph, indices=centres, min_only=True, return_predecessors=True)
        label = np.searchsorted(np.sort(centres), source)
        label = np.argsort(centres)[np.clip(label, 0, k - 1)]
        label[source < 0] = np.linalg.norm(points[source < 0][:, None] - points[centres][None], axis=2).argmin(1)
        moved = centres.copy()
        for j in range(k):
            members = np.flatnonzero(label == j)
            if len(members):
                mean = points[members].mean(0)
                moved[j] = members[np.linalg.norm(points[members] - mean, axis=1).argmin()]
        if np.array_equal(moved, centres):
            break
        centres = moved
    return centres, _filled(dijkstra(graph, indices=centres), points, centres)
