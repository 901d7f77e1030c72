"""Atomic writes: a file or folder is written beside its target under a temporary name, then
renamed into place, so that an interrupted run never leaves a half-written output."""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; outputs are still replaced atomically
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_path", "write_atomic", "claim_dir", "recover_dir", "new_dir",
           "replace_dir", "dir_replacing"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the suffix: torch.export checks for ".pt2".
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # as open() would make it: mkstemp's is owner-only
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` and move ``tmp`` to ``path`` if it returns."""
    with atomic_path(path) as tmp:
        write(tmp)


# ---- output folders -------------------------------------------------------------------------
# A folder is written as ``.<name>.new-*`` beside its target, then swapped in: the old folder is
# renamed to ``.<name>.old-*`` first, the new one renamed in, the old one deleted last. A crash
# at any point leaves either the old output or the new one at the target, and at worst a hidden
# swap folder that :func:`recover_dir` puts back (or removes) on the next run. Everything is
# done while holding :func:`claim_dir`'s lock, so two writers never interleave: the second
# finds the first's output, and replaces it only if told to.

@contextlib.contextmanager
def claim_dir(out: Path) -> Iterator[None]:
    """Hold the exclusive lock of the (existing) folder ``out`` is written in: ``flock`` on
    that folder itself, so there is no lock file to leave behind and a killed holder releases
    it. Another writer there waits: the lock is held only to check, recover and swap in
    outputs, seconds, never while training."""
    try:
        fd = os.open(out.parent, os.O_RDONLY)
    except OSError as e:  # named by the output the user gave
        raise OSError(e.errno, e.strerror, str(out)) from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def recover_dir(out: Path) -> str | None:
    """Clean up after an interrupted replacement of ``out`` (call with the lock held): an old
    output moved aside is put back if ``out`` is missing, else deleted; unfinished new ones are
    deleted. Returns what was done, or None if there was nothing to do."""
    done = []
    olds = sorted(out.parent.glob(f".{glob.escape(out.name)}.old-*"), key=os.path.getmtime)
    for old in reversed(olds):
        if not out.exists():
            os.rename(old, out)
            done.append(f"restored {out} from an interrupted replacement ({old.name})")
        else:
            shutil.rmtree(old)
    for new in out.parent.glob(f".{glob.escape(out.name)}.new-*"):
        shutil.rmtree(new)  # written by a run that died before it was complete
        done.append(f"removed the unfinished output {new.name}")
    return "; ".join(done) or None


def new_dir(out: Path) -> Path:
    """An empty hidden folder beside ``out`` to write the new output into, with the mode a
    plain ``mkdir`` would give it (``mkdtemp`` makes it private to its owner)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def _umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return umask


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the complete folder ``tmp`` at ``out`` (call with the lock held): at every instant
    ``out`` is the old output or the new one, never missing unless a crash left it recoverable
    by :func:`recover_dir`."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old)  # onto the empty folder: rename replaces an empty directory
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old)


@contextlib.contextmanager
def dir_replacing(out: Path) -> Iterator[Path]:
    """Yield a new folder to write the output in; it replaces ``out`` (:func:`replace_dir`)
    only if the block completes, else it is removed. Call with the lock held."""
    tmp = new_dir(out)
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
