"""Large CPU allocations without page faults: a process setting for training on the CPU.

A shared model's big tensors are few and large: the store of a group, its gradient, the
optimizer's temporaries over it, the generated weights of one shape. glibc serves every
allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns it to the
system on free, so each step faults every page of them in again: on vit_b_16 at batch 2 and a
100% budget (an 86M-parameter store, 344 MB) that is about a second of a 3.4 s Adam step, where
the unshared model, whose largest tensor is 9 MB, is served from the heap and pays nothing
(``benchmarks/RESULTS.md``, "Training and inference speed"). :func:`retain_freed_memory` asks
glibc to serve large blocks from its heap and to keep what is freed for the next step, as
jemalloc or tcmalloc would: the steady state of a training loop then allocates nothing new.

The opposite, :func:`return_freed_memory`, is for training whose peak memory is what binds:
glibc otherwise raises its mmap threshold after the first large frees (up to 32 MiB) and serves
the blocks below it from a heap that keeps what is freed, so a step that allocates and frees
many weight-sized blocks (just-in-time generation makes each weight twice a step) peaks above
what is alive at once: vit_l_16 at batch 2 and 10% peaked at 1720 MiB by default and 1157 MiB
(0.33x and 0.245x of unshared) with every block above 1 MiB mapped and returned on free.

Both are process-wide settings (they change how every later allocation of the process is
served), so ssnfx never makes one behind a user's back: the ``ssnfx`` command line, which owns
its process, retains; a training script calls one of them once at start.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["retain_freed_memory", "return_freed_memory"]

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
#: The largest value mallopt takes (a C int): free memory at the heap's top is kept up to 2 GiB.
_INT_MAX = 2**31 - 1


def retain_freed_memory() -> bool:
    """Serve large CPU allocations from glibc's heap and keep freed memory for reuse.

    Sets ``M_MMAP_MAX`` to 0 (no ``mmap`` per large block) and ``M_TRIM_THRESHOLD`` to its
    maximum (freed memory is not returned to the system), the same as starting Python with
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``. Returns whether the setting was
    made: False where the C library is not glibc (macOS, Windows, musl), where it does nothing.

    Example:
        >>> from ssnfx.cpu_memory import retain_freed_memory
        >>> retain_freed_memory() in (True, False)
        True
    """
    return _mallopt((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX))


def return_freed_memory(threshold: int = 2**20) -> bool:
    """Map every CPU block of at least ``threshold`` bytes on its own and unmap it on free, so
    that the process's resident memory follows what is alive (lower peaks, more page faults).

    Sets ``M_MMAP_THRESHOLD`` (which also stops glibc from raising it after large frees) and
    ``M_TRIM_THRESHOLD`` to ``threshold``, the same as starting Python with
    ``MALLOC_MMAP_THRESHOLD_=1048576 MALLOC_TRIM_THRESHOLD_=1048576``. Returns whether the
    setting was made (False where the C library is not glibc).

    Example:
        >>> from ssnfx.cpu_memory import return_freed_memory
        >>> return_freed_memory() in (True, False)
        True
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or \
            not 0 < threshold <= 32 * 2**20:
        raise ValueError(f"threshold must be an int number of bytes in (0, 32 MiB] (glibc's "
                         f"largest mmap threshold), got {threshold!r}")
    # glibc's default M_MMAP_MAX, in case retain_freed_memory() set it to 0.
    return _mallopt((_M_MMAP_MAX, 65536), (_M_MMAP_THRESHOLD, threshold),
                    (_M_TRIM_THRESHOLD, threshold))


def _mallopt(*settings: tuple[int, int]) -> bool:
    """glibc's ``mallopt`` for each ``(parameter, value)``; True if every one was made."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl has mallopt as a no-op stub
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success.
    return all([bool(mallopt(parameter, value)) for parameter, value in settings])
