"""`mvc metrics`: a session's view follows its lineage; forks copy nothing."""

from __future__ import annotations


def test_fork_view_holds_parent_documents_up_to_the_fork_then_its_own(history):
    fork = history.mvc("metrics", "fork", "--json").json()
    main = history.mvc("metrics", "main", "--json").json()

    assert [(d["step"], d["value"]) for d in fork] == [
        (10, 1.0),
        (20, 0.5),
        (30, 0.4),
        (40, 0.2),
    ]
    assert [(d["step"], d["value"]) for d in main] == [(10, 1.0), (20, 0.5), (30, 0.25)]
    # the shared documents are the same documents, not copies
    assert fork[:2] == main[:2]
    assert [d["epoch"] for d in fork] == [
        history.ids[label] for label in ("main#1", "main#2", "fork#3", "fork#4")
    ]


def test_metrics_text_and_summary_show_values_steps_and_epochs(history):
    text = history.mvc("metrics", "fork").out.splitlines()
    summary = history.mvc("metrics", "fork", "--summary", "--json").json()
    summary_text = history.mvc("metrics", "main~1", "--summary").out

    assert text[0].split() == ["step", "name", "value", "epoch", "uid"]
    assert text[1].split()[:5] == ["10", "loss", "1", history.ids["main#1"][:12], "#1"]
    assert summary == [
        {
            "name": "loss",
            "count": 4,
            "first_step": 10,
            "last_step": 40,
            "last": 0.2,
            "min": 0.2,
            "min_step": 40,
            "max": 1.0,
            "max_step": 10,
        }
    ]
    assert summary_text.splitlines()[1].split() == [
        "loss",
        "2",
        "0.5",
        "(20)",
        "0.5",
        "(20)",
        "1",
        "(10)",
    ]


def test_metrics_name_filter_keeps_only_the_named_metrics(history):
    history.mvc(
        "commit",
        "--weights",
        "fork4.safetensors",
        "--metric",
        "acc=0.9",
        "--metric",
        "loss=0.1",
        "--step",
        "50",
    )

    only_acc = history.mvc("metrics", "--name", "acc", "--json").json()
    both = history.mvc(
        "metrics", "HEAD", "--name", "acc", "--name", "loss", "--json"
    ).json()

    assert [(d["name"], d["step"], d["value"]) for d in only_acc] == [("acc", 50, 0.9)]
    assert len(both) == 6
