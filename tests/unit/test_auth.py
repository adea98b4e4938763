"""The auth file and credential checks: parsing, editing, caching, reloading, permissions."""

import asyncio
import base64
import pathlib

import pytest

from gitquorum import errors
from gitquorum.server import auth, passwords

pytestmark = pytest.mark.unit

CHEAP = passwords.Cost(scrypt_n=2**8)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def line(name: str, token: str, permission: auth.Permission = auth.Permission.WRITE) -> str:
    return auth.render(
        name, passwords.hash_token(token.encode(), cost=CHEAP), permission=permission
    )


def authenticator(path: pathlib.Path, clock: Clock) -> auth.Authenticator:
    checker = auth.Authenticator(
        path, cache_seconds=60, reload_interval=1, max_threads=2, clock=clock
    )
    checker.load()
    return checker


def basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def test_parse_users_comments_and_permissions() -> None:
    text = f"# team\n\n{line('alice', 'a')}\n  {line('bob', 'b', auth.Permission.READ)}\n"
    users = auth.parse(text)
    assert set(users) == {"alice", "bob"}
    assert users["alice"].permission is auth.Permission.WRITE
    assert users["bob"].permission is auth.Permission.READ


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice", "USER:SECRET"),
        ("al ice:scrypt$n=256,r=8,p=1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==", "user name"),
        ("alice:scrypt$n=256,r=8,p=1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==:admin", "permission"),
        ("alice:plaintext", "ALGORITHM"),
    ],
)
def test_rejects_malformed_lines_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(errors.AuthFileError, match=f"line 2: .*{message}"):
        auth.parse("# first\n" + text + "\n")


def test_rejects_duplicate_user() -> None:
    with pytest.raises(errors.AuthFileError, match="again"):
        auth.parse(f"{line('alice', 'a')}\n{line('alice', 'b')}\n")


def test_replace_keeps_comments_and_other_users() -> None:
    text = f"# header\n{line('alice', 'a')}\n{line('bob', 'b')}\n"
    replaced = auth.replace(text, "alice", line="alice:NEW")
    assert replaced.splitlines() == ["# header", text.splitlines()[2], "alice:NEW"]
    assert "alice" not in auth.replace(text, "alice", line=None)


def test_parse_basic_credentials() -> None:
    assert auth.parse_basic(basic("alice", "to:ken")) == ("alice", "to:ken")
    assert auth.parse_basic("Bearer xyz") is None


@pytest.mark.parametrize(
    "header", ["Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Basic " + "A" * 5000]
)
def test_rejects_malformed_basic_credentials(header: str) -> None:
    # MAX_AUTHORIZATION_LENGTH among them: long headers are refused before decoding.
    with pytest.raises(errors.Unauthorized):
        auth.parse_basic(header)


def test_authenticate_caches_success_until_expiry(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "users"
    path.write_text(line("alice", "token") + "\n")
    clock = Clock()
    checker = authenticator(path, clock)

    async def scenario() -> None:
        assert (await checker.authenticate("alice", "token")) is not None
        assert (await checker.authenticate("alice", "token")) is not None
        assert checker.hashes_computed == 1
        assert await checker.authenticate("alice", "wrong") is None
        assert checker.hashes_computed == 2  # failures are never cached
        clock.now += 61
        assert (await checker.authenticate("alice", "token")) is not None
        assert checker.hashes_computed == 3

    asyncio.run(scenario())


def test_unknown_user_costs_a_hash_too(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "users"
    path.write_text(line("alice", "token") + "\n")
    checker = authenticator(path, Clock())
    assert asyncio.run(checker.authenticate("nobody", "token")) is None
    assert checker.hashes_computed == 1


def test_changed_file_revokes_cached_success(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "users"
    path.write_text(line("alice", "old") + "\n")
    clock = Clock()
    checker = authenticator(path, clock)

    async def scenario() -> None:
        assert await checker.authenticate("alice", "old") is not None
        path.write_text(line("alice", "new") + "\n# changed size\n")
        clock.now += 2  # past the reload interval
        assert await checker.authenticate("alice", "old") is None
        assert await checker.authenticate("alice", "new") is not None

    asyncio.run(scenario())


def test_broken_file_keeps_previous_users(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "users"
    path.write_text(line("alice", "token") + "\n")
    clock = Clock()
    checker = authenticator(path, clock)
    path.write_text("garbage line\n")
    clock.now += 2
    assert asyncio.run(checker.authenticate("alice", "token")) is not None


def test_authorize_policy(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "users"
    path.write_text(line("alice", "a") + "\n" + line("bob", "b", auth.Permission.READ) + "\n")
    checker = authenticator(path, Clock())

    async def decide(header: str | None, needed: auth.Permission, anonymous: bool) -> str | None:
        return await auth.authorize(checker, header, needed=needed, anonymous_read=anonymous)

    async def scenario() -> None:
        assert await decide(None, auth.Permission.READ, True) is None
        with pytest.raises(errors.Unauthorized):
            await decide(None, auth.Permission.READ, False)
        with pytest.raises(errors.Unauthorized):
            await decide(None, auth.Permission.WRITE, True)
        with pytest.raises(errors.Unauthorized):
            await decide(basic("alice", "wrong"), auth.Permission.READ, True)
        assert await decide(basic("alice", "a"), auth.Permission.WRITE, False) == "alice"
        assert await decide(basic("bob", "b"), auth.Permission.READ, False) == "bob"
        with pytest.raises(errors.Forbidden):
            await decide(basic("bob", "b"), auth.Permission.WRITE, False)

    asyncio.run(scenario())
