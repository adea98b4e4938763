"""Fixtures for integration tests; the machinery is in ``helpers``."""

import pathlib
import re
from collections.abc import Iterator

import pytest

from tests import objectstore
from tests.integration import helpers
from tests.integration.helpers import Git, Seeded, Server


@pytest.fixture(scope="session")
def git(tmp_path_factory: pytest.TempPathFactory) -> Git:
    return Git(home=tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="session")
def auth_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return helpers.write_auth_file(tmp_path_factory.mktemp("auth") / "users")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, auth_file: pathlib.Path) -> Iterator[Server]:
    """Anonymous read, pushes by alice, repositories created on push."""
    yield from helpers.start_server(
        tmp_path_factory, "--auth-file", str(auth_file), "--anonymous-read", "--create-on-push"
    )


@pytest.fixture(scope="session")
def private_server(
    tmp_path_factory: pytest.TempPathFactory, auth_file: pathlib.Path
) -> Iterator[Server]:
    """Every request authenticated; no repository created by a push."""
    yield from helpers.start_server(tmp_path_factory, "--auth-file", str(auth_file))


@pytest.fixture(scope="session")
def object_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[objectstore.ObjectStoreEndpoint]:
    """A real S3 store (versitygw on loopback) with the bucket ``gitquorum-backups``."""
    with objectstore.running(tmp_path_factory.mktemp("object-store")) as store:
        yield store


@pytest.fixture
def repo(
    git: Git, server: Server, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> Seeded:
    """A fresh seeded repository on the shared server, named after the test."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:80] + ".git"
    return helpers.seed(git, server.root, name, tmp_path / "seed")
