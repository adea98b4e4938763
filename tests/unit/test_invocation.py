"""The replica's command line, built once (replication.invocation), read by its own parser."""

from __future__ import annotations

import argparse

import pytest

from gitquorum.commands import replica
from gitquorum.kube import manifests
from gitquorum.kube.spec import RepositorySpec
from gitquorum.replication import invocation

pytestmark = pytest.mark.unit


def _parse(argv: list[str]) -> argparse.Namespace:
    assert argv[:2] == ["gitquorum", "replica"]
    parser = argparse.ArgumentParser()
    replica.add_arguments(parser)
    return parser.parse_args(argv[2:])


def test_invocation_every_option_is_what_the_parser_reads() -> None:
    command = invocation.ReplicaCommand(
        replica="r-1",
        name="repo",
        data="/data",
        listen="0.0.0.0:8080",
        peer_listen="0.0.0.0:8081",
        peer_token_file="/t/peer",
        admin_token_file="/t/admin",
        auth_file="/a/users",
        anonymous_read=True,
        leave_timeout=20,
        maintenance_permits=True,
        extra=("--hold", "5"),
    )
    args = _parse(command.argv())
    assert (args.id, args.name, str(args.data)) == ("r-1", "repo", "/data")
    assert (args.listen, args.peer_listen) == ("0.0.0.0:8080", "0.0.0.0:8081")
    assert (str(args.peer_token_file), str(args.admin_token_file)) == ("/t/peer", "/t/admin")
    assert str(args.auth_file) == "/a/users" and args.anonymous_read
    assert args.leave_timeout == 20 and args.maintenance_permits and args.hold == 5


def test_invocation_minimal_leaves_the_parser_defaults() -> None:
    command = invocation.ReplicaCommand(
        replica="r0", data="/d", listen="127.0.0.1:1", peer_listen="127.0.0.1:2",
        peer_token_file="/t",
    )  # fmt: skip
    args = _parse(command.argv())
    assert args.auth_file is None and not args.anonymous_read and not args.maintenance_permits


def test_invocation_of_the_pod_the_operator_renders_parses() -> None:
    owner = {"metadata": {"name": "repo", "namespace": "ns", "uid": "u"}}
    pod = manifests.replica_pod(owner, "repo-2", RepositorySpec(), image="img")
    args = _parse(pod["spec"]["containers"][0]["command"])
    assert args.id == "repo-2" and args.leave_timeout == manifests.LEAVE_SECONDS
