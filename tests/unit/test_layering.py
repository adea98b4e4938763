"""Import rules that keep the layout honest (an import-linter contract, as a test).

Only the HTTP layer imports the web framework, only the operator's kopf wiring imports kopf,
only the operator package and the kubectl plugin talk to Kubernetes, and the wire protocol
package does no I/O of the server's.
"""

import ast
import pathlib

import pytest

pytestmark = pytest.mark.unit

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "operator" / "gitquorum"
HTTP_LAYER = {
    "server/http.py",
    "server/listening.py",
    "replication/peerapi.py",
    "replication/peerclient.py",
    "replication/webhooks.py",
    "replication/forwarding.py",
    "kube/metrics.py",
    "kube/running.py",
}
KOPF_WIRING = {"kube/handlers.py", "kube/running.py", "kube/prepopulation.py"}
KUBERNETES_CLIENTS = ("kube/", "plugin/gathering.py")
"""The operator, and the one module of the kubectl plugin that reads the API server."""


def imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules() -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE)): imports(p) for p in PACKAGE.rglob("*.py")}


def test_only_the_http_layer_imports_aiohttp() -> None:
    offenders = {
        name
        for name, found in modules().items()
        if any(i.split(".")[0] == "aiohttp" for i in found) and name not in HTTP_LAYER
    }
    assert offenders == set()


def test_protocol_package_imports_no_server_code() -> None:
    offenders = {
        name
        for name, found in modules().items()
        if name.startswith("protocol/")
        and any(i.startswith(("gitquorum.server", "aiohttp", "asyncio")) for i in found)
    }
    assert offenders == set()


def test_server_imports_no_kubernetes_libraries() -> None:
    offenders = {
        name
        for name, found in modules().items()
        if name.startswith(("server/", "protocol/"))
        and any(i.split(".")[0] in ("kopf", "kubernetes") for i in found)
    }
    assert offenders == set()


def test_only_the_operator_wiring_imports_kopf() -> None:
    offenders = {
        name
        for name, found in modules().items()
        if any(i.split(".")[0] == "kopf" for i in found) and name not in KOPF_WIRING
    }
    assert offenders == set()


def test_only_the_operator_package_imports_kubernetes() -> None:
    offenders = {
        name
        for name, found in modules().items()
        if any(i.split(".")[0] == "kubernetes" for i in found)
        and not name.startswith(KUBERNETES_CLIENTS)
    }
    assert offenders == set()


def test_operator_decisions_do_no_io() -> None:
    pure = {"kube/planning.py", "kube/status.py", "kube/manifests.py", "kube/spec.py"}
    offenders = {
        name
        for name, found in modules().items()
        if name in pure
        and any(i.split(".")[0] in ("kopf", "kubernetes", "aiohttp", "asyncio") for i in found)
    }
    assert offenders == set()


def test_plugin_summary_and_rendering_do_no_io() -> None:
    pure = {"plugin/summary.py", "plugin/rendering.py"}
    offenders = {
        name
        for name, found in modules().items()
        if name in pure
        and any(
            i.split(".")[0] in ("kopf", "kubernetes", "aiohttp", "asyncio", "urllib3", "os")
            for i in found
        )
    }
    assert offenders == set()


def test_backup_library_imports_no_kopf_kubernetes_or_web_framework() -> None:
    offenders = {
        name
        for name, found in modules().items()
        if name.startswith("backup/")
        and any(i.split(".")[0] in ("kopf", "kubernetes", "aiohttp") for i in found)
    }
    assert offenders == set()
