"""ssnfx.cpu_memory: large CPU blocks come from the heap once the setting is made."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# In a fresh process (the settings are process-wide): free a 16 MiB block (glibc then raises its
# mmap threshold above 4 MiB), make a tensor of numel floats, and print the bytes glibc holds
# in mmap'd blocks for it (mallinfo2's hblkhd).
_PROBE = textwrap.dedent("""
    import ctypes, sys
    import torch
    from ssnfx.cpu_memory import retain_freed_memory, return_freed_memory

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    mode, numel = sys.argv[1], int(sys.argv[2])
    if mode == "retain":
        print(retain_freed_memory())
    elif mode == "return":
        retain_freed_memory()  # undone by the call below
        print(return_freed_memory())
    else:
        print("default")
    big = torch.ones(1 << 22)
    del big
    before = libc.mallinfo2().hblkhd
    t = torch.ones(numel)
    print(libc.mallinfo2().hblkhd - before)
""")


def _probe(mode: str, numel: int) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode, str(numel)], capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], int(out[1])


def _has_mallinfo2() -> bool:
    try:
        import ctypes
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc 2.33 or later (mallinfo2)")
def test_large_blocks_come_from_the_heap() -> None:
    made, mapped = _probe("retain", 1 << 25)  # 128 MiB
    assert made == "True"
    assert mapped == 0
    # The control: by default the same tensor is a fresh mmap, faulted in page by page.
    _, mapped = _probe("default", 1 << 25)
    assert mapped >= 1 << 27


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc 2.33 or later (mallinfo2)")
def test_freed_memory_is_returned_once_the_setting_is_made() -> None:
    made, mapped = _probe("return", 1 << 20)  # 4 MiB
    assert made == "True" and mapped >= 1 << 22
    assert _probe("default", 1 << 20)[1] == 0  # the control: from the heap, kept when freed


def test_return_threshold_is_checked() -> None:
    from ssnfx.cpu_memory import return_freed_memory
    with pytest.raises(ValueError, match="threshold must be an int number of bytes"):
        return_freed_memory(64 * 2**20)
