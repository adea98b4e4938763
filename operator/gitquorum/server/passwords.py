"""Hashed tokens: how the auth file stores secrets and how a presented token is checked.

A stored secret reads ``ALGORITHM$PARAMS$SALT$HASH``, salt and hash in standard base64:

- ``scrypt$n=16384,r=8,p=1$...$...`` (the default: memory-hard, about 50 ms and 16 MiB);
- ``pbkdf2-sha256$i=600000$...$...`` (for places where scrypt's memory is a problem);
- ``pbkdf2-sha256$i=1000$...$...`` for tokens gitquorum draws itself (``hash_random_token``).

Both come from the standard library. Parameters are bounded when a stored secret is parsed,
so an edited file cannot make each login take minutes or gigabytes. Comparison is constant
time. Verification is slow on purpose; callers run it in a thread and cache successes.
"""

import base64
import binascii
import dataclasses
import hashlib
import hmac
import secrets

from gitquorum import errors

SCRYPT = "scrypt"
PBKDF2 = "pbkdf2-sha256"
ALGORITHMS = (SCRYPT, PBKDF2)

SALT_BYTES = 16
HASH_BYTES = 32

# Bounds on parameters read from the file. A stored secret decides how much CPU and memory
# each login costs: these keep a careless or hostile edit from turning that into a denial of
# service (scrypt takes 128 * n * r bytes; pbkdf2 time grows with the iterations).
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
MAX_SCRYPT_P = 16
MAX_PBKDF2_ITERATIONS = 10_000_000
MIN_PBKDF2_ITERATIONS = 1_000
MIN_SALT_BYTES = 8
MAX_FIELD_BYTES = 128


@dataclasses.dataclass(frozen=True)
class Cost:
    """The work factors used for new hashes."""

    scrypt_n: int = 2**14
    """scrypt CPU/memory cost (a power of two); 2**14 is about 50 ms and 16 MiB."""
    scrypt_r: int = 8
    """scrypt block size."""
    scrypt_p: int = 1
    """scrypt parallelism."""
    pbkdf2_iterations: int = 600_000
    """PBKDF2-HMAC-SHA256 iterations, OWASP's 2023 figure."""


@dataclasses.dataclass(frozen=True)
class StoredSecret:
    """A parsed ``ALGORITHM$PARAMS$SALT$HASH`` string."""

    algorithm: str
    params: dict[str, int]
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, encoded: str) -> "StoredSecret":
        fields = encoded.split("$")
        if len(fields) != 4:
            raise errors.AuthFileError("a secret reads ALGORITHM$PARAMS$SALT$HASH")
        algorithm, raw_params, raw_salt, raw_digest = fields
        if algorithm not in ALGORITHMS:
            raise errors.AuthFileError(f"unknown algorithm {algorithm[:20]!r}")
        secret = cls(
            algorithm=algorithm,
            params=_params(raw_params),
            salt=_base64(raw_salt),
            digest=_base64(raw_digest),
        )
        secret.check()
        return secret

    def check(self) -> None:
        """Refuses parameters outside the bounds above."""
        if len(self.salt) < MIN_SALT_BYTES or not 16 <= len(self.digest) <= 64:
            raise errors.AuthFileError("salt or hash has an implausible length")
        if self.algorithm == SCRYPT:
            n, r, p = (self.params.get(key, 0) for key in ("n", "r", "p"))
            if set(self.params) != {"n", "r", "p"} or n < 2 or n & (n - 1) or r < 1 or p < 1:
                raise errors.AuthFileError("scrypt wants n (a power of two), r and p")
            if 128 * n * r > MAX_SCRYPT_MEMORY or p > MAX_SCRYPT_P:
                raise errors.AuthFileError("scrypt parameters exceed the allowed cost")
        else:
            iterations = self.params.get("i", 0)
            if set(self.params) != {"i"} or iterations < MIN_PBKDF2_ITERATIONS:
                raise errors.AuthFileError(f"pbkdf2 wants i >= {MIN_PBKDF2_ITERATIONS}")
            if iterations > MAX_PBKDF2_ITERATIONS:
                raise errors.AuthFileError("pbkdf2 iterations exceed the allowed cost")

    def derive(self, token: bytes) -> bytes:
        """The hash of ``token`` under this secret's algorithm, parameters and salt."""
        if self.algorithm == SCRYPT:
            n, r, p = self.params["n"], self.params["r"], self.params["p"]
            return hashlib.scrypt(
                token,
                salt=self.salt,
                n=n,
                r=r,
                p=p,
                maxmem=128 * n * r * (p + 1) + 1024 * 1024,
                dklen=len(self.digest),
            )
        return hashlib.pbkdf2_hmac(
            "sha256", token, self.salt, self.params["i"], dklen=len(self.digest)
        )

    def encode(self) -> str:
        params = ",".join(f"{key}={value}" for key, value in self.params.items())
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return f"{self.algorithm}${params}${salt}${digest}"


def hash_token(token: bytes, *, algorithm: str = SCRYPT, cost: Cost | None = None) -> str:
    """A new stored secret for ``token``, with a fresh random salt."""
    cost = cost or Cost()
    if algorithm == SCRYPT:
        params = {"n": cost.scrypt_n, "r": cost.scrypt_r, "p": cost.scrypt_p}
    elif algorithm == PBKDF2:
        params = {"i": cost.pbkdf2_iterations}
    else:
        raise errors.ConfigError(f"unknown algorithm {algorithm!r}; use one of {ALGORITHMS}")
    empty = StoredSecret(
        algorithm=algorithm,
        params=params,
        salt=secrets.token_bytes(SALT_BYTES),
        digest=bytes(HASH_BYTES),
    )
    empty.check()
    return dataclasses.replace(empty, digest=empty.derive(token)).encode()


RANDOM_TOKEN_BYTES = 16
"""The randomness a token needs for :func:`hash_random_token`: 128 bits."""


def hash_random_token(token: bytes) -> str:
    """A stored secret for a token gitquorum drew itself, from at least
    :data:`RANDOM_TOKEN_BYTES` random bytes: PBKDF2 at its lowest allowed cost.

    A slow hash protects a guessable password in a stolen file; a token of 128 random bits
    cannot be guessed however fast each guess is, so its hash need not cost scrypt's 50 ms and
    16 MiB (which the operator paid for every repository it creates)."""
    if len(token) < RANDOM_TOKEN_BYTES:
        raise ValueError(f"a random token has at least {RANDOM_TOKEN_BYTES} bytes")
    cost = Cost(pbkdf2_iterations=MIN_PBKDF2_ITERATIONS)
    return hash_token(token, algorithm=PBKDF2, cost=cost)


def verify(token: bytes, secret: StoredSecret) -> bool:
    """Whether ``token`` matches the stored secret, compared in constant time."""
    return hmac.compare_digest(secret.derive(token), secret.digest)


def _params(raw: str) -> dict[str, int]:
    params = {}
    for item in raw.split(","):
        key, _, value = item.partition("=")
        if not key.isalpha() or not value.isdigit() or len(value) > 12:
            raise errors.AuthFileError(f"malformed parameter {item[:20]!r}")
        params[key] = int(value)
    return params


def _base64(raw: str) -> bytes:
    if len(raw) > MAX_FIELD_BYTES * 2:
        raise errors.AuthFileError("salt or hash is too long")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as error:
        raise errors.AuthFileError("salt or hash is not valid base64") from error
