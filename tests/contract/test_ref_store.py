"""The RefStore contract, for every implementation: refs, races, HEAD, reflog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mvcstore.codec import ObjectId
from mvcstore.errors import RefConflictError
from mvcstore.stores.base import OpenEpoch, RefStore

TESTS = Path(__file__).resolve().parents[1]


def _id(n: int) -> ObjectId:
    return ObjectId(n.to_bytes(32, "big"))


def test_a_missing_ref_reads_as_none(ref_store: RefStore) -> None:
    assert ref_store.get("sessions/a") is None
    assert list(ref_store.iter_refs()) == []
    assert ref_store.reflog("sessions/a") == []


def test_refs_are_created_moved_and_deleted(ref_store: RefStore) -> None:
    ref_store.compare_and_set("sessions/a", old=None, new=_id(1), message="create")
    assert ref_store.get("sessions/a") == _id(1)

    ref_store.compare_and_set("sessions/a", old=_id(1), new=_id(2), message="move")
    assert ref_store.get("sessions/a") == _id(2)

    ref_store.compare_and_set("sessions/a", old=_id(2), new=None, message="delete")
    assert ref_store.get("sessions/a") is None
    assert list(ref_store.iter_refs()) == []

    ref_store.compare_and_set("sessions/a", old=None, new=_id(3), message="again")
    assert ref_store.get("sessions/a") == _id(3)


def test_a_stale_compare_and_set_names_both_epochs(ref_store: RefStore) -> None:
    ref_store.compare_and_set("sessions/a", old=None, new=_id(1), message="create")
    ref_store.compare_and_set("sessions/a", old=_id(1), new=_id(2), message="move")

    with pytest.raises(RefConflictError) as caught:
        ref_store.compare_and_set("sessions/a", old=_id(1), new=_id(9), message="x")

    error = caught.value
    assert (error.ref, error.expected) == ("sessions/a", _id(1).hex)
    assert (error.actual, error.proposed) == (_id(2).hex, _id(9).hex)
    assert ref_store.get("sessions/a") == _id(2)


def test_creating_an_existing_ref_conflicts(ref_store: RefStore) -> None:
    ref_store.compare_and_set("tags/best", old=None, new=_id(1), message="create")

    with pytest.raises(RefConflictError) as caught:
        ref_store.compare_and_set("tags/best", old=None, new=_id(2), message="x")

    assert caught.value.actual == _id(1).hex


def test_iter_refs_filters_by_prefix_and_sorts_by_name(ref_store: RefStore) -> None:
    for n, ref in enumerate(["sessions/b", "tags/t", "sessions/a/x", "sessions/a"]):
        ref_store.compare_and_set(ref, old=None, new=_id(n + 1), message="create")

    assert [name for name, _ in ref_store.iter_refs("sessions/")] == [
        "sessions/a",
        "sessions/a/x",
        "sessions/b",
    ]
    assert dict(ref_store.iter_refs("tags/")) == {"tags/t": _id(2)}


def test_the_reflog_records_every_move_oldest_first(ref_store: RefStore) -> None:
    ref_store.compare_and_set("sessions/a", old=None, new=_id(1), message="one")
    ref_store.compare_and_set("sessions/b", old=None, new=_id(5), message="other")
    ref_store.compare_and_set("sessions/a", old=_id(1), new=_id(2), message="two")
    ref_store.compare_and_set("sessions/a", old=_id(2), new=None, message="gone")

    moves = [(e.old, e.new, e.message) for e in ref_store.reflog("sessions/a")]

    assert moves == [
        (None, _id(1), "one"),
        (_id(1), _id(2), "two"),
        (_id(2), None, "gone"),
    ]
    assert [e.ref for e in ref_store.reflog()] == [
        "sessions/a",
        "sessions/b",
        "sessions/a",
        "sessions/a",
    ]
    assert all(e.time_ns > 0 for e in ref_store.reflog())


def test_head_is_set_and_replaced(ref_store: RefStore) -> None:
    assert ref_store.get_head() is None

    ref_store.set_head("a")
    ref_store.set_head("b")

    assert ref_store.get_head() == "b"


def test_open_epochs_are_recorded_and_cleared(ref_store: RefStore) -> None:
    first = OpenEpoch(session="a", uid="u1", base=None, owner="h:1", started_ns=1)
    second = OpenEpoch(session="a", uid="u2", base=_id(3), owner="h:2", started_ns=2)
    ref_store.set_open_epoch(first)
    ref_store.set_open_epoch(second)
    ref_store.set_open_epoch(second)

    assert list(ref_store.iter_open_epochs()) == [first, second]

    ref_store.clear_open_epoch("a", "u1")
    ref_store.clear_open_epoch("other", "u2")

    assert list(ref_store.iter_open_epochs()) == [second]


def test_racing_threads_one_wins_and_the_others_name_both_epochs(
    ref_store: RefStore,
) -> None:
    ref_store.compare_and_set("sessions/a", old=None, new=_id(1), message="create")
    start = threading.Barrier(8)
    won: list[ObjectId] = []
    lost: list[RefConflictError] = []

    def move(n: int) -> None:
        start.wait()
        try:
            ref_store.compare_and_set(
                "sessions/a", old=_id(1), new=_id(100 + n), message=f"writer {n}"
            )
            won.append(_id(100 + n))
        except RefConflictError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=move, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 1 and len(lost) == 7
    assert ref_store.get("sessions/a") == won[0]
    assert {exc.actual for exc in lost} == {won[0].hex}
    assert {exc.expected for exc in lost} == {_id(1).hex}
    assert len({exc.proposed for exc in lost}) == 7
    assert len(ref_store.reflog("sessions/a")) == 2


def test_racing_processes_one_wins_each_race(
    ref_store: RefStore, backend_kind: str, refs_location: str
) -> None:
    rounds = 6
    for k in range(rounds):
        ref_store.compare_and_set(
            f"sessions/r{k}", old=None, new=_id(k + 1), message="c"
        )
    start = time.time() + 2.0
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    procs = []
    for side in (1, 2):
        spec = [
            [f"sessions/r{k}", _id(k + 1).hex, _id(1000 * side + k).hex]
            for k in range(rounds)
        ]
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("ref_race_worker.py")),
                    backend_kind,
                    refs_location,
                    str(start),
                    json.dumps(spec),
                ],
                stdout=subprocess.PIPE,
                env=env,
                text=True,
            )
        )
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        results.append(json.loads(out))

    for k in range(rounds):
        sides = [results[0][k], results[1][k]]
        winners = [n for n, result in enumerate(sides, start=1) if result["won"]]
        assert len(winners) == 1, sides
        winner = _id(1000 * winners[0] + k)
        loser = sides[2 - winners[0]]
        assert loser["actual"] == winner.hex
        assert loser["proposed"] == _id(1000 * (3 - winners[0]) + k).hex
        assert ref_store.get(f"sessions/r{k}") == winner
        assert [e.new for e in ref_store.reflog(f"sessions/r{k}")] == [
            _id(k + 1),
            winner,
        ]
