"""Protected ref rules: parsing (strict, readable errors) and which refs a rule covers."""

import json

import pytest

from gitquorum import errors
from gitquorum.replication import protection

pytestmark = pytest.mark.unit


def _parse(document: object) -> tuple[protection.Rule, ...]:
    return protection.parse(json.dumps(document).encode())


def test_protection_empty_policy_has_no_rules() -> None:
    assert protection.parse(b"") == ()
    assert _parse({}) == ()


def test_protection_rule_defaults_refuse_force_and_deletion() -> None:
    (rule,) = _parse({"protectedRefs": [{"pattern": "refs/heads/main"}]})
    assert rule == protection.Rule("refs/heads/main", False, False)


def test_protection_glob_covers_nested_branches() -> None:
    rule = protection.Rule("refs/heads/release/*")
    assert rule.covers("refs/heads/release/1.0")
    assert rule.covers("refs/heads/release/2/hotfix")
    assert not rule.covers("refs/heads/main")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({"protectedRefs": {}}, "list"),
        ({"protectedRefs": ["main"]}, "must be an object"),
        ({"protectedRefs": [{}]}, "pattern"),
        ({"protectedRefs": [{"pattern": "main"}]}, "start with refs/"),
        ({"protectedRefs": [{"pattern": "refs/" + "x" * 300}]}, "pattern"),
        ({"protectedRefs": [{"pattern": "refs/heads/main", "allowDeletion": "yes"}]}, "true or"),
        ({"protectedRefs": [{"pattern": "refs/x"}] * 1001}, "at most"),
    ],
)
def test_protection_rejects_malformed_policy(document: object, message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        _parse(document)


def test_protection_rejects_non_json() -> None:
    with pytest.raises(errors.ConfigError, match="not JSON"):
        protection.parse(b"{nope")


def test_protection_rejects_oversized_file() -> None:
    with pytest.raises(errors.ConfigError, match="above"):
        protection.parse(b" " * (protection.MAX_POLICY_BYTES + 1))
