"""`mvc stats`: logical, unique and stored bytes, per session and in total."""

from __future__ import annotations


def test_stats_json_counts_every_epoch_of_every_session(history):
    result = history.mvc("stats", "--all", "--json").json()

    total = result["total"]
    assert set(result["sessions"]) == {"main", "fork"}
    assert total["epochs"] == 5
    assert result["sessions"]["main"]["epochs"] == 3
    assert result["sessions"]["fork"]["epochs"] == 2
    assert total["tensors"] == 5 * 6
    assert 0 < total["unique_bytes"] <= total["logical_bytes"]
    assert total["stored_bytes"] >= total["data_stored_bytes"] > 0
    assert set(total["ratios"]) == {"total", "dedup", "delta", "compression"}
    assert total["ratios"]["dedup"] >= 1


def test_stats_of_a_revision_counts_what_it_reaches(history):
    whole = history.mvc("stats", "--json").json()["total"]
    early = history.mvc("stats", "main~1", "--json").json()["total"]

    # HEAD is fork#4, which reaches main#1, main#2, fork#3 and itself
    assert whole["epochs"] == 4
    assert early["epochs"] == 2
    assert early["logical_bytes"] < whole["logical_bytes"]


def test_stats_text_has_a_row_per_session_and_a_total(history):
    out = history.mvc("stats", "--all").out
    lines = out.splitlines()

    assert lines[0].split() == [
        "session",
        "epochs",
        "logical",
        "unique",
        "stored",
        "ratio",
    ]
    assert [line.split()[0] for line in lines[1:4]] == ["fork", "main", "total"]
    assert "dedup" in lines[-1] and "deltas" in lines[-1]


def test_stats_refuses_a_revision_with_all(history):
    result = history.mvc("stats", "main", "--all", expect=2)

    assert "give REV or --all, not both" in result.err


def test_stats_of_an_unknown_revision_fails_clearly(history):
    result = history.mvc.fails("stats", "nowhere")

    assert "nowhere" in result.err


def test_stats_with_no_current_session_points_at_all(mvc):
    mvc("init")

    result = mvc.fails("stats")
    everything = mvc("stats", "--all")

    assert "no current session" in result.err
    assert "mvc stats --all" in result.err
    assert everything.out.splitlines()[1].split()[:2] == ["total", "0"]
