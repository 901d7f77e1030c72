"""search: learn where to share from data (Neural Parameter Allocation Search).

The search trains a model for a few epochs on the user's data and loss, measures its layers, and
derives the plan's sharing from a layer-similarity graph (networkx). Which model and which
measurement is the method's (:attr:`ssnfx.core.methods.Method.statistic`, or
``SearchConfig.statistic``):

* **SSN Sec. 3.2** (``"coefficients"``, SSN's): a *provisional* model puts every shareable
  slot in one group whose store, sized on its own (``SearchConfig.store``: by default as many
  parameters as the shared layers' weights, not the target budget), is split into P = 4 equal,
  non-overlapping candidates that every layer bilinearly resizes, up or down, to its weight's
  shape and mixes with its coefficients (Emb by default): a ``selection="resized"`` group of
  the same :class:`~ssnfx.core.generator.GroupGenerator` that final models use
  (:mod:`ssnfx.passes.provisional`). At the end the
  search reads each layer's representation phi (Emb's layer embedding) and groups the layers by
  K-means over phi with a fixed count (``ShareConfig.groups``, else 3 as in SSN's image
  results; the silhouette choice is an option); the final plan splits its budget in proportion
  to the weights each group's layers represent (SSN Sec. 3.2). Over the search's last epoch
  (``SearchConfig.measure``) it also sums the gradient each layer sends to its coefficients
  over the common candidates, ``[<dL/dW_i, C_k>]_k``, whose cosines give SuperWeight clusters
  when an SWN plan asks for this statistic.
* **SWN Sec. 2.2.1** (``"superweights"``, SWN's): a hard-shared SWN model in one cluster (the
  model SWN trains in, no warping) trains for a few epochs, and over the next epoch two layers
  are compared by the gradients they send to the SuperWeights they share (Eq. 2, summed over
  the epoch); the priority queue with threshold tau (0.1) gives the SuperWeight clusters.

``SearchConfig(guard=True)``, the default, accepts only groupings whose every group can hold its
largest layer (a rule of this project, not the papers', chosen by measurement); the plan's
``measured`` says what was done, and :func:`similarity_graph` rebuilds the graph from the plan
so that a decision can be inspected and replayed without searching.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import networkx as nx
import numpy as np
import torch
import torch.distributed as dist
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ssnfx.core._progress import progress
from ssnfx.core.batches import losses
from ssnfx.core.combiners import COMBINER_REGISTRY
from ssnfx.core.config import ShareConfig
from ssnfx.core.errors import BudgetError, SearchError
from ssnfx.core.methods import get_method
from ssnfx.core.plan import SharingPlan, Slot
from ssnfx.passes.clustering import (
    fitting_clusters,
    kmeans_groups,
    pair_graph,
    superweight_clusters,
)
from ssnfx.passes.planner import make_plan, resolve_method
from ssnfx.passes.provisional import provisional_model
from ssnfx.passes.rewriting import rewrite
from ssnfx.passes.statistics import CoefficientGradients, GradientCovariation, SuperWeightGradients
from ssnfx.passes.tracing import as_traced

__all__ = ["SearchConfig", "STATISTICS", "FEATURES", "DEFAULT_GROUPS", "search",
           "similarity_graph"]

#: What a search can train and measure (see :class:`SearchConfig`).
STATISTICS = ("coefficients", "superweights", "covariation")
#: What K-means clusters the layers by (see :class:`SearchConfig`).
FEATURES = ("phi", "displacement")
#: The groups K-means forms when neither ``ShareConfig.groups`` nor the silhouette choice
#: gives a count: SSN's image results use 3.
DEFAULT_GROUPS = 3


@dataclass
class SearchConfig:
    """Knobs of the search pass (SSN Sec. 3.2 and SWN Sec. 2.2 by default).

    Args:
        epochs: how long the search model trains when ``steps`` is None: this many passes over
            the data (SSN learns its groups "after a few epochs"; SWN measures Eq. 2 "after
            training for a few epochs"); data without a length trains 200 steps.
        steps: training steps of the search model; overrides ``epochs``.
        measure: the gradient statistics are summed over this last part of the search, in
            epochs (SWN: "aggregated over an epoch", after the epochs before it); the layer
            representations are read at its end.
        lr: Adam learning rate of the provisional model.
        store: the provisional model's store, sized on its own rather than at the target
            budget (the SSN reference code learns groups with its own store): a float is a
            fraction of the weights the shared layers represent, an int a count; split into
            ``ShareConfig.candidates`` equal candidates.
        features: what K-means clusters: ``"phi"``, the layer representations themselves (SSN
            Sec. 3.2), or ``"displacement"``, how far each moved from its orthogonal start
            (unit length), which separates layers after a short search where phi has barely
            left its start.
        silhouette: choose the number of groups by silhouette score (up to ``max_groups``; one
            group when none reaches ``min_silhouette``) instead of ``ShareConfig.groups`` (3
            when None, SSN's image results).
        max_groups: the most groups the silhouette choice considers.
        min_silhouette: below this best silhouette score, the silhouette choice keeps one group.
        guard: accept a grouping only if every group's store can hold its largest layer (and
            split the budget largest-first, ``ShareConfig.split``); off (the papers): the
            groups K-means finds, SSN plans splitting the budget in proportion to the weights
            each group's layers represent (SSN Sec. 3.2). On by default, by measurement: on
            ResNetFM(32) at 10% (3 seeds) the papers' searches without it split the budget
            until a group starved (SSN Sec. 3.2 78.6% against 80.1% with it; SWN Eq. 2 56.9 ±
            20.8% against 80.5%, two seeds near 40%); at 100% it changed nothing measurable
            (benchmarks/results/search_faithful.md). The plan records the choice.
        tau: SuperWeight-cluster threshold on gradient similarity (SWN Sec. 2.2.1 uses 0.1).
        combiner: the learned combiner of the provisional model (``"emb"``, ``"wavg"``,
            ``"linear"`` or any registered one that learns); ``None``: Emb (SSN Sec. 3.2).
        statistic: what the search trains and measures: ``"coefficients"``, the provisional
            model of SSN Sec. 3.2 (groups by K-means over phi, and the gradient each slot sends
            to its coefficients over the common candidates), or ``"superweights"``, SWN Eq. 2
            (a hard-shared SWN model in one cluster, slots compared by the gradients they send
            to the SuperWeights they share; no groups), or ``"covariation"``, on the method's
            own search model: how the sizes of the slots' weight gradients rise and fall
            together from step to step (:class:`ssnfx.passes.statistics.GradientCovariation`;
            groups and clusters alike by K-means over those correlations); ``None``: the
            method's own (:attr:`ssnfx.core.methods.Method.statistic`: SSN the first, SWN the
            second).
        progress: show a progress bar (on a terminal).

    What the search shares with the final model comes from its :class:`ShareConfig`: the
    number of groups (``groups``), the candidates P, the embedding size and the seed.

    Example:
        >>> SearchConfig.from_json(SearchConfig(steps=50).to_json()) == SearchConfig(steps=50)
        True
    """

    epochs: float = 2.0
    steps: int | None = None
    measure: float = 1.0
    lr: float = 1e-2
    store: float | int = 1.0
    features: str = "phi"
    silhouette: bool = False
    max_groups: int = 8
    min_silhouette: float = 0.2
    guard: bool = True
    tau: float = 0.1
    combiner: str | None = None
    statistic: str | None = None
    progress: bool = True
    version: int = field(default=3)

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any, optional: bool = False) -> None:
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SearchError(f"SearchConfig.{name} must be a positive int"
                                  f"{' or None' if optional else ''}, got {value!r}")

        positive_int("steps", self.steps, optional=True)
        positive_int("max_groups", self.max_groups)
        for name in ("epochs", "store", "measure"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise SearchError(f"SearchConfig.{name} must be a positive number, got "
                                  f"{value!r}")
        if self.features not in FEATURES:
            raise SearchError(f"SearchConfig.features must be one of {FEATURES}, got "
                              f"{self.features!r}")
        for name in ("silhouette", "guard", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise SearchError(f"SearchConfig.{name} must be True or False, got "
                                  f"{getattr(self, name)!r}")
        if self.combiner is not None and (self.combiner not in COMBINER_REGISTRY
                                          or not COMBINER_REGISTRY[self.combiner].learned):
            learned = sorted(k for k, c in COMBINER_REGISTRY.items() if c.learned)
            raise SearchError(f"SearchConfig.combiner must be a registered combiner that "
                              f"learns ({learned}) or None, got {self.combiner!r}: the search "
                              f"compares what the layers' coefficients learn")
        if self.statistic is not None and self.statistic not in STATISTICS:
            raise SearchError(f"SearchConfig.statistic must be one of {STATISTICS} or None, got "
                              f"{self.statistic!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise SearchError(f"SearchConfig.lr must be a positive number, got {self.lr!r}")
        for name in ("tau", "min_silhouette"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not -1 <= value <= 1:
                raise SearchError(f"SearchConfig.{name} is compared with cosines or silhouette "
                                  f"scores, so it must be a number in [-1, 1], got {value!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @staticmethod
    def from_json(text: str) -> "SearchConfig":
        d = json.loads(text)
        known = {f.name for f in fields(SearchConfig)}
        moved = sorted(set(d) & {"groups", "candidates", "emb_dim", "seed"})
        if moved:
            raise SearchError(f"SearchConfig field(s) {moved} are ShareConfig's since version "
                              f"2 (the search and the final model share them): set them there")
        unknown = sorted(set(d) - known)
        if unknown:
            raise SearchError(f"unknown SearchConfig field(s) {unknown}; known: {sorted(known)}")
        return SearchConfig(**d)


def _default_steps(data: Iterable[Any], epochs: float) -> int:
    try:
        return max(1, round(epochs * len(data)))  # type: ignore[arg-type]
    except TypeError:
        return 200


def _measured_steps(data: Iterable[Any], steps: int, sc: SearchConfig) -> int:
    """How many of the last ``steps`` the gradient statistics are summed over."""
    try:
        return min(steps, max(1, round(sc.measure * len(data))))  # type: ignore[arg-type]
    except TypeError:
        return max(1, steps // 2)


def search(gm: fx.GraphModule, budget: float | int, data: Iterable[Any],
           loss_fn: Callable[..., torch.Tensor], config: ShareConfig | None = None,
           search_config: SearchConfig | None = None) -> SharingPlan:
    """Learn a SharingPlan from data: groups (SSN) or SuperWeight clusters (SWN).

    Args:
        gm: a traced model (:func:`ssnfx.trace`); a plain ``nn.Module`` is traced.
        budget: as in :func:`ssnfx.make_plan`.
        data: an iterable of ``(inputs, targets)`` batches (a DataLoader); inputs may be a
            tensor, a tuple of positional inputs or a dict of keyword inputs.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        config: the final plan's :class:`ShareConfig` (method, combiner, ...).
        search_config: the search's own knobs.

    Returns:
        The plan, whose ``measured`` holds the statistics, groups, clusters and cost.

    Raises:
        SearchError: the data or loss cannot be used (named), or the statistics are not finite.

    Example:
        >>> import torch, ssnfx
        >>> from ssnfx.data import digits
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32),
        ...                           torch.nn.ReLU(), torch.nn.Linear(32, 10))
        >>> plan = ssnfx.search(ssnfx.trace(net), 0.5, digits()[0],
        ...                     torch.nn.functional.cross_entropy,
        ...                     search_config=ssnfx.SearchConfig(steps=10, progress=False))
        >>> plan.shared_params <= plan.budget, plan.measured["steps"]
        (True, 10)
    """
    sc = search_config or SearchConfig()
    gm = as_traced(gm)
    # The method first (method=None: SWN where the budget allows): it decides what is searched.
    config = resolve_method(gm, budget, config or ShareConfig())
    steps = sc.steps if sc.steps is not None else _default_steps(data, sc.epochs)
    measured_steps = _measured_steps(data, steps, sc)
    method = get_method(config.method)
    statistic = sc.statistic or method.statistic
    if statistic == "superweights" and method.shares_by == "groups":
        raise SearchError(f"method {config.method!r} shares by groups, which the statistic "
                          f"'superweights' (SWN Eq. 2) does not learn; use SearchConfig("
                          f"statistic='coefficients') or None")
    # The covariation is measured on the method's own search model.
    train_and_measure = {"coefficients": _coefficient_search,
                         "superweights": _superweight_search}[
        method.statistic if statistic == "covariation" else statistic]
    measured, graph = train_and_measure(gm, budget, data, loss_fn, config, sc, steps,
                                        measured_steps)
    # SSN Sec. 3.2 splits the budget in proportion to the weights each group represents; the
    # guard keeps ShareConfig.split (largest-first by default, SWN's reference code).
    final = config if sc.guard or method.shares_by != "groups" else replace(
        config, split="proportional")

    def plannable(candidate: list[list[str]]) -> bool:
        try:
            plan = make_plan(gm, budget, final, groups=candidate)
        except BudgetError:  # more groups than the coefficients' budget allows
            return False
        # The guard: every cluster's store holds its largest SuperWeight (else the planner
        # shrinks all of them alike: upsampled, starved).
        return not sc.guard or all(g.numel >= max(r * c for r, c in g.superweights)
                                   for g in plan.groups)

    groups, scores, fitting = _kmeans_groups(gm, budget, config, sc, statistic, measured, graph,
                                             plannable)
    if statistic == "covariation":  # the K-means groups serve as clusters too
        clusters, tau = groups, None
    elif method.shares_by == "clusters":
        clusters, tau = fitting_clusters(graph, sc.tau, plannable)
    else:  # recorded for inspection only: the plan shares by groups
        clusters, tau = superweight_clusters(graph, sc.tau), sc.tau
    measured.update({
        "statistic": statistic, "groups": groups, "silhouette": scores,
        "fitting_group_counts": fitting,
        "superweight_clusters": clusters, "tau": sc.tau, "tau_used": tau,
        "guard": sc.guard, "split": final.split, "search_config": asdict(sc)})
    chosen = {"groups": groups, "clusters": clusters}[method.shares_by]
    return make_plan(gm, budget, final, groups=chosen, measured=measured)


def _kmeans_groups(gm: fx.GraphModule, budget: float | int, config: ShareConfig,
                   sc: SearchConfig, statistic: str, measured: dict[str, Any], graph: nx.Graph,
                   plannable: Callable[[list[list[str]]], bool]
                   ) -> tuple[list[list[str]] | None, dict[str, float], list[int]]:
    """Groups by K-means over the layers' features: phi (SSN Sec. 3.2) or their covariation
    rows; None for Eq. 2, which learns none. ``config.groups`` of them (else
    :data:`DEFAULT_GROUPS`), or the count by silhouette score; fewer where the budget cannot
    plan that many (their coefficients). Returns the groups, the silhouette scores and the
    counts the guard let through."""
    names = measured["slots"]
    if statistic == "covariation":  # each layer's correlations with every other
        features = np.array(measured["covariation"])
    elif statistic == "coefficients":  # SSN Sec. 3.2: the layer representations
        features = np.array([graph.nodes[n]["embedding"] for n in names])
    else:
        return None, {}, []
    fits = None
    if sc.guard:  # the one-group store at the target budget can hold each group's largest layer
        store = make_plan(gm, budget, replace(config, strategy="single")).groups[0].numel
        size = {n: graph.nodes[n]["numel"] for n in names}

        def fits(candidate: list[list[str]]) -> bool:
            return sum(max(size[n] for n in g) for g in candidate) <= store

    count = None if sc.silhouette else (config.groups or DEFAULT_GROUPS)
    groups, scores, fitting = kmeans_groups(features, names, count, sc.max_groups,
                                            sc.min_silhouette, config.seed, fits)
    # K groups may cost more coefficients than the budget holds: the most that fit, by K-means.
    for k in range(len(groups) - 1, 0, -1):
        if plannable(groups):
            break
        groups = kmeans_groups(features, names, k, sc.max_groups, sc.min_silhouette,
                               config.seed)[0]
    return groups, scores, fitting


def _train(model: fx.GraphModule, data: Iterable[Any], loss_fn: Callable[..., torch.Tensor],
           steps: int, measured_steps: int, sc: SearchConfig,
           after_backward: Callable[[bool], list[str]]) -> dict[str, Any]:
    """Train a search model for ``steps`` batches with Adam; ``after_backward(measure)``
    records the step's statistics (summed over the last ``measured_steps``) and returns the
    slots whose gradients were not finite."""
    model.train()
    trained: nn.Module = model
    if dist.is_available() and dist.is_initialized():
        trained = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=sc.lr)
    history: list[float] = []
    bar = progress(total=steps, desc="ssnfx search", enabled=sc.progress)
    start = time.perf_counter()
    for step, loss in losses(trained, data, loss_fn, steps, "search"):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Checked every step, not only at the end: a plan is never built from NaN statistics,
        # and a non-finite gradient would poison the store at optimizer.step() anyway.
        bad = after_backward(step >= steps - measured_steps)
        if bad:
            raise SearchError(f"the gradients of {bad[:3]}{'...' if len(bad) > 3 else ''} "
                              f"are not finite at search step {step} although the loss is; the "
                              f"search stopped and returns no plan (check loss_fn for operations "
                              f"with infinite gradients, such as sqrt or log at 0)")
        optimizer.step()
        history.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]:.4f}")
    if bar is not None:
        bar.close()
    return {"steps": steps, "measured_steps": measured_steps,
            "seconds": round(time.perf_counter() - start, 3),
            "epoch_fraction": _epoch_fraction(steps, data),
            "loss_first": history[0], "loss_last": history[-1]}


def _non_finite_error() -> SearchError:
    return SearchError("the search measured non-finite layer statistics; it stopped and returns "
                       "no plan (lower SearchConfig.lr, or check the data and loss_fn)")


def _coefficient_search(gm: fx.GraphModule, budget: float | int, data: Iterable[Any],
                        loss_fn: Callable[..., torch.Tensor], config: ShareConfig,
                        sc: SearchConfig, steps: int, measured_steps: int
                        ) -> tuple[dict[str, Any], nx.Graph]:
    """Train the provisional model (SSN Sec. 3.2, whatever the budget); read the layer
    representations phi and the coefficient gradients. Returns what was measured and the
    layer-similarity graph."""
    model = provisional_model(gm, config, sc.combiner or "emb", sc.store)
    generator = model.ssnfx.g0
    names = list(generator.names)
    slots = {s.name: s for s in model.ssnfx.plan.slots if s.shared}

    def representation() -> torch.Tensor:
        # The combiner's per-row parameter (Emb's layer embeddings, WAvg's logits, linear's
        # alpha); slot i has coefficient row i in the one-tile-per-slot layout.
        return getattr(generator, generator.combiner.row_parameters[0]).detach() \
            .reshape(len(names), -1).clone()

    start = representation()
    stats = CoefficientGradients(generator)
    covariation = GradientCovariation(names)
    generator.hook = covariation.record

    def after_backward(measure: bool) -> list[str]:
        stats.step(measure)
        return stats.non_finite(names) or covariation.step(measure)

    try:
        measured = _train(model, data, loss_fn, steps, measured_steps, sc, after_backward)
    finally:
        stats.close()
        generator.hook = None
    gradient = stats.similarity()
    phi = representation()
    if sc.features == "phi":  # SSN Sec. 3.2: K-means "on all the layer representations"
        features = phi
    else:  # how far each slot's representation moved from its orthogonal start, unit length
        features = F.normalize(phi - start, dim=1)
    co = covariation.similarity()
    if not (torch.isfinite(gradient).all() and torch.isfinite(features).all()
            and torch.isfinite(co).all()):
        raise _non_finite_error()
    unit = F.normalize(features, dim=1)
    measured.update({
        "model": "provisional", "combiner": generator.combiner.name, "slots": names,
        "features": sc.features, "search_store": generator.store.numel(),
        "embeddings": _rounded(features), "embedding_similarity": _rounded(unit @ unit.T),
        "gradient_similarity": _rounded(gradient), "covariation": _rounded(co)})
    # Groups and clusters are derived from the layer-similarity graph, the same graph that
    # similarity_graph(plan) rebuilds from the plan: a replay sees what the search saw.
    return measured, _layer_graph(slots, measured)


def _superweight_search(gm: fx.GraphModule, budget: float | int, data: Iterable[Any],
                        loss_fn: Callable[..., torch.Tensor], config: ShareConfig,
                        sc: SearchConfig, steps: int, measured_steps: int
                        ) -> tuple[dict[str, Any], nx.Graph]:
    """SWN Sec. 2.2.1: train the model as SWN builds it, every slot in one SuperWeight cluster
    with hard sharing, and compare the gradients slots send to the SuperWeights they share
    (Eq. 2), summed over the last ``measured_steps``."""
    combiner = sc.combiner or (config.resolved_combiner
                               if COMBINER_REGISTRY[config.resolved_combiner].learned
                               else "linear")
    method = get_method(config.method)
    hard = {"hard_sharing": True} if "hard_sharing" in method.options else {}
    plan = make_plan(gm, budget, replace(config, strategy="single", groups=None,
                                         options={**config.options, **hard}, combiner=combiner,
                                         generation="batched"))
    model = rewrite(gm, plan)
    group = plan.groups[0]
    slots = {s.name: s for s in plan.slots if s.shared}
    names = list(slots)
    stats = SuperWeightGradients(group, slots)
    covariation = GradientCovariation(names)
    generator = getattr(model.ssnfx, group.name)

    def record(i: int, grad: torch.Tensor) -> None:
        stats.record(i, grad)
        covariation.record(i, grad)

    def after_backward(measure: bool) -> list[str]:
        return stats.step(measure) or covariation.step(measure)

    generator.hook = record
    try:
        measured = _train(model, data, loss_fn, steps, measured_steps, sc, after_backward)
    finally:
        generator.hook = None
    gradient, co = stats.similarity(names), covariation.similarity()
    if not (torch.isfinite(gradient).all() and torch.isfinite(co).all()):
        raise _non_finite_error()
    measured.update({"model": "hard-shared", "combiner": combiner, "slots": names,
                     "gradient_similarity": _rounded(gradient), "covariation": _rounded(co)})
    return measured, _layer_graph(slots, measured)


def _epoch_fraction(steps: int, data: Iterable[Any]) -> float | None:
    try:
        return round(steps / len(data), 4)  # type: ignore[arg-type]
    except TypeError:
        return None


def _rounded(m: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 4) for v in row] for row in m]


def _layer_graph(slots: dict[str, Slot], measured: dict[str, Any]) -> nx.Graph:
    """The layer-similarity graph of what a search measured: nodes are slots (shape, parameter
    count, learned embedding), edges carry ``gradient`` similarity and, where measured,
    ``embedding`` similarity and gradient ``covariation``."""
    names = measured["slots"]
    graph = pair_graph(names, measured["gradient_similarity"])
    for name in names:
        graph.nodes[name].update(shape=slots[name].shape, numel=slots[name].numel)
    for key, attribute in (("embedding_similarity", "embedding"), ("covariation", "covariation")):
        if key in measured:  # (Eq. 2's model learns no embeddings; older plans: no covariation)
            for i, j in itertools.combinations(range(len(names)), 2):
                graph.edges[names[i], names[j]][attribute] = measured[key][i][j]
    if "embeddings" in measured:
        for name, embedding in zip(names, measured["embeddings"]):
            graph.nodes[name]["embedding"] = embedding
    return graph


def similarity_graph(plan: SharingPlan) -> nx.Graph:
    """The layer-similarity graph a search measured and derived the plan's groups from: nodes
    are slots (shape, parameter count, learned embedding, group), edges carry ``embedding`` and
    ``gradient`` similarity.

    Example:
        >>> import torch, ssnfx
        >>> from ssnfx.data import digits
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16),
        ...                           torch.nn.Linear(16, 10))
        >>> plan = ssnfx.search(ssnfx.trace(net), 0.5, digits()[0],
        ...                     torch.nn.functional.cross_entropy,
        ...                     search_config=ssnfx.SearchConfig(steps=5, progress=False))
        >>> g = ssnfx.passes.similarity_graph(plan)
        >>> sorted(g.nodes), g.number_of_edges()
        (['1.weight', '2.weight'], 1)
    """
    if "gradient_similarity" not in plan.measured:
        raise SearchError("this plan was not made by a search: it has no measured similarities")
    graph = _layer_graph({s.name: s for s in plan.slots}, plan.measured)
    for g in plan.groups:
        for name in g.slots:
            if name in graph:
                graph.nodes[name]["group"] = g.name
    return graph
