"""Who is asking: the client of one request as git's hooks and the write path see it."""

import dataclasses

from gitquorum.protocol import smarthttp


@dataclasses.dataclass(frozen=True)
class Client:
    """The authenticated user (None: anonymous), address and protocol of one request."""

    user: str | None
    address: str
    protocol: smarthttp.GitProtocol = dataclasses.field(default_factory=smarthttp.GitProtocol)

    def environment(self, service: smarthttp.Service) -> dict[str, str]:
        """Variables for git: the protocol, and the identity hooks and reflogs record.

        The names are those git http-backend sets, so existing hooks keep working.
        """
        user = self.user or "anonymous"
        env = {
            "REMOTE_USER": user,
            "REMOTE_ADDR": self.address,
            "GIT_COMMITTER_NAME": user,
            "GIT_COMMITTER_EMAIL": f"{user}@http.{self.address}",
        }
        protocol = self.protocol.for_service(service)
        if protocol.value:
            env["GIT_PROTOCOL"] = protocol.value
        return env
