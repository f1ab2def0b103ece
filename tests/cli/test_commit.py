"""`mvc commit`: weights from safetensors, graph, parameters, metrics."""

from __future__ import annotations

import json
import re

from mvcstore import Repo


def test_commit_stores_weights_graph_params_and_metrics_of_a_new_session(
    mvc, tmp_path, kit
):
    mvc("init")
    mvc("branch", "main")
    kit.write_weights(tmp_path / "w.safetensors", 7)
    (tmp_path / "graph.json").write_text(json.dumps(kit.graph))

    params = ["lr=0.1", "layers=3", "amp=true", "optimizer=adam", 'name="quoted"']
    params.append("sizes=[1, 2]")
    args = ["--weights", "w.safetensors", "--graph", "graph.json"]
    args += [item for param in params for item in ("--param", param)]
    args += ["--metric", "loss=0.5", "--metric", "acc=1e-3"]
    args += ["--step", "12", "-m", "first epoch"]

    epoch_id = mvc("commit", *args).out.strip()
    shown = mvc("show", epoch_id, "--json").json()

    assert re.fullmatch(r"[0-9a-f]{64}", epoch_id)
    assert shown["id"] == epoch_id
    assert shown["session"] == "main"
    assert shown["number"] == 1
    assert shown["parents"] == []
    assert shown["step"] == 12
    assert shown["message"] == "first epoch"
    assert shown["params"] == {
        "lr": 0.1,
        "layers": 3,
        "amp": True,
        "optimizer": "adam",
        "name": "quoted",
        "sizes": [1, 2],
    }
    assert shown["summary"] == {"loss": 0.5, "acc": 0.001}
    assert shown["graph_nodes"] == 2
    assert shown["tensors"] == 6
    assert shown["state_bytes"] == sum(a.nbytes for a in kit.make_weights(7).values())
    assert shown["refs"] == {"head": True, "sessions": ["main"], "tags": []}


def test_commit_without_a_current_session_fails_with_branch_hint(mvc, tmp_path, kit):
    mvc("init")
    kit.write_weights(tmp_path / "w.safetensors", 1)

    result = mvc.fails("commit", "--weights", "w.safetensors")

    assert "no current session" in result.err
    assert "mvc branch NAME" in result.err
    assert "--session" in result.err
    assert kit.object_files(tmp_path) == {}


def test_commit_continues_the_session_keeping_graph_and_unchanged_params(history, kit):
    kit.write_weights(history.root / "next.safetensors", 99)
    parent = history.ids["fork#4"]

    epoch_id = history.mvc(
        "commit", "--weights", "next.safetensors", "--param", "wd=0.01"
    ).out.strip()
    shown = history.mvc("show", epoch_id, "--json").json()
    parent_shown = json.loads(history.log_json)[0]

    assert parent_shown["id"] == parent
    assert shown["parents"] == [parent]
    assert shown["session"] == "fork"
    assert shown["number"] == 5
    assert shown["graph"] == parent_shown["graph"]
    assert shown["params"] == {"lr": 0.01, "wd": 0.01}
    assert shown["step"] == 40


def test_params_file_replaces_parent_params_and_param_overrides_it(history):
    (history.root / "params.json").write_text(json.dumps({"lr": 1, "bs": 64}))
    (history.root / "w.safetensors").write_bytes(
        (history.root / "main1.safetensors").read_bytes()
    )

    epoch_id = history.mvc(
        "commit",
        "--session",
        "main",
        "--weights",
        "w.safetensors",
        "--params",
        "params.json",
        "--param",
        "bs=128",
    ).out.strip()
    branches = history.mvc("branch", "--json").json()

    assert history.mvc("show", epoch_id, "--json").json()["params"] == {
        "lr": 1,
        "bs": 128,
    }
    current = [b["name"] for b in branches if b["current"]]
    assert current == ["main"]
    assert [b["epoch"] for b in branches if b["name"] == "main"] == [epoch_id]


def _stored_ids(root):
    with Repo.open(root) as repo:
        return set(repo.objects.iter_ids())


def test_commit_of_identical_weights_stores_no_new_tensor_data(history, kit):
    before = _stored_ids(history.root)

    history.mvc("commit", "--weights", "fork4.safetensors", "-m", "same weights")

    added = _stored_ids(history.root) - before
    assert len(added) == 1  # the epoch record only; state and tensors are shared
