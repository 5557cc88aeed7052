"""Keep the memory of freed tensors in the process, for inference servers on glibc.

PyTorch's CPU tensors get their memory from malloc. glibc serves large blocks with mmap and, past
a threshold it adjusts as the process runs, returns freed memory to the operating system, so the
next forward page-faults it back in, zeroing every page. ONNX Runtime and OpenVINO keep arenas
and do not pay this. Measured on MobileNetV2 at 90 %, batch 8, one thread: the compiled model ran
in 430–450 ms until the process held a second compiled model, then in 690–790 ms with 110,000
minor page faults per forward; with `keep_freed_memory()` it stayed at 430–480 ms with none
(`benchmarks/inference.py` calls it; dense PyTorch gains alike), once the heap has reached its high-water
mark in the first few forwards. The cost: the process keeps its
peak memory instead of shrinking after it.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
LARGEST = 2**31 - 1  # mallopt takes an int: blocks up to 2 GiB come from the heap and stay there when freed


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks up to 2 GiB for reuse, process-wide, instead of handing them
    back to the OS (module docstring); as the environment variables MALLOC_MMAP_THRESHOLD_ and
    MALLOC_TRIM_THRESHOLD_ would. Returns True where it was applied, False where the C library is not
    glibc (musl, macOS, Windows: nothing is changed; jemalloc or tcmalloc preloaded do their own caching)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: another libc's mallopt may take other parameters
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, LARGEST)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST))
