"""Keep freed host memory for reuse on CPU runs (glibc), so large gradients stop costing page faults every step.

glibc's ``malloc`` serves allocations above its mmap threshold (at most 32 MiB by default) with a fresh ``mmap`` and
gives them back with ``munmap`` when freed. A BERT-style model's word-embedding gradient is bigger than that
(MiniLM-L6: 30522 x 384 floats = 45 MiB; XLM-R base: 732 MiB) and autograd allocates it anew every backward pass, so
each step the kernel maps, faults in and zeroes every page of it: thousands of minor page faults a step, and a
fresh zeroed buffer costs far more than re-zeroing a kept one (measured: docs/results.md). Raising the mmap and
trim thresholds makes glibc keep such blocks in its heap and hand them out again: the page faults per training step
drop to none once glibc has settled (within a few steps) on which free blocks serve the request. The price: memory
freed during the run stays with the process (for the next step) instead of going back to the system, and glibc may
hold a few spare blocks of that size; the process's peak resident memory did not grow in the NER recipe (measured:
docs/results.md).

Nothing happens off Linux/glibc (macOS, musl) or when ``train.reuse_host_memory=false``. Thresholds are
process-wide and are only ever raised here, never lowered.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger("hftransfer")

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from (and return to) the heap: 1 GiB covers the embedding gradients of encoders up to
#: XLM-R large (250k x 1024 floats, 977 MiB).
REUSE_UP_TO_BYTES = 1 << 30

_applied = False


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # gnu_get_libc_version exists only in glibc: musl and macOS's libc have their own mallopt semantics or none.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def reuse_freed_host_memory() -> bool:
    """Raise glibc's mmap and trim thresholds so freed blocks up to 1 GiB stay in the heap for the next step.

    Returns:
        True when the thresholds are in place (now or by an earlier call), False when this C library has no such
        setting or refused it; the run goes on either way.
    """
    global _applied
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # Both: an mmap threshold set by hand stops glibc adjusting the trim threshold, whose default (128 KiB) would
    # hand a freed gradient at the top of the heap straight back to the kernel.
    if not (
        libc.mallopt(_M_TRIM_THRESHOLD, REUSE_UP_TO_BYTES)
        and libc.mallopt(_M_MMAP_THRESHOLD, REUSE_UP_TO_BYTES)
    ):
        logger.debug(
            "glibc refused the malloc thresholds; freed host memory is returned to the system as usual"
        )
        return False
    _applied = True
    return True
