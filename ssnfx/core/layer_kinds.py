"""Layer kinds: what ssnfx knows about each kind of layer, one object per kind.

Several passes need facts about the layer a parameter belongs to: the generators the standard
deviation PyTorch's default init gives it (a weight on the meta device has no values to measure)
and its fan-in (for a weight initialised to a constant, such as a zeroed head);
:func:`ssnfx.core.initialization.initialize` PyTorch's default init of its private parameters; the
planner whether it is a norm (private unless ``share_norms``); the trace which parameter owners
are known layers; the leaf call, rewrite and fold what to redo after its weights are swapped (an
RNN's cached list of flat weights). Each fact lives here once, in the kind's :class:`LayerKind`,
so the passes cannot disagree (they did: three fan-in formulas that differed for Bilinear, three
spellings of the RNN refresh).

A kind matches modules by class (``isinstance``, the most specific registered class wins) and
slots by the class name they recorded (:attr:`ssnfx.core.plan.Slot.kind`): its classes' names, its
extra ``names``, or, for classes it cannot list (Hugging Face's ``LlamaRMSNorm``), a substring
``pattern`` (``"Norm"``). A name matches exactly before it matches a pattern, and a kind
registered later before one registered earlier. Anything unmatched is :data:`DEFAULT_KIND`,
initialised as PyTorch initialises Linear and Conv. Adding a kind is a subclass and one
:func:`register_layer_kind` call.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn as nn

from ssnfx.core.graph_module import fetch_attr
from ssnfx.core.plan import Slot
from ssnfx.core.registry import Registry

__all__ = ["LayerKind", "LAYER_KINDS", "DEFAULT_KIND", "register_layer_kind", "kind_of",
           "traced_through", "uniform_std"]


def uniform_std(fan_in: int) -> float:
    """The standard deviation of ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, PyTorch's default init
    of Linear and Conv weights: ``1 / sqrt(3 * fan_in)`` (``fan_in`` at least 1).

    Example:
        >>> round(uniform_std(48), 4)
        0.0833
    """
    return 1.0 / math.sqrt(3.0 * max(1, fan_in))


class LayerKind:
    """One kind of layer and everything ssnfx knows about it. Subclass it and
    :func:`register_layer_kind` it; the base class is the generic kind (Linear-like init).

    Attributes:
        name: the registry's key.
        classes: the module classes of this kind (subclasses match too).
        names: slot kinds (recorded class names) of this kind besides the classes' own names.
        patterns: substrings of a recorded class name that make it this kind when no kind
            names it exactly.
        is_norm: a normalisation layer: its parameters stay private unless ``share_norms``.
        inlined: the classes of this kind (exactly these, not their subclasses, which may
            override ``forward`` with code torch.fx cannot trace) whose ``forward`` the trace
            goes through, so that their parameters become ``get_attr`` nodes a rewrite
            replaces; torch.nn's other modules stay leaves, reached by a functional call.

    Example:
        >>> import torch
        >>> class Scale(torch.nn.Module):
        ...     def __init__(self, n):
        ...         super().__init__()
        ...         self.weight = torch.nn.Parameter(torch.ones(n, n))
        >>> class ScaleKind(LayerKind):
        ...     name = "Scale"
        ...     classes = (Scale,)
        ...     def default_std(self, slot):
        ...         return 0.5
        >>> kind = ScaleKind()
        >>> kind.matches(Scale(3)), kind.matches_name("Scale")
        (True, True)
        >>> kind.default_std(Slot("s.weight", (3, 3), "weight", "Scale", 0))
        0.5
    """

    name: ClassVar[str] = "default"
    classes: ClassVar[tuple[type[nn.Module], ...]] = ()
    names: ClassVar[tuple[str, ...]] = ()
    patterns: ClassVar[tuple[str, ...]] = ()
    is_norm: ClassVar[bool] = False
    inlined: ClassVar[tuple[type[nn.Module], ...]] = ()

    def matches(self, module: nn.Module) -> bool:
        """Whether ``module`` is an instance of one of :attr:`classes`."""
        return isinstance(module, self.classes)

    def matches_name(self, kind: str) -> bool:
        """Whether a slot whose recorded kind is ``kind`` is exactly of this kind."""
        return kind in self.names or any(kind == c.__name__ for c in self.classes)

    def fan_in(self, shape: tuple[int, ...]) -> int:
        """The inputs each output of a weight of ``shape`` sums over, at least 1: PyTorch's
        ``fan_in`` (``shape[1:]``'s size; 1 for a vector).

        Example:
            >>> kind_of("Conv2d").fan_in((16, 3, 3, 3)), kind_of("Bilinear").fan_in((5, 4, 6))
            (27, 4)
        """
        return max(1, math.prod(shape[1:]))

    def default_std(self, slot: Slot) -> float:
        """The standard deviation PyTorch's default init gives ``slot`` (here
        :func:`uniform_std` of its fan-in): what a weight that holds no values, on the meta
        device, is generated at.

        Example:
            >>> round(kind_of("Linear").default_std(Slot("fc.weight", (10, 48), "weight",
            ...                                          "Linear", 0)), 4)
            0.0833
        """
        return uniform_std(self.fan_in(slot.shape))

    def init_private(self, tensor: torch.Tensor, slot: Slot, model: nn.Module,
                     slots: Mapping[str, Slot]) -> bool:
        """Give ``tensor``, the private parameter ``slot`` of ``model``, PyTorch's default init
        for this kind, in place (under ``torch.no_grad``); False if there is none, and
        ``tensor`` is left as it is.

        Here: a weight of two or more dimensions ``U(+-1/sqrt(fan_in))`` (Linear, Conv*,
        Bilinear), a bias the same from its weight's fan-in (``slots`` by name).

        Example:
            >>> import torch
            >>> w = Slot("fc.weight", (3, 4), "weight", "Linear", 0)
            >>> b = Slot("fc.bias", (3,), "bias", "Linear", 0)
            >>> t = torch.zeros(3)
            >>> with torch.no_grad():
            ...     kind_of(b).init_private(t, b, torch.nn.Module(), {s.name: s for s in (w, b)})
            True
            >>> bool(t.abs().max() <= 0.5)
            True
        """
        if slot.role == "weight" and tensor.dim() >= 2:
            bound = 1 / math.sqrt(self.fan_in(tuple(tensor.shape)))
            tensor.uniform_(-bound, bound)
            return True
        if slot.role == "bias":
            weight = slots.get(slot.name.rpartition(".")[0] + ".weight")
            if weight is not None and len(weight.shape) >= 2:
                bound = 1 / math.sqrt(kind_of(weight).fan_in(weight.shape))
                tensor.uniform_(-bound, bound)
                return True
        return False

    def after_weights_change(self, module: nn.Module) -> None:
        """Redo what ``module`` caches about its parameters after some were replaced (by
        ``functional_call``, or by assigning new ones); nothing for most kinds.

        Example:
            >>> import torch
            >>> lstm = torch.nn.LSTM(2, 3)
            >>> kind_of(lstm).after_weights_change(lstm)   # LSTM: its flat weights again
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _Parameter(LayerKind):
    """A Parameter the model uses directly (``F.linear(x, self.w)``): its init is the model's."""

    name = "Parameter"
    names = ("Parameter",)

    def init_private(self, tensor: torch.Tensor, slot: Slot, model: nn.Module,
                     slots: Mapping[str, Slot]) -> bool:
        return False


class _Linear(LayerKind):
    name = "Linear"
    classes = inlined = (nn.Linear,)


class _Conv(LayerKind):
    """Conv*, ConvTranspose*: PyTorch's fan-in is ``shape[1:]`` for both (a transposed
    convolution's weight is ``(in, out / groups, *kernel)``)."""

    name = "Conv"
    classes = inlined = (nn.Conv1d, nn.Conv2d, nn.Conv3d,
                         nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class _Bilinear(LayerKind):
    """``Bilinear.reset_parameters``: ``U(+-1/sqrt(in1_features))`` for weight and bias."""

    name = "Bilinear"
    classes = inlined = (nn.Bilinear,)

    def fan_in(self, shape: tuple[int, ...]) -> int:
        return max(1, shape[1]) if len(shape) > 1 else 1


class _Embedding(LayerKind):
    """Embedding tables start at ``N(0, 1)``."""

    name = "Embedding"
    classes = (nn.Embedding, nn.EmbeddingBag)
    inlined = (nn.Embedding,)
    patterns = ("Embedding",)

    def default_std(self, slot: Slot) -> float:
        return 1.0

    def init_private(self, tensor: torch.Tensor, slot: Slot, model: nn.Module,
                     slots: Mapping[str, Slot]) -> bool:
        if slot.role == "weight":
            nn.init.normal_(tensor)
            return True
        return super().init_private(tensor, slot, model, slots)


class _Recurrent(LayerKind):
    """RNN, GRU, LSTM: every parameter ``U(+-1/sqrt(hidden_size))`` (``RNNBase.reset_parameters``);
    their weights are cached in a list, rebuilt after the parameters change (``functional_call``
    leaves it pointing at the generated tensors, which keeps a step's autograd graph alive and
    makes ``deepcopy`` fail on non-leaf tensors)."""

    #: Gates stacked in a weight's rows: its ``shape[0]`` is ``gates * hidden_size``.
    gates: ClassVar[int] = 1

    def default_std(self, slot: Slot) -> float:
        return uniform_std(slot.shape[0] // self.gates)

    def init_private(self, tensor: torch.Tensor, slot: Slot, model: nn.Module,
                     slots: Mapping[str, Slot]) -> bool:
        owner = fetch_attr(model, slot.name.rpartition(".")[0])
        bound = 1 / math.sqrt(owner.hidden_size) if owner.hidden_size > 0 else 0.0
        tensor.uniform_(-bound, bound)
        return True

    def after_weights_change(self, module: nn.Module) -> None:
        module._init_flat_weights()


class _RNN(_Recurrent):
    name = "RNN"
    classes = (nn.RNN,)


class _GRU(_Recurrent):
    name = "GRU"
    classes = (nn.GRU,)
    gates = 3


class _LSTM(_Recurrent):
    name = "LSTM"
    classes = (nn.LSTM,)
    gates = 4


#: MultiheadAttention's input projections (packed or separate), initialised Xavier-uniform.
_MHA_INPUT_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


class _MultiheadAttention(LayerKind):
    """``MultiheadAttention._reset_parameters``: input projections Xavier-uniform, ``bias_k``
    and ``bias_v`` Xavier-normal, biases zero; ``out_proj.weight`` keeps Linear's default."""

    name = "MultiheadAttention"
    classes = (nn.MultiheadAttention,)

    def default_std(self, slot: Slot) -> float:
        if slot.role in _MHA_INPUT_WEIGHTS:
            return math.sqrt(2.0 / (slot.shape[0] + slot.shape[1]))
        return super().default_std(slot)

    def init_private(self, tensor: torch.Tensor, slot: Slot, model: nn.Module,
                     slots: Mapping[str, Slot]) -> bool:
        if slot.role in _MHA_INPUT_WEIGHTS:
            nn.init.xavier_uniform_(tensor)
        elif slot.role in ("bias_k", "bias_v"):
            nn.init.xavier_normal_(tensor)
        elif slot.role == "weight":
            bound = 1 / math.sqrt(self.fan_in(tuple(tensor.shape)))
            tensor.uniform_(-bound, bound)
        else:  # in_proj_bias, out_proj.bias
            tensor.zero_()
        return True


class _Norm(LayerKind):
    """Normalisation layers; by name, any class whose name has ``Norm`` in it (timm's
    ``LayerNorm2d``, Hugging Face's ``LlamaRMSNorm``)."""

    name = "Norm"
    classes = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
               nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
    patterns = ("Norm",)
    is_norm = True


#: The kind of anything no registered kind matches: Linear-like init, ``shape[1:]`` fan-in.
DEFAULT_KIND = LayerKind()


def _check_kind(name: str, kind: LayerKind) -> None:
    if name == DEFAULT_KIND.name:
        raise ValueError(f"{type(kind).__name__} needs a name of its own, got {name!r}")
    if not set(kind.inlined) <= set(kind.classes):
        raise ValueError(f"{type(kind).__name__}.inlined must list classes of its own "
                         f"(classes={kind.classes}), got {kind.inlined}")


#: The registered layer kinds by name.
LAYER_KINDS: Registry[LayerKind] = Registry(
    "layer kind", "ssnfx.core.layer_kinds.register_layer_kind", _check_kind)


def register_layer_kind(kind: LayerKind) -> LayerKind:
    """Make ``kind`` known to the trace, the planner, the generators, :func:`initialize
    <ssnfx.core.initialization.initialize>` and fold (replacing a kind so named).

    Example:
        >>> sorted(LAYER_KINDS)
        ['Bilinear', 'Conv', 'Embedding', 'GRU', 'LSTM', 'Linear', 'MultiheadAttention', \
'Norm', 'Parameter', 'RNN']
    """
    return LAYER_KINDS.register(kind.name, kind)


def traced_through(module: nn.Module) -> bool:
    """Whether the trace goes through ``module``'s forward: its exact class is one a registered
    kind lists in :attr:`LayerKind.inlined`.

    Example:
        >>> import torch
        >>> traced_through(torch.nn.Linear(2, 2)), traced_through(torch.nn.LSTM(2, 2))
        (True, False)
    """
    return any(type(module) in kind.inlined for kind in LAYER_KINDS.values())


def kind_of(what: Slot | str | nn.Module) -> LayerKind:
    """The layer kind of a slot (by its recorded class name, :attr:`Slot.kind
    <ssnfx.core.plan.Slot.kind>`), of such a name, or of a module (by class); :data:`DEFAULT_KIND`
    when no registered kind matches.

    Example:
        >>> import torch
        >>> kind_of("LSTM").name, kind_of("LlamaRMSNorm").is_norm, kind_of("Conv1D").name
        ('LSTM', True, 'default')
        >>> kind_of(torch.nn.ConvTranspose2d(2, 3, 3)).name
        'Conv'
    """
    kinds = list(reversed(LAYER_KINDS.values()))
    if isinstance(what, nn.Module):
        # The most specific registered class: a kind for a subclass wins over its base's.
        for cls in type(what).__mro__:
            for kind in kinds:
                if cls in kind.classes:
                    return kind
        return DEFAULT_KIND
    name = what.kind if isinstance(what, Slot) else what
    for kind in kinds:
        if kind.matches_name(name):
            return kind
    for kind in kinds:
        if any(p in name for p in kind.patterns):
            return kind
    return DEFAULT_KIND


for _kind in (_Parameter(), _Linear(), _Conv(), _Bilinear(), _Norm(), _Embedding(), _RNN(),
              _GRU(), _LSTM(), _MultiheadAttention()):
    register_layer_kind(_kind)
del _kind
