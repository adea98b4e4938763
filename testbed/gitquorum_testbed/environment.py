"""What a container sees: its command line, its environment, and the spec ``podinit`` runs.

The environment is resolved as the kubelet does: a base of PATH, HOSTNAME and the
``kubernetes`` Service's variables, then ``envFrom`` ConfigMaps and Secrets, then ``env`` with
``$(VAR)`` expansion and ``valueFrom`` (fieldRef, secretKeyRef, configMapKeyRef). The container
spec adds the user and groups from the pod's and the container's security contexts and the
volume mounts, with the paths every container needs to reach the project's Python.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

from kubernetes import client

from gitquorum_testbed import binaries, settings, volumes

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STAGING_DIR = Path("/run/gitquorum-testbed/staging")
# What every container needs to reach whatever user it runs as: the interpreter, the
# virtualenv, and the checkout the package is installed from in editable mode.
RUNTIME_PATHS = sorted(
    {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), binaries.repo_root()}
)
RUNTIME_PATHS = [
    p for p in RUNTIME_PATHS if not any(o != p and p.is_relative_to(o) for o in RUNTIME_PATHS)
]
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(RuntimeError):
    """The pod cannot run as specified (CreateContainerConfigError)."""


@dataclasses.dataclass(frozen=True)
class PodEnvironment:
    """The pod as its containers see it, at one moment (the pod object is replaced on
    every update, so the runtime makes one of these each time it needs one)."""

    pod: client.V1Pod
    api: client.CoreV1Api
    pod_ip: str
    host_ip: str
    mounts: dict[str, Path]
    """Each volume's directory on the host, by volume name."""

    def argv(self, container: client.V1Container) -> list[str]:
        if not container.command:
            raise ConfigError(
                f"container {container.name} has no command: the testbed ignores images and runs "
                "the command with the project's Python environment"
            )
        env = self.env(container)
        return [expand(a, env) for a in list(container.command) + list(container.args or [])]

    def container_spec(self, container: client.V1Container, *, argv: list[str]) -> dict[str, Any]:
        """What ``podinit`` reads: the command, environment, mounts, user and root filesystem."""
        psc = self.pod.spec.security_context or client.V1PodSecurityContext()
        csc = container.security_context or client.V1SecurityContext()
        uid = csc.run_as_user if csc.run_as_user is not None else psc.run_as_user
        gid = csc.run_as_group if csc.run_as_group is not None else psc.run_as_group
        non_root = csc.run_as_non_root if csc.run_as_non_root is not None else psc.run_as_non_root
        if non_root and not uid:
            raise ConfigError(
                "runAsNonRoot is set but no non-zero runAsUser is given "
                "(the testbed has no image user to fall back on)"
            )
        groups = list(psc.supplemental_groups or [])
        if psc.fs_group is not None:
            groups.append(psc.fs_group)
        mounts = self._mounts(container)
        return {
            "argv": argv,
            "env": self.env(container),
            "mounts": mounts,
            "workingDir": container.working_dir,
            "uid": uid,
            "gid": gid if gid is not None else uid,
            "groups": groups if uid is not None else None,
            "readOnlyRoot": bool(csc.read_only_root_filesystem),
            # An empty directory on the host's /run where podinit parks a mount for a moment.
            "staging": str(STAGING_DIR),
            "expose": [str(p) for p in RUNTIME_PATHS],
        }

    def _mounts(self, container: client.V1Container) -> list[dict[str, Any]]:
        mounts = []
        for m in container.volume_mounts or []:
            if m.name not in self.mounts:
                raise ConfigError(f"volumeMount {m.name} names no volume of the pod")
            source = self.mounts[m.name] / (m.sub_path or "")
            if m.sub_path:
                source.parent.mkdir(parents=True, exist_ok=True)
                if not source.exists():
                    source.mkdir()
            kind = next(v for v in self.pod.spec.volumes if v.name == m.name)
            read_only = bool(m.read_only) or bool(
                kind.secret or kind.config_map or kind.projected or kind.downward_api
            )
            mounts.append({"source": str(source), "target": m.mount_path, "readOnly": read_only})
        return mounts

    def env(self, container: client.V1Container) -> dict[str, str]:
        namespace = self.pod.metadata.namespace
        env: dict[str, str] = {
            "PATH": f"{Path(sys.executable).parent}:{DEFAULT_PATH}",
            "HOSTNAME": str(self.pod.metadata.name),
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": str(settings.KUBERNETES_SERVICE_IP),
            "KUBERNETES_SERVICE_PORT": "443",
            "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        }
        for source in container.env_from or []:
            prefix = source.prefix or ""
            if source.config_map_ref:
                cm = self.api.read_namespaced_config_map(source.config_map_ref.name, namespace)
                env.update({prefix + k: v for k, v in (cm.data or {}).items()})
            if source.secret_ref:
                s = self.api.read_namespaced_secret(source.secret_ref.name, namespace)
                env.update({prefix + k: _b64(v) for k, v in (s.data or {}).items()})
        for var in container.env or []:
            if var.value_from is None:
                env[var.name] = expand(var.value or "", env)
            else:
                value = self._value_from(var.value_from, namespace)
                if value is not None:
                    env[var.name] = value
        return env

    def _value_from(self, source: client.V1EnvVarSource, namespace: str) -> str | None:
        if source.field_ref:
            if source.field_ref.field_path == "status.podIP":
                return self.pod_ip
            if source.field_ref.field_path == "status.hostIP":
                return self.host_ip
            return volumes.field(self.pod, source.field_ref.field_path)
        ref = source.secret_key_ref or source.config_map_key_ref
        if ref is None:
            raise ConfigError("only fieldRef, secretKeyRef and configMapKeyRef are supported")
        try:
            if source.secret_key_ref:
                data = {
                    k: _b64(v)
                    for k, v in (
                        self.api.read_namespaced_secret(ref.name, namespace).data or {}
                    ).items()
                }
            else:
                data = self.api.read_namespaced_config_map(ref.name, namespace).data or {}
        except client.ApiException as exc:
            if exc.status == 404 and ref.optional:
                return None
            raise ConfigError(f"{ref.name}: {exc.reason}") from exc
        if ref.key not in data:
            if ref.optional:
                return None
            raise ConfigError(f"key {ref.key} not found in {ref.name}")
        return str(data[ref.key])


def expand(value: str, env: dict[str, str]) -> str:
    """``$(VAR)`` replaced by VAR's value; an unknown variable is left as written."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def _b64(value: str) -> str:
    return base64.b64decode(value).decode(errors="replace")
