"""The command line: dispatch, settings from arguments, and passwd run in-process."""

import argparse
import io
import pathlib
import sys

import pytest

from gitquorum import cli, errors
from gitquorum.commands import passwd, serve
from gitquorum.server import auth, settings

pytestmark = pytest.mark.unit


def run_passwd(monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "") -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return cli.main(["passwd", *args])


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "serve" in out and "passwd" in out


def test_passwd_adds_replaces_and_deletes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "users"
    path.write_text("# keep me\n")
    assert run_passwd(monkeypatch, "--auth-file", str(path), "alice", stdin="one\n") == 0
    assert (
        run_passwd(
            monkeypatch,
            "--auth-file",
            str(path),
            "bob",
            "--read-only",
            "--algorithm",
            "pbkdf2-sha256",
            stdin="two\n",
        )
        == 0
    )
    users = auth.parse(path.read_text())
    assert users["bob"].permission is auth.Permission.READ
    assert users["bob"].secret.algorithm == "pbkdf2-sha256"
    first = users["alice"].secret
    assert run_passwd(monkeypatch, "--auth-file", str(path), "alice", stdin="three\n") == 0
    assert auth.parse(path.read_text())["alice"].secret != first
    assert run_passwd(monkeypatch, "--auth-file", str(path), "--delete", "bob") == 0
    text = path.read_text()
    assert text.startswith("# keep me\n") and "bob" not in text


def test_passwd_refuses_a_broken_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "users"
    path.write_text("not a user line\n")
    assert run_passwd(monkeypatch, "--auth-file", str(path), "alice", stdin="x\n") == 2
    assert path.read_text() == "not a user line\n"


def serve_args(tmp_path: pathlib.Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(["--root", str(tmp_path), *extra])


def test_serve_settings_from_arguments(tmp_path: pathlib.Path) -> None:
    config = serve.settings_from(
        serve_args(
            tmp_path,
            "--listen",
            "0.0.0.0:9418",
            "--anonymous-read",
            "--create-on-push",
            "--max-git-processes",
            "4",
            "--no-fsck",
        )
    )
    assert (config.host, config.port) == ("0.0.0.0", 9418)
    assert config.access.anonymous_read and config.access.create_on_push
    assert config.limits.max_git_processes == 4
    assert not config.git.fsck_objects


def test_serve_refuses_a_server_nobody_could_use(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ConfigError, match="auth-file"):
        serve.settings_from(serve_args(tmp_path))


def test_serve_refuses_missing_root(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ConfigError, match="not a directory"):
        serve.settings_from(serve_args(tmp_path / "missing", "--anonymous-read"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:0", ("::1", 0)),
        ("example:65535", ("example", 65535)),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert settings.parse_listen(value) == expected


@pytest.mark.parametrize("value", ["8080", ":8080", "host:", "host:99999", "host:http"])
def test_rejects_bad_listen_addresses(value: str) -> None:
    with pytest.raises(errors.ConfigError):
        settings.parse_listen(value)


def test_passwd_module_is_light() -> None:
    assert "aiohttp" not in passwd.__dict__
