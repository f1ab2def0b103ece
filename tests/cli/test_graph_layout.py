"""The lineage drawing behind `mvc log --graph`, in process (no subprocess)."""

from __future__ import annotations

from mvcstore.cli.graph import children_first, draw_lineage


def _draw(items):
    return [
        f"{row.prefix} {row.key}" if row.key else row.prefix
        for row in draw_lineage(items)
    ]


def test_single_line_is_one_column_of_stars():
    assert _draw([("c", ["b"]), ("b", ["a"]), ("a", [])]) == ["* c", "* b", "* a"]


def test_fork_gets_its_own_column_that_joins_at_the_fork_point():
    drawn = _draw(
        [("b4", ["b3"]), ("a3", ["a2"]), ("b3", ["a2"]), ("a2", ["a1"]), ("a1", [])]
    )

    assert drawn == ["* b4", "| * a3", "* | b3", "|/", "* a2", "* a1"]


def test_three_sessions_from_one_epoch_join_one_after_another():
    drawn = _draw([("a", ["r"]), ("b", ["r"]), ("c", ["r"]), ("r", [])])

    assert drawn == ["* a", "| * b", "|/", "| * c", "|/", "* r"]


def test_line_joining_across_another_is_drawn_beneath_it():
    drawn = _draw(
        [("c", ["r"]), ("a2", ["a1"]), ("b", ["r"]), ("a1", ["r"]), ("r", [])]
    )

    assert drawn == ["* c", "| * a2", "| | * b", "|_|/", "| * a1", "|/", "* r"]


def test_unrelated_roots_end_their_lines_and_shift_the_rest_left():
    drawn = _draw([("x2", ["x1"]), ("y2", ["y1"]), ("x1", []), ("y1", [])])

    assert drawn == ["* x2", "| * y2", "* | x1", " /", "* y1"]


def test_a_line_starting_where_a_root_ended_is_kept_apart_from_it():
    # y2 is no child of x1: drawn right below it, it would read as one
    drawn = _draw([("x2", ["x1"]), ("x1", []), ("y2", ["y1"]), ("y1", [])])
    beside = _draw([("f", ["r"]), ("x1", []), ("m", ["r"]), ("r", [])])

    assert drawn == ["* x2", "* x1", "", "* y2", "* y1"]
    assert beside == ["* f", "| * x1", "|", "| * m", "|/", "* r"]


def test_epoch_with_two_parents_branches_out_and_joins_again():
    drawn = _draw([("m", ["a", "b"]), ("a", ["r"]), ("b", ["r"]), ("r", [])])

    assert drawn == ["* m", "|\\", "* | a", "| * b", "|/", "* r"]


def test_every_epoch_is_drawn_exactly_once():
    items = [
        ("d", ["c"]),
        ("e", ["b"]),
        ("c", ["b"]),
        ("b", ["a"]),
        ("f", ["a"]),
        ("a", []),
    ]

    keys = [row.key for row in draw_lineage(items) if row.key]

    assert sorted(keys) == sorted(key for key, _ in items)


def test_children_first_moves_a_parent_below_a_child_with_an_older_clock():
    assert children_first([("p", ["r"]), ("c", ["p"]), ("r", [])]) == ["c", "p", "r"]


def test_children_first_keeps_an_order_that_is_already_valid():
    items = [("b2", ["b1"]), ("a2", ["a1"]), ("b1", ["a1"]), ("a1", [])]

    assert children_first(items) == ["b2", "a2", "b1", "a1"]
