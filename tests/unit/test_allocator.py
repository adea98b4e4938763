"""Memory freed by worker threads goes back to the system: large blocks at once, pages between
blocks still in use when trimmed (fresh interpreters measure their resident memory)."""

import subprocess
import sys

HASHES = """
import concurrent.futures, hashlib, sys
from gitquorum import allocator

def resident_mb():
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024

if sys.argv[1] == "fixed":
    assert allocator.fix_mmap_threshold()
before = resident_mb()
with concurrent.futures.ThreadPoolExecutor(6) as pool:
    list(pool.map(lambda i: hashlib.scrypt(bytes(i), salt=bytes(16), n=2**14, r=8, p=1), range(36)))
print(resident_mb() - before)
"""


def _growth_mb(mode: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", HASHES, mode], capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def test_allocator_fixed_threshold_returns_hash_memory() -> None:
    # Six threads keep up to 6 x 16 MiB when glibc's threshold adjusts itself.
    assert _growth_mb("fixed") < 24
    assert _growth_mb("adjusting") > 48


FRAGMENTS = """
import threading
from gitquorum import allocator

def resident_mb():
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024

kept = []

def parse():  # many mid-sized blocks (malloc's, not Python's own), one in fifty kept
    blocks = [bytes(4000) for _ in range(50_000)]
    kept.extend(blocks[::50])

thread = threading.Thread(target=parse)
thread.start()
thread.join()
before = resident_mb()
assert allocator.trim()
print(before - resident_mb())
"""


def test_allocator_trim_returns_pages_between_blocks_in_use() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FRAGMENTS], capture_output=True, text=True, check=True
    )

    assert float(done.stdout) > 100  # of about 200 MB allocated, 4 MB still in use
