"""Moving a staged repository into place: only where nothing is, never over another."""

import pathlib

import pytest

from gitquorum.server import creating

pytestmark = pytest.mark.unit


def staged(root: pathlib.Path, *, ref: bool = True) -> pathlib.Path:
    path = root / f"{creating.STAGING_PREFIX}test"
    (path / "objects").mkdir(parents=True)
    (path / "refs" / "heads").mkdir(parents=True)
    (path / "HEAD").write_text("ref: refs/heads/main\n")
    if ref:
        (path / "refs" / "heads" / "main").write_text("a" * 40 + "\n")
    return path


def test_publish_moves_staging_into_place_and_makes_parents(tmp_path: pathlib.Path) -> None:
    staging = staged(tmp_path)
    target = tmp_path / "team" / "new.git"
    assert creating.publish(staging, target)
    assert (target / "refs" / "heads" / "main").is_file()
    assert not staging.exists()


@pytest.mark.parametrize("existing", ["repository", "empty-directory", "file"])
def test_publish_refuses_when_target_exists(tmp_path: pathlib.Path, existing: str) -> None:
    staging = staged(tmp_path)
    target = tmp_path / "taken.git"
    if existing == "repository":
        (target / "refs").mkdir(parents=True)
    elif existing == "empty-directory":
        target.mkdir()
    else:
        target.write_text("not a repository\n")
    assert not creating.publish(staging, target)
    assert staging.is_dir(), "the staging copy is for the caller to remove"
    assert not (target / "HEAD").exists()


def test_has_refs_when_a_ref_exists(tmp_path: pathlib.Path) -> None:
    assert creating.has_refs(staged(tmp_path))


def test_has_refs_not_for_unborn_head(tmp_path: pathlib.Path) -> None:
    assert not creating.has_refs(staged(tmp_path, ref=False))


def test_remove_when_already_gone(tmp_path: pathlib.Path) -> None:
    staging = staged(tmp_path)
    creating.remove(staging)
    creating.remove(staging)
    assert not staging.exists()


def test_remove_abandoned_deletes_only_staging_repositories(tmp_path: pathlib.Path):
    (tmp_path / f"{creating.STAGING_PREFIX}dead" / "objects").mkdir(parents=True)
    (tmp_path / "kept.git" / "objects").mkdir(parents=True)
    removed = creating.remove_abandoned(tmp_path)
    assert [p.name for p in removed] == [f"{creating.STAGING_PREFIX}dead"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.git"]
