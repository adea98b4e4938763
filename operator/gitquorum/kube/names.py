"""Names and labels of everything the operator creates for a repository, in one place."""

GROUP = "gitquorum.io"
VERSION = "v1alpha1"
PLURAL = "gitrepositories"
BACKUP_PLURAL = "gitrepositorybackups"
BACKUP_KIND = "GitRepositoryBackup"
KIND = "GitRepository"

REPOSITORY_LABEL = "gitquorum.io/repository"
REPLICA_LABEL = "gitquorum.io/replica"
OPERATOR_LABELS = {"app.kubernetes.io/name": "gitquorum-operator"}
"""How the chart labels the operator's pods (the NetworkPolicy lets them in)."""

SERVING_LABEL = "gitquorum.io/serving"
"""On replica pods, "true" while the operator reaches the replica: the client Service selects on
it, so a replica on a node that died leaves the Service within seconds instead of after the
node-monitor grace (40 s and more by default) it takes Kubernetes to mark the pod not ready."""

SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
AUTH_FINGERPRINT = "gitquorum.io/credentials-fingerprint"
REVISION = "gitquorum.io/revision"
"""Pod annotation: the hash of what the operator rendered into it (rolling updates)."""
SWITCHOVER = "gitquorum.io/switchover"
"""GitRepository annotation: move leadership to this replica (or ``any``); removed when done."""

GIT_PORT = 8080
PEER_PORT = 8081
SSH_PORT = 2222
"""git over SSH in the pod (not 22: replicas run as non-root); the Service serves it on 22."""
SSH_SERVICE_PORT = 22
USER_ID = 65532


def labels(repository: str, replica: str | None = None) -> dict[str, str]:
    result = {
        "app.kubernetes.io/name": "gitquorum",
        "app.kubernetes.io/instance": repository,
        "app.kubernetes.io/managed-by": "gitquorum-operator",
        REPOSITORY_LABEL: repository,
    }
    if replica is not None:
        result["app.kubernetes.io/component"] = "replica"
        result[REPLICA_LABEL] = replica
    return result


def selector(repository: str) -> str:
    """The label selector of a repository's replica pods, as the scale subresource wants it."""
    return f"{REPOSITORY_LABEL}={repository},app.kubernetes.io/component=replica"


def replica(repository: str, serial: int) -> str:
    """Replica names carry a serial that is never reused, so a rebuilt replica is a new one."""
    return f"{repository}-{serial}"


def serial(repository: str, replica_name: str) -> int | None:
    prefix = f"{repository}-"
    if not replica_name.startswith(prefix) or not replica_name[len(prefix) :].isdigit():
        return None
    return int(replica_name[len(prefix) :])


def serial_or_zero(replica_name: str) -> int:
    """The serial at the end of a replica name, for ordering (0 when it has none)."""
    tail = replica_name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def service(repository: str) -> str:
    return repository


def credentials_secret(repository: str) -> str:
    return f"{repository}-credentials"


SSH_KEYS_KEY = "ssh-keys"
"""The key of the auth Secret holding the deploy keys (``server/sshkeys.py``)."""
SSH_HOST_KEY = "ssh-host-key"
"""The key of the replication Secret holding the repository's SSH host key."""
KNOWN_HOSTS_KEY = "known_hosts"
"""The key of the known-hosts Secret, as Flux reads it."""
NOTIFICATIONS_KEY = "notifications"
"""The key of the auth Secret holding the webhooks (``replication/notifying.py``)."""
WEBHOOK_TOKEN_KEY = "token"
"""The key of a webhook's Secret holding its HMAC key (as Flux's Receiver Secret has it)."""
POLICY_KEY = "policy"
"""The key of the auth Secret holding the protected refs (``replication/protection.py``)."""


def known_hosts_secret(repository: str) -> str:
    return f"{repository}-ssh-known-hosts"


def auth_secret(repository: str) -> str:
    """The hashed form of the credentials that replicas check pushes against."""
    return f"{repository}-auth"


def replication_secret(repository: str) -> str:
    return f"{repository}-replication"


def disruption_budget(repository: str) -> str:
    return repository


def network_policy(repository: str) -> str:
    return f"{repository}-replication"


def clone_url(repository: str, namespace: str) -> str:
    return f"http://{service(repository)}.{namespace}.svc/{repository}.git"
