"""The objects around a repository's replicas: the credentials, their hash the replicas check,
the replication tokens, the Service, the PodDisruptionBudget and the NetworkPolicy.

They are checked when the part of the spec they depend on changes, and otherwise every
``Settings.resync_interval``, so a steady pass makes no API request.
"""

import asyncio
import hashlib
import logging
import secrets

from gitquorum.kube import context, manifests, names
from gitquorum.kube.spec import RepositorySpec
from gitquorum.replication import peerclient
from gitquorum.server import auth, passwords

log = logging.getLogger("gitquorum.kube.reconciler")

GENERATED_USER = "gitquorum"


class Ensuring(context.Context):
    """Creates and checks the objects around the replicas."""

    async def _ensure_objects(
        self, body: context.Body, spec: RepositorySpec, memory: context.Memory
    ) -> str | None:
        """Secrets, Service, PDB, NetworkPolicy; returns a problem to report, if any.

        Checked when the spec's part they depend on changes and otherwise every
        ``resync_interval``: credentials rotated in their Secret reach the replicas then."""
        namespace = body["metadata"]["namespace"]
        repository = body["metadata"]["name"]
        fresh = self.clock() - memory.ensured_at < self.settings.resync_interval
        policy = spec.policy()
        # memory.ensured: (replicas, credentials fingerprint, credentials Secret, policy)
        unchanged = (spec.replicas, spec.credentials_secret, policy)
        if fresh and memory.ensured[:1] + memory.ensured[2:] == unchanged:
            return None
        credentials = await self._credentials(body, spec)
        if isinstance(credentials, str):
            return credentials
        username, password = credentials
        secret = f"{username}:{password}\n{policy}"
        fingerprint = hashlib.sha256(secret.encode()).hexdigest()
        wanted = (spec.replicas, fingerprint, spec.credentials_secret, policy)
        if memory.ensured == wanted and memory.admin_token:
            memory.ensured_at = self.clock()
            return None
        await self._ensure_auth(body, username, password, fingerprint, policy)
        tokens = {"peer-token": secrets.token_hex(24), "admin-token": secrets.token_hex(24)}
        replication = manifests.secret(body, names.replication_secret(repository), tokens)
        await asyncio.to_thread(self.kube.create, namespace, replication)
        stored = await asyncio.to_thread(
            self.kube.read_secret, namespace, names.replication_secret(repository)
        )
        if not stored or "admin-token" not in stored:
            return f"Secret {names.replication_secret(repository)} has no admin-token"
        service = manifests.service(body)
        for manifest in (
            service,
            manifests.disruption_budget(body, spec.replicas),
            manifests.network_policy(body),
        ):
            await asyncio.to_thread(self.kube.create, namespace, manifest)
        await asyncio.to_thread(
            self.kube.patch_service_selector,
            namespace,
            service["metadata"]["name"],
            service["spec"]["selector"],
        )
        await asyncio.to_thread(
            self.kube.patch_budget,
            namespace,
            names.disruption_budget(repository),
            manifests.budget(spec.replicas),
        )
        if memory.admin_token != stored["admin-token"]:
            if memory.peers is not None:
                await memory.peers.close()
            memory.admin_token = stored["admin-token"]
            memory.peers = peerclient.Peers(
                token=memory.admin_token, timeout=self.settings.status_timeout
            )
        memory.credentials_secret = spec.credentials_secret or names.credentials_secret(repository)
        memory.ensured = wanted
        memory.ensured_at = self.clock()
        return None

    async def _credentials(self, body: context.Body, spec: RepositorySpec) -> tuple[str, str] | str:
        """(username, password) that may push, or why there are none."""
        namespace = body["metadata"]["namespace"]
        repository = body["metadata"]["name"]
        if spec.credentials_secret is None:
            generated = {"username": GENERATED_USER, "password": secrets.token_urlsafe(24)}
            manifest = manifests.secret(body, names.credentials_secret(repository), generated)
            await asyncio.to_thread(self.kube.create, namespace, manifest)
            name = names.credentials_secret(repository)
        else:
            name = spec.credentials_secret
        data = await asyncio.to_thread(self.kube.read_secret, namespace, name)
        if data is None:
            return f"credentials Secret {name} does not exist"
        if not data.get("username") or not data.get("password"):
            return f"credentials Secret {name} needs the keys username and password"
        try:
            auth.check_name(data["username"])
        except Exception as error:
            return f"credentials Secret {name}: {error}"
        return data["username"], data["password"]

    async def _ensure_auth(
        self, body: context.Body, username: str, password: str, fingerprint: str, policy: str
    ) -> None:
        """The hashed credentials the replicas check and their protected refs (``policy``);
        rewritten when either changes. Replicas read both again when the Secret changes."""
        namespace = body["metadata"]["namespace"]
        name = names.auth_secret(body["metadata"]["name"])
        annotations = await asyncio.to_thread(self.kube.secret_annotations, namespace, name)
        if annotations is not None and annotations.get(names.AUTH_FINGERPRINT) == fingerprint:
            return
        hashed = await asyncio.to_thread(passwords.hash_token, password.encode())
        manifest = manifests.secret(
            body,
            name,
            {"users": auth.render(username, hashed) + "\n", names.POLICY_KEY: policy},
            annotations={names.AUTH_FINGERPRINT: fingerprint},
        )
        if annotations is None:
            await asyncio.to_thread(self.kube.create, namespace, manifest)
        else:
            await asyncio.to_thread(self.kube.patch_secret, namespace, manifest)
