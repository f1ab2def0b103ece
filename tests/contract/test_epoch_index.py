"""The EpochIndex contract, for every implementation: entries, prefixes, ancestry."""

from __future__ import annotations

import pytest
import servers

from mvcstore.codec import ObjectId
from mvcstore.errors import InvalidInputError
from mvcstore.objects import Epoch
from mvcstore.stores.base import EpochIndex


def _id(n: int) -> ObjectId:
    return ObjectId(n.to_bytes(32, "big"))


def _epoch(n: int, *parents: int, session: str = "a") -> Epoch:
    return Epoch(
        parents=tuple(_id(p) for p in parents),
        number=n,
        step=10 * n,
        time_ns=1_000 + n,
        uid=f"uid-{n}",
        session=session,
    )


def _add_line(index: EpochIndex, numbers: range, *, first_parent: int | None) -> None:
    parent = first_parent
    for n in numbers:
        index.add(_id(n), _epoch(n, *([parent] if parent is not None else [])))
        parent = n


def test_an_added_epoch_reads_back(epoch_index: EpochIndex) -> None:
    epoch_index.add(_id(2), _epoch(2, 1))

    entry = epoch_index.get_many([_id(2), _id(99)])[_id(2)]

    assert (entry.id, entry.parents, entry.number) == (_id(2), (_id(1),), 2)
    assert (entry.step, entry.uid, entry.session, entry.time_ns) == (
        20,
        "uid-2",
        "a",
        1002,
    )
    assert set(epoch_index.get_many([_id(2), _id(99)])) == {_id(2)}


def test_adding_an_epoch_again_does_nothing(epoch_index: EpochIndex) -> None:
    epoch_index.add(_id(1), _epoch(1))
    epoch_index.add(_id(1), _epoch(1))

    assert [entry.id for entry in epoch_index.iter_entries()] == [_id(1)]


def test_a_uid_carried_by_another_epoch_is_refused(epoch_index: EpochIndex) -> None:
    epoch_index.add(_id(1), _epoch(1))

    with pytest.raises(InvalidInputError, match="uid-1"):
        epoch_index.add(_id(7), _epoch(1, 5))

    assert set(epoch_index.get_many([_id(1), _id(7)])) == {_id(1)}


def test_find_prefix_matches_hex_prefixes(epoch_index: EpochIndex) -> None:
    ids = [
        ObjectId(bytes.fromhex(text.ljust(64, "0"))) for text in ("ab12", "ab34", "cd")
    ]
    for n, oid in enumerate(ids):
        epoch_index.add(oid, _epoch(n + 1))

    assert epoch_index.find_prefix("ab") == ids[:2]
    assert epoch_index.find_prefix("ab3") == [ids[1]]
    assert epoch_index.find_prefix("ab", limit=1) == [ids[0]]
    assert epoch_index.find_prefix("ef") == []
    assert epoch_index.find_prefix(ids[2].hex) == [ids[2]]


def test_ancestors_follow_every_parent(epoch_index: EpochIndex) -> None:
    # 1-2-3-4 on a; b forks at 2 with 5-6; 7 merges 4 and 6
    _add_line(epoch_index, range(1, 5), first_parent=None)
    _add_line(epoch_index, range(5, 7), first_parent=2)
    epoch_index.add(_id(7), _epoch(7, 4, 6))

    assert epoch_index.ancestors([_id(4)]) == {_id(n) for n in (1, 2, 3, 4)}
    assert epoch_index.ancestors([_id(6)]) == {_id(n) for n in (1, 2, 5, 6)}
    assert epoch_index.ancestors([_id(7)]) == {_id(n) for n in range(1, 8)}
    assert epoch_index.ancestors([_id(3), _id(5)]) == {_id(n) for n in (1, 2, 3, 5)}
    assert epoch_index.ancestors([]) == set()


def test_ancestors_of_a_long_line_are_complete(epoch_index: EpochIndex) -> None:
    _add_line(epoch_index, range(1, 301), first_parent=None)
    _add_line(epoch_index, range(1001, 1041), first_parent=150)

    assert epoch_index.ancestors([_id(300)]) == {_id(n) for n in range(1, 301)}
    fork = epoch_index.ancestors([_id(1040)])
    assert fork == {_id(n) for n in [*range(1, 151), *range(1001, 1041)]}


def test_iter_entries_yields_oldest_commit_first(epoch_index: EpochIndex) -> None:
    for n in (3, 1, 2):
        epoch_index.add(_id(n), _epoch(n))

    assert [entry.number for entry in epoch_index.iter_entries()] == [1, 2, 3]


def test_delete_removes_entries(epoch_index: EpochIndex) -> None:
    _add_line(epoch_index, range(1, 4), first_parent=None)

    epoch_index.delete([_id(3), _id(2)])

    assert set(epoch_index.get_many([_id(1), _id(2), _id(3)])) == {_id(1)}
    assert [entry.id for entry in epoch_index.iter_entries()] == [_id(1)]


def test_another_reader_walks_a_long_line_it_never_saw(
    epoch_index: EpochIndex, backend_kind: str, refs_location: str
) -> None:
    _add_line(epoch_index, range(1, 201), first_parent=None)
    _add_line(epoch_index, range(1001, 1011), first_parent=120)
    _, fresh, closer = servers.open_ref_store(backend_kind, refs_location)
    try:
        assert fresh.ancestors([_id(1010)]) == {
            _id(n) for n in [*range(1, 121), *range(1001, 1011)]
        }
        assert fresh.get_many([_id(5)])[_id(5)].parents == (_id(4),)
        assert fresh.find_prefix(_id(1010).hex) == [_id(1010)]
    finally:
        closer.close()
