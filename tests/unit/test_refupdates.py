"""Parsing the receive-pack command section: what is accepted, and every test_rejects_*."""

import pytest

from gitquorum import errors
from gitquorum.protocol import pktline, refupdates

pytestmark = pytest.mark.unit

ZERO = "0" * 40
A = "a" * 40
B = "b" * 40


def parse(*lines: bytes, max_bytes: int = 1 << 20) -> refupdates.PushCommands:
    parser = refupdates.Parser(max_bytes=max_bytes)
    for packet in pktline.decode(b"".join(lines)):
        if parser.feed(packet):
            return parser.result()
    raise AssertionError("section did not complete")


def command(old: str, new: str, ref: str, caps: str | None = None) -> bytes:
    line = f"{old} {new} {ref}"
    if caps is not None:
        line += "\0" + caps
    return pktline.encode(line.encode() + b"\n")


def test_parses_updates_and_capabilities() -> None:
    commands = parse(
        command(ZERO, A, "refs/heads/new", "report-status side-band-64k atomic agent=git/2"),
        command(A, B, "refs/heads/main"),
        command(B, ZERO, "refs/tags/old"),
        pktline.FLUSH,
    )
    assert [u.ref for u in commands.updates] == [
        "refs/heads/new",
        "refs/heads/main",
        "refs/tags/old",
    ]
    assert commands.updates[0].is_create and commands.updates[2].is_delete
    assert commands.sideband and commands.has(b"atomic") and commands.has(b"agent")
    assert commands.expects_pack


def test_deletions_only_expect_no_pack() -> None:
    commands = parse(command(A, ZERO, "refs/heads/gone", "report-status"), pktline.FLUSH)
    assert not commands.expects_pack


def test_shallow_lines_and_push_options() -> None:
    commands = parse(
        pktline.encode(f"shallow {B}".encode()),
        command(A, B, "refs/heads/main", "report-status push-options"),
        pktline.FLUSH,
        pktline.encode(b"ci.skip"),
        pktline.encode(b"topic=x"),
        pktline.FLUSH,
    )
    assert commands.shallow == (B,)
    assert commands.options == ("ci.skip", "topic=x")


def test_encode_round_trips() -> None:
    original = parse(
        pktline.encode(f"shallow {B}".encode()),
        command(A, B, "refs/heads/main", "report-status push-options"),
        command(ZERO, B, "refs/heads/two"),
        pktline.FLUSH,
        pktline.encode(b"opt"),
        pktline.FLUSH,
    )
    again = parse(original.encode())
    assert again == original


def test_sha256_object_format() -> None:
    commands = parse(
        command("0" * 64, "c" * 64, "refs/heads/main", "object-format=sha256"), pktline.FLUSH
    )
    assert commands.updates[0].new == "c" * 64


def test_rejects_missing_flush_as_incomplete() -> None:
    parser = refupdates.Parser(max_bytes=1000)
    parser.feed(pktline.decode(command(ZERO, A, "refs/heads/x"))[0])
    assert not parser.done
    with pytest.raises(errors.ProtocolError, match="incomplete"):
        parser.result()


def test_rejects_section_over_max_bytes() -> None:
    # max_bytes bounds the memory a command section can take before git starts.
    lines = [command(ZERO, A, f"refs/heads/b{i}") for i in range(50)]
    with pytest.raises(errors.ProtocolError, match="exceeds 1000 bytes"):
        parse(*lines, pktline.FLUSH, max_bytes=1000)


def test_rejects_empty_command_list() -> None:
    with pytest.raises(errors.ProtocolError, match="no ref updates"):
        parse(pktline.FLUSH)


@pytest.mark.parametrize(
    ("old", "new"),
    [("a" * 39, A), (A, "g" * 40), ("A" * 40, A), (A, "a" * 64), ("", A)],
)
def test_rejects_malformed_object_names(old: str, new: str) -> None:
    with pytest.raises(errors.ProtocolError):
        parse(command(old, new, "refs/heads/x", "report-status"), pktline.FLUSH)


@pytest.mark.parametrize(
    "ref",
    [
        "HEAD",
        "main",
        "refs/heads/a..b",
        "refs/heads/x.lock",
        "refs/heads/sp ace",
        "refs/heads/x~1",
        "refs/heads/",
        "refs/heads/@{x}",
        "refs/heads/back\\slash",
    ],
)
def test_rejects_invalid_ref_names(ref: str) -> None:
    with pytest.raises(errors.ProtocolError):
        parse(command(ZERO, A, ref, "report-status"), pktline.FLUSH)


def test_rejects_ref_name_over_max_length() -> None:
    # MAX_REF_NAME_LENGTH: longer names fail on file systems and bloat logs.
    ref = "refs/heads/" + "x" * refupdates.MAX_REF_NAME_LENGTH
    with pytest.raises(errors.ProtocolError, match="longer than"):
        parse(command(ZERO, A, ref), pktline.FLUSH)


def test_rejects_too_many_capabilities() -> None:
    # MAX_CAPABILITIES: a hostile first line must not become a huge set.
    caps = " ".join(f"cap{i}" for i in range(refupdates.MAX_CAPABILITIES + 1))
    with pytest.raises(errors.ProtocolError, match="capabilities"):
        parse(command(ZERO, A, "refs/heads/x", caps), pktline.FLUSH)


def test_rejects_non_utf8_ref_name() -> None:
    line = ZERO.encode() + b" " + A.encode() + b" refs/heads/\xff\xfe"
    with pytest.raises(errors.ProtocolError):
        parse(pktline.encode(line), pktline.FLUSH)


def test_rejects_duplicate_ref() -> None:
    with pytest.raises(errors.ProtocolError, match="twice"):
        parse(command(ZERO, A, "refs/heads/x", ""), command(ZERO, B, "refs/heads/x"), pktline.FLUSH)


def test_rejects_capabilities_after_first_command() -> None:
    with pytest.raises(errors.ProtocolError, match="capabilities after"):
        parse(
            command(ZERO, A, "refs/heads/x"),
            command(ZERO, B, "refs/heads/y", "atomic"),
            pktline.FLUSH,
        )


def test_rejects_shallow_after_commands() -> None:
    with pytest.raises(errors.ProtocolError, match="shallow"):
        parse(
            command(ZERO, A, "refs/heads/x"), pktline.encode(f"shallow {A}".encode()), pktline.FLUSH
        )


def test_rejects_push_certificates() -> None:
    with pytest.raises(errors.ProtocolError, match="push-cert"):
        parse(pktline.encode(b"push-cert\0report-status"), pktline.FLUSH)


def test_rejects_delimiter_packet() -> None:
    with pytest.raises(errors.ProtocolError, match="delim"):
        parse(command(ZERO, A, "refs/heads/x"), pktline.DELIM, pktline.FLUSH)


def test_rejects_unknown_object_format() -> None:
    with pytest.raises(errors.ProtocolError, match="object format"):
        parse(command(ZERO, A, "refs/heads/x", "object-format=md5"), pktline.FLUSH)


def test_rejects_double_zero_update() -> None:
    with pytest.raises(errors.ProtocolError, match="two zero"):
        parse(command(ZERO, ZERO, "refs/heads/x"), pktline.FLUSH)


def test_rejects_packet_after_the_end() -> None:
    parser = refupdates.Parser(max_bytes=1000)
    for packet in pktline.decode(command(ZERO, A, "refs/heads/x") + pktline.FLUSH):
        parser.feed(packet)
    with pytest.raises(errors.ProtocolError, match="after the end"):
        parser.feed(pktline.Packet(pktline.Kind.FLUSH))
