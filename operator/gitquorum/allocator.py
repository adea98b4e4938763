"""glibc's allocator, told to give large freed blocks back to the system at once.

glibc serves a block of 128 KiB or more with its own mapping, returned when freed, but its
threshold for that rises to the size of any such block freed (up to 32 MiB). One scrypt hash
(``server.passwords``: 16 MiB) in a worker thread is enough: from then on each 16 MiB hash
comes from that thread's arena and stays in the process when freed. Measured: 60 hashes on 6
threads left 97 MB resident; with the threshold fixed, 1 MB. The operator hashes credentials
of every repository it creates, and replicas check passwords the same way, so both fix it.
Freed memory inside its heaps, between blocks still in use, stays resident too: ``trim`` hands
those pages back (``malloc_trim``), and the operator calls it every ``TRIM_SECONDS``. Other C
libraries are left alone.
"""

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import platform

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""mallopt's parameter number (malloc.h); setting it also ends the dynamic adjustment."""
MMAP_THRESHOLD = 128 * 1024
"""glibc's own starting threshold, kept fixed."""


TRIM_SECONDS = 30.0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def fix_mmap_threshold() -> bool:
    """Fixes the threshold at :data:`MMAP_THRESHOLD`; False when the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        log.warning("glibc refused mallopt(M_MMAP_THRESHOLD, %d)", MMAP_THRESHOLD)
        return False
    return True


def trim() -> bool:
    """Gives the free pages of glibc's heaps back to the system; False when none were (or the
    C library is not glibc)."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


async def trim_every(seconds: float = TRIM_SECONDS) -> None:
    """:func:`trim`, every ``seconds``, until cancelled."""
    while True:
        await asyncio.sleep(seconds)
        trim()
