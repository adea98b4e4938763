"""Fixtures of the image tests: the git CLI and an auth file, as the integration tests have."""

import pathlib

import pytest

from tests.integration import helpers
from tests.integration.helpers import Git


@pytest.fixture(scope="session")
def git(tmp_path_factory: pytest.TempPathFactory) -> Git:
    return Git(home=tmp_path_factory.mktemp("home"))


@pytest.fixture
def auth_file(tmp_path: pathlib.Path) -> pathlib.Path:
    """Readable by the image's user, as a mounted Secret is."""
    path = helpers.write_auth_file(tmp_path / "users")
    path.chmod(0o644)
    return path
