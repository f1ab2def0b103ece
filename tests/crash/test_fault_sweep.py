"""Every write of a commit, a retain and a gc fails in turn; nothing is lost.

A template repository holds two sessions (``b`` forked at a#2), a deleted
session, weights dropped by ``retain``, an abandoned open epoch and a stale
temporary file, all old enough for gc. Each run copies it, wraps every store
so that its N-th write fails (objects, refs, epoch index and metric documents
counted together), and runs one operation. Afterwards: every session is on its
old epoch or its new one, every epoch reads back bit for bit (or says its
weights were dropped), the views are what they were, fsck is clean, and
running the operation again completes it.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from faults import FaultPlan
from support import make_graph

from mvcstore import Repo, Session
from mvcstore.codec import ObjectId
from mvcstore.errors import BackendUnavailableError, WeightsDroppedError
from mvcstore.gc import RetainPolicy, collect, retain
from mvcstore.metrics.base import MetricDoc
from mvcstore.stores.base import OpenEpoch

HOUR = 3600.0


def weights(label: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(list(label.encode()))
    return {
        "frozen": np.arange(64, dtype=np.float32),
        "w": rng.standard_normal((8, 8)).astype(np.float32),
        "b": rng.standard_normal(8),
    }


def optimizer(label: str) -> dict[str, np.ndarray]:
    return {"m": np.full(8, float(sum(label.encode())), dtype=np.float32)}


def _commit(session: Session, label: str) -> None:
    step = session.next_step
    session.log_metrics(step, loss=1.0 / (1 + len(label)))
    session.commit(
        weights(label),
        graph=make_graph(8) if label.endswith("#1") else None,
        extra={"optimizer": optimizer(label)},
        metrics={"acc": 0.5},
        message=label,
        step=step + 1,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template")
    repo = Repo.init(root, durable=False)
    try:
        a = repo.session("a")
        for n in range(1, 5):
            _commit(a, f"a#{n}")
        b = repo.fork("b", at="a#2")
        for n in range(3, 5):
            _commit(b, f"b#{n}")
        c = repo.session("c")
        for n in range(1, 3):
            _commit(c, f"c#{n}")
        repo.delete_session("c")
        retain(repo, "a", RetainPolicy(keep_last=1))
        old_ns = time.time_ns() - int(2 * HOUR * 1e9)
        dead = OpenEpoch("a", "d" * 32, None, f"{socket.gethostname()}:999999999", 0)
        repo.refs.set_open_epoch(dead)
        repo.metrics_index.add([MetricDoc(dead.uid, 1, "loss", 1.0, old_ns)])
        repo.set_head("a")
    finally:
        repo.close()
    stale = root / ".mvc" / "tmp" / "obj-00000000000000-1-1"
    stale.write_bytes(b"half an object")
    then = time.time() - 2 * HOUR
    for path in [stale, *(root / ".mvc" / "objects").rglob("*")]:
        os.utime(path, (then, then))
    return root


def _copy(template: Path, target: Path) -> Repo:
    shutil.copytree(template, target)
    return Repo.open(target, durable=False)


def _views(repo: Repo) -> dict[str, list[tuple[str, int, str, float]]]:
    return {
        rev: [(d.uid, d.step, d.name, d.value) for d in repo.metrics(rev)]
        for rev in ("a", "b")
    }


def _assert_history(repo: Repo, *, heads: dict[str, set[ObjectId | None]]) -> None:
    """Every session on an allowed head; every epoch reads back or was dropped."""
    for name, allowed in heads.items():
        assert repo.session_head(name) in allowed, name
    dropped = repo.dropped_epochs()
    for name in heads:
        for epoch in repo.log(name):
            assert epoch.id is not None
            if epoch.id in dropped:
                with pytest.raises(WeightsDroppedError):
                    repo.checkout(epoch.id.hex)
                continue
            checkout = repo.checkout(epoch.id.hex)
            label = epoch.message or "next"
            for tensor, array in weights(label).items():
                assert checkout.state[tensor].tobytes() == array.tobytes(), label
            momentum = checkout.extra["optimizer"]["m"]
            assert momentum.tobytes() == optimizer(label)["m"].tobytes()
    report = repo.fsck()
    assert report.problems == []


def _count(template: Path, tmp_path: Path, run: Callable[[Repo], object]) -> int:
    repo = _copy(template, tmp_path / "count")
    try:
        plan = FaultPlan()
        plan.install(repo)
        run(repo)
        return len(plan.writes)
    finally:
        repo.close()


def _commit_next(repo: Repo) -> None:
    _commit(repo.session("a"), "next")


def test_every_write_of_a_commit_fails_in_turn(template: Path, tmp_path: Path) -> None:
    writes = _count(template, tmp_path, _commit_next)
    assert writes >= 8

    for fail_at in range(1, writes + 1):
        repo = _copy(template, tmp_path / f"commit-{fail_at}")
        try:
            old = {name: repo.session_head(name) for name in ("a", "b")}
            views = _views(repo)
            plan = FaultPlan(fail_at=fail_at)
            plan.install(repo)

            try:
                _commit_next(repo)
            except BackendUnavailableError as exc:
                assert "injected failure" in exc.message
                after_ref = False
            else:
                after_ref = True
            # forgetting the open epoch after the ref moved is cleanup: a
            # failure there is logged, and the commit stands
            assert after_ref == (
                "refs.compare_and_set" in plan.writes[: fail_at - 1]
                and plan.failed == "refs.clear_open_epoch"
            ), plan.writes

            head = repo.session_head("a")
            moved = head != old["a"]
            # only a write after the ref moved can leave the new epoch in place
            assert not moved or plan.writes.index("refs.compare_and_set") < fail_at
            _assert_history(repo, heads={"a": {old["a"], head}, "b": {old["b"]}})
            if not moved:
                assert _views(repo)["b"] == views["b"]

            plan.fail_at = None
            if not moved:
                _commit_next(repo)
            assert repo.resolve("a").message == "next"
            _assert_history(
                repo, heads={"a": {repo.session_head("a")}, "b": {old["b"]}}
            )
        finally:
            repo.close()


def _retain_b(repo: Repo) -> object:
    return retain(repo, "b", RetainPolicy(keep_last=1))


def test_every_write_of_a_retain_fails_in_turn(template: Path, tmp_path: Path) -> None:
    writes = _count(template, tmp_path, _retain_b)
    assert writes == 1  # the drops are recorded in one transaction

    repo = _copy(template, tmp_path / "retain")
    try:
        before = repo.dropped_epochs()
        plan = FaultPlan(fail_at=1)
        plan.install(repo)

        with pytest.raises(BackendUnavailableError, match="injected failure"):
            _retain_b(repo)

        assert repo.dropped_epochs() == before
        b3 = repo.resolve_id("b~1")
        assert b3 not in before
        repo.checkout("b~1")
        _assert_history(
            repo, heads={"a": {repo.session_head("a")}, "b": {repo.session_head("b")}}
        )
        plan.fail_at = None
        _retain_b(repo)
        assert set(repo.dropped_epochs()) == set(before) | {b3}
    finally:
        repo.close()


def _gc(repo: Repo) -> object:
    return collect(repo, grace_s=HOUR, reflog_s=0)


def test_every_write_of_a_gc_fails_in_turn(template: Path, tmp_path: Path) -> None:
    reference = _copy(template, tmp_path / "reference")
    try:
        report = _gc(reference)
        assert report.objects > 0 and report.docs > 0 and report.open_epochs == 1
        assert report.temporaries == 1
        expected = set(reference.objects.iter_ids())
        views = _views(reference)
    finally:
        reference.close()
    writes = _count(template, tmp_path, _gc)
    assert writes >= 4  # index rows, documents, objects, open epochs

    for fail_at in range(1, writes + 1):
        repo = _copy(template, tmp_path / f"gc-{fail_at}")
        try:
            heads = {name: {repo.session_head(name)} for name in ("a", "b")}
            plan = FaultPlan(fail_at=fail_at)
            plan.install(repo)

            with pytest.raises(BackendUnavailableError, match="injected failure"):
                _gc(repo)

            _assert_history(repo, heads=heads)
            assert _views(repo) == views
            plan.fail_at = None
            _gc(repo)
            assert set(repo.objects.iter_ids()) == expected
            _assert_history(repo, heads=heads)
        finally:
            repo.close()
