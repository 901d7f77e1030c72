"""Progress bars: shown on a terminal, silent otherwise (CI logs, pipes) or when disabled."""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["progress", "stages"]


def progress(iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
             enabled: bool = True) -> Any:
    """A tqdm bar over ``iterable`` (or a manual one of ``total`` steps), or None when disabled
    or when stderr is not a terminal; then ``iterable`` itself is returned."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


class _Stages:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.bar is not None:
            self.bar.set_description(name)
        yield
        if self.bar is not None:
            self.bar.update(1)


@contextmanager
def stages(count: int, desc: str, enabled: bool = True) -> Iterator[_Stages]:
    """A bar over the ``count`` stages of a long command: ``with stages(3, "fold") as stage:``,
    then ``with stage("load the model"):`` around each stage, which names it on the bar."""
    bar = progress(total=count, desc=desc, enabled=enabled)
    try:
        yield _Stages(bar)
    finally:
        if bar is not None:
            bar.close()
