"""Damaged object files: reads name the object, fsck names exactly it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from support import drop_object, make_graph, overwrite_region, stored_region

from mvcstore import Epoch, Repo
from mvcstore.codec import FRAME_HEADER_SIZE, ObjectId
from mvcstore.errors import CorruptObjectError, MvcError, ObjectNotFoundError
from mvcstore.objects import State, Tensor
from mvcstore.stores.local import LocalObjectStore

pytestmark = pytest.mark.damaged

RANDOM = np.random.default_rng(7).standard_normal(512).astype(np.float32)
REGULAR = np.zeros(4096, dtype=np.float32)


@dataclass
class History:
    """Session ``a``: a#1 holds ``w1``; a#2 and a#3 share ``w2``. ``b`` forks at a#1.

    Objects are in packs (what commits write) or loose files (format 1, and
    what ``put_if_absent`` writes), as the fixture's parameter says.
    """

    repo: Repo
    a: list[Epoch]
    b: Epoch
    packed: bool


def _state(w: np.ndarray, number: int) -> dict[str, np.ndarray]:
    return {"w": w, "regular": REGULAR, "n": np.array([number], dtype=np.int64)}


@pytest.fixture(params=["packed", "loose"])
def history(repo: Repo, request: pytest.FixtureRequest) -> History:
    assert isinstance(repo.objects, LocalObjectStore)
    repo.objects.use_packs = request.param == "packed"
    session = repo.session("a")
    w1, w2 = RANDOM, RANDOM[::-1].copy()
    a = [
        session.commit(_state(w1, 1), graph=make_graph(8)),
        session.commit(_state(w2, 2)),
        session.commit(_state(w2, 3)),
    ]
    b = repo.fork("b", at="a#1").commit(_state(w1, 10))
    return History(repo, a, b, packed=request.param == "packed")


def _tensor(repo: Repo, epoch: Epoch, name: str) -> Tensor:
    assert epoch.state is not None
    state = repo.get(epoch.state)
    assert isinstance(state, State)
    tensor = repo.get(state.tensors[name])
    assert isinstance(tensor, Tensor)
    return tensor


def _flip(
    position: Callable[[int], int], mask: int = 0x01
) -> Callable[[Repo, ObjectId], None]:
    def damage(repo: Repo, oid: ObjectId) -> None:
        def change(frame: bytearray) -> None:
            frame[position(len(frame))] ^= mask

        overwrite_region(stored_region(repo, oid), change)

    return damage


def _cut(keep: Callable[[int], int]) -> Callable[[Repo, ObjectId], None]:
    # a loose file is cut short; a packed frame cannot be, so its lost bytes
    # read as zeros, which is what a torn write in a pack leaves
    def damage(repo: Repo, oid: ObjectId) -> None:
        region = stored_region(repo, oid)

        def change(frame: bytearray) -> None:
            kept = keep(len(frame))
            if region.packed:
                frame[kept:] = bytes(len(frame) - kept)
            else:
                del frame[kept:]

        overwrite_region(region, change)

    return damage


DAMAGES: dict[str, Callable[[Repo, ObjectId], None]] = {
    "flipped-payload-byte": _flip(
        lambda size: FRAME_HEADER_SIZE + (size - FRAME_HEADER_SIZE) // 2
    ),
    "flipped-header-byte": _flip(lambda size: 9, 0x80),
    "flipped-last-byte": _flip(lambda size: size - 1),
    "truncated-half": _cut(lambda size: size // 2),
    "truncated-to-header": _cut(lambda size: FRAME_HEADER_SIZE),
    "emptied": _cut(lambda size: 0),
    "deleted": drop_object,
}


def _expected_error(damage: str) -> type[MvcError]:
    return ObjectNotFoundError if damage == "deleted" else CorruptObjectError


def _assert_names(error: MvcError, oid: ObjectId) -> None:
    assert getattr(error, "object_id", None) == oid.hex
    assert oid.hex in str(error)
    assert error.hint is not None and "fsck" in error.hint


def _only_problem(repo: Repo, oid: ObjectId, *, missing: bool) -> tuple[str, ...]:
    report = repo.fsck()
    assert not report.ok
    assert [problem.object_id for problem in report.problems] == [oid.hex]
    (problem,) = report.problems
    assert problem.kind == ("missing" if missing else "corrupt")
    assert oid.hex in problem.detail
    return problem.affects


def _mentions(affects: tuple[str, ...], epoch: Epoch) -> bool:
    assert epoch.id is not None
    return any(epoch.id.short() in item for item in affects)


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_blob_is_named_by_reads_and_fsck(history: History, damage: str) -> None:
    repo = history.repo
    blob = _tensor(repo, history.a[1], "w").data

    DAMAGES[damage](repo, blob)

    with pytest.raises(_expected_error(damage)) as caught:
        repo.checkout("a")
    _assert_names(caught.value, blob)
    with pytest.raises(_expected_error(damage)) as caught:
        repo.get(blob)
    _assert_names(caught.value, blob)
    affects = _only_problem(repo, blob, missing=damage == "deleted")
    assert "a" in affects
    assert _mentions(affects, history.a[1]) and _mentions(affects, history.a[2])
    assert "b" not in affects
    assert not _mentions(affects, history.a[0]) and not _mentions(affects, history.b)


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_compressed_blob_is_named(history: History, damage: str) -> None:
    repo = history.repo
    blob = _tensor(repo, history.a[0], "regular").data
    assert stored_region(repo, blob).length < REGULAR.nbytes

    DAMAGES[damage](repo, blob)

    with pytest.raises(_expected_error(damage)) as caught:
        repo.checkout("b")
    _assert_names(caught.value, blob)
    affects = _only_problem(repo, blob, missing=damage == "deleted")
    assert {"a", "b"} <= set(affects)
    assert all(_mentions(affects, epoch) for epoch in [*history.a, history.b])


def test_earlier_epochs_read_back_when_a_later_blob_is_damaged(
    history: History,
) -> None:
    repo = history.repo
    DAMAGES["flipped-payload-byte"](repo, _tensor(repo, history.a[1], "w").data)

    checkout = repo.checkout("a#1")

    assert checkout.state["w"].tobytes() == RANDOM.tobytes()
    assert repo.checkout("b").state["w"].tobytes() == RANDOM.tobytes()


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_head_epoch_is_named_and_its_parents_read_back(
    history: History, damage: str
) -> None:
    repo = history.repo
    head = history.a[2].id
    assert head is not None

    DAMAGES[damage](repo, head)

    with pytest.raises(_expected_error(damage)) as caught:
        repo.checkout("a")
    _assert_names(caught.value, head)
    assert repo.checkout("a~1").epoch == history.a[1]
    affects = _only_problem(repo, head, missing=damage == "deleted")
    assert "a" in affects
    assert "b" not in affects


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_middle_epoch_names_its_descendants(
    history: History, damage: str
) -> None:
    repo = history.repo
    middle = history.a[1].id
    assert middle is not None

    DAMAGES[damage](repo, middle)

    with pytest.raises(_expected_error(damage)):
        repo.checkout("a#2")
    assert repo.checkout("a").epoch == history.a[2]
    affects = _only_problem(repo, middle, missing=damage == "deleted")
    assert "a" in affects and _mentions(affects, history.a[2])


@pytest.mark.parametrize("kind", ["state", "tensor", "graph"])
def test_damaged_tree_object_is_named(history: History, kind: str) -> None:
    repo = history.repo
    epoch = history.a[0]
    assert epoch.state is not None
    state = repo.get(epoch.state)
    assert isinstance(state, State)
    oid = {"state": epoch.state, "graph": epoch.graph, "tensor": state.tensors["w"]}[
        kind
    ]
    assert oid is not None

    DAMAGES["flipped-last-byte"](repo, oid)

    with pytest.raises(CorruptObjectError) as caught:
        repo.checkout("a#1")
    _assert_names(caught.value, oid)
    affects = _only_problem(repo, oid, missing=False)
    assert _mentions(affects, epoch)
    assert {"a", "b"} <= set(affects)


def test_ref_to_a_missing_epoch_is_named(history: History) -> None:
    repo = history.repo
    head = history.b.id
    assert head is not None

    drop_object(repo, head)

    with pytest.raises(ObjectNotFoundError):
        repo.resolve("b")
    affects = _only_problem(repo, head, missing=True)
    assert affects == ("b",)


def test_object_swapped_for_another_is_corrupt(history: History) -> None:
    repo = history.repo
    first, second = history.a[0].id, history.a[1].id
    assert first is not None and second is not None
    if history.packed:
        pytest.skip("a packed frame cannot be swapped for one of another length")
    other = stored_region(repo, second)

    overwrite_region(
        stored_region(repo, first),
        lambda frame: frame.__setitem__(slice(None), other.path.read_bytes()),
    )

    with pytest.raises(CorruptObjectError, match="does not hash to its id"):
        repo.get(first)
    _only_problem(repo, first, missing=False)


def test_stray_files_are_not_problems(history: History) -> None:
    repo = history.repo
    (repo.path / "tmp" / "obj-0123-99-1").write_bytes(b"half written")
    (repo.path / "objects" / "README").write_text("not an object")
    (repo.path / "objects" / "zz").mkdir()
    (repo.path / "objects" / "packs").mkdir(exist_ok=True)
    (repo.path / "objects" / "packs" / "notes.txt").write_text("not a pack")

    report = repo.fsck()

    assert report.problems == []
    assert report.epochs == 4
