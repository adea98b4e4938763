"""Import rules that keep the layout honest (an import-linter contract, as a test).

Only the HTTP layer imports the web framework, nothing imports kopf yet outside the
handlers that do not exist yet, and the wire protocol package does no I/O of the server's.
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
    "replication/forwarding.py",
}


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
