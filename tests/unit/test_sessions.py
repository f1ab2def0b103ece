"""Sessions: commit, inherit, check inputs, race, fork, checkout."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from support import Forked, make_graph, make_state

from mvcstore import RawTensor, Repo
from mvcstore.errors import (
    InvalidInputError,
    MetricConflictError,
    RefConflictError,
    RevisionNotFoundError,
)


def _assert_same_arrays(
    actual: dict[str, object], expected: dict[str, np.ndarray]
) -> None:
    assert set(actual) == set(expected)
    for name, array in expected.items():
        got = actual[name]
        assert isinstance(got, np.ndarray)
        assert got.dtype == array.dtype.newbyteorder("<")
        assert got.shape == array.shape
        assert got.tobytes() == np.ascontiguousarray(array).astype(got.dtype).tobytes()


def test_first_commit_starts_the_session(repo: Repo) -> None:
    session = repo.session("a")

    epoch = session.commit(make_state("a", 1), message="first")

    assert epoch.id is not None
    assert epoch.number == 1
    assert epoch.parents == ()
    assert epoch.session == "a"
    assert epoch.message == "first"
    assert repo.session_head("a") == epoch.id
    assert session.head_id == epoch.id
    assert repo.head_session() == "a"


def test_each_commit_continues_from_the_last(repo: Repo) -> None:
    session = repo.session("a")

    first = session.commit(make_state("a", 1))
    second = session.commit(make_state("a", 2))

    assert second.parents == (first.id,)
    assert second.number == 2
    assert repo.session_head("a") == second.id


def test_commit_records_the_ref_move_in_the_reflog(repo: Repo) -> None:
    session = repo.session("a")
    first = session.commit(make_state("a", 1))
    second = session.commit(make_state("a", 2), message="lower lr")

    moves = repo.refs.reflog("sessions/a")

    assert [(move.old, move.new) for move in moves] == [
        (None, first.id),
        (first.id, second.id),
    ]
    assert "lower lr" in moves[-1].message


def test_commit_reads_back_bit_for_bit(forked: Forked) -> None:
    for epoch in forked.a + forked.b:
        assert epoch.id is not None
        checkout = forked.repo.checkout(epoch.id.hex)

        assert checkout.epoch == epoch
        _assert_same_arrays(checkout.state, forked.states[epoch.id])


def test_params_and_graph_are_inherited_when_not_given(forked: Forked) -> None:
    a = forked.a
    repo = forked.repo

    assert [epoch.params for epoch in a] == [{"lr": 0.1}] * 6
    assert a[1].graph == a[0].graph
    assert a[2].graph != a[0].graph
    assert a[5].graph == a[2].graph
    assert repo.checkout("a#2").graph == forked.graphs[0]
    assert repo.checkout("a").graph == forked.graphs[1]


def test_given_params_replace_the_parents(forked: Forked) -> None:
    assert forked.b[0].params == {"lr": 0.01}
    assert forked.b[1].params == {"lr": 0.01}
    assert forked.a[4].params == {"lr": 0.1}


def test_fork_inherits_the_fork_points_graph(forked: Forked) -> None:
    assert forked.b[0].graph == forked.a[3].graph


def test_commit_without_graph_or_parent_has_no_graph(repo: Repo) -> None:
    epoch = repo.session("a").commit(make_state("a", 1))

    assert epoch.graph is None
    assert repo.checkout("a").graph is None


def test_graph_given_as_json_form_equals_the_graph(repo: Repo) -> None:
    graph = make_graph(4)
    session = repo.session("a")

    from_json = session.commit(make_state("a", 1), graph=graph.to_value())
    from_object = session.commit(make_state("a", 2), graph=graph)

    assert from_json.graph == from_object.graph


def test_step_defaults_to_the_last_logged_step(repo: Repo) -> None:
    session = repo.session("a")
    session.log_metrics(30, loss=1.0)
    session.log_metrics(20, loss=2.0)

    logged = session.commit(make_state("a", 1))
    inherited = session.commit(make_state("a", 2))
    given = session.commit(make_state("a", 3), step=99)

    assert logged.step == 30
    assert inherited.step == 30
    assert given.step == 99


def test_commit_refuses_a_step_that_overlaps_or_goes_back(repo: Repo) -> None:
    session = repo.session("a")
    session.commit(make_state("a", 1), metrics={"loss": 1.0}, step=100)
    head = repo.session_head("a")
    entries = len(list(repo.index.iter_entries()))

    # summary documents at step 100 again would hold two losses at one step
    with pytest.raises(InvalidInputError, match="not after step 100"):
        session.commit(make_state("a", 2), metrics={"loss": 0.5}, step=100)
    with pytest.raises(InvalidInputError, match="before step 100"):
        session.commit(make_state("a", 2), step=5)
    session.log_metrics(120, loss=0.7)
    with pytest.raises(InvalidInputError, match="before step 120"):
        session.commit(make_state("a", 2), step=110)

    assert repo.session_head("a") == head
    assert len(list(repo.index.iter_entries())) == entries
    assert [d.step for d in repo.metrics("a")] == [100, 120]
    # the same step without metrics, and a later one with them, are fine
    assert session.commit(make_state("a", 2), step=120).step == 120
    assert session.commit(make_state("a", 3), metrics={"loss": 0.4}).step == 121


@pytest.mark.parametrize(
    ("name", "reason"),
    [(1, r"is not a string \(int\)"), ("", "1 to 1000"), ("a\nb", "control")],
)
def test_a_bad_tensor_name_says_what_is_wrong(
    repo: Repo, name: object, reason: str
) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        repo.session("a").commit({name: np.zeros(2, np.float32)})  # type: ignore[dict-item]
    assert repo.session_head("a") is None


def test_a_summary_that_contradicts_a_logged_value_stores_nothing(
    repo: Repo,
) -> None:
    session = repo.session("a")
    session.commit(make_state("a", 1), metrics={"loss": 1.0}, step=10)
    session.log_metrics(15, loss=0.5)
    objects = set(repo.objects.iter_ids())

    with pytest.raises(MetricConflictError, match="'loss' at step 15"):
        session.commit(make_state("a", 2), metrics={"loss": 0.4})

    assert set(repo.objects.iter_ids()) == objects
    assert [d.value for d in repo.metrics("a")] == [1.0, 0.5]
    # the same value is no conflict
    assert session.commit(make_state("a", 2), metrics={"loss": 0.5}).step == 15


def test_summary_metrics_are_kept_and_logged_as_documents(repo: Repo) -> None:
    session = repo.session("a")

    epoch = session.commit(make_state("a", 1), metrics={"acc": 1}, step=7)

    assert epoch.summary == {"acc": 1.0}
    docs = repo.metrics("a")
    assert [(doc.uid, doc.step, doc.name, doc.value) for doc in docs] == [
        (epoch.uid, 7, "acc", 1.0)
    ]


def test_extra_states_read_back_by_role(repo: Repo) -> None:
    optimizer = {"fc.exp_avg": np.full((3,), 0.25, dtype=np.float32)}
    rng = {"torch": np.arange(16, dtype=np.uint8)}

    repo.session("a").commit(
        make_state("a", 1), extra={"optimizer": optimizer, "rng": rng}
    )
    checkout = repo.checkout("a")

    assert set(checkout.extra) == {"optimizer", "rng"}
    _assert_same_arrays(checkout.extra["optimizer"], optimizer)
    _assert_same_arrays(checkout.extra["rng"], rng)


def test_meta_and_params_keep_their_number_types(repo: Repo) -> None:
    epoch = repo.session("a").commit(
        make_state("a", 1),
        params={"epochs": 3, "lr": 3.0, "nesterov": True, "betas": (0.9, 0.99)},
        meta={"exact_resume": False},
    )
    stored = repo.resolve("a")

    assert stored.params == {
        "epochs": 3,
        "lr": 3.0,
        "nesterov": True,
        "betas": [0.9, 0.99],
    }
    assert isinstance(stored.params["epochs"], int)
    assert isinstance(stored.params["lr"], float)
    assert stored.meta == {"exact_resume": False}
    assert stored == epoch


ARRAYS = {
    "bool": np.array([True, False, True]),
    "u8": np.arange(5, dtype=np.uint8),
    "i8": np.array([-128, 0, 127], dtype=np.int8),
    "u16": np.array([0, 65535], dtype=np.uint16),
    "i16": np.array([-2, 2], dtype=np.int16),
    "u32": np.array([4_000_000_000], dtype=np.uint32),
    "i32": np.array([[1, -1], [2, -2]], dtype=np.int32),
    "u64": np.array([2**64 - 1], dtype=np.uint64),
    "i64": np.array([-(2**63)], dtype=np.int64),
    "f16": np.array([0.5, -0.0, np.inf], dtype=np.float16),
    "bf16": np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16),
    "f32": np.array([np.nan, -0.0, 1e-40], dtype=np.float32),
    "f64": np.array([np.pi, -np.inf], dtype=np.float64),
    "f8e4m3": np.array([0.5, 2.0], dtype=ml_dtypes.float8_e4m3fn),
    "f8e5m2": np.array([0.5, -4.0], dtype=ml_dtypes.float8_e5m2),
    "c64": np.array([1 + 2j], dtype=np.complex64),
    "c128": np.array([3 - 4j], dtype=np.complex128),
    "scalar": np.array(7.0, dtype=np.float32),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
    "transposed": np.arange(12, dtype=np.float64).reshape(3, 4).T,
    "strided": np.arange(20, dtype=np.int16)[::3],
}


def test_every_dtype_and_layout_reads_back_bit_for_bit(repo: Repo) -> None:
    repo.session("a").commit(ARRAYS)

    checkout = repo.checkout("a")

    _assert_same_arrays(checkout.state, ARRAYS)


def test_raw_checkout_gives_dtype_shape_and_bytes(repo: Repo) -> None:
    repo.session("a").commit({"w": np.arange(6, dtype=np.int32).reshape(2, 3)})

    raw = repo.checkout("a", as_="raw").state["w"]

    assert isinstance(raw, RawTensor)
    assert (raw.dtype, raw.shape) == ("I32", (2, 3))
    assert bytes(raw.data) == np.arange(6, dtype="<i4").tobytes()


@pytest.mark.parametrize(
    "bad",
    [
        {"state": {"w": np.array(["text"])}},
        {"state": {"w": [1.0, 2.0]}},
        {"state": {"": np.zeros(1)}},
        {"state": {"a\nb": np.zeros(1)}},
        {"metrics": {"acc": "high"}},
        {"metrics": {"acc": True}},
        {"metrics": {"": 1.0}},
        {"step": -1},
        {"step": 1.5},
        {"params": {"lr": object()}},
        {"params": {1: 0.1}},
        {"meta": {"when": {1, 2}}},
        {"message": 3},
        {"graph": {"nodes": "fc"}},
        {"extra": {"bad role": {"w": np.zeros(1)}}},
    ],
    ids=lambda bad: next(iter(bad)),
)
def test_bad_input_is_refused_and_moves_nothing(
    forked: Forked, bad: dict[str, object]
) -> None:
    repo = forked.repo
    before = repo.session_head("b")
    entries = len(list(repo.index.iter_entries()))
    session = repo.session("b")
    arguments: dict[str, object] = {"state": make_state("b", 7), **bad}
    state = arguments.pop("state")

    with pytest.raises(InvalidInputError):
        session.commit(state, **arguments)  # type: ignore[arg-type]

    assert repo.session_head("b") == before
    assert len(list(repo.index.iter_entries())) == entries
    assert session.commit(make_state("b", 7)).parents == (before,)


@pytest.mark.parametrize("step", [-1, 1.0, True, "3"])
def test_log_metrics_refuses_a_bad_step(repo: Repo, step: object) -> None:
    session = repo.session("a")

    with pytest.raises(InvalidInputError, match="step"):
        session.log_metrics(step, loss=1.0)  # type: ignore[arg-type]

    assert repo.metrics_index.count(list(repo.metrics_index.iter_uids())) == 0


def test_racing_writers_one_wins_and_the_loser_names_both_epochs(
    forked: Forked,
) -> None:
    repo = forked.repo
    base = repo.session_head("a")
    winner = repo.session("a")
    loser = repo.session("a")
    loser.log_metrics(61, loss=0.01)

    won = winner.commit(make_state("a", 7))
    with pytest.raises(RefConflictError) as caught:
        loser.commit(make_state("a", 70))

    error = caught.value
    assert won.id is not None and base is not None
    assert error.ref == "sessions/a"
    assert error.actual == won.id.hex
    assert error.expected == base.hex
    assert error.proposed is not None and error.proposed != won.id.hex
    assert won.id.hex in str(error)
    assert error.proposed in str(error)
    assert error.proposed in (error.hint or "")
    assert repo.session_head("a") == won.id


def test_losing_epoch_can_be_kept_as_a_new_session(forked: Forked) -> None:
    repo = forked.repo
    winner = repo.session("a")
    loser = repo.session("a")
    loser.log_metrics(61, loss=0.01)
    winner.commit(make_state("a", 7))
    with pytest.raises(RefConflictError) as caught:
        loser.commit(make_state("a", 70), metrics={"acc": 0.7})
    proposed = caught.value.proposed
    assert proposed is not None

    start = repo.create_session("kept", at=proposed)
    checkout = repo.checkout("kept")

    assert start.hex == proposed
    assert checkout.epoch.parents == (forked.a[-1].id,)
    _assert_same_arrays(checkout.state, make_state("a", 70))
    kept_docs = {(doc.step, doc.name) for doc in repo.metrics("kept")}
    assert {(61, "loss"), (61, "acc")} <= kept_docs
    assert all(doc.step != 61 for doc in repo.metrics("a"))


def test_race_on_an_empty_session_names_the_winner(repo: Repo) -> None:
    first = repo.session("a")
    second = repo.session("a")
    won = first.commit(make_state("a", 1))

    with pytest.raises(RefConflictError) as caught:
        second.commit(make_state("a", 2))

    assert won.id is not None
    assert caught.value.expected is None
    assert caught.value.actual == won.id.hex
    assert "empty session" in str(caught.value)


def test_loser_continues_after_refresh(forked: Forked) -> None:
    repo = forked.repo
    winner = repo.session("a")
    loser = repo.session("a")
    won = winner.commit(make_state("a", 7))
    with pytest.raises(RefConflictError):
        loser.commit(make_state("a", 70))

    loser.refresh()
    continued = loser.commit(make_state("a", 8))

    assert continued.parents == (won.id,)
    assert continued.number == 8
    assert repo.session_head("a") == continued.id


def test_new_session_object_continues_an_existing_session(forked: Forked) -> None:
    session = forked.repo.session("a")

    assert session.head == forked.a[-1]
    assert session.commit(make_state("a", 7)).number == 7


def test_fork_points_at_an_existing_epoch_and_writes_no_object(forked: Forked) -> None:
    repo = forked.repo
    objects = set(repo.objects.iter_ids())

    session = repo.fork("c", at="a~3")

    assert session.head_id == forked.a[2].id
    assert repo.session_head("c") == forked.a[2].id
    assert repo.head_session() == "c"
    assert set(repo.objects.iter_ids()) == objects


def test_fork_of_existing_name_is_refused(forked: Forked) -> None:
    with pytest.raises(InvalidInputError, match="already exists"):
        forked.repo.fork("a", at="b")

    assert forked.repo.session_head("a") == forked.a[-1].id


def test_fork_at_unknown_revision_creates_nothing(forked: Forked) -> None:
    with pytest.raises(RevisionNotFoundError):
        forked.repo.fork("c", at="nosuch")

    assert [name for name, _ in forked.repo.sessions()] == ["a", "b"]


def test_deleted_session_keeps_its_epochs_reachable_by_id(forked: Forked) -> None:
    repo = forked.repo

    assert repo.delete_session("b") == forked.b[-1].id
    assert [name for name, _ in repo.sessions()] == ["a"]
    assert repo.resolve(forked.b[-1].id.hex) == forked.b[-1]
    with pytest.raises(RevisionNotFoundError):
        repo.delete_session("b")


def test_log_lists_a_fork_and_its_parent_line_newest_first(forked: Forked) -> None:
    logged = [epoch.id for epoch in forked.repo.log("b")]

    assert logged == [epoch.id for epoch in reversed(forked.a[:4] + forked.b)]


def test_log_of_all_refs_lists_every_epoch_once(forked: Forked) -> None:
    logged = [epoch.id for epoch in forked.repo.log(all_refs=True)]

    assert len(logged) == len(set(logged)) == 8
    assert set(logged) == {epoch.id for epoch in forked.a + forked.b}


def test_tags_point_at_epochs_and_move_only_when_forced(forked: Forked) -> None:
    repo = forked.repo
    repo.tag("best", "a#2")

    with pytest.raises(InvalidInputError, match="already points"):
        repo.tag("best", "a#3")
    assert repo.tag("best", "a#3", force=True) == forked.a[2].id
    assert repo.tags() == [("best", forked.a[2].id)]
    assert repo.delete_tag("best") == forked.a[2].id
    assert repo.tags() == []
