"""Views: the metric documents a session or revision sees, never copied."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import replace

import pytest
from support import Forked, make_state

from mvcstore import Epoch, Repo
from mvcstore.errors import RevisionNotFoundError


def _uids(epochs: list[Epoch]) -> set[str]:
    return {epoch.uid for epoch in epochs}


def _stored_docs(repo: Repo) -> int:
    row = repo.metrics_index.conn.execute("SELECT count(*) FROM docs").fetchone()
    return int(row[0])


def _dead_owner() -> str:
    # a process that has exited and been reaped: its pid names no live writer
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    assert process.wait() == 0
    return f"{socket.gethostname()}:{process.pid}"


def test_fork_sees_parent_documents_up_to_the_fork_point(forked: Forked) -> None:
    docs = forked.repo.metrics("b")

    assert {doc.uid for doc in docs} == _uids(forked.a[:4] + forked.b)
    assert len(docs) == 6 * Forked.DOCS_PER_EPOCH
    assert not {doc.uid for doc in docs} & _uids(forked.a[4:])


def test_parent_sees_none_of_the_forks_documents(forked: Forked) -> None:
    docs = forked.repo.metrics("a")

    assert {doc.uid for doc in docs} == _uids(forked.a)
    assert len(docs) == 6 * Forked.DOCS_PER_EPOCH


def test_fork_copies_no_metric_document(forked: Forked) -> None:
    repo = forked.repo
    epochs = len(forked.a) + len(forked.b)
    assert _stored_docs(repo) == epochs * Forked.DOCS_PER_EPOCH

    repo.fork("c", at="a#2")
    repo.fork("d", at="b")

    assert _stored_docs(repo) == epochs * Forked.DOCS_PER_EPOCH
    assert {doc.uid for doc in repo.metrics("c")} == _uids(forked.a[:2])
    assert {doc.uid for doc in repo.metrics("d")} == _uids(forked.a[:4] + forked.b)


def test_stored_documents_are_the_distinct_documents_of_all_views(
    forked: Forked,
) -> None:
    repo = forked.repo
    seen = {
        (doc.uid, doc.step, doc.name)
        for revision in ("a", "b")
        for doc in repo.metrics(revision)
    }

    assert _stored_docs(repo) == len(seen)
    assert repo.metrics_index.count(_uids(forked.a + forked.b)) == len(seen)


def test_view_of_a_revision_is_its_history(forked: Forked) -> None:
    repo = forked.repo

    assert {doc.uid for doc in repo.metrics("a#4")} == _uids(forked.a[:4])
    assert {doc.uid for doc in repo.metrics("b~1")} == _uids(
        forked.a[:4] + forked.b[:1]
    )
    assert {doc.uid for doc in repo.metrics()} == _uids(forked.a[:4] + forked.b)


def test_view_keeps_each_sessions_own_values(forked: Forked) -> None:
    def losses(revision: str) -> dict[int, float]:
        return {
            doc.step: doc.value for doc in forked.repo.metrics(revision, names=["loss"])
        }

    a, b = losses("a"), losses("b")

    assert a[30] == b[30] == pytest.approx(1.0 / 4)
    assert a[40] == pytest.approx(1.0 / 5)
    assert b[40] == pytest.approx(1.0 / 5 + 0.5)


def test_view_filters_by_name_and_step(forked: Forked) -> None:
    docs = forked.repo.metrics("b", names=["acc"], min_step=20, max_step=50)

    assert [(doc.step, doc.name) for doc in docs] == [
        (25, "acc"),
        (35, "acc"),
        (45, "acc"),
    ]
    assert [doc.value for doc in docs] == pytest.approx([0.3, 0.4, 0.5 + 0.5])


def test_view_is_ordered_by_step_then_name(forked: Forked) -> None:
    docs = forked.repo.metrics("a")

    keys = [(doc.step, doc.name) for doc in docs]
    assert keys == sorted(keys)


def test_stats_summarise_the_view(forked: Forked) -> None:
    stats = forked.repo.metric_stats("b")

    assert set(stats) == {"acc", "loss"}
    acc = stats["acc"]
    assert acc.count == 6
    assert (acc.first_step, acc.last_step) == (5, 55)
    assert acc.last == pytest.approx(0.6 + 0.5)
    assert (acc.min, acc.min_step) == (pytest.approx(0.1), 5)
    assert (acc.max, acc.max_step) == (pytest.approx(1.1), 55)
    assert stats["loss"].count == 12


def test_live_open_epoch_is_in_its_sessions_view_only(forked: Forked) -> None:
    repo = forked.repo
    writer = repo.session("a")
    writer.log_metrics(60, loss=0.05)
    repo.fork("c", at="a")
    open_uid = writer.open_uid
    assert open_uid is not None

    assert open_uid in repo.view_uids("a")
    assert [doc.step for doc in repo.metrics("a") if doc.uid == open_uid] == [60]
    for revision in ("b", "c", "a~0", forked.a[-1].id.hex, "a#6"):
        assert open_uid not in repo.view_uids(revision), revision
    repo.set_head("a")
    assert open_uid in repo.view_uids("HEAD")
    assert open_uid in repo.view_uids()


def test_open_epoch_documents_belong_to_the_epoch_once_committed(
    forked: Forked,
) -> None:
    repo = forked.repo
    writer = repo.session("a")
    writer.log_metrics(60, loss=0.05)

    epoch = writer.commit(make_state("a", 7))
    repo.fork("c", at="a")

    assert [doc.step for doc in repo.metrics("c") if doc.uid == epoch.uid] == [60]
    assert list(repo.refs.iter_open_epochs()) == []


def test_open_epoch_of_session_without_epochs_is_in_its_view(repo: Repo) -> None:
    writer = repo.session("fresh")
    writer.log_metrics(0, loss=3.0)

    assert [doc.value for doc in repo.metrics("fresh")] == [3.0]
    assert [doc.value for doc in repo.metrics()] == [3.0]


def test_view_of_unknown_revision_is_refused(forked: Forked) -> None:
    with pytest.raises(RevisionNotFoundError):
        forked.repo.metrics("nosuch")


def _kill_writer(repo: Repo, uid: str) -> None:
    # rewrite the open epoch as if its writer's process had died
    (open_epoch,) = [e for e in repo.refs.iter_open_epochs() if e.uid == uid]
    repo.refs.set_open_epoch(replace(open_epoch, owner=_dead_owner()))


def test_dead_writers_documents_appear_in_no_view(forked: Forked) -> None:
    repo = forked.repo
    writer = repo.session("a")
    writer.log_metrics(60, loss=0.05, acc=0.9)
    uid = writer.open_uid
    assert uid is not None
    assert uid in repo.view_uids("a")

    _kill_writer(repo, uid)

    for revision in ("a", "b", "HEAD", "a~1"):
        assert uid not in repo.view_uids(revision)
    assert len(repo.metrics("a")) == 6 * Forked.DOCS_PER_EPOCH
    assert repo.metrics_index.count([uid]) == 2


def test_next_writer_drops_a_dead_writers_open_epoch(forked: Forked) -> None:
    repo = forked.repo
    writer = repo.session("a")
    writer.log_metrics(60, loss=0.05)
    assert writer.open_uid is not None
    _kill_writer(repo, writer.open_uid)

    successor = repo.session("a")
    epoch = successor.commit(make_state("a", 7), metrics={"acc": 0.8})

    assert list(repo.refs.iter_open_epochs()) == []
    assert {doc.uid for doc in repo.metrics("a")} == _uids([*forked.a, epoch])
    assert all(doc.step != 60 for doc in repo.metrics("a"))


def test_open_epoch_of_another_hosts_writer_stays_in_view(forked: Forked) -> None:
    # a writer on another machine cannot be checked from here, so it is trusted
    repo = forked.repo
    writer = repo.session("a")
    writer.log_metrics(60, loss=0.05)
    uid = writer.open_uid
    assert uid is not None
    (open_epoch,) = list(repo.refs.iter_open_epochs())
    repo.refs.set_open_epoch(replace(open_epoch, owner="elsewhere.invalid:1"))

    assert uid in repo.view_uids("a")
