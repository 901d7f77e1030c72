"""Clustering layers by what a search measured: K-means over layer representations (SSN Sec.
3.2), and the priority queue over pairwise gradient similarity (SWN Sec. 2.2.1, also refine's
Sec. 2.2.2), over a networkx layer-similarity graph."""
from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

import networkx as nx

__all__ = ["kmeans_groups", "pair_graph", "superweight_clusters", "fitting_clusters"]


def kmeans_groups(features: Any, names: list[str], groups: int | None, max_groups: int,
                  min_silhouette: float, seed: int,
                  fits: Callable[[list[list[str]]], bool] | None = None
                  ) -> tuple[list[list[str]], dict[str, float], list[int]]:
    """K-means (fixed seed, ``n_init=10``) over layer features. With ``groups=None`` the count
    is the one with the best silhouette score among those whose grouping ``fits`` (all, when
    it is None), or one group when none reaches ``min_silhouette``.

    Returns:
        The groups, the silhouette score of each count tried, and the counts that fit.

    Example:
        >>> import numpy as np
        >>> f = np.array([[0, 0], [0, .1], [5, 5], [5, 5.1]])
        >>> kmeans_groups(f, ["a", "b", "c", "d"], None, 3, 0.2, 0)[0]
        [['a', 'b'], ['c', 'd']]
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    def grouped(labels: Any) -> list[list[str]]:
        # Groups in graph order of their first slot, slots in graph order.
        order: dict[int, list[str]] = {}
        for name, label in zip(names, labels):
            order.setdefault(int(label), []).append(name)
        return list(order.values())

    def fit(k: int) -> Any:
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)

    if groups is not None:
        k = max(1, min(groups, len(names)))
        return grouped(fit(k) if k > 1 else [0] * len(names)), {}, []
    scores: dict[str, float] = {}
    fitting: list[int] = []
    best, chosen = min_silhouette, [names]
    for k in range(2, min(max_groups, len(names) - 1) + 1):
        labels = fit(k)
        if len(set(labels)) < 2:
            continue
        score = float(silhouette_score(features, labels))
        scores[str(k)] = round(score, 4)
        candidate = grouped(labels)
        if fits is None or fits(candidate):
            fitting.append(k)
            if score > best:
                best, chosen = score, candidate
    return chosen, scores, fitting


def pair_graph(names: list[str], similarity: Any, weight: str = "gradient") -> nx.Graph:
    """A graph over ``names`` with every pair joined by an edge carrying ``similarity[i][j]``
    under the attribute ``weight``.

    Example:
        >>> pair_graph(["a", "b"], [[1, 0.5], [0.5, 1]]).edges["a", "b"]
        {'gradient': 0.5}
    """
    graph = nx.Graph()
    graph.add_nodes_from(names)
    graph.add_edges_from((names[i], names[j], {weight: float(similarity[i][j])})
                         for i, j in itertools.combinations(range(len(names)), 2))
    return graph


def superweight_clusters(graph: nx.Graph, tau: float, weight: str = "gradient"
                         ) -> list[list[str]]:
    """SWN Sec. 2.2.1 over a layer-similarity graph: pop its edges (layer pairs) by falling
    ``weight`` and merge the two layers' clusters while it exceeds ``tau``; the layers left over
    become clusters of their own. Clusters and their layers keep the graph's node order.

    Example:
        >>> g = pair_graph(["a", "b", "c"], [[1, .9, -.5], [.9, 1, -.4], [-.5, -.4, 1]])
        >>> superweight_clusters(g, 0.1)
        [['a', 'b'], ['c']]
    """
    nodes = list(graph.nodes)
    parent = {n: n for n in nodes}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    order = {n: i for i, n in enumerate(nodes)}
    queue = [(-float(d[weight]), order[u], order[v], u, v) for u, v, d in graph.edges(data=True)]
    heapq.heapify(queue)
    while queue:
        negative, _, _, u, v = heapq.heappop(queue)
        if -negative <= tau:
            break  # every remaining pair is below the threshold
        parent[find(v)] = find(u)
    clusters: dict[str, list[str]] = {}
    for n in nodes:
        clusters.setdefault(find(n), []).append(n)
    return list(clusters.values())


def fitting_clusters(graph: nx.Graph, tau: float, fits: Callable[[list[list[str]]], bool],
                     weight: str = "gradient") -> tuple[list[list[str]], float | None]:
    """:func:`superweight_clusters` at ``tau`` if ``fits`` accepts them, else at the highest
    lower threshold whose clusters it accepts, and one cluster if none does; returns the
    clusters and the threshold used (None for the one cluster).

    Lowering the threshold only merges clusters (they are the connected components of the
    edges above it), and a merged cluster needs no more store than its parts did, so the
    thresholds are searched by bisection over the edges' similarities below ``tau``.

    Example:
        >>> g = pair_graph(["a", "b", "c"], [[1, .9, -.5], [.9, 1, -.4], [-.5, -.4, 1]])
        >>> fitting_clusters(g, 0.95, lambda c: len(c) <= 2)
        ([['a', 'b'], ['c']], 0.8999999999999999)
    """
    clusters = superweight_clusters(graph, tau, weight)
    if fits(clusters):
        return clusters, tau
    # Just below each lower similarity: the threshold that merges that edge too.
    lower = sorted({math.nextafter(float(d[weight]), -math.inf)
                    for _, _, d in graph.edges(data=True) if float(d[weight]) <= tau},
                   reverse=True)
    best: tuple[list[list[str]], float | None] = ([list(graph.nodes)], None)
    lo, hi = 0, len(lower) - 1
    while lo <= hi:  # the first (highest) threshold whose clusters fit
        mid = (lo + hi) // 2
        candidate = superweight_clusters(graph, lower[mid], weight)
        if fits(candidate):
            best, hi = (candidate, lower[mid]), mid - 1
        else:
            lo = mid + 1
    return best
