"""`mvc checkout`, `mvc branch` and `mvc tag`."""

from __future__ import annotations

import json

from safetensors.numpy import load_file


def _current(history):
    return [s["name"] for s in history.mvc("branch", "--json").json() if s["current"]]


def test_checkout_writes_tensors_bit_for_bit_graph_and_record(history, kit):
    result = history.mvc("checkout", "main#2", "-o", "out", "--json").json()
    out = history.root / "out"

    kit.assert_same_tensors(
        load_file(str(out / "weights.safetensors")), history.weights["main#2"]
    )
    assert json.loads((out / "graph.json").read_text()) == {
        "nodes": {
            key: {"inputs": {}, "outputs": {}, **node}
            for key, node in kit.graph["nodes"].items()
        },
        "meta": kit.graph["meta"],
    }
    record = json.loads((out / "epoch.json").read_text())
    assert record["id"] == history.ids["main#2"]
    assert record["summary"] == {"loss": 0.5}
    assert result["files"] == ["weights.safetensors", "graph.json", "epoch.json"]
    assert result["head"] is None
    assert _current(history) == ["fork"]


def test_checkout_of_a_session_name_makes_it_current(history, kit):
    text = history.mvc("checkout", "main").out

    kit.assert_same_tensors(
        load_file(str(history.root / "checkout" / "weights.safetensors")),
        history.weights["main#3"],
    )
    assert "current session is now main" in text
    assert _current(history) == ["main"]


def test_checkout_b_starts_a_new_session_that_commit_continues(history, kit):
    history.mvc("checkout", "-b", "retry", "main~2", "-o", "retry-files")
    kit.write_weights(history.root / "r.safetensors", 21)
    epoch_id = history.mvc("commit", "--weights", "r.safetensors").out.strip()
    sessions = {s["name"]: s for s in history.mvc("branch", "--json").json()}

    kit.assert_same_tensors(
        load_file(str(history.root / "retry-files" / "weights.safetensors")),
        history.weights["main#1"],
    )
    assert sessions["retry"]["current"] is True
    assert sessions["retry"]["epoch"] == epoch_id
    assert sessions["retry"]["number"] == 2
    shown = history.mvc("show", epoch_id, "--json").json()
    assert shown["parents"] == [history.ids["main#1"]]


def test_checkout_b_of_an_existing_session_fails_before_writing(history):
    result = history.mvc.fails("checkout", "-b", "main", "fork", "-o", "never")

    assert "already exists" in result.err
    assert not (history.root / "never").exists()


def test_branch_lists_creates_and_deletes_sessions(history):
    created = history.mvc("branch", "exp", "--from", "main#1").out
    listing = history.mvc("branch").out.splitlines()
    deleted = history.mvc("branch", "-d", "exp").out
    current = history.mvc.fails("branch", "-d", "fork")
    names = [s["name"] for s in history.mvc("branch", "--json").json()]

    assert history.ids["main#1"][:12] in created
    assert listing[0].split() == ["exp", history.ids["main#1"][:12], "#1"]
    assert listing[1].split() == ["*", "fork", history.ids["fork#4"][:12], "#4"]
    assert "deleted session exp" in deleted
    assert "current session" in current.err
    assert names == ["fork", "main"]


def test_branch_without_from_starts_at_head_and_refuses_duplicates(history):
    history.mvc("branch", "copy")
    duplicate = history.mvc.fails("branch", "main")
    sessions = {s["name"]: s for s in history.mvc("branch", "--json").json()}

    assert sessions["copy"]["epoch"] == history.ids["fork#4"]
    assert sessions["copy"]["current"] is False
    assert "already exists" in duplicate.err


def test_tag_creates_lists_refuses_to_move_without_force_and_deletes(history):
    history.mvc("tag", "best", "main")
    refused = history.mvc.fails("tag", "best", "fork")
    history.mvc("tag", "best", "fork~1", "--force")
    tags = history.mvc("tag", "--json").json()
    shown = history.mvc("show", "best", "--json").json()
    history.mvc("tag", "-d", "best")

    assert "--force" in refused.err
    assert tags == [
        {"name": "best", "epoch": history.ids["fork#3"], "session": "fork", "number": 3}
    ]
    assert shown["id"] == history.ids["fork#3"]
    assert history.mvc("tag", "--json").json() == []


def test_checkout_of_complex128_warns_that_safetensors_cannot_read_it(mvc):
    import numpy as np

    from mvcstore import Repo

    mvc("init")
    repo = Repo.open(mvc.cwd)
    session = repo.session("main")
    session.commit({"z": np.array([1 - 2j], dtype=np.complex128)})
    session.commit({"w": np.ones(3, dtype=np.float32)})
    repo.close()

    result = mvc("checkout", "main~1", "-o", "out")

    assert "warning: z is complex128 (C128)" in result.err
    assert (mvc.cwd / "out" / "weights.safetensors").exists()
    assert "warning" not in mvc("checkout", "main", "-o", "out2").err
