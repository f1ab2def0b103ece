"""retain drops weights by policy; records, graphs, views and log stay whole."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pytest
from support import assert_clean, make_graph

from mvcstore import Epoch, Repo
from mvcstore.codec import ObjectId
from mvcstore.errors import (
    InvalidInputError,
    RevisionNotFoundError,
    WeightsDroppedError,
)
from mvcstore.gc import RetainPolicy, collect, retain

# main's accuracy per epoch: the best is #6, in the middle of the line
ACC = [0.1, 0.2, 0.3, 0.4, 0.5, 0.95, 0.6, 0.7]


def weights(session: str, number: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([sum(session.encode()), number])
    return {
        "shared": np.arange(32, dtype=np.float32),
        "w": rng.standard_normal((8, 8)).astype(np.float32),
    }


def optimizer(session: str, number: int) -> dict[str, np.ndarray]:
    return {"momentum": np.full(16, 10 * number + len(session), dtype=np.float64)}


@dataclass
class History:
    """``main`` has eight epochs; ``exp`` forks at main#4 and has two more."""

    repo: Repo
    epochs: dict[str, Epoch] = field(default_factory=dict)

    def id(self, label: str) -> ObjectId:
        oid = self.epochs[label].id
        assert oid is not None
        return oid


def _commit(history: History, session: str, numbers: range, acc: list[float]) -> None:
    s = history.repo.session(session)
    for number, value in zip(numbers, acc, strict=True):
        s.log_metrics(s.next_step + 1, loss=1.0 - value)
        epoch = s.commit(
            weights(session, number),
            graph=make_graph(8 + number) if number in (1, 3) else None,
            extra={"optimizer": optimizer(session, number)},
            metrics={"acc": value},
            params={"lr": 0.1},
        )
        assert epoch.number == number
        history.epochs[f"{session}#{number}"] = epoch


@pytest.fixture
def history(repo: Repo) -> History:
    h = History(repo)
    _commit(h, "main", range(1, 9), ACC)
    repo.fork("exp", at="main#4")
    _commit(h, "exp", range(5, 7), [0.45, 0.55])
    repo.set_head("main")
    return h


def _snapshot(repo: Repo) -> dict[str, object]:
    out: dict[str, object] = {}
    for revision in ("main", "exp"):
        out[f"log {revision}"] = [(e.id, e) for e in repo.log(revision)]
        out[f"view {revision}"] = [
            (d.uid, d.step, d.name, d.value) for d in repo.metrics(revision)
        ]
        out[f"stats {revision}"] = repo.metric_stats(revision)
    return out


def _assert_weights(history: History, label: str) -> None:
    session, number = label.split("#")
    checkout = history.repo.checkout(history.id(label).hex)
    for name, array in weights(session, int(number)).items():
        assert checkout.state[name].tobytes() == array.tobytes(), label
    momentum = checkout.extra["optimizer"]["momentum"]
    assert momentum.tobytes() == optimizer(session, int(number))["momentum"].tobytes()


POLICY = RetainPolicy(keep_last=1, keep_best=1, metric="acc", mode="max")


def test_retain_keeps_the_forks_epochs_the_best_and_the_head(
    history: History,
) -> None:
    repo = history.repo

    report = retain(repo, "main", POLICY)

    kept = {label for label in history.epochs if history.id(label) in report.kept}
    assert kept == {"main#1", "main#2", "main#3", "main#4", "main#6", "main#8"}
    assert set(report.dropped) == {history.id("main#5"), history.id("main#7")}
    assert "best 1 by acc" in report.kept[history.id("main#6")]
    assert "head" in report.kept[history.id("main#8")]
    assert "shared with another session" in report.kept[history.id("main#2")]
    assert "fork point" in report.kept[history.id("main#4")]


def test_after_retain_and_gc_views_log_and_kept_weights_are_unchanged(
    history: History,
) -> None:
    repo = history.repo
    before = _snapshot(repo)
    started = time.time_ns()

    retain(repo, "main", POLICY)
    freed = collect(repo, grace_s=0)

    # each dropped epoch frees its "w" tensor, its optimizer state and both states
    assert freed.objects == 2 * (2 + 2 + 2) and freed.docs == 0
    assert _snapshot(repo) == before
    for label in ("main#1", "main#4", "main#6", "main#8", "exp#5", "exp#6"):
        _assert_weights(history, label)
    for label in ("main#5", "main#7"):
        epoch = repo.read_epoch(history.id(label))
        assert epoch == history.epochs[label]
        assert epoch.graph is not None and repo.read_graph(epoch.graph)
        with pytest.raises(WeightsDroppedError) as caught:
            repo.checkout(label)
        error = caught.value
        assert error.policy == POLICY.describe()
        assert history.id(label).short() in str(error)
        assert "--keep-last 1" in str(error) and error.hint
        assert error.dropped_at >= time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(started // 10**9)
        )
    assert_clean(repo)


def test_compare_is_unchanged_by_retain_and_gc(history: History) -> None:
    dashboard = pytest.importorskip("mvcstore.dashboard")
    before = dashboard.compare(history.repo, ["main", "exp"])

    retain(history.repo, "main", POLICY)
    collect(history.repo, grace_s=0)

    assert dashboard.compare(history.repo, ["main", "exp"]) == before


def test_fsck_does_not_report_dropped_weights_as_missing(history: History) -> None:
    repo = history.repo
    retain(repo, "main", POLICY)
    collect(repo, grace_s=0)

    report = repo.fsck()

    assert report.problems == []
    assert report.epochs == 10


def test_retaining_every_session_of_a_fork_may_drop_shared_epochs(
    history: History,
) -> None:
    report = retain(history.repo, ["main", "exp"], RetainPolicy(keep_last=1))

    dropped = {label for label in history.epochs if history.id(label) in report.dropped}
    assert dropped == {f"main#{n}" for n in range(1, 8)} | {"exp#5"}
    assert history.id("main#8") in report.kept and history.id("exp#6") in report.kept


def test_keep_every_and_keep_tagged(history: History) -> None:
    repo = history.repo
    repo.tag("release", "main#5")

    report = retain(repo, "main", RetainPolicy(keep_every=3, keep_tagged=True))

    assert set(report.dropped) == {history.id("main#7")}
    assert "every 3" in report.kept[history.id("main#6")]
    assert "tagged" in report.kept[history.id("main#5")]


def test_a_tag_alone_does_not_keep_weights(history: History) -> None:
    history.repo.tag("release", "main#5")

    report = retain(history.repo, "main", RetainPolicy(keep_last=1))

    assert history.id("main#5") in report.dropped


def test_dry_run_records_nothing(history: History) -> None:
    repo = history.repo

    report = retain(repo, "main", POLICY, dry_run=True)

    assert report.dropped and repo.dropped_epochs() == {}
    _assert_weights(history, "main#5")


def test_a_drop_is_final_and_keeps_its_first_record(history: History) -> None:
    repo = history.repo
    retain(repo, "main", POLICY)
    first = repo.dropped_epochs()

    again = retain(repo, "main", RetainPolicy(keep_last=8))

    assert again.dropped == []
    assert set(again.already_dropped) == set(first)
    assert repo.dropped_epochs() == first


def test_the_best_epoch_by_min_is_kept(history: History) -> None:
    report = retain(
        history.repo,
        "main",
        RetainPolicy(keep_last=0, keep_best=1, metric="loss", mode="min"),
    )

    assert "best 1 by loss" in report.kept[history.id("main#6")]
    assert history.id("main#7") in report.dropped


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (RetainPolicy(), "at least one of"),
        (RetainPolicy(keep_best=1), "go together"),
        (RetainPolicy(keep_best=1, metric="acc"), "needs --mode max or --mode min"),
        (RetainPolicy(keep_best=1, metric="nope", mode="max"), "no epoch"),
        (RetainPolicy(keep_every=0), "at least 1"),
    ],
)
def test_malformed_policies_drop_nothing(
    history: History, policy: RetainPolicy, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        retain(history.repo, "main", policy)

    assert history.repo.dropped_epochs() == {}


def test_an_unknown_session_is_refused(history: History) -> None:
    with pytest.raises(RevisionNotFoundError):
        retain(history.repo, "nope", RetainPolicy(keep_last=1))


def test_a_live_open_epoch_keeps_its_base(history: History) -> None:
    repo = history.repo
    writer = repo.session("main")
    writer.log_metrics(writer.next_step, loss=0.5)
    # another writer moves main on; the first still continues from main#8
    repo.session("main").commit(weights("main", 9))

    report = retain(repo, "main", RetainPolicy(keep_last=0))

    assert report.kept[history.id("main#8")] == ["base of an open epoch"]
    assert history.id("main#7") in report.dropped


def test_a_kept_delta_keeps_its_dropped_bases_readable(repo: Repo) -> None:
    session = repo.session("d")
    rng = np.random.default_rng(0)
    w = rng.standard_normal(1 << 14).astype(np.float32)
    versions = []
    for number in range(1, 5):
        w = w.copy()
        w[:64] += 0.001 * number  # a small change: stored as a delta if it can be
        versions.append(w)
        session.commit({"w": w})

    report = retain(repo, "d", RetainPolicy(keep_last=1))
    freed = collect(repo, grace_s=0)

    assert len(report.dropped) == 3 and freed.objects > 0
    assert repo.checkout("d").state["w"].tobytes() == versions[-1].tobytes()
    assert_clean(repo)
