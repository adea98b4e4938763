"""SSH for a repository, as the operator renders it: one host key, the deploy keys, the URL.

One host key per repository, generated once into the auth Secret and used by every replica,
so a client's ``known_hosts`` line stays valid across leader changes, rebuilds and updates.
The deploy keys (``spec.auth.deployKeys``, and those of ``spec.auth.deployKeysSecret``) become
the replicas' keys file (``server/sshkeys.py``), which they read again when it changes.
"""

import dataclasses
from collections.abc import Sequence

import asyncssh

from gitquorum.kube import names

HOST_KEY_TYPE = "ssh-ed25519"
ACCESS = ("read", "write")
KEYS_SECRET_KEY = "deployKeys"
"""The key of a ``deployKeysSecret`` holding deploy keys, one ``<access> <key>`` per line."""


@dataclasses.dataclass(frozen=True)
class DeployKey:
    """One entry of ``spec.auth.deployKeys``."""

    public_key: str
    """``<type> <base64> [comment]`` as in a ``.pub`` file."""
    access: str = "read"


class DeployKeyError(ValueError):
    """A deploy key that is not a public key in OpenSSH format."""


def new_host_key() -> str:
    """A fresh host key in OpenSSH's private key format."""
    key = asyncssh.generate_private_key(HOST_KEY_TYPE)
    return bytes(key.export_private_key("openssh")).decode()


def host_public_key(private: str) -> str:
    """``<type> <base64>`` of a host key (no comment)."""
    key = asyncssh.import_private_key(private)
    exported = bytes(key.export_public_key("openssh")).decode()
    return " ".join(exported.split()[:2])


def service_hosts(repository: str, namespace: str) -> tuple[str, ...]:
    """The names a client in the cluster may use for the repository's Service."""
    service = names.service(repository)
    return (
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
    )


def known_hosts(repository: str, namespace: str, private: str) -> str:
    """The ``known_hosts`` line naming the repository's Service in-cluster host names."""
    hosts = ",".join(service_hosts(repository, namespace))
    return f"{hosts} {host_public_key(private)}\n"


def clone_url(repository: str, namespace: str) -> str:
    return f"ssh://git@{service_hosts(repository, namespace)[0]}/{repository}.git"


def deploy_keys_of(pairs: Sequence[tuple[str, str]]) -> tuple[DeployKey, ...]:
    """The deploy keys of ``RepositorySpec.deploy_keys``."""
    return tuple(DeployKey(public_key, access) for public_key, access in pairs)


def keys_file(keys: Sequence[DeployKey], extra: str = "") -> str:
    """The replicas' keys file: one ``<access> <type> <base64> [comment]`` per line.

    Every key is checked here, so a bad one is reported in the repository's status and the
    others still work; ``extra`` is the text of a ``deployKeysSecret``, lines of the same
    form, checked the same way. Raises DeployKeyError naming the first bad entry."""
    lines = []
    for index, key in enumerate(keys):
        lines.append(_line(key.access, key.public_key, f"spec.auth.deployKeys[{index}]"))
    for number, raw in enumerate(extra.splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        access, _, public = text.partition(" ")
        lines.append(_line(access, public.strip(), f"deployKeysSecret line {number}"))
    return "".join(f"{line}\n" for line in lines)


def _line(access: str, public_key: str, where: str) -> str:
    if access not in ACCESS:
        raise DeployKeyError(f"{where}: access must be read or write, not {access[:20]!r}")
    try:
        asyncssh.import_public_key(public_key)
    except (asyncssh.KeyImportError, ValueError) as error:
        raise DeployKeyError(f"{where}: not an OpenSSH public key ({error})") from error
    return f"{access} {public_key.strip()}"
