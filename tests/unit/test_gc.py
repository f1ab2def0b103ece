"""gc removes exactly what no view can reach, once older than the grace period."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from support import Forked, assert_clean, make_state

from mvcstore import Repo
from mvcstore.codec import ObjectId
from mvcstore.errors import InvalidInputError, MvcError, RevisionNotFoundError
from mvcstore.gc import collect
from mvcstore.metrics.base import MetricDoc
from mvcstore.objects import State, Tensor
from mvcstore.stores.base import ObjectStore, OpenEpoch

HOUR = 3600.0


def age_objects(repo: Repo, seconds: float) -> None:
    """Make every object file look ``seconds`` older than now."""
    then = time.time() - seconds
    for path in (repo.path / "objects").rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def object_ids(repo: Repo) -> set[ObjectId]:
    return set(repo.objects.iter_ids())


def assert_reads_back(forked: Forked, epochs: Iterable[object]) -> None:
    for epoch in epochs:
        assert epoch.id is not None  # type: ignore[attr-defined]
        checkout = forked.repo.checkout(epoch.id.hex)  # type: ignore[attr-defined]
        for name, array in forked.states[epoch.id].items():  # type: ignore[attr-defined]
            assert checkout.state[name].tobytes() == array.tobytes()


def view(repo: Repo, revision: str) -> list[tuple[str, int, str, float]]:
    return [(d.uid, d.step, d.name, d.value) for d in repo.metrics(revision)]


def blob_of(repo: Repo, epoch_id: ObjectId, name: str) -> ObjectId:
    epoch = repo.read_epoch(epoch_id)
    assert epoch.state is not None
    state = repo.get(epoch.state)
    assert isinstance(state, State)
    tensor = repo.get(state.tensors[name])
    assert isinstance(tensor, Tensor)
    return tensor.data


def test_gc_on_a_whole_history_removes_nothing(forked: Forked) -> None:
    before = object_ids(forked.repo)
    views = {rev: view(forked.repo, rev) for rev in ("a", "b")}

    report = collect(forked.repo, grace_s=0)

    assert (report.objects, report.epochs, report.docs) == (0, 0, 0)
    assert report.reachable == len(before)
    assert object_ids(forked.repo) == before
    assert {rev: view(forked.repo, rev) for rev in ("a", "b")} == views
    assert_reads_back(forked, [*forked.a, *forked.b])


def test_the_reflog_keeps_a_deleted_sessions_epochs_until_it_expires(
    forked: Forked,
) -> None:
    repo = forked.repo
    before = object_ids(repo)
    view_a = view(repo, "a")
    repo.delete_session("b")
    repo.set_head("a")

    kept = collect(repo, grace_s=0)
    assert kept.objects == 0 and object_ids(repo) == before
    removed = collect(repo, grace_s=0, reflog_s=0)

    # b's two epochs: epoch, state and a new weight and bias tensor and blob
    # each; "frozen" and the graph are shared with a
    assert removed.epochs == 2
    assert removed.objects == 2 * (1 + 1 + 2 * 2)
    assert removed.docs == 2 * Forked.DOCS_PER_EPOCH and removed.uids == 2
    assert removed.bytes > 0
    for epoch in forked.b:
        assert epoch.id is not None and epoch.id not in object_ids(repo)
        assert repo.index.get_many([epoch.id]) == {}
        with pytest.raises(RevisionNotFoundError):
            repo.resolve(epoch.id.hex[:16])
    assert view(repo, "a") == view_a
    assert_reads_back(forked, forked.a)


def test_unreferenced_objects_younger_than_the_grace_period_stay(
    forked: Forked,
) -> None:
    repo = forked.repo
    repo.delete_session("b")
    before = object_ids(repo)

    young = collect(repo, reflog_s=0)
    age_objects(repo, 2 * HOUR)
    old = collect(repo, reflog_s=0)

    assert young.objects == 0 and young.kept_young == 12
    assert object_ids(repo) != before
    assert old.objects == 12 and old.kept_young == 0


def test_dry_run_reports_what_gc_would_remove_and_removes_nothing(
    forked: Forked,
) -> None:
    repo = forked.repo
    repo.delete_session("b")
    before = object_ids(repo)
    uids = set(repo.metrics_index.iter_uids())

    dry = collect(repo, grace_s=0, reflog_s=0, dry_run=True)

    assert dry.dry_run and dry.objects == 12 and dry.docs == 6
    assert object_ids(repo) == before
    assert set(repo.metrics_index.iter_uids()) == uids
    real = collect(repo, grace_s=0, reflog_s=0)
    assert (real.objects, real.bytes, real.docs) == (dry.objects, dry.bytes, dry.docs)


def test_a_live_open_epoch_keeps_its_base_and_its_documents(forked: Forked) -> None:
    repo = forked.repo
    session = repo.session("b")
    session.log_metrics(session.next_step, loss=0.125)
    repo.delete_session("b")

    collect(repo, grace_s=0, reflog_s=0)

    assert session.open_uid in set(repo.metrics_index.iter_uids())
    base = forked.b[-1].id
    assert base is not None and base in object_ids(repo)
    assert_reads_back(forked, forked.b)


def test_a_dead_writers_open_epoch_and_its_documents_are_removed(
    forked: Forked,
) -> None:
    repo = forked.repo
    old_ns = time.time_ns() - int(2 * HOUR * 1e9)
    dead = OpenEpoch(
        session="a",
        uid="d" * 32,
        base=forked.a[-1].id,
        owner=f"{socket.gethostname()}:999999999",
        started_ns=old_ns,
    )
    repo.refs.set_open_epoch(dead)
    repo.metrics_index.add(
        [MetricDoc(uid=dead.uid, step=100, name="loss", value=1.0, time_ns=old_ns)]
    )

    report = collect(repo, grace_s=HOUR)

    assert report.open_epochs == 1 and report.docs == 1
    assert list(repo.refs.iter_open_epochs()) == []
    assert dead.uid not in set(repo.metrics_index.iter_uids())


def test_documents_younger_than_the_grace_period_stay(repo: Repo) -> None:
    repo.metrics_index.add(
        [
            MetricDoc(
                uid="e" * 32, step=1, name="loss", value=1.0, time_ns=time.time_ns()
            )
        ]
    )

    assert collect(repo, grace_s=HOUR).docs == 0
    assert collect(repo, grace_s=0).docs == 1


def test_stale_temporary_files_are_removed_after_the_grace_period(
    repo: Repo,
) -> None:
    stale = repo.path / "tmp" / "obj-0123456789abcdef-1-1"
    fresh = repo.path / "tmp" / "obj-fedcba9876543210-2-2"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y" * 10)
    then = time.time() - 2 * HOUR
    os.utime(stale, (then, then))

    report = collect(repo, grace_s=HOUR)

    assert (report.temporaries, report.temporary_bytes) == (1, 100)
    assert not stale.exists() and fresh.exists()


def test_a_young_unreferenced_epoch_keeps_the_old_objects_it_reuses(
    repo: Repo,
) -> None:
    old = repo.session("old").commit(make_state("x", 1))
    repo.delete_session("old")
    age_objects(repo, 2 * HOUR)
    # same weights, committed now and left unreferenced (as a lost race is)
    young = repo.session("young").commit(make_state("x", 1))
    repo.delete_session("young")
    assert old.id is not None and young.id is not None

    report = collect(repo, reflog_s=0)

    assert report.objects == 1  # the old epoch: the young one reuses the rest
    assert old.id not in object_ids(repo)
    repo.create_session("kept", at=young.id.hex)
    checkout = repo.checkout("kept")
    for name, array in make_state("x", 1).items():
        assert checkout.state[name].tobytes() == array.tobytes()


class DeltaStore:
    """Declares that some blobs' frames need another blob, as a delta would."""

    def __init__(self, inner: ObjectStore, bases: dict[ObjectId, ObjectId]) -> None:
        self.inner = inner
        self.bases = bases
        self.location = inner.location

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def frame_dependencies(self, oid: ObjectId) -> Sequence[ObjectId]:
        return [self.bases[oid]] if oid in self.bases else []

    def iter_ids(self) -> Iterator[ObjectId]:
        return self.inner.iter_ids()

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        return self.inner.has_many(oids)


def test_a_kept_blob_keeps_the_base_its_frame_depends_on(forked: Forked) -> None:
    repo = forked.repo
    a6, b6 = forked.a[-1].id, forked.b[-1].id
    assert a6 is not None and b6 is not None
    base = blob_of(repo, b6, "weight")
    dependent = blob_of(repo, a6, "weight")
    repo.objects = DeltaStore(repo.objects, {dependent: base})  # type: ignore[assignment]
    repo.delete_session("b")

    collect(repo, grace_s=0, reflog_s=0)

    assert base in object_ids(repo)
    assert blob_of(repo, a6, "bias") in object_ids(repo)
    assert b6 not in object_ids(repo)
    assert_clean(repo)


@pytest.mark.damaged
def test_gc_removes_nothing_when_a_reachable_object_is_missing(
    forked: Forked,
) -> None:
    repo = forked.repo
    repo.delete_session("b")
    a3 = forked.a[2].id
    assert a3 is not None
    repo.objects.delete(blob_of(repo, a3, "weight"))  # type: ignore[attr-defined]
    before = object_ids(repo)

    with pytest.raises(MvcError, match="gc removed nothing") as caught:
        collect(repo, grace_s=0, reflog_s=0)

    assert caught.value.hint is not None and "fsck" in caught.value.hint
    assert object_ids(repo) == before


def test_reflog_entries_of_epochs_an_earlier_gc_removed_are_skipped(
    forked: Forked,
) -> None:
    repo = forked.repo
    repo.delete_session("b")
    collect(repo, grace_s=0, reflog_s=0)

    again = collect(repo, grace_s=0)

    assert again.objects == 0
    assert_reads_back(forked, forked.a)


def test_gc_refuses_negative_durations(repo: Repo) -> None:
    with pytest.raises(InvalidInputError):
        collect(repo, grace_s=-1)
    with pytest.raises(InvalidInputError):
        collect(repo, reflog_s=float("nan"))


def test_an_epoch_committed_after_gc_reuses_nothing_removed(repo: Repo) -> None:
    session = repo.session("a")
    session.commit({"w": np.arange(8, dtype=np.float32)})
    session.commit({"w": np.ones(8, dtype=np.float32)})
    repo.create_session("tmp", at="a~1")
    repo.delete_session("tmp")
    collect(repo, grace_s=0, reflog_s=0)

    epoch = session.commit({"w": np.arange(8, dtype=np.float32)})

    assert epoch.number == 3
    assert repo.checkout("a").state["w"].tobytes() == (
        np.arange(8, dtype=np.float32).tobytes()
    )
    assert repo.checkout("a~2").state["w"].tobytes() == (
        np.arange(8, dtype=np.float32).tobytes()
    )


def test_gc_writes_no_file_outside_the_repository(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "r", durable=False)
    try:
        repo.session("a").commit({"w": np.zeros(4, dtype=np.float32)})
        collect(repo, grace_s=0)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
        assert_clean(repo)
    finally:
        repo.close()


def test_gc_changes_the_deletion_token_only_when_it_deletes_objects(
    forked: Forked,
) -> None:
    repo = forked.repo
    collect(repo, grace_s=0)
    before = repo.deletion_token()

    collect(repo, grace_s=0)
    unchanged = repo.deletion_token()
    repo.delete_session("b")
    collect(repo, grace_s=0, reflog_s=0)

    assert unchanged == before
    assert repo.deletion_token() != before
