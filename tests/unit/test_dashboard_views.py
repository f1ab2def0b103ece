"""Metric views by lineage on a tree of sessions: exact documents, ranges, summaries."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import replace
from types import GeneratorType

import dashboard_kit as kit
import pytest

from mvcstore import Repo
from mvcstore.dashboard import open_view, parse_range, series, summarize
from mvcstore.errors import InvalidInputError, MetricConflictError


@pytest.fixture
def tree(repo: Repo) -> kit.Tree:
    return kit.build_tree(repo)


def _keys(repo: Repo, revision: str, **kwargs: object) -> list[tuple[str, int, str]]:
    return [(doc.uid, doc.step, doc.name) for doc in series(repo, revision, **kwargs)]


def _dead_owner() -> str:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    assert process.wait() == 0
    return f"{socket.gethostname()}:{process.pid}"


@pytest.mark.parametrize("session", ["a", "b", "c", "d"])
def test_each_view_holds_exactly_its_lineages_documents(
    tree: kit.Tree, session: str
) -> None:
    listed = _keys(tree.repo, session)

    assert len(listed) == len(set(listed))
    assert set(listed) == tree.docs(session)
    assert tree.repo.metrics_index.count(open_view(tree.repo, session).uids()) == len(
        tree.docs(session)
    )


def test_view_counts_follow_the_tree(tree: kit.Tree) -> None:
    counts = {name: len(_keys(tree.repo, name)) for name in "abcd"}

    # 12 documents per epoch: 10 losses, acc and params at the last step
    assert counts == {"a": 120, "b": 96, "c": 108, "d": 72}
    assert len(tree.line("c")) == 9
    assert tree.line("c")[:6] == ["a#1", "a#2", "a#3", "a#4", "b#5", "b#6"]


def test_steps_run_on_across_each_fork_once(tree: kit.Tree) -> None:
    for session, last in {"a": 100, "b": 80, "c": 90, "d": 60}.items():
        steps = [doc.step for doc in series(tree.repo, session, names=["loss"])]

        assert steps == list(range(1, last + 1)), session


def test_a_fork_shows_its_parents_values_then_its_own(tree: kit.Tree) -> None:
    values = {doc.step: doc.value for doc in series(tree.repo, "d", names=["loss"])}

    assert values[40] == kit.loss("a", 40)
    assert values[41] == kit.loss("d", 41)


def test_view_of_a_parent_is_unchanged_by_its_forks(repo: Repo) -> None:
    for number in range(1, 5):
        kit.commit_epoch(repo, "a", number)
    before = _keys(repo, "a")

    repo.create_session("b", at="a#2")
    kit.commit_epoch(repo, "b", 3)

    assert _keys(repo, "a") == before


def test_step_range_and_epoch_range_narrow_a_view(tree: kit.Tree) -> None:
    repo = tree.repo

    by_steps = series(repo, "b", names=["loss"], steps=(38, 42))
    by_epochs = series(repo, "c", epochs=(6, 7))

    assert [(doc.step, tree.epochs["a#4"].uid == doc.uid) for doc in by_steps] == [
        (38, True),
        (39, True),
        (40, True),
        (41, False),
        (42, False),
    ]
    assert {doc.uid for doc in by_epochs} == {
        tree.epochs["b#6"].uid,
        tree.epochs["c#7"].uid,
    }


def test_series_streams_rather_than_building_a_list(tree: kit.Tree) -> None:
    stream = series(tree.repo, "a")

    assert isinstance(stream, GeneratorType)
    first = next(stream)
    assert (first.step, first.name) == (1, "loss")
    stream.close()


def test_summaries_give_latest_and_best_with_their_epochs(tree: kit.Tree) -> None:
    summary = summarize(tree.repo, "b", names=["loss", "acc"])

    loss = summary["loss"]
    assert loss.count == 80
    assert (loss.latest.step, loss.latest.value) == (80, kit.loss("b", 80))
    assert loss.latest.number == 8 and loss.latest.epoch == tree.epochs["b#8"].id
    assert (loss.best("min").step, loss.best("min").epoch) == (
        40,
        tree.epochs["a#4"].id,
    )
    assert loss.best("max").value == 1.0
    assert summary["acc"].best("max").value == kit.acc("b", 8)


def test_summaries_respect_step_and_epoch_ranges(tree: kit.Tree) -> None:
    by_steps = summarize(tree.repo, "b", names=["loss"], steps=(41, 60))["loss"]
    by_epochs = summarize(tree.repo, "b", names=["acc"], epochs=(1, 4))["acc"]

    assert by_steps.count == 20
    assert by_steps.best("min").value == kit.loss("b", 60)
    assert by_epochs.latest.value == kit.acc("a", 4)


def test_live_epoch_is_in_its_sessions_view_only_until_it_dies(
    tree: kit.Tree,
) -> None:
    repo = tree.repo
    writer = repo.session("c")
    writer.log_metrics(91, loss=0.5)
    live = writer.open_uid
    assert live is not None

    assert (live, 91, "loss") in _keys(repo, "c")
    assert open_view(repo, "c").epochs[live].label == "c#10 (open)"
    for other in ("a", "b", "d", "c~0", "c#9"):
        assert live not in {uid for uid, _, _ in _keys(repo, other)}, other

    # the writer dies: its open epoch is left behind with a dead owner
    (record,) = [e for e in repo.refs.iter_open_epochs() if e.uid == live]
    repo.refs.set_open_epoch(replace(record, owner=_dead_owner()))

    for name in "abcd":
        assert live not in {uid for uid, _, _ in _keys(repo, name)}, name


def test_relogging_a_document_is_idempotent_and_a_new_value_conflicts(
    repo: Repo,
) -> None:
    for number in (1, 2):
        kit.commit_epoch(repo, "a", number)
    session = repo.session("a")
    session.log_metrics(30, loss=0.25)
    session.log_metrics(30, loss=0.25)

    with pytest.raises(MetricConflictError) as caught:
        session.log_metrics(30, loss=0.26)

    error = caught.value
    assert (error.epoch_uid, error.step, error.name) == (session.open_uid, 30, "loss")
    assert (error.stored, error.new) == (0.25, 0.26)
    for part in (str(session.open_uid), "30", "'loss'", "0.25", "0.26"):
        assert part in error.message
    docs = [doc for doc in series(repo, "a") if doc.step == 30]
    assert [(doc.name, doc.value) for doc in docs] == [("loss", 0.25)]


def test_committed_summary_conflicts_with_a_logged_value_at_the_last_step(
    repo: Repo,
) -> None:
    session = repo.session("a")
    session.log_metrics(10, acc=0.5)

    with pytest.raises(MetricConflictError, match="'acc' at step 10"):
        session.commit(kit.state("a", 1), metrics={"acc": 0.6}, step=10)

    assert repo.session_head("a") is None


def test_a_fork_continues_at_the_step_after_its_base(tree: kit.Tree) -> None:
    repo = tree.repo
    fork = repo.fork("e", at="a#3")

    assert fork.next_step == 31
    with pytest.raises(InvalidInputError, match="step 30 of session 'e'") as caught:
        fork.log_metrics(30, loss=0.1)
    assert caught.value.hint is not None and "31" in caught.value.hint
    fork.log_metrics(31, loss=0.1)
    assert repo.session("z").next_step == 0


def test_hyper_parameters_of_an_open_epoch_cannot_change(repo: Repo) -> None:
    kit.commit_epoch(repo, "a", 1)
    session = repo.session("a")
    session.set_params({"lr": 0.01, "batch": 32})
    session.set_params({"lr": 0.01})

    with pytest.raises(InvalidInputError, match="'lr'.*0.01.*refusing 0.02"):
        session.set_params({"lr": 0.02})
    with pytest.raises(InvalidInputError, match="'batch'"):
        session.commit(kit.state("a", 2), params={"batch": 64})

    epoch = session.commit(kit.state("a", 2))
    assert dict(epoch.params) == {"lr": 0.01, "batch": 32, "session": "a"}
    session.set_params({"lr": 0.02})
    assert dict(session.commit(kit.state("a", 3)).params)["lr"] == 0.02


def test_view_query_probes_the_primary_key(repo: Repo) -> None:
    index = repo.metrics_index

    for plan in (
        index.explain_query(),
        index.explain_query(names=["loss"]),
        index.explain_query(names=["loss"], steps=True),
    ):
        text = " / ".join(plan)
        assert "SEARCH d USING PRIMARY KEY (e=?" in text, text
        assert "SCAN d" not in text, text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, (None, None)),
        ("3:7", (3, 7)),
        ("3:", (3, None)),
        (":7", (None, 7)),
        ("5", (5, 5)),
    ],
)
def test_ranges_parse(
    text: str | None, expected: tuple[int | None, int | None]
) -> None:
    assert parse_range(text, what="steps") == expected


@pytest.mark.parametrize("text", ["7:3", "a:b", "-1:3", "1:2:3"])
def test_bad_ranges_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="steps range"):
        parse_range(text, what="steps")
