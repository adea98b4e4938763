"""Upload-pack request validation, smart-HTTP conventions and server-written reports."""

import pytest

from gitquorum import errors
from gitquorum.protocol import pktline, refupdates, reporting, smarthttp, uploadpack

pytestmark = pytest.mark.unit

WANT = pktline.encode(b"want " + b"a" * 40 + b"\n")


def test_uploadpack_accepts_v0_requests_ending_in_done_or_flush() -> None:
    uploadpack.validate(WANT + pktline.FLUSH + pktline.encode(b"done\n"), protocol_v2=False)
    uploadpack.validate(WANT + pktline.FLUSH, protocol_v2=False)


def test_uploadpack_accepts_v2_command() -> None:
    body = pktline.encode(b"command=ls-refs\n") + pktline.DELIM + pktline.FLUSH
    assert len(uploadpack.validate(body, protocol_v2=True)) == 3


def test_rejects_empty_upload_pack_request() -> None:
    with pytest.raises(errors.ProtocolError, match="empty"):
        uploadpack.validate(b"", protocol_v2=False)


def test_rejects_v0_request_without_end() -> None:
    with pytest.raises(errors.ProtocolError, match="ends before"):
        uploadpack.validate(WANT, protocol_v2=False)


def test_rejects_v2_packets_in_v0_request() -> None:
    with pytest.raises(errors.ProtocolError, match="v2 packet"):
        uploadpack.validate(WANT + pktline.DELIM + pktline.FLUSH, protocol_v2=False)


def test_rejects_v2_request_without_command() -> None:
    with pytest.raises(errors.ProtocolError, match="command"):
        uploadpack.validate(WANT + pktline.FLUSH, protocol_v2=True)


def test_rejects_v2_request_without_flush() -> None:
    with pytest.raises(errors.ProtocolError, match="flush"):
        uploadpack.validate(pktline.encode(b"command=fetch\n") + pktline.DELIM, protocol_v2=True)


def test_service_content_types() -> None:
    service = smarthttp.Service.named("git-upload-pack")
    assert service.command == "upload-pack"
    assert service.advertisement_type == "application/x-git-upload-pack-advertisement"
    assert service.request_type == "application/x-git-upload-pack-request"
    assert smarthttp.Service.RECEIVE_PACK.result_type == "application/x-git-receive-pack-result"


def test_rejects_unknown_service() -> None:
    with pytest.raises(errors.BadRequest):
        smarthttp.Service.named("git-shell")


def test_git_protocol_version_and_receive_pack_downgrade() -> None:
    protocol = smarthttp.GitProtocol.parse("version=2:object-format=sha1")
    assert protocol.version == 2
    assert protocol.for_service(smarthttp.Service.UPLOAD_PACK) is protocol
    assert protocol.for_service(smarthttp.Service.RECEIVE_PACK).version == 0
    assert smarthttp.GitProtocol.parse(None).version == 0


@pytest.mark.parametrize("header", ["version=2\nX: y", "a" * 300, "version=2;rm -rf", "é"])
def test_rejects_malformed_git_protocol_header(header: str) -> None:
    # MAX_GIT_PROTOCOL_LENGTH and the character set: the value goes into git's environment.
    with pytest.raises(errors.BadRequest):
        smarthttp.GitProtocol.parse(header)


def test_advertisement_preamble_only_before_v2() -> None:
    v0 = smarthttp.advertisement_preamble(smarthttp.Service.UPLOAD_PACK, smarthttp.GitProtocol())
    assert v0 == pktline.encode(b"# service=git-upload-pack\n") + pktline.FLUSH
    v2 = smarthttp.GitProtocol.parse("version=2")
    assert smarthttp.advertisement_preamble(smarthttp.Service.UPLOAD_PACK, v2) == b""


def test_fatal_without_sideband_is_err_packet() -> None:
    assert reporting.fatal("boom", sideband_enabled=False) == pktline.encode(b"ERR boom")


def test_fatal_with_sideband_uses_band_three() -> None:
    packets = pktline.decode(reporting.fatal("boom", sideband_enabled=True))
    assert packets[0].payload == b"\x03boom\n"
    assert packets[-1].kind is pktline.Kind.FLUSH


def test_sideband_splits_long_payloads() -> None:
    payload = b"x" * (reporting.MAX_SIDEBAND_PAYLOAD * 2 + 5)
    packets = pktline.decode(reporting.sideband(1, payload))
    assert len(packets) == 3
    assert b"".join(p.payload[1:] for p in packets) == payload


def test_rejection_reports_every_ref_in_report_status() -> None:
    commands = refupdates.PushCommands(
        updates=(
            refupdates.RefUpdate("refs/heads/a", "0" * 40, "1" * 40),
            refupdates.RefUpdate("refs/heads/b", "1" * 40, "2" * 40),
        ),
        capabilities=("report-status",),
    )
    report = pktline.decode(reporting.rejection(commands, "no quorum\nnow"))
    assert [p.line for p in report[:-1]] == [
        b"unpack ok",
        b"ng refs/heads/a no quorum now",
        b"ng refs/heads/b no quorum now",
    ]


def test_rejection_with_sideband_is_wrapped_in_band_one() -> None:
    commands = refupdates.PushCommands(
        updates=(refupdates.RefUpdate("refs/heads/a", "0" * 40, "1" * 40),),
        capabilities=("report-status", "side-band-64k"),
    )
    packets = pktline.decode(reporting.rejection(commands, "no"))
    assert packets[0].payload[:1] == b"\x01"
    inner = pktline.decode(packets[0].payload[1:])
    assert inner[1].line == b"ng refs/heads/a no"


PACK_DATA = b"PACK\x00\x00\x00\x02" + bytes(range(256)) * 300 + b"ERR \x03"


@pytest.mark.parametrize(
    "output",
    [
        pytest.param(pktline.error("upload-pack: not our ref " + "1" * 40), id="err"),
        pytest.param(WANT + pktline.error("boom"), id="err-after-packets"),
        pytest.param(reporting.sideband(1, PACK_DATA) + reporting.sideband(3, b"x\n"), id="band3"),
        pytest.param(reporting.fatal("boom", sideband_enabled=True), id="band3-flush"),
        pytest.param(pktline.error("ends in 0000") + pktline.FLUSH, id="err-flush"),
        pytest.param(pktline.encode(b"ERR ends in 0000"), id="err-ending-like-a-flush"),
    ],
)
def test_ends_with_error_finds_gits_error_packet_at_the_end(output: bytes) -> None:
    assert reporting.ends_with_error(output)
    assert reporting.ends_with_error(PACK_DATA * 3 + output)


@pytest.mark.parametrize(
    "output",
    [
        pytest.param(b"", id="empty"),
        pytest.param(pktline.error("boom") + WANT, id="err-then-more"),
        pytest.param(pktline.error("boom")[:-1], id="err-truncated"),
        pytest.param(PACK_DATA, id="pack-data-holding-the-markers"),
        pytest.param(reporting.sideband(1, PACK_DATA), id="band1"),
        pytest.param(reporting.sideband(2, b"progress\n"), id="band2"),
        pytest.param(b"0009ERR x" + b"ERR ", id="a-marker-without-its-header"),
    ],
)
def test_ends_with_error_refuses_output_that_ends_otherwise(output: bytes) -> None:
    assert not reporting.ends_with_error(output)
