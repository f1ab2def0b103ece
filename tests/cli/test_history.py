"""`mvc log` (plain, --graph, --json), `mvc show` and `mvc reflog`."""

from __future__ import annotations

import re


def _short(history, label):
    return history.ids[label][:12]


def test_log_graph_draws_the_fork_on_its_own_column_with_ref_labels(history, kit):
    text = history.mvc("log", "--all", "--graph").out
    lines = text.splitlines()

    def line_of(label):
        found = kit.lines_with(text, _short(history, label))
        assert len(found) == 1, (label, text)
        return found[0]

    fork_columns = {kit.star_column(line_of(label)) for label in ("fork#4", "fork#3")}
    main_column = kit.star_column(line_of("main#3"))
    shared = line_of("main#2")
    root = line_of("main#1")

    # each line of history keeps its column; the shared epochs are drawn once
    assert len(fork_columns) == 1
    assert main_column not in fork_columns
    assert kit.star_column(shared) == kit.star_column(root) == 0
    # the line that ends at the fork point joins the shared epoch with a '/'
    between = lines[lines.index(line_of("fork#3")) + 1 : lines.index(shared)]
    assert any("/" in line and "*" not in line for line in between), text
    # newest first, children above their parents
    order = [lines.index(line_of(label)) for label in ("fork#3", "main#2", "main#1")]
    assert order == sorted(order)
    # refs are labelled next to their epochs
    assert "(HEAD -> fork)" in line_of("fork#4")
    assert "(main)" in line_of("main#3")
    assert "fork#4" in line_of("fork#4") and "loss=0.2" in line_of("fork#4")


def test_log_follows_one_session_and_shares_no_epoch_twice(history):
    fork = history.mvc("log", "fork").out
    fork_json = history.mvc("log", "fork", "-n", "3", "--json").json()

    for label in ("fork#4", "fork#3", "main#2", "main#1"):
        assert fork.count(_short(history, label)) == 1
    assert _short(history, "main#3") not in fork
    assert [entry["id"] for entry in fork_json] == [
        history.ids["fork#4"],
        history.ids["fork#3"],
        history.ids["main#2"],
    ]
    first = fork.splitlines()[0]
    assert re.search(
        r"step 40 +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +loss=0\.2 +epoch fork#4", first
    )


def test_log_all_json_lists_every_epoch_once_with_refs(history):
    entries = history.mvc("log", "--all", "--json").json()

    assert sorted(e["id"] for e in entries) == sorted(history.ids.values())
    by_id = {e["id"]: e for e in entries}
    assert by_id[history.ids["fork#4"]]["refs"] == {
        "head": True,
        "sessions": ["fork"],
        "tags": [],
    }
    assert by_id[history.ids["main#3"]]["refs"]["sessions"] == ["main"]
    assert by_id[history.ids["fork#3"]]["parents"] == [history.ids["main#2"]]


def test_show_prints_record_graph_and_state_sizes(history, kit):
    text = history.mvc("show", "main#1").out
    fields = dict(
        line.split(None, 1)
        for line in text.splitlines()
        if not line.startswith(" ") and len(line.split(None, 1)) == 2
    )

    nbytes = sum(array.nbytes for array in kit.make_weights(1).values())
    assert fields["epoch"] == history.ids["main#1"]
    assert fields["session"] == "main"
    assert fields["number"] == "1"
    assert fields["step"] == "10"
    assert fields["parents"].startswith("-")
    assert fields["graph"].endswith("(2 nodes)")
    assert fields["state"].endswith(f"(6 tensors, {nbytes} bytes)")
    assert "  lr  0.1" in text
    assert "  loss  1" in text
    assert "epoch main#1" in text


def test_reflog_lists_moves_of_a_session_newest_first(history):
    moves = history.mvc("reflog", "fork", "--json").json()

    assert [m["new"] for m in moves] == [
        history.ids["fork#4"],
        history.ids["fork#3"],
        history.ids["main#2"],
    ]
    assert moves[-1]["old"] is None
    assert all(m["ref"] == "sessions/fork" for m in moves)
