"""Session and tag names: the rules, and the refs they become."""

from __future__ import annotations

import numpy as np
import pytest

from mvcstore import Repo
from mvcstore.errors import InvalidNameError
from mvcstore.refs import check_name, session_ref, short_name, tag_ref


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "main",
        "baseline-lr0.1",
        "exp/prune_30/run.2",
        "A_B-c.d",
        "HEADS",
        "head",
        "0123",
        "x" * 200,
        "v1.lockstep",
    ],
)
def test_valid_name_is_returned_unchanged(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "cannot be empty"),
        ("x" * 201, "at most 200 characters"),
        ("HEAD", "reserved"),
        ("a\x00b", "control characters"),
        ("a\nb", "control characters"),
        ("tab\there", "control characters"),
        ("del\x7f", "control characters"),
        ("/a", "empty part"),
        ("a/", "empty part"),
        ("a//b", "empty part"),
        ("a b", "only letters"),
        ("a~1", "only letters"),
        ("a#1", "only letters"),
        ("a:b", "only letters"),
        ("a\\b", "only letters"),
        ("naïve", "only letters"),
        ("*", "only letters"),
        (".hidden", "cannot start with '.'"),
        ("a/.b", "cannot start with '.'"),
        ("..", "cannot start with '.'"),
        ("a/../b", "cannot start with '.'"),
        ("-f", "cannot start with '-'"),
        ("a/-b", "cannot start with '-'"),
        ("refs.lock", "cannot end with '.lock'"),
        ("a.lock/b", "cannot end with '.lock'"),
    ],
)
def test_invalid_name_is_refused_with_its_reason(name: str, reason: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        check_name(name)

    assert reason in caught.value.reason
    assert caught.value.name == name
    assert caught.value.hint


def test_name_error_says_what_kind_of_name() -> None:
    with pytest.raises(InvalidNameError, match="a tag name cannot be empty"):
        check_name("", what="tag")


def test_refs_live_under_sessions_and_tags() -> None:
    assert session_ref("exp/a") == "sessions/exp/a"
    assert tag_ref("best") == "tags/best"
    assert short_name("sessions/exp/a") == "exp/a"
    assert short_name("tags/best") == "best"


def test_ref_of_invalid_name_is_refused() -> None:
    with pytest.raises(InvalidNameError):
        session_ref("../escape")
    with pytest.raises(InvalidNameError):
        tag_ref("HEAD")


def test_session_with_invalid_name_creates_nothing(repo: Repo) -> None:
    with pytest.raises(InvalidNameError):
        repo.session("bad name")

    assert repo.sessions() == []
    assert repo.head_session() is None


def test_tag_with_invalid_name_creates_nothing(repo: Repo) -> None:
    repo.session("a").commit({"w": np.zeros(2)})

    with pytest.raises(InvalidNameError):
        repo.tag("-best", "a")

    assert repo.tags() == []


def test_fork_with_invalid_name_creates_nothing(repo: Repo) -> None:
    repo.session("a").commit({"w": np.zeros(2)})

    with pytest.raises(InvalidNameError):
        repo.fork("x.lock", at="a")

    assert [name for name, _ in repo.sessions()] == ["a"]


def test_nested_session_names_are_listed_in_order(repo: Repo) -> None:
    epoch = repo.session("exp/b").commit({"w": np.zeros(2)})
    assert epoch.id is not None
    repo.create_session("exp/a", at=epoch.id.hex)
    repo.create_session("exp", at=epoch.id.hex)

    assert [name for name, _ in repo.sessions()] == ["exp", "exp/a", "exp/b"]
