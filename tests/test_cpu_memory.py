"""ssnfx.cpu_memory: large CPU blocks come from the heap once the setting is made."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A 128 MiB tensor, and the bytes glibc then holds in mmap'd blocks (mallinfo2's hblkhd),
# in a fresh process: the setting is process-wide.
_PROBE = textwrap.dedent("""
    import ctypes, sys
    import torch
    from ssnfx.cpu_memory import retain_freed_memory

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    print(retain_freed_memory() if sys.argv[1] == "retain" else "default")
    before = libc.mallinfo2().hblkhd
    t = torch.ones(1 << 25)
    print(libc.mallinfo2().hblkhd - before)
""")


def _probe(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


def _has_mallinfo2() -> bool:
    try:
        import ctypes
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc 2.33 or later (mallinfo2)")
def test_large_blocks_come_from_the_heap() -> None:
    made, mapped = _probe("retain")
    assert made == "True"
    assert mapped == 0
    # The control: by default the same tensor is a fresh mmap, faulted in page by page.
    _, mapped = _probe("default")
    assert mapped >= 1 << 27


# After a 16 MiB block is freed, glibc serves a 4 MiB tensor from its heap (the dynamic
# threshold rose above it), unless every block above 1 MiB is to be mapped and returned.
_RETURN_PROBE = textwrap.dedent("""
    import ctypes, sys
    import torch
    from ssnfx.cpu_memory import retain_freed_memory, return_freed_memory

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    if sys.argv[1] == "return":
        retain_freed_memory()  # undone by the call below
        print(return_freed_memory())
    else:
        print("default")
    big = torch.ones(1 << 22)  # 16 MiB, mapped, then freed
    del big
    before = libc.mallinfo2().hblkhd
    t = torch.ones(1 << 20)
    print(libc.mallinfo2().hblkhd - before)
""")


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc 2.33 or later (mallinfo2)")
def test_freed_memory_is_returned_once_the_setting_is_made() -> None:
    def probe(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _RETURN_PROBE, mode], capture_output=True,
                             text=True, check=True).stdout.split()
        return out[0], int(out[1])

    made, mapped = probe("return")
    assert made == "True" and mapped >= 1 << 22
    assert probe("default")[1] == 0  # the control: from the heap, kept after it is freed


def test_return_threshold_is_checked() -> None:
    from ssnfx.cpu_memory import return_freed_memory
    with pytest.raises(ValueError, match="threshold must be an int number of bytes"):
        return_freed_memory(64 * 2**20)
