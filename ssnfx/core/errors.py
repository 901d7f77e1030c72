"""Errors raised by ssnfx.

Every error names what was wrong (module, parameter, argument) and says what to do. They all
derive from :class:`SsnfxError`, so ``except ssnfx.SsnfxError`` catches any of them.
"""
from __future__ import annotations

__all__ = ["SsnfxError", "TraceError", "BudgetError", "PlanError", "CheckpointError", "ExportError",
           "SearchError", "EnsembleError"]


class SsnfxError(Exception):
    """Base class of every error ssnfx raises on purpose."""


class TraceError(SsnfxError):
    """The model could not be traced by torch.fx; the message names the module and source line."""


class BudgetError(SsnfxError, ValueError):
    """The parameter budget is malformed or cannot be met by this model."""


class PlanError(SsnfxError, ValueError):
    """A SharingPlan is malformed, from a newer ssnfx, or does not match the model."""


class CheckpointError(SsnfxError):
    """A checkpoint file is unreadable, truncated, or does not match the model."""


class ExportError(SsnfxError):
    """An exported model could not be produced, or does not reproduce the folded model."""


class SearchError(SsnfxError):
    """The search pass could not measure the model: empty data, a malformed batch, a bad loss."""


class EnsembleError(SsnfxError, ValueError):
    """Models cannot be shared as members of one store, a member or subset named does not exist,
    or no subset of members fits a latency budget."""
