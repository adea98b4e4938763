"""Bundle headers (gitformat-bundle): read strictly, each malformation refused."""

import io

import pytest

from gitquorum import errors
from gitquorum.backup import bundling

pytestmark = pytest.mark.unit

A = "a" * 40
B = "b" * 40


def _parse(data: bytes) -> bundling.Header:
    return bundling.parse_header(io.BytesIO(data))


def test_header_v2_prerequisites_and_refs() -> None:
    data = f"# v2 git bundle\n-{A} subject line\n-{B}\n{A} refs/heads/main\n{B} HEAD\n\nPACK"
    header = _parse(data.encode())
    assert header == bundling.Header(
        version=2, prerequisites=(A, B), refs=((A, "refs/heads/main"), (B, "HEAD"))
    )


def test_header_v3_skips_capabilities() -> None:
    data = f"# v3 git bundle\n@object-format=sha1\n{A} refs/heads/main\n\nPACK"
    assert _parse(data.encode()).refs == ((A, "refs/heads/main"),)


def test_header_leaves_file_at_pack() -> None:
    file = io.BytesIO(f"# v2 git bundle\n{A} refs/heads/main\n\nPACK".encode())
    bundling.parse_header(file)
    assert file.read() == b"PACK"


@pytest.mark.parametrize("signature", [b"", b"# v1 git bundle\n", b"PACK", b"# v2 git bundle "])
def test_header_rejects_signature(signature: bytes) -> None:
    with pytest.raises(errors.BackupCorrupt, match="not a git bundle"):
        _parse(signature + b"\n")


def test_header_rejects_missing_blank_line() -> None:
    with pytest.raises(errors.BackupCorrupt, match="ends before its blank line"):
        _parse(f"# v2 git bundle\n{A} refs/heads/main\n".encode())


@pytest.mark.parametrize("line", [f"-{A[:39]}\n", f"-{A}x\n", "-\n", f"-{A.upper()}\n"])
def test_header_rejects_prerequisite(line: str) -> None:
    with pytest.raises(errors.BackupCorrupt, match="malformed bundle prerequisite"):
        _parse(f"# v2 git bundle\n{line}\n".encode())


@pytest.mark.parametrize("line", [f"{A}\n", f"{A} \n", "xyz refs/heads/main\n", "\t\n"])
def test_header_rejects_ref_line(line: str) -> None:
    with pytest.raises(errors.BackupCorrupt, match="malformed bundle header line"):
        _parse(f"# v2 git bundle\n{line}\n".encode())


def test_header_rejects_capability_in_v2() -> None:
    with pytest.raises(errors.BackupCorrupt, match="malformed bundle header line"):
        _parse(b"# v2 git bundle\n@object-format=sha1\n\n")


def test_header_rejects_oversized(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundling, "MAX_HEADER_BYTES", 100)
    lines = "".join(f"{A} refs/heads/b{n}\n" for n in range(5))
    with pytest.raises(errors.BackupCorrupt, match="exceeds 100 bytes"):
        _parse(f"# v2 git bundle\n{lines}\n".encode())
