"""``gitquorum passwd``: add, replace or delete a user of an auth file.

The token is read from standard input (its first line), never from the command line, where
other users of the machine could see it in the process list. ``--generate`` makes a random
token instead and prints it once. The file is rewritten atomically with mode 0600, other
users' lines and comments kept; a running server picks the change up within a second.
"""

import argparse
import getpass
import os
import pathlib
import secrets
import sys
import tempfile

from gitquorum import errors
from gitquorum.server import auth, passwords

GENERATED_TOKEN_BYTES = 24


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", help="user name: 1-64 of A-Z a-z 0-9 . _ @ + -")
    parser.add_argument(
        "--auth-file", type=pathlib.Path, required=True, help="the auth file; created if missing"
    )
    parser.add_argument(
        "--read-only", action="store_true", help="the user may clone and fetch but not push"
    )
    parser.add_argument(
        "--algorithm",
        choices=passwords.ALGORITHMS,
        default=passwords.SCRYPT,
        help="how the token is hashed (default: %(default)s)",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--generate",
        action="store_true",
        help="make a random token and print it instead of reading stdin",
    )
    action.add_argument("--delete", action="store_true", help="remove the user")


def run(args: argparse.Namespace) -> int:
    name: str = args.user
    auth.check_name(name)
    path: pathlib.Path = args.auth_file
    text = _read(path)
    auth.parse(text)  # refuse to edit a file the server could not read
    if args.delete:
        if name not in auth.parse(text):
            raise errors.ConfigError(f"no user {name} in {path}")
        _write(path, auth.replace(text, name, line=None))
        print(f"user {name} removed from {path}", file=sys.stderr)
        return 0
    token = secrets.token_urlsafe(GENERATED_TOKEN_BYTES) if args.generate else _token_from_stdin()
    permission = auth.Permission.READ if args.read_only else auth.Permission.WRITE
    secret = passwords.hash_token(token.encode(), algorithm=args.algorithm)
    existed = name in auth.parse(text)
    line = auth.render(name, secret, permission=permission)
    _write(path, auth.replace(text, name, line=line))
    if args.generate:
        print(token)
    verb = "replaced in" if existed else "added to"
    print(f"user {name} ({permission.value}) {verb} {path}", file=sys.stderr)
    return 0


def _token_from_stdin() -> str:
    if sys.stdin.isatty():
        token = getpass.getpass("token: ")
    else:
        token = sys.stdin.readline().rstrip("\r\n")
    if not token:
        raise errors.ConfigError("no token on standard input")
    return token


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as error:
        raise errors.AuthFileError(f"cannot read {path}: {error}") from error


def _write(path: pathlib.Path, text: str) -> None:
    # A temporary file renamed over the old one: a reader sees the old file or the new one,
    # never half of one.
    directory = path.resolve().parent
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise
