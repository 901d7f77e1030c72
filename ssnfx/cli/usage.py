"""What the parser and the commands share, without torch: model names and the usage error."""
from __future__ import annotations

__all__ = ["MODEL_NAMES", "UsageError"]

#: Names looked up in a model file when no ``:attr`` is given, in order.
MODEL_NAMES = ("model", "build_model", "get_model", "create_model", "Model")


class UsageError(Exception):
    """A mistake in how ssnfx was called: exit code 2."""
