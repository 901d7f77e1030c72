"""Several models side by side in one module, the form in which ssnfx shares a store among
models (SWN Sec. 4): :class:`Members` and :func:`member_output`, the marker that names each
member's output in a traced graph. The recipes built on them are in :mod:`ssnfx.ensemble`; the
member-extraction pass is :mod:`ssnfx.passes.members`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.fx as fx
import torch.nn as nn

from ssnfx.core.errors import EnsembleError
from ssnfx.core.markers import STORE, Meta

__all__ = ["Members", "member_output", "as_members"]


def member_output(name: str, value: Any) -> Any:
    """Identity: marks ``value`` as the output of member ``name`` in a traced graph.

    torch.fx records each call as a node (``member_output('0', fc)``), which
    :func:`member` and :func:`select_members` find; it costs nothing at run time.

    Example:
        >>> member_output("small", 3)
        3
    """
    return value


fx.wrap("member_output")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "." in name or name == STORE:
        raise EnsembleError(f"member names must be non-empty strings without '.', other than "
                            f"{STORE!r} (the name of the parameter store); got {name!r}: pass a "
                            f"list, or a dict with such keys")
    return name


class Members(nn.Module):
    """Several models side by side: ``forward(x)`` returns every member's output for ``x``.

    The members are submodules named ``"0"``, ``"1"``, ... (from a list or tuple) or by the keys
    of a dict; the outputs are a tuple in that order. :func:`ssnfx.share` builds one from a list or
    dict; pass one to :func:`ssnfx.trace` or :func:`ssnfx.load` (``ssnfx.load(Members([...]),
    path)`` re-creates a shared ensemble from a checkpoint). Members take one input (a tensor, or
    one structure of tensors that each member indexes itself).

    Args:
        members: the models: a list or tuple, a dict of name to model, an ``nn.ModuleList`` or an
            ``nn.ModuleDict``. They may differ in family, width and depth; they must not share
            parameters with each other (each member is extracted and loaded on its own).

    Raises:
        EnsembleError: no members, a member that is not an ``nn.Module``, a bad name, or two
            members that share a parameter.

    Example:
        >>> import torch, ssnfx
        >>> from ssnfx.ensemble import Members
        >>> both = Members({"wide": torch.nn.Linear(4, 8), "narrow": torch.nn.Linear(4, 2)})
        >>> [tuple(y.shape) for y in both(torch.randn(3, 4))]
        [(3, 8), (3, 2)]
    """

    def __init__(self, members: Sequence[nn.Module] | Mapping[str, nn.Module]) -> None:
        super().__init__()
        if isinstance(members, (Mapping, nn.ModuleDict)):
            items = [(_check_name(k), m) for k, m in members.items()]
        elif isinstance(members, (Sequence, nn.ModuleList)) and not isinstance(members, str):
            items = [(str(i), m) for i, m in enumerate(members)]
        else:
            raise EnsembleError(f"Members expects a list or dict of models, got "
                                f"{type(members).__name__}")
        if not items:
            raise EnsembleError("Members needs at least one model")
        owner: dict[int, str] = {}
        for name, m in items:
            if not isinstance(m, nn.Module):
                raise EnsembleError(f"member {name!r} is a {type(m).__name__}, not an nn.Module")
            for pname, p in m.named_parameters(remove_duplicate=False):
                other = owner.setdefault(id(p), f"{name}.{pname}")
                if other.split(".")[0] != name:
                    raise EnsembleError(
                        f"members share a parameter ({other!r} is {name}.{pname!r}): each member "
                        f"must own its parameters, to be extracted and loaded on its own; pass "
                        f"separate instances (copy.deepcopy), or make the shared part one model")
            self.add_module(name, m)
        #: The member names, in the order of the outputs.
        self.names: tuple[str, ...] = tuple(name for name, _ in items)

    def forward(self, x: Any) -> tuple[Any, ...]:
        outputs = []
        for name in self.names:
            module = getattr(self, name)
            out = member_output(name, module(x))
            if isinstance(out, fx.Proxy):  # tracing: the extracted member's class name
                out.node.meta[Meta.MEMBER] = type(module).__name__
            outputs.append(out)
        return tuple(outputs)


def as_members(models: Any) -> nn.Module:
    """``models`` as one module: a list, tuple, dict, ``nn.ModuleList`` or ``nn.ModuleDict``
    becomes :class:`Members`; a module (a Members too) is returned as it is.

    Example:
        >>> import torch
        >>> type(as_members([torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)])).__name__
        'Members'
    """
    if isinstance(models, (nn.ModuleList, nn.ModuleDict, list, tuple, Mapping)):
        return Members(models)
    return models
