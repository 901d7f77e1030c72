"""Plain values with tensors in them as JSON text plus named tensors: how a checkpoint's
``extra`` (an optimizer's state_dict, a step count) goes into a safetensors file, whose
metadata holds only strings.

Every container is tagged (``{"dict": [[key, value], ...]}``, ``{"tuple": [...]}``), so a
user's dict is never mistaken for a tag, and keys keep their types (an optimizer's state is keyed
by int). The types are those of :func:`ssnfx.checkpoint.check_loadable`: what ``torch.load(
weights_only=True)`` reads, so one rule holds for both checkpoint formats.
"""
from __future__ import annotations

import base64
import collections
import json
from typing import Any

import torch

from ssnfx.core.errors import CheckpointError

__all__ = ["encode", "decode"]


def encode(value: Any, prefix: str) -> tuple[str, dict[str, torch.Tensor]]:
    """``value`` as JSON text, its tensors taken out under the names ``prefix0``, ``prefix1``...

    Example:
        >>> text, tensors = encode({"step": 3, "m": torch.ones(2)}, "extra/")
        >>> list(tensors), decode(text, tensors)["step"]
        (['extra/0'], 3)
    """
    tensors: dict[str, torch.Tensor] = {}

    def enc(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            name = f"{prefix}{len(tensors)}"
            tensors[name] = v.detach()
            return {"tensor": name}
        if v is None or type(v) in (bool, int, str):
            return v
        if type(v) is float:  # JSON has no NaN or infinities: repr round-trips them
            return v if v == v and abs(v) != float("inf") else {"float": repr(v)}
        if type(v) in (dict, collections.OrderedDict):
            return {"dict" if type(v) is dict else "ordered": [[enc(k), enc(x)]
                                                                for k, x in v.items()]}
        if type(v) in (list, tuple, set):
            return [enc(x) for x in v] if type(v) is list else \
                {type(v).__name__: [enc(x) for x in v]}
        if type(v) is complex:
            return {"complex": [v.real, v.imag]}
        if type(v) in (bytes, bytearray):
            return {type(v).__name__: base64.b64encode(v).decode()}
        if type(v) is torch.Size:
            return {"size": list(v)}
        if type(v) is torch.dtype:
            return {"dtype": str(v).removeprefix("torch.")}
        if type(v) is torch.device:
            return {"device": str(v)}
        raise CheckpointError(f"cannot store a {type(v).__name__} in a checkpoint")

    return json.dumps(enc(value)), tensors


def decode(text: str, tensors: dict[str, torch.Tensor]) -> Any:
    """The value :func:`encode` wrote; a malformed text is a :class:`CheckpointError`."""
    def dec(v: Any) -> Any:
        if not isinstance(v, dict):
            return [dec(x) for x in v] if isinstance(v, list) else v
        (tag, body), = v.items()
        if tag == "tensor":
            return tensors[body]
        if tag in ("dict", "ordered"):
            pairs = ((dec(k), dec(x)) for k, x in body)
            return dict(pairs) if tag == "dict" else collections.OrderedDict(pairs)
        if tag in ("tuple", "set"):
            return (tuple if tag == "tuple" else set)(dec(x) for x in body)
        decoders = {"float": float, "complex": lambda b: complex(*b),
                    "bytes": base64.b64decode, "bytearray": lambda b:
                    bytearray(base64.b64decode(b)), "size": torch.Size,
                    "dtype": _dtype, "device": torch.device}
        return decoders[tag](body)

    try:
        return dec(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"the extra entry is damaged ({type(e).__name__}: {e})") from e


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):  # a name from the file: only ever a dtype
        raise ValueError(f"{name!r} is not a torch dtype")
    return dtype
