"""Bad input exits 1 with an error and a hint, and changes nothing stored."""

from __future__ import annotations

import json
import struct

import pytest


def _not_safetensors(root):
    (root / "bad.safetensors").write_text("these are not weights\n")


def _truncated_safetensors(root):
    data = (root / "main1.safetensors").read_bytes()
    (root / "bad.safetensors").write_bytes(data[:-5])


def _lying_header(root):
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}
    )
    raw = header.encode()
    (root / "bad.safetensors").write_bytes(
        struct.pack("<Q", len(raw)) + raw + b"\0" * 8
    )


def _graph_not_json(root):
    (root / "bad.json").write_text('{"nodes": {"fc": ')


def _graph_not_a_graph(root):
    (root / "bad.json").write_text(json.dumps([1, 2, 3]))


def _params_not_an_object(root):
    (root / "bad.json").write_text(json.dumps(["lr", 0.1]))


def _nothing(root):
    return None


WEIGHTS = ("--weights", "main1.safetensors")

CASES = {
    "weights-not-safetensors": (_not_safetensors, ["--weights", "bad.safetensors"]),
    "weights-truncated": (_truncated_safetensors, ["--weights", "bad.safetensors"]),
    "weights-header-lies": (_lying_header, ["--weights", "bad.safetensors"]),
    "graph-not-json": (_graph_not_json, [*WEIGHTS, "--graph", "bad.json"]),
    "graph-not-a-graph": (_graph_not_a_graph, [*WEIGHTS, "--graph", "bad.json"]),
    "params-not-object": (_params_not_an_object, [*WEIGHTS, "--params", "bad.json"]),
    "session-dot-dot": (_nothing, [*WEIGHTS, "--session", "../x"]),
    "session-empty": (_nothing, [*WEIGHTS, "--session", ""]),
    "session-space": (_nothing, [*WEIGHTS, "--session", "a b"]),
    "session-control-char": (_nothing, [*WEIGHTS, "--session", "a\x01b"]),
    "metric-not-number": (_nothing, [*WEIGHTS, "--metric", "loss=abc"]),
    "metric-without-value": (_nothing, [*WEIGHTS, "--metric", "loss"]),
    "param-without-equals": (_nothing, [*WEIGHTS, "--param", "lr"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_commit_input_exits_1_with_hint_and_leaves_repository_unchanged(
    history, kit, case
):
    prepare, args = CASES[case]
    prepare(history.root)
    objects_before = kit.object_files(history.root)

    result = history.mvc.fails("commit", *args)

    assert kit.object_files(history.root) == objects_before
    assert history.mvc("log", "--all", "--json").json() == json.loads(history.log_json)
    assert result.out == ""


def test_bad_session_name_error_names_the_rule_broken(history):
    result = history.mvc.fails("commit", *WEIGHTS, "--session", "../x")

    assert "'../x'" in result.err
    assert "start with '.'" in result.err


def test_bad_names_for_branch_and_tag_fail_without_creating_refs(history):
    branch = history.mvc.fails("branch", "a b")
    tag = history.mvc.fails("tag", "bad..name/", "main")
    sessions = history.mvc("branch", "--json").json()

    assert "invalid name" in branch.err
    assert "invalid name" in tag.err
    assert [s["name"] for s in sessions] == ["fork", "main"]
