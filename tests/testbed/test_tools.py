"""The pinned helm against the testbed: what the operator's chart will be installed with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gitquorum_testbed import binaries

pytestmark = pytest.mark.testbed


def _helm(kubeconfig: Path, home: Path, *args: str) -> str:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    result = subprocess.run(
        [str(binaries.directory(build=False) / "helm"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


def test_helm_installs_and_uninstalls_a_chart(kubeconfig, core, namespace, tmp_path: Path):
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    (chart / "values.yaml").write_text("greeting: hello\n")
    assert "v3.21.4" in _helm(kubeconfig, tmp_path, "version", "--short")
    _helm(kubeconfig, tmp_path, "install", "smoke", str(chart), "-n", namespace, "--wait")
    assert core.read_namespaced_config_map("smoke-cm", namespace).data == {"greeting": "hello"}
    _helm(kubeconfig, tmp_path, "uninstall", "smoke", "-n", namespace, "--wait")
    assert not core.list_namespaced_config_map(
        namespace, field_selector="metadata.name=smoke-cm"
    ).items
