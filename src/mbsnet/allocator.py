"""Keep freed heap memory for reuse (glibc): fewer page faults in each CPU training step.

glibc's malloc serves large blocks with mmap and gives them back to the kernel when freed, and
trims the top of the heap as soon as 128 KiB are free there. A training step frees and
allocates the same activations every step, so each step faults its memory back in page by
page, and the kernel zeroes every page first: on the 2-core CPU a base step with the
discriminator spent about a quarter of its time in the kernel. Raising both thresholds keeps
freed memory in the heap for the next step (`benchmarks/bench_train.py --only allocator`).
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
"""glibc's ceiling for the mmap threshold on 64-bit systems; larger blocks are still mmap'd."""
TRIM_THRESHOLD = 2**31 - 1
"""Free memory at the top of the heap that stays mapped (the largest value mallopt takes)."""


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return mmap_ok and trim_ok
