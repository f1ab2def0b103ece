"""`mvc metrics` ranges, `mvc compare`, `mvc best` and `mvc plot`, end to end."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import dashboard_kit as dk
import pytest

from mvcstore import Repo


@pytest.fixture(scope="module")
def tree_template(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("dashboard-tree") / "repo"
    with Repo.init(root, durable=False) as repo:
        built = dk.build_tree(repo)
        ids = {label: epoch.id.hex for label, epoch in built.epochs.items()}
    return root, ids


@pytest.fixture
def tree(tree_template, tmp_path: Path, kit):
    """A fresh copy of the tree of sessions a, b, c, d (see dashboard_kit)."""
    template, ids = tree_template
    root = tmp_path / "repo"
    shutil.copytree(template, root)
    return kit.Mvc(root), ids


def test_metrics_narrow_by_steps_and_epochs(tree) -> None:
    mvc, ids = tree

    by_steps = mvc("metrics", "b", "--name", "loss", "--steps", "39:41", "--json")
    by_epochs = mvc("metrics", "c", "--epochs", "7:7", "--name", "acc", "--json")

    assert [(d["step"], d["number"]) for d in by_steps.json()] == [
        (39, 4),
        (40, 4),
        (41, 5),
    ]
    assert [d["epoch"] for d in by_epochs.json()] == [ids["c#7"]]


def test_metrics_latest_and_best_name_their_epochs(tree) -> None:
    mvc, ids = tree

    latest = {d["name"]: d for d in mvc("metrics", "d", "--latest", "--json").json()}
    best = {d["name"]: d for d in mvc("metrics", "d", "--best", "min", "--json").json()}
    text = mvc("metrics", "d", "--best", "max", "--name", "acc").out

    assert latest["loss"]["step"] == 60 and latest["loss"]["epoch"] == ids["d#6"]
    assert best["loss"]["value"] == dk.loss("a", 40)
    assert best["loss"]["epoch"] == ids["a#4"]
    assert re.search(r"acc\s+0\.6\s+40\s+\w{12} a#4", text), text


def test_metrics_summary_modes_exclude_each_other(tree) -> None:
    mvc, _ = tree

    result = mvc("metrics", "a", "--latest", "--summary", expect=2)

    assert "at most one of" in result.err


def test_metrics_bad_range_is_a_usage_error(tree) -> None:
    mvc, _ = tree

    backwards = mvc("metrics", "a", "--steps", "9:3", expect=2)
    words = mvc("metrics", "a", "--epochs", "abc", expect=2)

    assert "Invalid value for --steps" in backwards.err
    assert "steps range '9:3' starts after it ends" in backwards.err
    assert "Invalid value for --epochs" in words.err


def test_compare_shows_fork_point_sizes_metrics_and_plans(tree) -> None:
    mvc, ids = tree

    data = mvc("compare", "a", "b", "d", "--max", "acc", "--json").json()
    text = mvc("compare", "a", "b").out

    a, b, d = data["models"]
    assert b["fork_point"]["id"] == ids["a#4"] == d["fork_point"]["id"]
    assert (b["epochs"], b["own_epochs"]) == (8, 4)
    assert b["params"] == dk.param_count("b", 8) and b["nodes"] == 2
    assert b["metrics"]["acc"]["best"]["value"] == dk.acc("b", 8)
    assert b["metrics"]["acc"]["mode"] == "max"
    assert b["metrics"]["loss"]["final"]["step"] == 80
    assert [p["plan"] for p in b["pruning_plans"]] == ["plan-a", "plan-b"]
    assert a["graph_changes"] == [4, 7, 10]
    assert {(p["a"], p["b"]) for p in data["fork_points"]} == {
        ("a", "b"),
        ("a", "d"),
        ("b", "d"),
    }
    assert "fork point (with a)" in text and "plan-b (#5-#8)" in text


def test_compare_needs_two_revisions(tree) -> None:
    mvc, _ = tree

    assert "two or more" in mvc("compare", "a", expect=2).err


def test_best_finds_the_max_and_the_min(tree) -> None:
    mvc, ids = tree

    high = mvc("best", "--all", "--metric", "acc", "--json").json()
    low = mvc("best", "b", "c", "--metric", "loss", "--mode", "min", "--json").json()

    assert high["best"]["epoch"] == ids["a#10"] and high["scored"] == 19
    assert low["best"]["epoch"] == ids["a#4"] and low["mode"] == "min"


def test_best_where_filters_on_summaries_and_params(tree) -> None:
    mvc, ids = tree

    result = mvc(
        "best",
        "--all",
        "--metric",
        "acc",
        "--where",
        "params < 280 and lr <= 0.05",
        "-n",
        "3",
        "--json",
    ).json()

    assert result["best"]["epoch"] == ids["c#9"]
    assert result["passed"] < result["scored"]
    assert len(result["ranking"]) == 3


def test_best_per_graph_ranks_graphs(tree) -> None:
    mvc, ids = tree

    result = mvc("best", "d", "--metric", "acc", "--per-graph", "--json").json()
    text = mvc("best", "d", "--metric", "acc", "--per-graph").out

    assert [g["rank"] for g in result["groups"]] == [1, 2, 3]
    # a#4 (0.6) beats a's first graph (a#3, 0.575) and d's own (d#6, 0.55)
    assert result["groups"][0]["best"]["epoch"] == ids["a#4"] == result["best"]["epoch"]
    assert [g["params"] for g in result["groups"]] == [
        dk.param_count("a", 4),
        dk.param_count("a", 1),
        dk.param_count("d", 5),
    ]
    assert [g["best"]["epoch"] for g in result["groups"][1:]] == [
        ids["a#3"],
        ids["d#6"],
    ]
    assert "by graph:" in text


def test_best_tag_moves_the_tag_and_the_reflog_can_undo_it(tree) -> None:
    mvc, ids = tree
    mvc("tag", "best", "a#1")

    moved = mvc("best", "--all", "--metric", "acc", "--tag", "best")
    reflog = mvc("reflog", "best", "--json").json()

    assert mvc("show", "best", "--json").json()["id"] == ids["a#10"]
    assert f"undo: mvc tag -f best {ids['a#1']}" in moved.out
    assert (reflog[0]["old"], reflog[0]["new"]) == (ids["a#1"], ids["a#10"])
    mvc("tag", "-f", "best", ids["a#1"])
    assert mvc("show", "best", "--json").json()["id"] == ids["a#1"]


def test_best_with_no_passing_epoch_fails_and_moves_no_tag(tree) -> None:
    mvc, _ = tree

    result = mvc.fails(
        "best", "--all", "--metric", "acc", "--where", "params > 1e9", "--tag", "x"
    )

    assert "that passes --where" in result.err
    assert mvc("tag", "--json").json() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "params <"], "where expression 'params <'"),
        (["--where", "nope > 1"], "'nope', which is neither"),
        (["--metric", "nope"], "no epoch of a has metric 'nope'"),
    ],
)
def test_best_reports_bad_input(tree, args: list[str], message: str) -> None:
    mvc, _ = tree
    base = ["best", "a"] + ([] if "--metric" in args else ["--metric", "acc"])

    result = mvc.fails(*base, *args)

    assert message in result.err


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_writes_a_png_with_one_trace_per_model(tree, tmp_path: Path) -> None:
    mvc, _ = tree
    out = tmp_path / "loss.png"

    result = mvc("plot", "a", "b", "c", "--metric", "loss", "-o", str(out), "--json")

    width, height = _png_size(out)
    assert width > 300 and height > 200
    traces = result.json()["traces"]
    assert [t["revision"] for t in traces] == ["a", "b", "c"]
    assert [t["points"] for t in traces] == [100, 41, 31]
    assert traces[1]["fork"]["label"] == "fork at a#4"
    assert [m["label"] for m in traces[0]["graph_changes"]] == [
        "graph changed at a#4",
        "graph changed at a#7",
        "graph changed at a#10",
    ]


def test_plot_writes_an_offline_html_with_one_trace_per_model(
    tree, tmp_path: Path
) -> None:
    mvc, _ = tree
    out = tmp_path / "acc.html"

    text = mvc("plot", "b", "d", "--metric", "acc", "-o", str(out)).out

    html = out.read_text(encoding="utf-8")
    assert "wrote" in text and "2 traces" in text
    assert "<html" in html[:200].lower()
    assert re.findall(r'"uid":"model-\d+"', html) == [
        '"uid":"model-0"',
        '"uid":"model-1"',
    ]
    assert not re.search(r"<script[^>]+src=", html)
    assert "fork at a#4" in html


def test_plot_refuses_an_unknown_format_and_an_unknown_metric(
    tree, tmp_path: Path
) -> None:
    mvc, _ = tree

    by_format = mvc.fails(
        "plot", "a", "--metric", "loss", "-o", str(tmp_path / "x.pdf")
    )
    by_metric = mvc.fails(
        "plot", "a", "--metric", "nope", "-o", str(tmp_path / "x.png")
    )

    assert ".png or .html" in by_format.err
    assert "no document of metric 'nope'" in by_metric.err
    assert not (tmp_path / "x.png").exists()


def test_ui_refuses_a_host_other_than_loopback(tree) -> None:
    mvc, _ = tree

    result = mvc.fails("ui", "--host", "0.0.0.0", "--port", "0")

    assert "127.0.0.1 only" in result.err


def test_dashboard_json_is_strict_json(tree, tmp_path: Path) -> None:
    mvc, _ = tree

    for args in (
        ["compare", "a", "b", "--json"],
        ["best", "--metric", "acc", "--json"],
    ):
        json.loads(mvc(*args).out)
