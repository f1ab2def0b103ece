"""Revisions: ids, prefixes, names, HEAD, REV~N and SESSION#N."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from support import Forked

from mvcstore import Epoch, Repo
from mvcstore.codec import ObjectId
from mvcstore.errors import (
    AmbiguousRevisionError,
    InvalidInputError,
    RevisionNotFoundError,
)
from mvcstore.objects import object_id
from mvcstore.stores.base import put_object


def _hex(epoch: Epoch) -> str:
    assert epoch.id is not None
    return epoch.id.hex


def _unique_prefix(repo: Repo, target: ObjectId) -> str:
    others = [entry.id.hex for entry in repo.index.iter_entries() if entry.id != target]
    for length in range(4, 65):
        prefix = target.hex[:length]
        if not any(other.startswith(prefix) for other in others):
            return prefix
    raise AssertionError("ids are unique")


def test_full_id_resolves_to_its_epoch(forked: Forked) -> None:
    target = forked.a[2]

    assert forked.repo.resolve_id(_hex(target)) == target.id
    assert forked.repo.resolve(_hex(target)) == target
    assert forked.repo.resolve(_hex(target)).id == target.id


def test_an_epoch_id_object_resolves_and_checks_out(forked: Forked) -> None:
    target = forked.a[2]
    assert target.id is not None

    assert forked.repo.resolve_id(target.id) == target.id
    assert forked.repo.checkout(target.id).epoch.id == target.id


@pytest.mark.parametrize("value", [5, None, b"main", 2.5])
def test_a_revision_that_is_not_text_is_refused_by_type(
    forked: Forked, value: object
) -> None:
    with pytest.raises(InvalidInputError, match="a revision is text, not"):
        forked.repo.resolve_id(value)  # type: ignore[arg-type]


def test_unique_prefix_resolves_to_its_epoch(forked: Forked) -> None:
    for epoch in forked.a + forked.b:
        assert epoch.id is not None
        prefix = _unique_prefix(forked.repo, epoch.id)

        assert forked.repo.resolve_id(prefix) == epoch.id


def test_prefix_shorter_than_four_digits_is_not_an_id(forked: Forked) -> None:
    with pytest.raises(RevisionNotFoundError):
        forked.repo.resolve_id(_hex(forked.a[0])[:3])


def test_prefix_matching_no_epoch_is_unknown(forked: Forked) -> None:
    known = {_hex(epoch)[:8] for epoch in forked.a + forked.b}
    prefix = next(p for p in ("00000000", "ffffffff", "01234567") if p not in known)

    with pytest.raises(RevisionNotFoundError, match="no epoch id starts with it"):
        forked.repo.resolve_id(prefix)


def test_session_name_resolves_to_its_head(forked: Forked) -> None:
    assert forked.repo.resolve_id("a") == forked.a[-1].id
    assert forked.repo.resolve_id("b") == forked.b[-1].id


def test_tag_name_resolves_to_its_epoch(forked: Forked) -> None:
    forked.repo.tag("best", "a#3")

    assert forked.repo.resolve_id("best") == forked.a[2].id
    assert forked.repo.resolve_id("best~1") == forked.a[1].id


def test_head_is_the_current_session_head(forked: Forked) -> None:
    assert forked.repo.head_session() == "b"
    assert forked.repo.resolve_id("HEAD") == forked.b[-1].id

    forked.repo.set_head("a")

    assert forked.repo.resolve_id("HEAD") == forked.a[-1].id
    assert forked.repo.resolve_id("HEAD~2") == forked.a[3].id


def test_head_without_current_session_is_unknown(repo: Repo) -> None:
    with pytest.raises(RevisionNotFoundError, match="no current session"):
        repo.resolve_id("HEAD")


def test_head_of_session_without_epoch_is_unknown(repo: Repo) -> None:
    repo.session("fresh")

    with pytest.raises(RevisionNotFoundError, match="'fresh' has no epoch yet"):
        repo.resolve_id("HEAD")


def test_tilde_walks_back_first_parents(forked: Forked) -> None:
    repo = forked.repo

    assert repo.resolve_id("a~0") == forked.a[5].id
    assert repo.resolve_id("a~") == forked.a[4].id
    assert repo.resolve_id("a~1") == forked.a[4].id
    assert repo.resolve_id("a~5") == forked.a[0].id
    assert repo.resolve_id("a~1~1~") == forked.a[2].id
    assert repo.resolve_id("b~2") == forked.a[3].id
    assert repo.resolve_id(f"{_hex(forked.a[3])}~3") == forked.a[0].id


def test_tilde_past_the_first_epoch_is_unknown(forked: Forked) -> None:
    with pytest.raises(RevisionNotFoundError, match="only 5 epochs before"):
        forked.repo.resolve_id("a~6")


def test_hash_selects_the_numbered_epoch_on_the_line(forked: Forked) -> None:
    repo = forked.repo

    for number, epoch in enumerate(forked.a, start=1):
        assert repo.resolve_id(f"a#{number}") == epoch.id
    assert repo.resolve_id("a#6~5") == forked.a[0].id
    assert repo.resolve_id("a~1#2") == forked.a[1].id


def test_fork_numbers_continue_from_the_fork_point(forked: Forked) -> None:
    assert [epoch.number for epoch in forked.a] == [1, 2, 3, 4, 5, 6]
    assert [epoch.number for epoch in forked.b] == [5, 6]
    assert forked.b[0].parents == (forked.a[3].id,)
    assert forked.repo.resolve_id("b#5") == forked.b[0].id
    assert forked.repo.resolve_id("b#6") == forked.b[1].id


def test_fork_line_reaches_the_parent_epochs_by_number(forked: Forked) -> None:
    for number in range(1, 5):
        assert forked.repo.resolve_id(f"b#{number}") == forked.a[number - 1].id


@pytest.mark.parametrize("revision", ["a#7", "a#0", "a~1#6", "b#99"])
def test_number_not_on_the_line_is_unknown(forked: Forked, revision: str) -> None:
    with pytest.raises(RevisionNotFoundError, match="no epoch numbered"):
        forked.repo.resolve_id(revision)


@pytest.mark.parametrize("revision", ["nosuch", "nosuch~1", "exp/nosuch#2"])
def test_unknown_name_is_unknown_revision(forked: Forked, revision: str) -> None:
    with pytest.raises(RevisionNotFoundError) as caught:
        forked.repo.resolve_id(revision)

    assert caught.value.revision == revision
    assert str(caught.value).startswith(f"unknown revision {revision!r}")
    assert caught.value.hint


@pytest.mark.parametrize("revision", ["", "  ", "a~x", "a#", "#3", "~1", "a b", "-a"])
def test_malformed_revision_is_invalid_input(forked: Forked, revision: str) -> None:
    with pytest.raises(InvalidInputError):
        forked.repo.resolve_id(revision)


def test_tag_with_a_session_name_is_refused(forked: Forked) -> None:
    with pytest.raises(InvalidInputError, match="session named 'a' already exists"):
        forked.repo.tag("a", "a#2")
    with pytest.raises(InvalidInputError, match="tag named 'keep' already exists"):
        forked.repo.tag("keep", "a#2")
        forked.repo.create_session("keep", at="a#3")
    assert forked.repo.refs.get("sessions/keep") is None


def test_session_and_tag_of_one_name_are_ambiguous(forked: Forked) -> None:
    # written below the API, as an older release could have left them
    target = forked.repo.resolve_id("a#2")
    forked.repo.refs.compare_and_set("tags/a", old=None, new=target, message="old")

    with pytest.raises(AmbiguousRevisionError) as caught:
        forked.repo.resolve_id("a~1")

    assert caught.value.candidates == ["sessions/a", "tags/a"]
    assert "sessions/a" in str(caught.value)
    assert "tags/a" in str(caught.value)


def test_name_wins_over_an_id_prefix(forked: Forked) -> None:
    prefix = _hex(forked.a[0])[:8]
    forked.repo.create_session(prefix, at="a#6")

    assert forked.repo.resolve_id(prefix) == forked.a[5].id


def _colliding_epochs(head: Epoch) -> tuple[Epoch, Epoch]:
    # cheap epochs differing only in uid: hash them until two ids share 4 hex
    assert head.id is not None
    seen: dict[str, Epoch] = {}
    for attempt in range(1_000_000):
        candidate = Epoch(
            parents=(head.id,),
            state=head.state,
            graph=head.graph,
            params=head.params,
            number=head.number + 1,
            step=head.step,
            time_ns=head.time_ns,
            uid=f"collision-{attempt}",
            session="a",
        )
        prefix = object_id(candidate).hex[:4]
        if prefix in seen:
            return seen[prefix], candidate
        seen[prefix] = candidate
    raise AssertionError("no two ids shared a 4-digit prefix")


def test_shared_prefix_is_ambiguous_and_lists_candidates(forked: Forked) -> None:
    repo = forked.repo
    first, second = _colliding_epochs(forked.a[-1])
    ids = []
    for name, epoch in (("left", first), ("right", second)):
        oid = put_object(repo.objects, epoch)
        repo.index.add(oid, epoch)
        repo.tag(name, oid.hex)
        ids.append(oid)
    prefix = ids[0].hex[:4]

    with pytest.raises(AmbiguousRevisionError) as caught:
        repo.resolve_id(prefix)

    assert caught.value.revision == prefix
    for oid in ids:
        assert oid.short(16) in caught.value.candidates
        assert oid.short(16) in str(caught.value)
    for oid in ids:
        assert repo.resolve_id(_unique_prefix(repo, oid)) == oid


def test_full_id_of_unindexed_epoch_resolves_and_is_indexed(forked: Forked) -> None:
    repo = forked.repo
    head = forked.a[-1]
    stored = replace(head, id=None, parents=(head.id,), number=7, uid="unindexed")
    oid = put_object(repo.objects, stored)
    assert repo.index.get_many([oid]) == {}

    assert repo.resolve_id(oid.hex) == oid
    assert oid in repo.index.get_many([oid])
    assert repo.resolve_id(oid.hex[:12]) == oid


def test_full_id_of_a_non_epoch_object_is_unknown(forked: Forked) -> None:
    state_id = forked.a[0].state
    assert state_id is not None

    with pytest.raises(RevisionNotFoundError, match="is a state"):
        forked.repo.resolve_id(state_id.hex)


def test_full_id_of_nothing_is_unknown(repo: Repo) -> None:
    repo.session("a").commit({"w": np.zeros(1)})

    with pytest.raises(RevisionNotFoundError):
        repo.resolve_id("f" * 64)
