"""Large blocks freed by worker threads go back to the system (a fresh interpreter measures
its resident memory around scrypt hashes made on six threads, as the operator makes them)."""

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
