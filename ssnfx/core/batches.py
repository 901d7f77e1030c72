"""One batch convention and one batch loop for everything that runs a model on data (search,
refine, training): batches are ``(inputs, targets)``; a tuple or list of inputs is the model's
positional arguments, a mapping its keyword arguments (``{"input_ids": ..., "attention_mask":
...}``), anything else its one argument. :func:`losses` is the loop the passes share: it yields
each step's checked loss, and the caller decides what a step does with it (train, or measure).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn

from ssnfx.core.errors import SearchError

__all__ = ["call_model", "run_batch", "cycle", "describe", "losses", "check_loss"]


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(*inputs)``, ``model(**inputs)`` or ``model(inputs)``, by the inputs' type.

    Example:
        >>> import torch
        >>> call_model(torch.nn.Bilinear(2, 3, 1), (torch.ones(1, 2), torch.ones(1, 3))).shape
        torch.Size([1, 1])
    """
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def run_batch(model: nn.Module, batch: Any, step: int, stage: str) -> tuple[Any, Any]:
    """``(call_model(model, inputs), targets)`` for a batch; errors name the ``stage`` (search,
    refine) and the step, and say what a batch must be."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        length = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        raise SearchError(f"each batch must be (inputs, targets); got a "
                          f"{type(batch).__name__}{length} at {stage} step {step}: make the data "
                          f"yield (inputs, targets) pairs, inputs a tensor, a tuple of the "
                          f"model's arguments or a dict of its keyword arguments")
    x, y = batch
    try:
        return call_model(model, x), y
    except Exception as e:  # a wrong batch structure shows up as any error inside the model
        raise SearchError(
            f"the model failed at {stage} step {step} on the inputs {describe(x)}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; each batch must be "
            f"(inputs, targets) with model(inputs), model(*inputs) for a tuple or "
            f"model(**inputs) for a dict, as the model is called in training") from e


def cycle(data: Iterable[Any], stage: str = "search") -> Iterator[Any]:
    """The batches of ``data`` over and over; a SearchError if it yields none."""
    empty = True
    while True:
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise SearchError(f"the {stage} data is empty: it yielded no batch")


def describe(x: Any) -> str:
    """A short description of a batch element for error messages: types and shapes."""
    if isinstance(x, torch.Tensor):
        return f"Tensor{tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"{type(x).__name__}[{', '.join(describe(v) for v in x[:4])}" \
               f"{', ...' if len(x) > 4 else ''}]"
    if isinstance(x, Mapping):
        return f"dict[{', '.join(f'{k}: {describe(v)}' for k, v in list(x.items())[:4])}]"
    return type(x).__name__


def losses(model: nn.Module, data: Iterable[Any], loss_fn: Callable[..., torch.Tensor],
           steps: int, stage: str) -> Iterator[tuple[int, torch.Tensor]]:
    """``(step, loss)`` for ``steps`` batches of ``data`` (re-iterated when it runs out), each
    loss ``loss_fn(model(inputs), targets)`` checked by :func:`check_loss`; errors name the
    ``stage`` and the step and say what the data, the model or the loss must be.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 1)
        >>> data = [(torch.ones(2, 3), torch.zeros(2, 1))]
        >>> [step for step, _ in losses(model, data, torch.nn.functional.mse_loss, 3, "demo")]
        [0, 1, 2]
    """
    batches = cycle(data, stage)
    for step in range(steps):
        out, target = run_batch(model, next(batches), step, stage)
        try:
            loss = loss_fn(out, target)
        except Exception as e:
            raise SearchError(f"loss_fn raised {type(e).__name__} at {stage} step {step} on "
                              f"outputs {describe(out)} and targets {describe(target)}: {e}; "
                              f"it is called as loss_fn(model(inputs), targets)") from e
        check_loss(loss, step, stage)
        yield step, loss


def check_loss(loss: Any, step: int, stage: str = "search") -> None:
    """The loss must be a finite scalar tensor that depends on the model's outputs."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise SearchError(f"loss_fn must return a scalar tensor; got "
                          f"{type(loss).__name__}{tuple(getattr(loss, 'shape', ()))} at {stage} "
                          f"step {step}: reduce it (.mean() or .sum()), and keep it a tensor "
                          f"(no .item())")
    if not loss.requires_grad:
        raise SearchError(f"the loss at {stage} step {step} does not depend on the model's "
                          f"parameters (it has no grad_fn): compute it from the outputs passed "
                          f"to loss_fn, without .detach() or torch.no_grad()")
    if not torch.isfinite(loss):
        stopped = _STOPPED.get(stage, f"the {stage} stopped (lower the learning rate, or check "
                                      f"the data and loss_fn)")
        raise SearchError(f"the loss is {float(loss.detach())} at {stage} step {step}; {stopped}")


#: What a non-finite loss ends, by stage.
_STOPPED = {
    "search": "the search stopped and returns no plan (lower SearchConfig.lr, or check the data "
              "and loss_fn)",
    "refine": "refine stopped and changed nothing (check the data and loss_fn)",
}
