"""gc racing a commit: a ref never ends up pointing at an object gc removed.

A commit is paused after writing its objects and before moving its ref (a
store wrapper blocks in ``flush``) while gc runs. With the default grace period
nothing of the commit is removed; with grace 0 its objects are removed and the
commit fails loudly, naming the missing object, instead of moving its ref. The
other order, a commit finishing while gc is between its mark and its deletions,
is covered too: gc re-reads the refs under its lock and spares what they reach.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
import pytest
from support import assert_clean

from mvcstore import Epoch, Repo, Session
from mvcstore.errors import EpochIncompleteError
from mvcstore.gc import collect
from mvcstore.stores.base import ObjectStore

WAIT_S = 60.0


def weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((16, 16)).astype(np.float32),
        "b": rng.standard_normal(16).astype(np.float64),
    }


class PausingStore:
    """Wraps an object store; once armed, the next ``flush`` waits for a release.

    ``flush`` comes right after a commit has written every object and before
    it moves its ref, so a paused commit has objects that no ref reaches.
    """

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.location = inner.location
        self.armed = False
        self.reached = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def flush(self) -> None:
        self.inner.flush()
        if self.armed:
            self.armed = False
            self.reached.set()
            if not self.release.wait(WAIT_S):
                raise TimeoutError("the paused commit was never released")


class CommitThread(threading.Thread):
    """Runs one commit and keeps its result or its error."""

    def __init__(self, commit: Callable[[], Epoch]) -> None:
        super().__init__(daemon=True)
        self.commit = commit
        self.epoch: Epoch | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.epoch = self.commit()
        except BaseException as exc:  # handed to the test thread
            self.error = exc


def age_objects(repo: Repo, seconds: float) -> None:
    then = time.time() - seconds
    for path in (repo.path / "objects").rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def _start(tmp_path: Path) -> tuple[Repo, Session, Epoch, PausingStore]:
    repo = Repo.init(tmp_path, durable=False)
    pausing = PausingStore(repo.objects)
    repo.objects = pausing  # type: ignore[assignment]
    session = repo.session("a")
    first = session.commit(weights(1), metrics={"acc": 0.1})
    return repo, session, first, pausing


def _paused_commit(session: Session, pausing: PausingStore, seed: int) -> CommitThread:
    step = session.next_step
    session.log_metrics(step, loss=0.5)
    pausing.armed = True
    thread = CommitThread(
        lambda: session.commit(weights(seed), metrics={"acc": 0.2}, step=step)
    )
    thread.start()
    assert pausing.reached.wait(WAIT_S)
    return thread


def _finish(thread: CommitThread, pausing: PausingStore) -> None:
    pausing.release.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()


def _assert_weights(repo: Repo, revision: str, seed: int) -> None:
    checkout = repo.checkout(revision)
    for name, array in weights(seed).items():
        assert checkout.state[name].tobytes() == array.tobytes()


def test_with_the_default_grace_a_paused_commit_loses_nothing(tmp_path: Path) -> None:
    repo, session, first, pausing = _start(tmp_path)
    try:
        thread = _paused_commit(session, pausing, 2)

        report = collect(repo)
        _finish(thread, pausing)

        assert thread.error is None, thread.error
        assert thread.epoch is not None
        assert report.objects == 0 and report.docs == 0 and report.kept_young > 0
        assert repo.session_head("a") == thread.epoch.id
        _assert_weights(repo, "a", 2)
        _assert_weights(repo, "a~1", 1)
        epoch_uid = thread.epoch.uid
        names = sorted(d.name for d in repo.metrics("a") if d.uid == epoch_uid)
        assert names == ["acc", "loss"]
        assert_clean(repo)
    finally:
        repo.close()


def test_with_grace_zero_a_paused_commit_fails_loudly(tmp_path: Path) -> None:
    repo, session, first, pausing = _start(tmp_path)
    try:
        thread = _paused_commit(session, pausing, 2)

        report = collect(repo, grace_s=0)
        _finish(thread, pausing)

        assert report.objects > 0
        error = thread.error
        assert isinstance(error, EpochIncompleteError), error
        assert error.object_id in str(error)
        assert error.object_id not in {oid.hex for oid in repo.objects.iter_ids()}
        assert error.hint and "commit again" in error.hint
        # the session stayed on its old epoch, which reads back bit for bit
        assert repo.session_head("a") == first.id
        _assert_weights(repo, "a", 1)
        assert_clean(repo)

        # the live open epoch's documents survived gc: committing again shows them
        again = session.commit(weights(2), metrics={"acc": 0.2})
        assert repo.session_head("a") == again.id
        _assert_weights(repo, "a", 2)
        names = sorted(d.name for d in repo.metrics("a") if d.uid == again.uid)
        assert names == ["acc", "loss"]
        assert_clean(repo)
    finally:
        repo.close()


def test_a_paused_commit_reusing_old_garbage_keeps_it(tmp_path: Path) -> None:
    repo, session, first, pausing = _start(tmp_path)
    try:
        # weights 7 exist only as an old, unreferenced epoch
        other = repo.session("gone")
        other.commit(weights(7))
        repo.delete_session("gone")
        age_objects(repo, 7200)
        repo.set_head("a")
        thread = _paused_commit(session, pausing, 7)

        report = collect(repo, reflog_s=0)
        _finish(thread, pausing)

        assert thread.error is None, thread.error
        assert report.objects == 1  # only the old epoch object itself
        _assert_weights(repo, "a", 7)
        assert_clean(repo)
    finally:
        repo.close()


def test_gc_spares_garbage_a_commit_reused_between_its_mark_and_its_deletions(
    tmp_path: Path,
) -> None:
    repo, session, first, pausing = _start(tmp_path)
    try:
        other = repo.session("gone")
        other.commit(weights(9))
        repo.delete_session("gone")
        repo.set_head("a")

        # gc waits at its lock until a commit reusing that garbage is complete
        at_lock = threading.Event()
        go = threading.Event()
        taking = repo.deletion_lock

        @contextmanager
        def slow_lock(*, exclusive: bool = False) -> Iterator[None]:
            if exclusive:
                at_lock.set()
                assert go.wait(WAIT_S)
            with taking(exclusive=exclusive):
                yield

        lock: Callable[..., AbstractContextManager[None]] = slow_lock
        repo.deletion_lock = lock  # type: ignore[method-assign]
        reports = []
        gc_thread = threading.Thread(
            target=lambda: reports.append(collect(repo, grace_s=0, reflog_s=0))
        )
        gc_thread.start()
        assert at_lock.wait(WAIT_S)

        epoch = session.commit(weights(9))
        go.set()
        gc_thread.join(WAIT_S)

        assert reports and reports[0].objects == 1  # the old epoch only
        assert repo.session_head("a") == epoch.id
        _assert_weights(repo, "a", 9)
        assert_clean(repo)
    finally:
        repo.close()


@pytest.mark.parametrize("grace_s", [0.0, 3600.0])
def test_gc_between_commits_keeps_every_committed_epoch(
    tmp_path: Path, grace_s: float
) -> None:
    repo, session, first, pausing = _start(tmp_path)
    try:
        for seed in range(2, 5):
            session.commit(weights(seed))
            collect(repo, grace_s=grace_s)

        for back, seed in enumerate(range(4, 0, -1)):
            _assert_weights(repo, f"a~{back}", seed)
        assert_clean(repo)
    finally:
        repo.close()


def test_a_commit_written_while_gc_plans_keeps_the_old_garbage_it_reuses(
    tmp_path: Path,
) -> None:
    repo, session, first, pausing = _start(tmp_path)
    try:
        # weights 8 exist only as an old, unreferenced epoch
        other = repo.session("gone")
        other.commit(weights(8))
        repo.delete_session("gone")
        age_objects(repo, 7200)
        repo.set_head("a")

        # gc has made its plan and waits at its lock; meanwhile a commit that
        # reuses the garbage writes its objects and pauses before its ref
        at_lock, go = threading.Event(), threading.Event()
        taking = repo.deletion_lock

        @contextmanager
        def slow_lock(*, exclusive: bool = False) -> Iterator[None]:
            if exclusive:
                at_lock.set()
                assert go.wait(WAIT_S)
            with taking(exclusive=exclusive):
                yield

        lock: Callable[..., AbstractContextManager[None]] = slow_lock
        repo.deletion_lock = lock  # type: ignore[method-assign]
        reports = []
        gc_thread = threading.Thread(
            target=lambda: reports.append(collect(repo, reflog_s=0))
        )
        gc_thread.start()
        assert at_lock.wait(WAIT_S)
        thread = _paused_commit(session, pausing, 8)
        go.set()
        gc_thread.join(WAIT_S)
        _finish(thread, pausing)

        assert thread.error is None, thread.error
        assert reports and reports[0].objects == 1  # the old epoch object only
        _assert_weights(repo, "a", 8)
        assert_clean(repo)
    finally:
        repo.close()
