"""The SSH keys file (server.sshkeys) and git's exec request (server.ssh.parse_command)."""

import asyncio
import pathlib

import asyncssh
import pytest

from gitquorum import errors
from gitquorum.protocol import smarthttp
from gitquorum.server import auth, ssh, sshkeys

pytestmark = pytest.mark.unit


def _public(comment: str = "") -> tuple[asyncssh.SSHKey, str]:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment or None)
    return key, key.export_public_key("openssh").decode().strip()


def test_parse_reads_permissions_comments_and_skips_blank_and_comment_lines() -> None:
    writer, writer_line = _public("alice@laptop")
    reader, reader_line = _public()
    text = (
        f"# keys\n\nwrite {writer_line}\n  read {reader_line.split()[0]} {reader_line.split()[1]}\n"
    )
    keys = sshkeys.parse(text)
    assert keys[writer.public_data].permission is auth.Permission.WRITE
    assert keys[writer.public_data].label == "alice@laptop"
    assert keys[reader.public_data].permission is auth.Permission.READ
    assert keys[reader.public_data].label.startswith("SHA256:")


def test_label_of_a_comment_that_is_not_a_plain_name_is_the_fingerprint() -> None:
    key, line = _public()
    entry = sshkeys.parse_line(f"read {line} two words")
    assert entry.comment == "two words" and entry.label == entry.fingerprint
    assert entry.fingerprint == key.get_fingerprint("sha256")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("admin ssh-ed25519 AAAA", "permission is read or write"),
        ("write ssh-ed25519", "expected read|write"),
        ("write ssh-ed25519 not-base64!", "not a public key"),
        ("write ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIA==", "not a public key"),
    ],
)
def test_rejects_malformed_lines(line: str, message: str) -> None:
    with pytest.raises(errors.AuthFileError, match=message):
        sshkeys.parse(f"# first\n{line}\n")


def test_rejects_a_line_longer_than_any_key() -> None:
    with pytest.raises(errors.AuthFileError, match="line 1: line longer"):
        sshkeys.parse("write ssh-ed25519 " + "A" * sshkeys.MAX_LINE_LENGTH)


def test_rejects_the_same_key_twice() -> None:
    _, line = _public()
    with pytest.raises(errors.AuthFileError, match="line 2: the same key again"):
        sshkeys.parse(f"read {line}\nwrite {line}\n")


def test_rejects_a_file_larger_than_the_limit(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "keys"
    path.write_text("#" * (sshkeys.MAX_FILE_BYTES + 1))
    with pytest.raises(errors.AuthFileError, match="larger than"):
        sshkeys.KeysFile(path, reload_interval=0).load()


def test_keys_file_reloads_and_keeps_the_last_good_version(tmp_path: pathlib.Path) -> None:
    now = [0.0]
    path = tmp_path / "keys"
    first, first_line = _public("first")
    second, second_line = _public("second")
    path.write_text(f"write {first_line}\n")
    keys = sshkeys.KeysFile(path, reload_interval=1.0, clock=lambda: now[0])
    keys.load()
    assert asyncio.run(keys.find(first)) is not None
    path.write_text(f"read {second_line}\n")
    assert asyncio.run(keys.find(second)) is None  # not checked again yet
    now[0] = 2.0
    assert asyncio.run(keys.find(second)) is not None
    assert asyncio.run(keys.find(first)) is None
    path.write_text("read garbage\n")
    now[0] = 4.0
    assert asyncio.run(keys.find(second)) is not None


@pytest.mark.parametrize(
    ("command", "service", "path"),
    [
        ("git-upload-pack '/team/repo.git'", smarthttp.Service.UPLOAD_PACK, "team/repo.git"),
        ("git-upload-pack 'repo.git'", smarthttp.Service.UPLOAD_PACK, "repo.git"),
        ("git upload-pack '/repo'", smarthttp.Service.UPLOAD_PACK, "repo"),
        ("git-receive-pack '/repo.git'", smarthttp.Service.RECEIVE_PACK, "repo.git"),
        ("git receive-pack 'a b.git'", smarthttp.Service.RECEIVE_PACK, "a b.git"),
    ],
)
def test_parse_command_reads_what_git_sends(
    command: str, service: smarthttp.Service, path: str
) -> None:
    assert ssh.parse_command(command) == (service, path)


@pytest.mark.parametrize(
    "command",
    [
        "sh -c 'id'",
        "git-upload-archive '/repo.git'",
        "git-upload-pack /repo.git",
        "git-upload-pack '/repo.git'; rm -rf /",
        "git-upload-pack '/it'\\''s.git'",
        "git-receive-pack '/repo.git' --extra",
        "",
    ],
)
def test_rejects_commands_other_than_git_services(command: str) -> None:
    with pytest.raises(ssh.Refused, match="is not served here"):
        ssh.parse_command(command)


def test_rejects_a_command_longer_than_git_sends() -> None:
    with pytest.raises(ssh.Refused):
        ssh.parse_command("git-upload-pack '" + "a" * ssh.MAX_COMMAND_LENGTH + "'")
