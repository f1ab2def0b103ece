"""`mvc gc` and `mvc retain` end to end: output, exit codes, what stays."""

from __future__ import annotations

import json

from safetensors.numpy import load_file


def test_gc_dry_run_on_a_whole_history_removes_nothing(history) -> None:
    before = history.snapshot()

    result = history.mvc("gc", "--dry-run", "--grace", "0")

    assert result.out.startswith("would remove 0 objects (0 bytes), 0 epochs")
    assert history.snapshot() == before


def test_gc_removes_a_deleted_sessions_epochs_once_the_reflog_expires(
    history, kit
) -> None:
    history.mvc("checkout", "main", "-o", "main-files")
    history.mvc("branch", "-d", "fork")

    kept = history.mvc("gc", "--grace", "0", "--json").json()
    removed = history.mvc("gc", "--grace", "0", "--reflog-expiry", "0", "--json")

    assert kept["objects"] == 0
    report = removed.json()
    assert report["epochs"] == 2 and report["objects"] > 0 and report["bytes"] > 0
    assert report["docs"] == 2 and report["dry_run"] is False
    history.mvc("checkout", "main~1", "-o", "out")
    kit.assert_same_tensors(
        load_file(str(history.root / "out" / "weights.safetensors")),
        history.weights["main#2"],
    )
    gone = history.mvc.fails("show", history.ids["fork#4"])
    assert "unknown revision" in gone.err


def test_retain_drops_weights_but_keeps_log_show_and_metrics(history) -> None:
    log_before = history.mvc("log", "--all", "--json").json()
    metrics_before = history.mvc("metrics", "fork", "--json").json()

    result = history.mvc("retain", "fork", "--keep-last", "1")
    gc = history.mvc("gc", "--grace", "0", "--json").json()

    assert "fork#3" not in result.out
    lines = result.out.splitlines()
    assert lines[0].split() == ["epoch", "#", "weights", "why"]
    assert lines[1].split()[:3] == [history.ids["fork#4"][:12], "4", "kept"]
    assert lines[2].split() == [history.ids["fork#3"][:12], "3", "drop"]
    assert "shared with another session" in lines[3]
    assert "dropped the weights of 1 epoch" in result.out
    assert "run 'mvc gc'" in result.out
    assert gc["objects"] > 0
    assert history.mvc("log", "--all", "--json").json() == log_before
    assert history.mvc("metrics", "fork", "--json").json() == metrics_before
    shown = history.mvc("show", "fork~1", "--json").json()
    assert shown["id"] == history.ids["fork#3"]
    assert shown["dropped"]["policy"] == "--keep-last 1"
    assert "weights dropped at" in history.mvc("show", "fork~1").out
    refused = history.mvc.fails("checkout", "fork~1", "-o", "out")
    assert "were dropped at" in refused.err and "--keep-last 1" in refused.err
    assert not (history.root / "out").exists()


def test_retain_dry_run_and_json(history) -> None:
    result = history.mvc("retain", "fork", "--keep-last", "1", "--dry-run", "--json")

    report = result.json()
    assert report["dry_run"] is True
    assert report["dropped"] == [history.ids["fork#3"]]
    assert report["policy"] == "--keep-last 1"
    again = history.mvc("retain", "fork", "--keep-last", "1", "--json").json()
    assert again["dropped"] == [history.ids["fork#3"]]


def test_retain_keeps_the_best_epoch(history) -> None:
    result = history.mvc(
        "retain",
        "main",
        "--keep-last",
        "0",
        "--keep-best",
        "1",
        "--metric",
        "loss",
        "--mode",
        "max",
        "--json",
    ).json()

    assert "best 1 by loss" in result["kept"][history.ids["main#1"]]
    assert "head" in result["kept"][history.ids["main#3"]]
    assert result["dropped"] == []


def test_bad_retain_policies_fail_with_a_hint_and_change_nothing(history) -> None:
    before = history.snapshot()

    # a policy missing or malformed is a usage error (exit 2)
    nothing = history.mvc("retain", "fork", expect=2)
    half = history.mvc("retain", "fork", "--keep-best", "1", expect=2)
    no_mode = history.mvc(
        "retain", "fork", "--keep-best", "1", "--metric", "loss", expect=2
    )
    unknown = history.mvc.fails(
        "retain", "fork", "--keep-best", "1", "--metric", "nope", "--mode", "min"
    )
    missing = history.mvc.fails("retain", "nope", "--keep-last", "1")
    mode = history.mvc("retain", "fork", "--mode", "median", expect=2)

    assert "at least one of --keep-last" in nothing.err
    assert "go together" in half.err
    assert "--keep-best needs --mode max or --mode min; none was given" in no_mode.err
    assert "no epoch of session 'fork' has a value of metric 'nope'" in unknown.err
    assert "unknown revision 'nope'" in missing.err
    assert "median" in mode.err
    assert history.snapshot() == before


def test_gc_with_a_malformed_duration_is_a_usage_error(history) -> None:
    result = history.mvc("gc", "--grace", "soon", expect=2)

    assert "is not a duration" in result.err


def test_gc_json_lists_every_count(history) -> None:
    report = json.loads(history.mvc("gc", "--json").out)

    assert set(report) == {
        "dry_run",
        "objects",
        "bytes",
        "epochs",
        "docs",
        "uids",
        "open_epochs",
        "temporaries",
        "temporary_bytes",
        "reachable",
        "kept_young",
    }
