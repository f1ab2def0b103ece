"""Best-epoch selection, the where filter, comparisons and lineage traces."""

from __future__ import annotations

import dashboard_kit as kit
import pytest

from mvcstore import Repo
from mvcstore.dashboard import compare, lineage_traces, parse_where, select_best
from mvcstore.errors import InvalidInputError


@pytest.fixture
def tree(repo: Repo) -> kit.Tree:
    return kit.build_tree(repo)


def _values(**names: object):
    return lambda name: names.get(name)


@pytest.mark.parametrize(
    ("text", "passes"),
    [
        ("params < 50000", True),
        ("params < 50000 and lr > 0.1", False),
        ("params < 50000 and (lr > 0.1 or plan == 'p2')", True),
        ("not params >= 50000", True),
        ('plan != "p1"', True),
        ("`val-acc` >= 0.9", True),
        ("lr = 1e-1", True),
        ("missing < 3", False),
        ("not missing < 3", False),
        ("missing < 3 or params < 50000", True),
        ("plan < 3", False),
    ],
)
def test_where_filters_evaluate_comparisons(text: str, passes: bool) -> None:
    lookup = _values(params=40000, lr=0.1, plan="p2", **{"val-acc": 0.95})

    assert parse_where(text).matches(lookup) is passes


@pytest.mark.parametrize(
    "text",
    [
        "",
        "params <",
        "params < 5 <",
        "(params < 5",
        "params < 5)",
        "__import__('os').system('true')",
        "params; < 5",
        "params",
        "a < 1 < 2",
        "and < 1",
    ],
)
def test_where_refuses_what_is_not_a_filter(text: str) -> None:
    with pytest.raises(InvalidInputError, match="where expression") as caught:
        parse_where(text)

    assert caught.value.hint is not None and "--where" in caught.value.hint


def test_where_lists_the_names_it_reads() -> None:
    assert parse_where("a < 1 and (b.c > 2 or `d-e` == 'x')").names == {
        "a",
        "b.c",
        "d-e",
    }


def test_best_ranks_every_epoch_of_the_views(tree: kit.Tree) -> None:
    highest = select_best(tree.repo, ["b", "c"], metric="acc", mode="max")
    lowest = select_best(tree.repo, ["b", "c"], metric="acc", mode="min")

    # b and c share a#1-a#4 and b#5-b#6: 11 distinct epochs
    assert highest.scored == 11
    assert highest.winner is not None and highest.winner.label == "b#8"
    assert lowest.winner is not None and lowest.winner.label == "a#1"
    assert [c.value for c in highest.ranking] == sorted(
        (c.value for c in highest.ranking), reverse=True
    )


def test_best_over_every_session_by_default(tree: kit.Tree) -> None:
    selection = select_best(tree.repo, None, metric="acc")

    assert selection.scored == 19
    assert selection.winner is not None
    assert selection.winner.epoch == tree.epochs["a#10"].id


def test_best_where_reads_summaries_and_hyper_parameters(tree: kit.Tree) -> None:
    repo = tree.repo

    small = select_best(repo, None, metric="acc", where=parse_where("params < 280"))
    not_a = select_best(
        repo, None, metric="acc", where=parse_where("hp.session != 'a' and lr < 0.1")
    )

    assert small.winner is not None
    assert small.winner.label == "c#9"
    assert all(kit.param_count(c.session, c.number) < 280 for c in small.ranking)
    assert not_a.winner is not None and not_a.winner.label == "b#8"
    assert {c.session for c in not_a.ranking} == {"b", "c", "d"}


def test_best_where_naming_nothing_known_is_an_error(tree: kit.Tree) -> None:
    with pytest.raises(InvalidInputError, match="'nope', which is neither"):
        select_best(tree.repo, None, metric="acc", where=parse_where("nope < 1"))


def test_best_per_graph_ranks_one_group_per_pruning_stage(tree: kit.Tree) -> None:
    selection = select_best(tree.repo, ["a"], metric="acc", per_graph=True)

    # a prunes before epochs 4, 7 and 10: four graphs
    assert [(g.first, g.last, g.epochs) for g in selection.groups] == [
        (10, 10, 1),
        (7, 9, 3),
        (4, 6, 3),
        (1, 3, 3),
    ]
    assert [g.size.params for g in selection.groups] == [
        kit.param_count("a", n) for n in (10, 7, 4, 1)
    ]
    assert selection.groups[0].best == selection.winner


def test_compare_reports_fork_points_sizes_and_plans(tree: kit.Tree) -> None:
    result = compare(tree.repo, ["a", "b", "c"])

    a, b, c = result.models
    assert b.fork_point is not None and b.fork_point.id == tree.epochs["a#4"].id
    assert a.fork_point == b.fork_point
    assert result.fork_points[("b", "c")].id == tree.epochs["b#6"].id
    assert (b.epochs, b.own_epochs) == (8, 4)
    assert b.size.params == kit.param_count("b", 8) and b.size.nodes == 2
    assert [(u.plan, u.first, u.last) for u in c.plans] == [
        ("plan-a", 4, 4),
        ("plan-b", 5, 6),
        ("plan-c", 7, 9),
    ]
    assert a.graph_changes == [4, 7, 10]
    assert b.metrics["loss"].latest.value == kit.loss("b", 80)
    assert c.metrics["acc"].best("max").number == 9


def test_traces_draw_shared_history_once(tree: kit.Tree) -> None:
    a, b, c = lineage_traces(tree.repo, ["a", "b", "c"], "loss")

    assert a.steps == list(range(1, 101)) and a.fork is None
    # b starts at its fork point, the last point a drew of a#4
    assert b.fork is not None and (b.fork.step, b.fork.label) == (40, "fork at a#4")
    assert b.steps == list(range(40, 81))
    assert c.fork is not None and c.fork.label == "fork at b#6"
    assert c.steps == list(range(60, 91))
    assert [m.label for m in b.graph_changes] == [
        "graph changed at b#5",
        "graph changed at b#7",
    ]


def test_a_revision_listed_first_draws_the_shared_part(tree: kit.Tree) -> None:
    b, a = lineage_traces(tree.repo, ["b", "a"], "loss")

    assert b.steps == list(range(1, 81))
    assert a.steps[0] == 40 and a.steps[-1] == 100
