"""The error tree (``errors.py``): documented whole, and answered by one rule on every port."""

import inspect

import pytest

from gitquorum import errors

pytestmark = pytest.mark.unit

CLASSES = [
    value
    for value in vars(errors).values()
    if inspect.isclass(value) and issubclass(value, errors.GitquorumError)
]


def test_errors_docstring_names_every_class():
    assert errors.__doc__ is not None
    missing = [
        kind.__name__ for kind in CLASSES if f":class:`{kind.__name__}`" not in errors.__doc__
    ]
    assert missing == []


def test_errors_answers_never_shadow_a_more_specific_class():
    kinds = [kind for kind, _ in errors._ANSWERS]
    for index, kind in enumerate(kinds):
        shadowing = [earlier for earlier in kinds[:index] if issubclass(kind, earlier)]
        assert shadowing == [], f"{kind.__name__} is answered by {shadowing[0].__name__} first"


@pytest.mark.parametrize(
    ("error", "status", "outcome"),
    [
        (errors.Unauthorized("no credentials"), 401, "unauthorized"),
        (errors.PathRefused("../x"), 403, "forbidden"),
        (errors.PushRefused("protected ref"), 403, "forbidden"),
        (errors.RepositoryNotFound("x"), 404, "not_found"),
        (errors.Conflict("term 3 is older than 4"), 409, "conflict"),
        (errors.MalformedMessage("not JSON"), 400, "bad_request"),
        (errors.ReplicationError("bad state"), 400, "bad_request"),
        (errors.ProtocolError("bad pkt-line"), 400, "protocol_error"),
        (errors.BodyTooLarge("too big"), 413, "too_large"),
        (TimeoutError(), 408, "timeout"),
        (errors.NoQuorum("1 of 3"), 503, "unavailable"),
        (errors.Fenced("term 5"), 503, "unavailable"),
        (errors.GitFailed("receive-pack", 128, "fatal: x"), 500, "git_error"),
        (errors.ConfigError("bad setting"), 500, "internal_error"),
        (RuntimeError("a bug"), 500, "internal_error"),
    ],
)
def test_errors_answer_maps_each_kind(error: BaseException, status: int, outcome: str):
    assert errors.answer(error) == errors.Answer(status, outcome)


def test_errors_git_failed_names_git_s_own_complaint_not_its_advice():
    stderr = (
        "fatal: Unable to create '/r.git/packed-refs.lock': File exists.\n\n"
        "Another git process seems to be running in this repository.\n"
        "remove the file manually to continue.\n"
    )
    error = errors.GitFailed("update-ref", 128, stderr)
    assert error.message == "fatal: Unable to create '/r.git/packed-refs.lock': File exists."
    assert errors.GitFailed("x", 1, "warning: one\nlast words\n").message == "last words"
    assert errors.GitFailed("x", 1, "").message == "no message"
