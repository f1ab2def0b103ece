"""`mvc remote`, `mvc push`, `mvc pull`, `mvc clone` and `mvc init --objects...`."""

from __future__ import annotations

import json

import pytest
from safetensors.numpy import load_file
from support import overwrite_region, stored_region

from mvcstore import Repo

SECRET = "s3cret-pass"


def _ids(mvc):
    return {entry["id"] for entry in mvc("log", "--all", "--json").json()}


def _server(tmp_path, kit):
    """An empty repository beside the history: the remote."""
    folder = tmp_path / "server"
    folder.mkdir()
    kit.Mvc(folder)("init")
    return folder, kit.Mvc(folder)


def test_push_pull_and_clone_through_the_cli(history, tmp_path, kit):
    server, server_mvc = _server(tmp_path, kit)

    added = history.mvc("remote", "add", "origin", str(server))
    listed = history.mvc("remote")
    verbose = history.mvc("remote", "-v")
    first = history.mvc("push", "origin", "main")
    second = history.mvc("push", "origin", "main")
    fork = history.mvc("push", "origin", "fork")

    assert added.out == f"added remote origin: {server / '.mvc'}\n"
    assert listed.out == "origin\n"
    assert verbose.out == f"origin  {server / '.mvc'}\n"
    assert f"session main: new at {history.ids['main#3'][:12]}" in first.out
    assert "sent 3 epochs" in first.out and "3 metric documents to origin" in first.out
    assert "up to date" in second.out and "nothing to transfer" in second.out
    assert "sent 2 epochs" in fork.out
    assert _ids(server_mvc) == set(history.ids.values())

    cloned = kit.Mvc(tmp_path)("clone", "server", "copy")
    copy = kit.Mvc(tmp_path / "copy")

    assert f"into {tmp_path / 'copy' / '.mvc'}: 2 sessions, 0 tags" in cloned.out
    assert "received 5 epochs" in cloned.out
    assert _ids(copy) == set(history.ids.values())
    assert copy("fsck").out.endswith(": ok\n")
    assert copy("remote", "-v").out == f"origin  {server / '.mvc'}\n"
    copy("checkout", "fork#4", "-o", "out")
    kit.assert_same_tensors(
        load_file(str(tmp_path / "copy" / "out" / "weights.safetensors")),
        history.weights["fork#4"],
    )
    assert (
        copy("metrics", "fork", "--json").json()
        == history.mvc("metrics", "fork", "--json").json()
    )


def test_pull_fast_forwards_and_reports_a_divergence(history, tmp_path, kit):
    kit.Mvc(tmp_path)("clone", "repo", "copy")
    copy = kit.Mvc(tmp_path / "copy")
    kit.write_weights(tmp_path / "w.safetensors", 99)
    new = history.mvc("commit", "--session", "main", "--weights", "../w.safetensors")

    forward = copy("pull", "origin", "main")

    assert "(fast-forward)" in forward.out and "received 1 epoch," in forward.out
    assert copy("log", "main", "-n", "1", "--json").json()[0]["id"] == new.out.strip()

    theirs = history.mvc(
        "commit", "--session", "main", "--weights", "../w.safetensors", "-m", "x"
    ).out.strip()
    copy("commit", "--session", "main", "--weights", "../w.safetensors", "-m", "y")

    diverged = copy("pull", "origin")

    assert "session main: diverged from origin" in diverged.out
    assert "remotes/origin/main" in diverged.out
    assert "mvc branch NEW_NAME --from remotes/origin/main" in diverged.out
    shown = copy("show", "remotes/origin/main", "--json").json()
    assert shown["id"] == theirs


def test_non_fast_forward_push_is_refused_with_a_hint(history, tmp_path, kit):
    kit.Mvc(tmp_path)("clone", "repo", "copy")
    copy = kit.Mvc(tmp_path / "copy")
    kit.write_weights(tmp_path / "w.safetensors", 99)
    theirs = history.mvc(
        "commit", "--session", "main", "--weights", "../w.safetensors", "-m", "x"
    ).out.strip()
    ours = copy(
        "commit", "--session", "main", "--weights", "../w.safetensors", "-m", "y"
    ).out.strip()
    before = history.snapshot()

    refused = copy.fails("push", "origin", "main")

    assert "non-fast-forward" in refused.err
    assert theirs[:12] in refused.err and ours[:12] in refused.err
    assert "pull first" in refused.err and "--force" in refused.err
    assert history.snapshot() == before

    forced = copy("push", "origin", "main", "--force")

    assert "(forced)" in forced.out
    assert history.mvc("log", "main", "-n", "1", "--json").json()[0]["id"] == ours


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["remote", "add", "a/b", "."], "invalid name 'a/b'"),
        (["remote", "add", "x y", "."], "invalid name 'x y'"),
        (["remote", "add", "x", "nowhere"], "no mvcstore repository at nowhere"),
        (["remote", "add", "x", "ftp://host/path"], "names no backend"),
        (["remote", "add", "x", "gs://bucket-a/p"], "has no refs or metrics URI"),
        (["remote", "add", "x", "--objects", "mongodb://h/db"], "has no refs"),
        (["remote", "add", "x"], "has no location"),
        (["remote", "remove", "nope"], "no remote named 'nope'"),
        (["push", "nope"], "no remote named 'nope'"),
        (["pull", "nope"], "no remote named 'nope'"),
        (["push", "bad/name"], "invalid name 'bad/name'"),
    ],
)
def test_bad_remote_names_and_locations_exit_1_with_a_hint(history, args, says):
    config = (history.root / ".mvc" / "config.json").read_text()

    result = history.mvc.fails(*args)

    assert says in result.err
    assert (history.root / ".mvc" / "config.json").read_text() == config


def test_an_existing_remote_name_and_an_unknown_session_are_refused(
    history, tmp_path, kit
):
    server, _ = _server(tmp_path, kit)
    history.mvc("remote", "add", "origin", str(server))

    again = history.mvc.fails("remote", "add", "origin", str(server))
    missing = history.mvc.fails("pull", "origin", "main")
    self_remote = history.mvc.fails("remote", "add", "me", ".")

    assert "remote 'origin' already exists" in again.err
    assert "remote 'origin' has no session 'main'" in missing.err
    assert "is this repository" in self_remote.err


def test_remote_remove_drops_its_tracking_refs(history, tmp_path, kit):
    server, _ = _server(tmp_path, kit)
    history.mvc("remote", "add", "origin", str(server))
    history.mvc("push", "origin", "main")
    assert history.mvc("show", "remotes/origin/main", "--json").json()["id"]

    removed = history.mvc("remote", "remove", "origin")

    assert removed.out == "removed remote origin\n"
    assert history.mvc("remote").out == ""
    history.mvc.fails("show", "remotes/origin/main")


@pytest.mark.parametrize(
    "uri",
    [
        f"mongodb://ana:{SECRET}@127.0.0.1:27017/db",
        f"mongodb://127.0.0.1:27017/db?password={SECRET}",
    ],
)
def test_credentials_in_uris_are_refused_and_never_echoed(mvc, tmp_path, kit, uri):
    init = mvc.fails("init", "--refs", uri)
    assert not (tmp_path / ".mvc").exists()

    mvc("init")
    config = (tmp_path / ".mvc" / "config.json").read_text()
    by_option = mvc.fails(
        "remote",
        "add",
        "x",
        "--objects",
        "gs://bucket-a/p",
        "--refs",
        uri,
        "--metrics",
        "os+http://127.0.0.1:9200/m",
    )
    positional = mvc.fails("remote", "add", "x", uri)
    cloned = kit.Mvc(tmp_path).fails("clone", uri, "copy")

    for result in (init, by_option, positional, cloned):
        assert "credentials" in result.err
        assert SECRET not in result.err and SECRET not in result.out
    assert (tmp_path / ".mvc" / "config.json").read_text() == config
    assert not (tmp_path / "copy").exists()


def test_init_checks_backend_uris_before_creating_anything(mvc, tmp_path):
    bad = mvc.fails("init", "--objects", "s3://bucket/p")
    local = mvc("init", "--objects", "local", "--refs", "local")

    assert "unsupported scheme" in bad.err
    assert local.out.startswith("created empty repository in")
    config = json.loads((tmp_path / ".mvc" / "config.json").read_text())
    assert (config["objects"], config["refs"], config["metrics"]) == ("local",) * 3


def test_fsck_repairs_from_a_remote_named(history, tmp_path, kit):
    kit.Mvc(tmp_path)("clone", "repo", "backup")
    history.mvc("remote", "add", "backup", "../backup")
    history.damaged = True
    with Repo.open(history.root) as repo:
        state = repo.get(repo.resolve("main").state)
        blob = repo.get(state.tensors["layer.weight"]).data
        region = stored_region(repo, blob)
    overwrite_region(region, lambda frame: frame.__setitem__(-1, frame[-1] ^ 1))
    history.mvc("fsck", expect=1)

    fixed = history.mvc("fsck", "--repair", "--from", "backup")

    assert f"restored {blob.hex}" in fixed.out
    assert fixed.out.endswith(": ok\n")
