"""A store that fails on the Nth write, for every N of one commit.

A write is a ``put_if_absent``, a ``put`` into a batch (a pack being written),
or the ``commit`` of a batch (its pack and index made durable). Whichever write
fails, the session stays on its previous epoch, fsck finds nothing wrong, and
committing again succeeds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from support import assert_clean, make_graph

from mvcstore import Epoch, Repo, Session
from mvcstore.codec import FramePart, ObjectId
from mvcstore.errors import BackendUnavailableError
from mvcstore.stores.base import ObjectBatch, ObjectStore, open_batch


class FailingObjectStore:
    """Wraps an object store; the ``fail_at``-th write raises."""

    def __init__(self, inner: ObjectStore, *, fail_at: int | None) -> None:
        self.inner = inner
        self.location = inner.location
        self.fail_at = fail_at
        self.writes = 0
        self._lock = threading.Lock()

    def count_write(self) -> None:
        with self._lock:
            self.writes += 1
            failing = self.writes == self.fail_at
        if failing:
            raise BackendUnavailableError(
                self.location, f"injected failure on write {self.fail_at}"
            )

    def put_if_absent(self, oid: ObjectId, framed: bytes) -> bool:
        self.count_write()
        return self.inner.put_if_absent(oid, framed)

    def open_batch(self) -> ObjectBatch:
        return FailingBatch(self, open_batch(self.inner))

    def get_framed(self, oid: ObjectId) -> bytes:
        return self.inner.get_framed(oid)

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        return self.inner.has_many(oids)

    def iter_ids(self) -> Iterator[ObjectId]:
        return self.inner.iter_ids()

    def describe(self, oid: ObjectId) -> str:
        return self.inner.describe(oid)

    def delete(self, oid: ObjectId) -> None:
        self.inner.delete(oid)

    def flush(self) -> None:
        self.inner.flush()


class FailingBatch:
    """A batch of the inner store whose puts and commit count as writes."""

    def __init__(self, store: FailingObjectStore, inner: ObjectBatch) -> None:
        self.store = store
        self.inner = inner

    def put(self, oid: ObjectId, parts: Sequence[FramePart]) -> bool:
        self.store.count_write()
        return self.inner.put(oid, parts)

    def has(self, oid: ObjectId) -> bool:
        return self.inner.has(oid)

    def commit(self) -> None:
        self.store.count_write()
        self.inner.commit()

    def abort(self) -> None:
        self.inner.abort()


def _weights(number: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(number)
    return {
        "frozen": np.arange(256, dtype=np.float32),
        "weight": rng.standard_normal((16, 16)).astype(np.float32),
        "bias": rng.standard_normal(16),
    }


def _optimizer(number: int) -> dict[str, np.ndarray]:
    return {"momentum": np.full(16, float(number), dtype=np.float32)}


def _start(path: Path) -> tuple[Repo, Epoch]:
    repo = Repo.init(path, durable=False)
    first = repo.session("a").commit(
        _weights(1), graph=make_graph(16), extra={"optimizer": _optimizer(1)}
    )
    return repo, first


def _commit_second(session: Session) -> Epoch:
    return session.commit(
        _weights(2),
        graph=make_graph(12),
        params={"lr": 0.01},
        extra={"optimizer": _optimizer(2)},
        metrics={"acc": 0.75},
    )


def _writes_of_one_commit(tmp_path: Path) -> int:
    repo, _ = _start(tmp_path / "count")
    try:
        counting = FailingObjectStore(repo.objects, fail_at=None)
        repo.objects = counting
        session = repo.session("a")
        session.log_metrics(20, loss=0.5)
        _commit_second(session)
        assert_clean(repo)
    finally:
        repo.close()
    return counting.writes


def _assert_second_epoch(repo: Repo, epoch: Epoch) -> None:
    checkout = repo.checkout("a")
    assert checkout.epoch == epoch
    for name, array in _weights(2).items():
        assert checkout.state[name].tobytes() == array.tobytes()
    assert checkout.extra["optimizer"]["momentum"].tobytes() == (
        _optimizer(2)["momentum"].tobytes()
    )
    assert checkout.graph == make_graph(12)
    docs = [(doc.step, doc.name, doc.uid) for doc in repo.metrics("a")]
    assert docs == [(20, "acc", epoch.uid), (20, "loss", epoch.uid)]


def test_a_commit_writes_every_new_object_once(tmp_path: Path) -> None:
    # three new tensors (blob and tensor each), two states, a graph, the epoch,
    # then the commit of the batch (one pack) that holds them
    assert _writes_of_one_commit(tmp_path) == 3 * 2 + 2 + 1 + 1 + 1


def test_failed_write_at_every_point_keeps_the_old_epoch(tmp_path: Path) -> None:
    writes = _writes_of_one_commit(tmp_path)

    for fail_at in range(1, writes + 1):
        repo, first = _start(tmp_path / f"fail-{fail_at}")
        try:
            failing = FailingObjectStore(repo.objects, fail_at=fail_at)
            repo.objects = failing
            session = repo.session("a")
            session.log_metrics(20, loss=0.5)

            with pytest.raises(BackendUnavailableError, match="injected failure"):
                _commit_second(session)

            assert repo.session_head("a") == first.id, fail_at
            assert repo.checkout("a").epoch == first
            assert_clean(repo)

            retried = _commit_second(session)

            assert retried.parents == (first.id,)
            assert repo.session_head("a") == retried.id
            _assert_second_epoch(repo, retried)
            assert_clean(repo)
        finally:
            repo.close()


def test_failed_write_leaves_a_fresh_session_empty(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path, durable=False)
    try:
        repo.objects = FailingObjectStore(repo.objects, fail_at=1)
        session = repo.session("new")

        with pytest.raises(BackendUnavailableError):
            session.commit(_weights(1))

        assert repo.session_head("new") is None
        assert repo.sessions() == []
        assert_clean(repo)
        assert session.commit(_weights(1)).number == 1
        assert_clean(repo)
    finally:
        repo.close()
