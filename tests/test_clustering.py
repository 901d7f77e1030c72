"""The clustering helpers of the search and refine passes (passes/clustering.py)."""
import torch

from ssnfx.passes.clustering import (
    fitting_clusters,
    kmeans_groups,
    pair_graph,
    superweight_clusters,
)


def test_priority_queue_merges_above_tau_only():
    s = torch.tensor([[1.0, 0.5, 0.05], [0.5, 1.0, 0.2], [0.05, 0.2, 1.0]])
    g = pair_graph(["a", "b", "c"], s)
    assert superweight_clusters(g, 0.1) == [["a", "b", "c"]]
    assert superweight_clusters(g, 0.3) == [["a", "b"], ["c"]]
    assert superweight_clusters(g, 0.9) == [["a"], ["b"], ["c"]]
    # Lowered until the clusters fit: here, two at most.
    assert fitting_clusters(g, 0.9, lambda c: len(c) <= 2) == ([["a", "b"], ["c"]],
                                                               0.49999999999999994)


def test_kmeans_fixed_count_and_silhouette_choice():
    flat = torch.zeros(5, 3).numpy()
    groups, scores, _ = kmeans_groups(flat + torch.randn(5, 3).numpy() * 1e-3,
                                      list("abcde"), None, 4, 0.99, 0)
    assert groups == [list("abcde")]  # no structure: one group
    two = torch.tensor([[0.0, 0], [0, .1], [5, 5], [5, 5.1]]).numpy()
    assert kmeans_groups(two, list("abcd"), None, 3, 0.2, 0)[0] == [["a", "b"], ["c", "d"]]
    # A split that does not fit the store is not chosen automatically, but a given count is.
    groups, _, fitting = kmeans_groups(two, list("abcd"), None, 3, 0.2, 0,
                                       fits=lambda g: len(g) == 1)
    assert groups == [list("abcd")] and fitting == []
    assert kmeans_groups(two, list("abcd"), 2, 3, 0.2, 0, fits=lambda g: False)[0] == \
        [["a", "b"], ["c", "d"]]
