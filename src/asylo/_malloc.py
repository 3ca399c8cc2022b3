"""glibc malloc settings for processes that move megabyte messages (the proxy).

By default glibc serves a 1 MiB buffer with mmap and hands it back to the kernel when it is freed, so the next
megabyte message takes page faults on fresh memory: measured here, a 1 MiB seal and open went from ~1.2 ms to
~0.23 ms, and a 1 MiB remote call from ~8 ms to ~2.8 ms, once such buffers stay in the heap. The cost is memory: a
process keeps up to `_TRIM_THRESHOLD` of freed heap instead of returning it. The proxy is our own process and moves
such messages all day, so it opts in; the host is the application's process, which decides for itself (the same
effect comes from the environment: MALLOC_MMAP_THRESHOLD_=16777216 MALLOC_TRIM_THRESHOLD_=67108864).

Larger buffers (a 64 MiB body) still come from mmap, and each of their 4 KiB pages costs a page fault on first
touch: joining 64 MiB took ~31 ms here, ~7 ms with transparent huge pages (2 MiB pages). glibc asks for those only
when told at process start (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, for a kernel whose THP mode is "madvise"), so
the proxies we start get it in their environment (`with_huge_pages`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Mapping

_log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Buffers up to this size come from the heap, not from mmap (a frame is 1 MiB; 16 MiB leaves room).
_MMAP_THRESHOLD = 16 << 20
#: Freed heap kept before returning memory to the kernel.
_TRIM_THRESHOLD = 64 << 20


_TUNABLES = "GLIBC_TUNABLES"
_HUGE_PAGES = "glibc.malloc.hugetlb=1"


def with_huge_pages(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment for a child process that moves large messages (a proxy): a copy of `environ` in which glibc's
    malloc asks the kernel for transparent huge pages; None (inherit ours unchanged) where there is nothing to add —
    not Linux, or a hugetlb setting of the user's already there. Other tunables already set are kept."""
    tunables = environ.get(_TUNABLES, "")
    if not sys.platform.startswith("linux") or "glibc.malloc.hugetlb=" in tunables:
        return None
    return {**environ, _TUNABLES: f"{tunables}:{_HUGE_PAGES}" if tunables else _HUGE_PAGES}


def keep_large_buffers() -> bool:
    """Apply the settings above where glibc is the allocator; True if applied (elsewhere nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    _log.debug("malloc tuned for large messages: %s", applied)
    return applied
