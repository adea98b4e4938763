"""The objects around a repository's replicas: the credentials, their hash the replicas check,
the replication tokens, the Service, the PodDisruptionBudget and the NetworkPolicy.

They are checked when the part of the spec they depend on changes, and otherwise every
``Settings.resync_interval``, so a steady pass makes no API request.
"""

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import secrets
from typing import Any

from gitquorum import errors
from gitquorum.kube import context, manifests, names, sshaccess
from gitquorum.kube.spec import RepositorySpec
from gitquorum.replication import peerclient
from gitquorum.server import auth, passwords

log = logging.getLogger("gitquorum.kube.reconciler")

GENERATED_USER = "gitquorum"
GENERATED_BYTES = 24
"""Random bytes of a generated password (192 bits)."""
HASHING = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="hash")
"""Where credentials are hashed: each scrypt hash takes 16 MiB for its 50 ms, so two at a
time whatever else runs (hundreds of repositories created at once hashed all together)."""


class Ensuring(context.Context):
    """Creates and checks the objects around the replicas."""

    async def _ensure_objects(
        self, body: context.Body, spec: RepositorySpec, memory: context.Memory
    ) -> str | None:
        """Secrets, Service, PDB, NetworkPolicy; returns a problem to report, if any.

        Checked when the spec's part they depend on changes and otherwise every
        ``resync_interval``: credentials rotated in their Secret reach the replicas then."""
        fresh = self.clock() - memory.ensured_at < self.settings.resync_interval
        policy = spec.policy()
        deploy_keys = (spec.deploy_keys, spec.deploy_keys_secret)
        # memory.ensured: (replicas, access fingerprint, credentials Secret, policy, keys,
        # tokens)
        secrets_read = (spec.tokens, spec.webhooks)
        unchanged = (spec.replicas, spec.credentials_secret, policy, deploy_keys, secrets_read)
        if fresh and memory.ensured[:1] + memory.ensured[2:] == unchanged:
            return None
        # When many repositories need this at once (an operator restart, a bulk create), a
        # few at a time: each is then soon done and on to its replicas, instead of all of them
        # waiting on one another's requests until the last, and what is in flight stays small.
        async with self.ensuring:
            return await self._check_objects(body, spec, memory, policy, deploy_keys)

    async def _check_objects(
        self,
        body: context.Body,
        spec: RepositorySpec,
        memory: context.Memory,
        policy: str,
        deploy_keys: tuple[Any, ...],
    ) -> str | None:
        repository = body["metadata"]["name"]
        secrets_read = (spec.tokens, spec.webhooks)
        # A repository never passed before has none of these objects: create them outright
        # (a conflict falls back to reading) instead of reading each first.
        new = not body.get("status")
        credentials = await self._credentials(body, spec, new=new)
        if isinstance(credentials, str):
            return credentials
        accounts = await self._tokens(body, spec, credentials[:2])
        if isinstance(accounts, str):
            return accounts
        try:
            keys = await self._keys_file(body, spec)
        except sshaccess.DeployKeyError as error:
            return str(error)
        try:
            notifications = await self._notifications(body, spec)
        except errors.ConfigError as error:
            return str(error)
        files = {
            names.POLICY_KEY: policy,
            names.SSH_KEYS_KEY: keys,
            names.NOTIFICATIONS_KEY: notifications,
        }
        secret = "".join(f"{user}:{token}:{access.value}\n" for user, token, access in accounts)
        secret += f"{policy}\n{keys}\n{notifications}"
        fingerprint = hashlib.sha256(secret.encode()).hexdigest()
        wanted = (
            spec.replicas,
            fingerprint,
            spec.credentials_secret,
            policy,
            deploy_keys,
            secrets_read,
        )
        if memory.ensured == wanted and memory.admin_token:
            memory.ensured_at = self.clock()
            return None
        # Independent objects, asked for together: a new repository's are made in two round
        # trips rather than seven.
        _, stored, _ = await asyncio.gather(
            self._ensure_auth(body, accounts, fingerprint, files, new=new, drawn=credentials[2]),
            self._ensure_replication_secret(body, new=new),
            self._ensure_service_objects(body, spec, new=new),
        )
        if not stored or "admin-token" not in stored:
            return f"Secret {names.replication_secret(repository)} has no admin-token"
        memory.known_hosts = await self._ensure_known_hosts(body, stored[names.SSH_HOST_KEY])
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

    async def _ensure_service_objects(
        self, body: context.Body, spec: RepositorySpec, *, new: bool
    ) -> None:
        """The Service, PodDisruptionBudget and NetworkPolicy. Those that exist are brought to
        what this operator wants (a Service made by an older operator, a budget for another
        replica count): patched first, created when missing, or created outright for a new
        repository, so that each costs one request."""
        namespace = body["metadata"]["namespace"]
        service = manifests.service(body)
        budget = manifests.disruption_budget(body, spec.replicas)

        async def patched_or_created(manifest: context.Body, patch: Any, *args: Any) -> None:
            if new or not await asyncio.to_thread(patch, namespace, *args):
                await asyncio.to_thread(self.kube.create, namespace, manifest)

        await asyncio.gather(
            patched_or_created(
                service,
                self.kube.patch_service,
                service["metadata"]["name"],
                service["spec"]["selector"],
                service["spec"]["ports"],
            ),
            patched_or_created(
                budget,
                self.kube.patch_budget,
                budget["metadata"]["name"],
                manifests.budget(spec.replicas),
            ),
            asyncio.to_thread(self.kube.create, namespace, manifests.network_policy(body)),
        )

    async def _credentials(
        self, body: context.Body, spec: RepositorySpec, *, new: bool
    ) -> tuple[str, str, bool] | str:
        """(username, password, whether this pass drew the password) that may push, or why
        there are none."""
        namespace = body["metadata"]["namespace"]
        repository = body["metadata"]["name"]
        name = spec.credentials_secret or names.credentials_secret(repository)
        generating = spec.credentials_secret is None
        # Read first, made only when missing: a resync of a steady repository is one read.
        data = None if new and generating else await self._read_secret(namespace, name)
        if data is None and generating:
            password = secrets.token_urlsafe(GENERATED_BYTES)
            generated = {"username": GENERATED_USER, "password": password}
            manifest = manifests.secret(body, name, generated)
            if await asyncio.to_thread(self.kube.create, namespace, manifest):
                return GENERATED_USER, generated["password"], True
            data = await self._read_secret(namespace, name)
        if data is None:
            return f"credentials Secret {name} does not exist"
        if not data.get("username") or not data.get("password"):
            return f"credentials Secret {name} needs the keys username and password"
        try:
            auth.check_name(data["username"])
        except Exception as error:
            return f"credentials Secret {name}: {error}"
        return data["username"], data["password"], False

    async def _keys_file(self, body: context.Body, spec: RepositorySpec) -> str:
        """The replicas' SSH keys file from the spec's deploy keys and ``deployKeysSecret``."""
        extra = ""
        if spec.deploy_keys_secret is not None:
            namespace = body["metadata"]["namespace"]
            data = await self._read_secret(namespace, spec.deploy_keys_secret)
            if data is None:
                raise sshaccess.DeployKeyError(
                    f"Secret {spec.deploy_keys_secret} (spec.auth.deployKeysSecret) does not exist"
                )
            extra = data.get(sshaccess.KEYS_SECRET_KEY, "")
        return sshaccess.keys_file(sshaccess.deploy_keys_of(spec.deploy_keys), extra)

    async def _ensure_replication_secret(
        self, body: context.Body, *, new: bool
    ) -> dict[str, str] | None:
        """The replicas' tokens and SSH host key: made once, never rotated by a pass (a new
        host key would break every client's known_hosts)."""
        namespace = body["metadata"]["namespace"]
        name = names.replication_secret(body["metadata"]["name"])
        stored = None if new else await self._read_secret(namespace, name)
        if stored is None:
            tokens = {
                "peer-token": secrets.token_hex(24),
                "admin-token": secrets.token_hex(24),
                names.SSH_HOST_KEY: sshaccess.new_host_key(),
            }
            manifest = manifests.secret(body, name, tokens)
            if await asyncio.to_thread(self.kube.create, namespace, manifest):
                return tokens
            stored = await self._read_secret(namespace, name)
        if stored is not None and names.SSH_HOST_KEY not in stored:
            # Made by an operator without SSH: add the host key, keep the tokens.
            added = {names.SSH_HOST_KEY: sshaccess.new_host_key()}
            await asyncio.to_thread(
                self.kube.patch_secret, namespace, manifests.secret(body, name, added)
            )
            stored = {**stored, **added}
        return stored

    async def _ensure_known_hosts(self, body: context.Body, host_key: str) -> str:
        """The known_hosts line of the repository's Service, in a Secret Flux can use as is."""
        metadata = body["metadata"]
        line = sshaccess.known_hosts(metadata["name"], metadata["namespace"], host_key)
        manifest = manifests.secret(
            body, names.known_hosts_secret(metadata["name"]), {names.KNOWN_HOSTS_KEY: line}
        )
        # Created once: the host key and the Service's names never change, so a resync costs
        # one create (409) and no patch.
        await asyncio.to_thread(self.kube.create, metadata["namespace"], manifest)
        return line

    async def _notifications(self, body: context.Body, spec: RepositorySpec) -> str:
        """The replicas' webhooks file, each webhook's HMAC key read from its Secret
        (ConfigError naming one that is missing or lacks its key)."""
        namespace = body["metadata"]["namespace"]
        webhooks = []
        for name, url, kind, secret in spec.webhooks:
            data = await self._read_secret(namespace, secret)
            token = (data or {}).get(names.WEBHOOK_TOKEN_KEY)
            if not token:
                raise errors.ConfigError(
                    f"webhook {name}: Secret {secret} does not exist or has no key "
                    f"{names.WEBHOOK_TOKEN_KEY}"
                )
            webhooks.append({"name": name, "url": url, "format": kind, "secret": token})
        document = {
            "repository": {
                "fullName": f"{namespace}/{body['metadata']['name']}",
                "url": names.clone_url(body["metadata"]["name"], namespace),
            },
            "webhooks": webhooks,
        }
        return json.dumps(document, sort_keys=True) + "\n"

    async def _tokens(
        self, body: context.Body, spec: RepositorySpec, owner: tuple[str, str]
    ) -> list[tuple[str, str, auth.Permission]] | str:
        """Every HTTP account: the credentials that may push, and ``spec.auth.tokens`` (each
        a Secret with username and password, and the access it gets); or why not."""
        accounts = [(owner[0], owner[1], auth.Permission.WRITE)]
        namespace = body["metadata"]["namespace"]
        for secret, access in spec.tokens:
            data = await self._read_secret(namespace, secret)
            if data is None:
                return f"token Secret {secret} (spec.auth.tokens) does not exist"
            if not data.get("username") or not data.get("password"):
                return f"token Secret {secret} needs the keys username and password"
            try:
                auth.check_name(data["username"])
            except Exception as error:
                return f"token Secret {secret}: {error}"
            if any(data["username"] == user for user, _, _ in accounts):
                return f"token Secret {secret}: user {data['username']} is named twice"
            accounts.append((data["username"], data["password"], auth.Permission(access)))
        return accounts

    async def _ensure_auth(
        self,
        body: context.Body,
        accounts: list[tuple[str, str, auth.Permission]],
        fingerprint: str,
        files: dict[str, str],
        *,
        new: bool,
        drawn: bool,
    ) -> None:
        """The hashed credentials the replicas check, their protected refs and deploy keys
        (``files``); rewritten when any changes. Replicas read them again when the Secret
        changes, without a restart. ``drawn``: the first account's password was drawn by this
        pass (random, so hashed fast: ``passwords.hash_random_token``); any other password may
        be a person's, hashed with scrypt."""
        namespace = body["metadata"]["namespace"]
        name = names.auth_secret(body["metadata"]["name"])
        annotations = (
            None if new else await asyncio.to_thread(self.kube.secret_annotations, namespace, name)
        )
        if annotations is not None and annotations.get(names.AUTH_FINGERPRINT) == fingerprint:
            return
        lines = []
        loop = asyncio.get_running_loop()
        for number, (user, token, access) in enumerate(accounts):
            hashing = passwords.hash_random_token if drawn and number == 0 else passwords.hash_token
            hashed = await loop.run_in_executor(HASHING, hashing, token.encode())
            lines.append(auth.render(user, hashed, permission=access) + "\n")
        manifest = manifests.secret(
            body,
            name,
            {"users": "".join(lines), **files},
            annotations={names.AUTH_FINGERPRINT: fingerprint},
        )
        if annotations is not None or not await asyncio.to_thread(
            self.kube.create, namespace, manifest
        ):
            await asyncio.to_thread(self.kube.patch_secret, namespace, manifest)

    async def _read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return await asyncio.to_thread(self.kube.read_secret, namespace, name)
