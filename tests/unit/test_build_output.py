"""hack/build-binaries.sh prints one line per component with its time and log, and keeps go's
own output (hundreds of ``go: downloading`` lines on a cold build) in those logs.

A stand-in ``go`` answers what the script asks, noisily, and "builds" empty executables, so
the tests take no network and no compiler.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = (
    "etcd",
    "helm",
    "kube-modules",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
)
FAKE_GO = r"""#!/bin/sh
case "$1" in
  env)
    if [ "$2" = GOMODCACHE ]; then echo "$FAKE_GOMODCACHE"; else echo https://proxy.example; fi ;;
  list) if [ "$2" = -m ]; then echo '{"Path": "k8s.io/kubernetes"}'; fi ;;
  mod)
    if [ "$3" = -json ]; then
      printf 'module k8s.io/kubernetes\n\tk8s.io/api => ./staging/src/k8s.io/api\n' >"$FAKE_GOMOD"
      echo "{\"GoMod\": \"$FAKE_GOMOD\"}"
    fi ;;
  build|install)
    i=0
    while [ $i -lt 200 ]; do echo "go: downloading example.org/m$i v1.0.$i" >&2; i=$((i+1)); done
    if [ -n "$FAKE_GO_FAIL" ]; then echo "compile error: $FAKE_GO_FAIL" >&2; exit 2; fi
    out=""; prev=""
    for a in "$@"; do [ "$prev" = -o ] && out=$a; prev=$a; done
    [ "$1" = install ] && out="$GOBIN/helm"
    mkdir -p "$(dirname "$out")" && printf '#!/bin/sh\n' >"$out" && chmod +x "$out" ;;
esac
"""


def _flux_module(cache: Path) -> None:
    """source-controller's module as the go command leaves it: its CRDs are copied from it."""
    script = (REPO / "hack" / "build-binaries.sh").read_text()
    version = re.search(r"FLUX_SOURCE_CONTROLLER_VERSION:-(v[0-9.]+)", script)
    assert version is not None, "the script pins FLUX_SOURCE_CONTROLLER_VERSION"
    crds = cache / f"github.com/fluxcd/source-controller@{version[1]}/config/crd/bases"
    crds.mkdir(parents=True, exist_ok=True)
    (crds / "source.toolkit.fluxcd.io_gitrepositories.yaml").write_text("kind: Fake\n")


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    _flux_module(tmp_path / "modcache")
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    (tools / "go").write_text(FAKE_GO)
    (tools / "go").chmod(0o755)
    return subprocess.run(
        ["/bin/bash", str(REPO / "hack" / "build-binaries.sh")],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PATH": f"{tools}:{os.environ['PATH']}",
            "GITQUORUM_CACHE": str(tmp_path / "cache"),
            "FAKE_GOMOD": str(tmp_path / "kubernetes.mod"),
            "FAKE_GOMODCACHE": str(tmp_path / "modcache"),
            **env,
        },
        timeout=60,
        check=False,
    )


def test_build_output_one_timed_line_per_component_with_its_log(tmp_path: Path):
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "go: downloading" not in result.stderr
    lines = result.stderr.splitlines()
    for component in COMPONENTS:
        (line,) = [item for item in lines if item.split()[0] == component]
        log = tmp_path / "cache" / "logs" / f"{component}.log"
        assert re.search(rf"\d+\.\d s  log: {re.escape(str(log))}$", line), line
    assert "go: downloading example.org/m199" in (tmp_path / "cache/logs/etcd.log").read_text()
    out = result.stdout.strip().splitlines()[-1]
    assert lines[-1].startswith("binaries") and lines[-1].endswith(f"in: {out}")


def test_build_output_one_line_when_cached(tmp_path: Path):
    assert _run(tmp_path).returncode == 0
    result = _run(tmp_path, FAKE_GO_FAIL="nothing may be built")
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert re.match(r"binaries +all 5 cached +\d+\.\d s  in: ", line), line
    assert line.endswith(result.stdout.strip())


def test_build_output_failure_shows_the_log_tail(tmp_path: Path):
    result = _run(tmp_path, FAKE_GO_FAIL="undefined: boom")
    assert result.returncode != 0
    log = tmp_path / "cache" / "logs" / "etcd.log"
    assert f"etcd: failed (exit 2); the last lines of {log}:" in result.stderr
    assert "compile error: undefined: boom" in result.stderr
    assert result.stderr.count("go: downloading") < 30
    assert log.read_text().count("go: downloading") == 200
