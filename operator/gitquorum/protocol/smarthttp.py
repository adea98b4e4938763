"""The smart HTTP transport's own conventions: services, content types and the
``Git-Protocol`` header.

A smart-HTTP exchange is ``GET <repo>/info/refs?service=<service>`` for the advertisement,
then one ``POST <repo>/<service>`` per round. The protocol version travels in the
``Git-Protocol`` request header, which the server hands to git in the ``GIT_PROTOCOL``
environment variable, as git http-backend does.
"""

import dataclasses
import enum
import re

from gitquorum import errors
from gitquorum.protocol import pktline

GIT_PROTOCOL_HEADER = "Git-Protocol"

AUTH_PROBE = pktline.FLUSH
"""The whole body of git's authentication probe. A request larger than ``http.postBuffer``
(1 MiB by default) is streamed chunked and cannot be sent twice, so git first POSTs just this
to the same URL to learn whether its credentials pass (remote-curl.c, ``probe_rpc``). git
http-backend's answer is 200 with an empty body: git reads only the status."""

# The header goes into a child process's environment: keep it short and to the characters git
# itself sends (``version=2``, ``key=value`` pairs separated by colons).
MAX_GIT_PROTOCOL_LENGTH = 256
_GIT_PROTOCOL = re.compile(r"[A-Za-z0-9._=:-]*")


class Service(enum.Enum):
    """The two git services smart HTTP carries."""

    UPLOAD_PACK = "git-upload-pack"
    RECEIVE_PACK = "git-receive-pack"

    @property
    def command(self) -> str:
        """The git subcommand that implements the service."""
        return self.value.removeprefix("git-")

    @property
    def advertisement_type(self) -> str:
        return f"application/x-{self.value}-advertisement"

    @property
    def request_type(self) -> str:
        return f"application/x-{self.value}-request"

    @property
    def result_type(self) -> str:
        return f"application/x-{self.value}-result"

    @classmethod
    def named(cls, name: str) -> "Service":
        """The service a query string or URL names, or BadRequest."""
        for service in cls:
            if service.value == name:
                return service
        raise errors.BadRequest(f"unknown git service {name[:40]!r}")


@dataclasses.dataclass(frozen=True)
class GitProtocol:
    """The client's ``Git-Protocol`` header, validated."""

    value: str = ""

    @classmethod
    def parse(cls, header: str | None) -> "GitProtocol":
        if header is None:
            return cls()
        if len(header) > MAX_GIT_PROTOCOL_LENGTH or not _GIT_PROTOCOL.fullmatch(header):
            raise errors.BadRequest("malformed Git-Protocol header")
        return cls(header)

    @property
    def version(self) -> int:
        """The highest protocol version the client asked for; 0 when it asked for none."""
        versions = [0]
        for item in self.value.split(":"):
            key, _, number = item.partition("=")
            if key == "version" and number.isdigit():
                versions.append(int(number))
        return max(versions)

    def for_service(self, service: Service) -> "GitProtocol":
        """The header as the service should see it: receive-pack has no protocol v2."""
        if service is Service.RECEIVE_PACK and self.version >= 2:
            return GitProtocol()
        return self


def advertisement_preamble(service: Service, protocol: GitProtocol) -> bytes:
    """What precedes git's advertisement: the ``# service=`` line, except in protocol v2."""
    if protocol.version >= 2:
        return b""
    return pktline.encode(f"# service={service.value}\n".encode()) + pktline.FLUSH
