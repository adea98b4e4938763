"""Materialising a pod's volumes as directories on its node.

Secrets, ConfigMaps, downward-API files and service-account tokens are written into the pod's
own directory (as the kubelet does under /var/lib/kubelet/pods); a PVC resolves to the directory
of its bound local PersistentVolume; an emptyDir is a fresh directory that lives as long as the
pod. The container init then bind-mounts these at their ``mountPath``.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from gitquorum_testbed import settings

# The kubelet's default expiry for projected service-account tokens (an hour and a bit).
TOKEN_SECONDS_DEFAULT = 3607


class VolumeError(RuntimeError):
    """A volume cannot be provided yet (missing Secret, unbound PVC...)."""


def materialise(
    pod: client.V1Pod, *, pod_dir: Path, api: client.CoreV1Api, ca_cert: Path
) -> dict[str, Path]:
    """Return a host directory for every volume of ``pod``."""
    paths: dict[str, Path] = {}
    for volume in pod.spec.volumes or []:
        target = pod_dir / "volumes" / volume.name
        if volume.persistent_volume_claim:
            paths[volume.name] = _claim_path(pod, volume.persistent_volume_claim.claim_name, api)
        elif volume.empty_dir is not None:
            target.mkdir(parents=True, exist_ok=True)
            paths[volume.name] = target
        elif volume.host_path:
            paths[volume.name] = Path(volume.host_path.path)
            continue
        elif _is_projected(volume):
            paths[volume.name] = _write_projected(pod, volume, target, api, ca_cert)
        else:
            raise VolumeError(f"volume {volume.name}: this testbed does not support its type")
        _apply_fs_group(pod, paths[volume.name])
    return paths


def refresh(pod: client.V1Pod, *, pod_dir: Path, api: client.CoreV1Api, ca_cert: Path) -> None:
    """Rewrite Secret, ConfigMap, downward-API and token volumes, as the kubelet's periodic
    sync does: updated Secrets reach running pods, and tokens are renewed before they expire.
    A volume that cannot be read now keeps its previous content."""
    for volume in pod.spec.volumes or []:
        if not _is_projected(volume):
            continue
        target = pod_dir / "volumes" / volume.name
        try:
            _apply_fs_group(pod, _write_projected(pod, volume, target, api, ca_cert))
        except (VolumeError, client.ApiException):
            continue


def _is_projected(volume: client.V1Volume) -> bool:
    return bool(volume.secret or volume.config_map or volume.projected or volume.downward_api)


def _write_projected(
    pod: client.V1Pod,
    volume: client.V1Volume,
    target: Path,
    api: client.CoreV1Api,
    ca_cert: Path,
) -> Path:
    files: dict[str, bytes]
    if volume.secret:
        secret = volume.secret
        files = _secret_files(
            pod, secret.secret_name, secret.items, api, optional=bool(secret.optional)
        )
        return _write(target, files, mode=secret.default_mode)
    if volume.config_map:
        cm = volume.config_map
        files = _config_map_files(pod, cm.name, cm.items, api, optional=bool(cm.optional))
        return _write(target, files, mode=cm.default_mode)
    if volume.projected:
        files = _projected_files(pod, volume.projected, api, ca_cert, previous=target / "..data")
        return _write(target, files, mode=volume.projected.default_mode)
    downward = volume.downward_api
    files = {
        i.path: _field(pod, i.field_ref.field_path).encode()
        for i in downward.items or []
        if i.field_ref
    }
    return _write(target, files, mode=downward.default_mode)


def _apply_fs_group(pod: client.V1Pod, path: Path) -> None:
    context = pod.spec.security_context
    if context is None or context.fs_group is None:
        return
    if context.fs_group_change_policy == "OnRootMismatch":
        # Walking a large volume on every start is what this policy exists to avoid.
        info = path.stat()
        if info.st_gid == context.fs_group and info.st_mode & 0o2070 == 0o2070:
            return
    _chown_tree(path, gid=context.fs_group)


def field(pod: client.V1Pod, path: str) -> str:
    """The value of a downward-API ``fieldPath``."""
    return _field(pod, path)


def _claim_path(pod: client.V1Pod, claim: str, api: client.CoreV1Api) -> Path:
    pvc = api.read_namespaced_persistent_volume_claim(claim, pod.metadata.namespace)
    if pvc.status.phase != "Bound" or not pvc.spec.volume_name:
        raise VolumeError(f"PVC {claim} is not bound yet")
    pv = api.read_persistent_volume(pvc.spec.volume_name)
    source = pv.spec.local or pv.spec.host_path
    if source is None:
        raise VolumeError(f"PV {pv.metadata.name} is neither local nor hostPath")
    path = Path(source.path)
    if not path.is_dir():
        raise VolumeError(f"PV {pv.metadata.name}: {path} is not on this node")
    return path


def _secret_files(
    pod: client.V1Pod,
    name: str,
    items: list[Any] | None,
    api: client.CoreV1Api,
    *,
    optional: bool,
) -> dict[str, bytes]:
    secret = _read("secret", name, api.read_namespaced_secret, pod, optional=optional)
    if secret is None:
        return {}
    return _select({k: base64.b64decode(v) for k, v in (secret.data or {}).items()}, items)


def _config_map_files(
    pod: client.V1Pod,
    name: str,
    items: list[Any] | None,
    api: client.CoreV1Api,
    *,
    optional: bool,
) -> dict[str, bytes]:
    cm = _read("configmap", name, api.read_namespaced_config_map, pod, optional=optional)
    if cm is None:
        return {}
    data = {k: v.encode() for k, v in (cm.data or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
    return _select(data, items)


def _read(kind: str, name: str, reader: Any, pod: client.V1Pod, *, optional: bool) -> Any:
    """Read a Secret or ConfigMap of the pod's namespace; None when optional and missing."""
    try:
        return reader(name, pod.metadata.namespace)
    except client.ApiException as exc:
        if exc.status == 404 and optional:
            return None
        raise VolumeError(f"{kind} {name}: {exc.reason}") from exc


def _projected_files(
    pod: client.V1Pod,
    projected: client.V1ProjectedVolumeSource,
    api: client.CoreV1Api,
    ca_cert: Path,
    *,
    previous: Path,
) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for source in projected.sources or []:
        if source.service_account_token:
            files[source.service_account_token.path] = _token(
                pod, source.service_account_token, api, previous=previous
            ).encode()
        elif source.config_map:
            cm = source.config_map
            if cm.name == "kube-root-ca.crt":
                # Published by kube-controller-manager; read the file directly if it lags.
                try:
                    files.update(_config_map_files(pod, cm.name, cm.items, api, optional=False))
                    continue
                except VolumeError:
                    files["ca.crt"] = ca_cert.read_bytes()
                    continue
            files.update(_config_map_files(pod, cm.name, cm.items, api, optional=bool(cm.optional)))
        elif source.secret:
            files.update(
                _secret_files(
                    pod,
                    source.secret.name,
                    source.secret.items,
                    api,
                    optional=bool(source.secret.optional),
                )
            )
        elif source.downward_api:
            for item in source.downward_api.items or []:
                if item.field_ref:
                    files[item.path] = _field(pod, item.field_ref.field_path).encode()
    return files


def _token(
    pod: client.V1Pod,
    source: client.V1ServiceAccountTokenProjection,
    api: client.CoreV1Api,
    *,
    previous: Path,
) -> str:
    """A token from the TokenRequest API, reused until half its lifetime has passed."""
    lifetime = source.expiration_seconds or TOKEN_SECONDS_DEFAULT
    current = previous / source.path
    if current.exists() and time.time() - current.stat().st_mtime < lifetime / 2:
        return current.read_text()
    audiences = [source.audience] if source.audience else []
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(
            audiences=audiences,
            expiration_seconds=lifetime,
            bound_object_ref=client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid
            ),
        )
    )
    account = pod.spec.service_account_name or "default"
    response = api.create_namespaced_service_account_token(account, pod.metadata.namespace, request)
    return str(response.status.token)


def _select(data: dict[str, bytes], items: list[Any] | None) -> dict[str, bytes]:
    if not items:
        return data
    return {item.path: data[item.key] for item in items if item.key in data}


def _write(target: Path, files: dict[str, bytes], *, mode: int | None) -> Path:
    """Publish ``files`` in ``target`` atomically, the way the kubelet does.

    The directory stays (a container has it bind-mounted); its entries are symbolic links
    through ``..data``, which is swapped in one rename to a new timestamped directory. A reader
    sees the old set of files or the new one, never a mix.
    """
    target.mkdir(parents=True, exist_ok=True)
    if _published(target / "..data") == files:
        return target  # nothing changed: no new version, no churn for readers
    version = target / f"..{time.time_ns()}"
    version.mkdir()
    for rel, content in files.items():
        path = version / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode if mode is not None else 0o644)
    swap = target / "..data_tmp"
    swap.unlink(missing_ok=True)
    swap.symlink_to(version.name)
    os.replace(swap, target / "..data")
    tops = {Path(rel).parts[0] for rel in files}
    for top in tops:
        link = target / top
        if not link.is_symlink():
            link.symlink_to(Path("..data") / top)
    for entry in target.iterdir():
        if entry.name.startswith("..") and entry.name not in ("..data", version.name):
            shutil.rmtree(entry, ignore_errors=True)
        elif not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    return target


def _published(data: Path) -> dict[str, bytes] | None:
    if not data.is_dir():
        return None
    return {
        str(path.relative_to(data)): path.read_bytes() for path in data.rglob("*") if path.is_file()
    }


def _chown_tree(root: Path, *, gid: int) -> None:
    # fsGroup: the volume's group becomes fsGroup and is group-writable, as the kubelet does.
    for dirpath, _dirs, filenames in os.walk(root):
        os.chown(dirpath, -1, gid)
        os.chmod(dirpath, os.stat(dirpath).st_mode | 0o2070)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chown(path, -1, gid, follow_symlinks=False)


def _field(pod: client.V1Pod, path: str) -> str:
    meta = pod.metadata
    simple = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace,
        "metadata.uid": meta.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": pod.status.pod_ip if pod.status else None,
        "status.hostIP": pod.status.host_ip if pod.status else None,
    }
    if path in simple:
        return str(simple[path] or "")
    for prefix, mapping in (
        ("metadata.labels", meta.labels),
        ("metadata.annotations", meta.annotations),
    ):
        if path == prefix:
            return "\n".join(f'{k}="{v}"' for k, v in sorted((mapping or {}).items()))
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((mapping or {}).get(path[len(prefix) + 2 : -2], ""))
    raise VolumeError(f"unsupported fieldPath {path!r}")


def pvc_root(layout: settings.Layout, node: str) -> Path:
    return layout.node_dir(node) / "volumes"
