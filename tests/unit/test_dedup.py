"""Content addressing: equal data is stored once, whatever shares it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from support import Forked

from mvcstore import Repo
from mvcstore.codec import ObjectId, unframe
from mvcstore.objects import State, Tensor
from mvcstore.stores.local import LocalObjectStore


def _payload(repo: Repo, oid: ObjectId) -> tuple[str, bytes]:
    decoded = unframe(repo.objects.get_framed(oid), object_id=oid, source=repo.objects)
    return decoded.kind, decoded.payload


def _kinds(repo: Repo) -> Counter[str]:
    return Counter(_payload(repo, oid)[0] for oid in repo.objects.iter_ids())


def _stored_copies(repo: Repo) -> int:
    # loose files plus the entries of every pack index: each copy of an object
    assert isinstance(repo.objects, LocalObjectStore)
    loose = [
        path
        for path in (repo.path / "objects").glob("??/*")
        if path.is_file() and len(path.parent.name + path.name) == 64
    ]
    return len(loose) + sum(count for _, count in repo.objects.packs.packs())


def _tensor_ids(repo: Repo, state_id: ObjectId | None) -> dict[str, ObjectId]:
    assert state_id is not None
    state = repo.get(state_id)
    assert isinstance(state, State)
    return dict(state.tensors)


def test_same_tensor_in_ten_epochs_stores_its_data_once(repo: Repo) -> None:
    frozen = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    session = repo.session("a")

    epochs = [
        session.commit({"frozen": frozen, "step": np.array([number])})
        for number in range(10)
    ]

    frozen_ids = {_tensor_ids(repo, epoch.state)["frozen"] for epoch in epochs}
    assert len(frozen_ids) == 1
    tensor = repo.get(frozen_ids.pop())
    assert isinstance(tensor, Tensor)
    blobs_with_frozen_data = [
        oid
        for oid in repo.objects.iter_ids()
        if _payload(repo, oid)[1] == frozen.tobytes()
    ]
    assert blobs_with_frozen_data == [tensor.data]
    # one blob for the frozen data plus one per distinct step counter
    assert _kinds(repo)["blob"] == 1 + 10
    assert _kinds(repo)["epoch"] == 10
    assert _stored_copies(repo) == sum(_kinds(repo).values())


def test_committing_the_same_state_again_adds_only_an_epoch(repo: Repo) -> None:
    session = repo.session("a")
    state = {"w": np.arange(1000, dtype=np.float64), "b": np.ones(3)}
    first = session.commit(state)
    before = _kinds(repo)

    second = session.commit(state)

    assert second.state == first.state
    after = _kinds(repo)
    assert after - before == Counter({"epoch": 1})


def test_fork_sharing_weights_adds_no_blob(forked: Forked) -> None:
    repo = forked.repo
    before = _kinds(repo)
    parent_state = repo.checkout("a#4").state

    epoch = repo.session("b").commit(parent_state)

    assert epoch.state == forked.a[3].state
    assert _kinds(repo) - before == Counter({"epoch": 1})


def test_forked_history_shares_the_unchanged_tensor(forked: Forked) -> None:
    repo = forked.repo

    ids = {_tensor_ids(repo, epoch.state)["frozen"] for epoch in forked.a + forked.b}

    assert len(ids) == 1
    # frozen once; weight and bias differ in each of the eight epochs
    assert _kinds(repo)["blob"] == 1 + 2 * 8


def test_same_bytes_under_two_shapes_share_one_blob(repo: Repo) -> None:
    data = np.arange(12, dtype=np.float32)

    epoch = repo.session("a").commit({"flat": data, "grid": data.reshape(3, 4)})

    tensors = _tensor_ids(repo, epoch.state)
    assert tensors["flat"] != tensors["grid"]
    flat, grid = repo.get(tensors["flat"]), repo.get(tensors["grid"])
    assert isinstance(flat, Tensor) and isinstance(grid, Tensor)
    assert flat.data == grid.data
    assert _kinds(repo)["blob"] == 1


def test_equal_data_in_two_repositories_gets_equal_ids(tmp_path: Path) -> None:
    state = {"w": np.linspace(0, 1, 50, dtype=np.float32)}
    ids = []
    for name in ("one", "two"):
        with Repo.init(tmp_path / name, durable=False) as other:
            epoch = other.session("main").commit(state, params={"lr": 0.5})
            ids.append((epoch.state, _tensor_ids(other, epoch.state)["w"]))
            assert other.fsck().problems == []

    assert ids[0] == ids[1]


def test_put_if_absent_never_rewrites_an_object(repo: Repo) -> None:
    epoch = repo.session("a").commit({"w": np.zeros(4)})
    assert epoch.state is not None
    framed = repo.objects.get_framed(epoch.state)

    assert repo.objects.put_if_absent(epoch.state, b"other bytes") is False
    assert repo.objects.get_framed(epoch.state) == framed
