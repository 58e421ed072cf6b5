"""Large buffers go back to the operating system when they are freed.

glibc serves allocations above its mmap threshold (128 KiB at start) with their own mappings,
unmapped on ``free``, but raises the threshold to the size of each such block freed, up to
32 MiB. After the first decoded picture is released, a service that decodes pictures (Pillow
allocates them in 16 MiB blocks) therefore takes the next ones from its heap arenas, one per
thread, where freed memory mostly stays: the resident size creeps up with concurrency and
varies from run to run. A fixed threshold keeps every large block a mapping of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
LARGE_BLOCK = 1 << 20


def return_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Fixes glibc's mmap threshold at ``threshold`` bytes; False (and nothing changed) where
    the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no mallopt in this C library; allocation left as it is")
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
