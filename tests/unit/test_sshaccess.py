"""The operator's SSH parts: the host key, known_hosts, the clone URL and the keys file."""

import asyncssh
import pytest

from gitquorum.kube import sshaccess

pytestmark = pytest.mark.unit

FLUX = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl flux"


def test_sshaccess_known_hosts_names_the_service_and_the_host_key() -> None:
    private = sshaccess.new_host_key()
    line = sshaccess.known_hosts("repo", "team", private)
    hosts, kind, blob = line.split()
    assert hosts.split(",") == ["repo.team.svc", "repo.team.svc.cluster.local", "repo.team"]
    public = asyncssh.import_private_key(private).export_public_key("openssh").decode()
    assert f"{kind} {blob}" == " ".join(public.split()[:2])
    assert line.endswith("\n")


def test_sshaccess_clone_url_uses_user_git() -> None:
    assert sshaccess.clone_url("repo", "team") == "ssh://git@repo.team.svc/repo.git"


def test_sshaccess_keys_file_from_spec_and_secret() -> None:
    keys = sshaccess.deploy_keys_of([(FLUX, "read")])
    text = sshaccess.keys_file(keys, extra=f"# ci\n\nwrite {FLUX}\n")
    assert text == f"read {FLUX}\nwrite {FLUX}\n"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (sshaccess.DeployKey("ssh-ed25519 AAAA", "read"), r"deployKeys\[0\]: not an OpenSSH"),
        (sshaccess.DeployKey(FLUX, "admin"), "access must be read or write"),
        (sshaccess.DeployKey("", "read"), "not an OpenSSH"),
    ],
)
def test_sshaccess_rejects_bad_deploy_key(key: sshaccess.DeployKey, message: str) -> None:
    with pytest.raises(sshaccess.DeployKeyError, match=message):
        sshaccess.keys_file([key])


def test_sshaccess_rejects_bad_secret_line() -> None:
    with pytest.raises(sshaccess.DeployKeyError, match="deployKeysSecret line 2"):
        sshaccess.keys_file([], extra=f"read {FLUX}\nwrite nonsense\n")
