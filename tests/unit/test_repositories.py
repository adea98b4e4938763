"""Which repository a URL path names, and which paths are refused."""

import itertools
import os
import pathlib

import pytest

from gitquorum import errors
from gitquorum.server import repositories, settings, spawning

pytestmark = pytest.mark.unit


def bare(path: pathlib.Path) -> pathlib.Path:
    (path / "objects").mkdir(parents=True)
    (path / "refs").mkdir()
    (path / "HEAD").write_text("ref: refs/heads/main\n")
    return path


@pytest.fixture
def resolver(tmp_path: pathlib.Path) -> repositories.Resolver:
    root = tmp_path / "root"
    bare(root / "app.git")
    bare(root / "group" / "plain")
    (root / "worktree").mkdir()
    return repositories.Resolver(root)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("app.git", "app.git"),
        ("/app", "app.git"),
        ("app.git/", "app.git"),
        ("group/plain", "group/plain"),
        ("group/plain.git", "group/plain"),
    ],
)
def test_find_with_or_without_suffix(resolver: repositories.Resolver, url: str, name: str) -> None:
    found = resolver.find(url)
    assert found.name == name
    assert found.path == resolver.root / name


@pytest.mark.parametrize("url", ["missing", "worktree", "group", ".git"[1:] + "x"])
def test_unknown_or_non_bare_is_not_found(resolver: repositories.Resolver, url: str) -> None:
    with pytest.raises(errors.RepositoryNotFound):
        resolver.find(url)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/",
        "../x",
        "a/../../x",
        "./app.git",
        ".hidden",
        "a//b",
        "a\\..\\b",
        "a\x00b",
        "c:/x",
        "a/\nb",
        "/".join(["d"] * 17),
        "x" * 600,
    ],
)
def test_rejects_paths_that_could_escape(resolver: repositories.Resolver, url: str) -> None:
    # MAX_PATH_LENGTH and MAX_DEPTH bound what a URL can make us log and stat.
    with pytest.raises(errors.PathRefused):
        resolver.find(url)


def test_rejects_symlink_leaving_the_root(
    resolver: repositories.Resolver, tmp_path: pathlib.Path
) -> None:
    bare(tmp_path / "outside.git")
    os.symlink(tmp_path / "outside.git", resolver.root / "link.git")
    with pytest.raises(errors.PathRefused):
        resolver.find("link.git")


def test_symlink_inside_the_root_is_served(resolver: repositories.Resolver) -> None:
    os.symlink(resolver.root / "app.git", resolver.root / "alias.git")
    assert resolver.find("alias.git").path == resolver.root / "app.git"


def test_new_adds_the_suffix_and_refuses_existing(resolver: repositories.Resolver) -> None:
    assert resolver.new("team/new").name == "team/new.git"
    assert not resolver.new("team/new").exists
    assert not (resolver.root / "team").exists(), "naming a new repository created something"
    assert resolver.new("team/new.git").path == resolver.root / "team" / "new.git"
    (resolver.root / "junk.git").mkdir()
    with pytest.raises(errors.Forbidden):
        resolver.new("junk")
    with pytest.raises(errors.PathRefused):
        resolver.new("../escape")


def test_check_root_refuses_a_file_and_a_missing_root(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(errors.ConfigError, match="is not a directory"):
        repositories.check_root(tmp_path / "file", create=False)
    with pytest.raises(errors.ConfigError, match="is not a directory: it does not exist"):
        repositories.check_root(tmp_path / "absent", create=False)
    repositories.check_root(tmp_path, create=True)


def test_git_trusts_only_the_repository_the_server_resolved(tmp_path: pathlib.Path) -> None:
    runner = spawning.GitRunner(settings.GitOptions(), settings.Limits(), environment={})
    served = tmp_path / "root" / "app.git"
    command = runner.command_line(["upload-pack", str(served)], repository=served)
    assert ("-c", f"safe.directory={served}") in itertools.pairwise(command)
    assert not any("safe.directory" in part for part in runner.command_line(["version"]))
