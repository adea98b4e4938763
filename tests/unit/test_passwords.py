"""Hashed tokens: both algorithms, constant-time verification, and bounds on parameters."""

import secrets

import pytest

from gitquorum import errors
from gitquorum.server import passwords

pytestmark = pytest.mark.unit

CHEAP = passwords.Cost(scrypt_n=2**8, pbkdf2_iterations=1000)


@pytest.mark.parametrize("algorithm", passwords.ALGORITHMS)
def test_hash_then_verify(algorithm: str) -> None:
    encoded = passwords.hash_token(b"s3cret", algorithm=algorithm, cost=CHEAP)
    secret = passwords.StoredSecret.parse(encoded)
    assert secret.algorithm == algorithm
    assert passwords.verify(b"s3cret", secret)
    assert not passwords.verify(b"s3cret ", secret)


def test_same_token_gets_different_salts() -> None:
    first = passwords.hash_token(b"t", cost=CHEAP)
    assert first != passwords.hash_token(b"t", cost=CHEAP)


def test_default_scrypt_format() -> None:
    encoded = passwords.hash_token(b"t")
    assert encoded.startswith("scrypt$n=16384,r=8,p=1$")
    assert passwords.StoredSecret.parse(encoded).encode() == encoded


def test_rejects_unknown_algorithm() -> None:
    with pytest.raises(errors.AuthFileError, match="unknown algorithm"):
        passwords.StoredSecret.parse("md5$i=1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==")


@pytest.mark.parametrize(
    "encoded",
    [
        "scrypt$n=16384,r=8,p=1$salt",
        "scrypt$n=16384,r=8$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==",
        "scrypt$n=1000,r=8,p=1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==",
        "scrypt$n=16384,r=8,p=1$not*base64$aGFzaGhhc2hoYXNoaGFzaA==",
        "scrypt$n=16384,r=8,p=1$c2FsdA==$aGFzaGhhc2hoYXNoaGFzaA==",
        "pbkdf2-sha256$i=10$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==",
        "pbkdf2-sha256$x=1000$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==",
    ],
)
def test_rejects_malformed_secrets(encoded: str) -> None:
    with pytest.raises(errors.AuthFileError):
        passwords.StoredSecret.parse(encoded)


def test_rejects_scrypt_cost_over_memory_bound() -> None:
    # MAX_SCRYPT_MEMORY: an edited file must not make every login take gigabytes.
    with pytest.raises(errors.AuthFileError, match="cost"):
        passwords.StoredSecret.parse(
            "scrypt$n=1048576,r=8,p=1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA=="
        )


def test_rejects_pbkdf2_iterations_over_bound() -> None:
    # MAX_PBKDF2_ITERATIONS: likewise for time.
    with pytest.raises(errors.AuthFileError, match="cost"):
        passwords.StoredSecret.parse(
            "pbkdf2-sha256$i=99999999$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA=="
        )


def test_rejects_overlong_fields() -> None:
    # MAX_FIELD_BYTES: the base64 fields are short; anything long is not ours.
    salt = "A" * 400
    with pytest.raises(errors.AuthFileError, match="too long"):
        passwords.StoredSecret.parse(f"scrypt$n=256,r=8,p=1${salt}$aGFzaGhhc2hoYXNoaGFzaA==")


def test_hash_random_token_is_cheap_pbkdf2_that_verifies() -> None:
    token = secrets.token_urlsafe(24).encode()
    stored = passwords.StoredSecret.parse(passwords.hash_random_token(token))

    assert (stored.algorithm, stored.params) == (passwords.PBKDF2, {"i": 1000})
    assert passwords.verify(token, stored)
    assert not passwords.verify(token + b"x", stored)


def test_hash_random_token_refuses_a_short_token() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        passwords.hash_random_token(b"hunter2")
