"""Keep freed tensor memory in the process, so a forward pass does not have the kernel zero fresh pages.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every block above its mmap
threshold (at most 32 MiB; a ResNet-20 feature map of 1,000 images is 64 MiB) with a fresh ``mmap`` and
unmaps it at ``free``, and it returns free memory at the top of its heap to the system beyond a trim
threshold: each forward pass then page-faults its whole working set in again, and the kernel zeroes it page
by page. On a 2-core machine that was about 45 % of a ResNet-20 pass on 1,000 images
(``benchmarks/allocator.py``).

:func:`keep_freed_memory` sets glibc (``mallopt``) to serve large blocks from its heap and to keep up to
:data:`RETAINED_BYTES` of freed memory there for the next allocation: the process holds its peak working
set between passes instead of faulting it in again. Values computed are unchanged. It does nothing with
another C library or when ``RESBENCH_SYSTEM_MALLOC=1`` is set (the system's settings, for a machine short of
memory); malloc settings in glibc's own ``GLIBC_TUNABLES`` are left as they are.

Every job calls it in the process that runs it (the driver, a ``process`` worker, a Ray worker), as do the
timing benchmarks, so timings are taken under the conditions campaigns run in.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

__all__ = ["RETAINED_BYTES", "keep_freed_memory"]

#: Freed memory glibc keeps at the top of its heap before returning any to the system.
RETAINED_BYTES = 1 << 30
#: ``mallopt`` parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's allocator to reuse freed blocks (once per process); whether it was set."""
    if os.environ.get("RESBENCH_SYSTEM_MALLOC") == "1" or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success. No mmap for large blocks (glibc still maps one when its heap cannot grow).
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, RETAINED_BYTES))
