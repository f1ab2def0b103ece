"""Push, pull and clone between an embedded repository and one on the servers.

The remote keeps its objects in GCS, its refs in MongoDB and its metric
documents in OpenSearch; the local repositories are embedded. Each test gets
a bucket, a database and an index of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from servers import RemoteUris
from support import assert_clean, make_graph, make_state

from mvcstore import Repo
from mvcstore.errors import NonFastForwardError
from mvcstore.remote import (
    CREATED,
    FAST_FORWARD,
    UP_TO_DATE,
    RemoteSpec,
    clone,
    open_remote,
    pull,
    push,
    remote_spec,
    transfer,
)

pytestmark = pytest.mark.integration


def _spec(uris: RemoteUris) -> RemoteSpec:
    return remote_spec(
        "servers", objects=uris.objects, refs=uris.refs, metrics=uris.metrics
    )


def _local(path: Path) -> Repo:
    """Session a with three epochs, b forked at a#2 with one of its own."""
    repo = Repo.init(path, durable=False)
    session = repo.session("a")
    for number in (1, 2, 3):
        session.log_metrics(10 * number, loss=1.0 / number)
        session.commit(
            make_state("a", number),
            graph=make_graph(16) if number == 1 else None,
            metrics={"acc": number / 10},
        )
    repo.fork("b", at="a#2")
    repo.session("b").commit(make_state("b", 3), metrics={"acc": 0.5})
    return repo


def _same_checkouts(got: Repo, want: Repo, session: str) -> None:
    for epoch in want.log(session):
        assert epoch.id is not None
        mine, theirs = got.checkout(epoch.id.hex), want.checkout(epoch.id.hex)
        assert mine.graph == theirs.graph
        assert sorted(mine.state) == sorted(theirs.state)
        for name, array in theirs.state.items():
            assert isinstance(array, np.ndarray)
            assert mine.state[name].tobytes() == array.tobytes()


def test_push_then_clone_and_pull_through_the_servers(
    remote: RemoteUris, tmp_path: Path
) -> None:
    local = _local(tmp_path / "local")
    spec = _spec(remote)
    try:
        with open_remote(spec) as server:
            first = push(local, server, name="servers", session="a")
            fork = push(local, server, name="servers", session="b")
            stored = set(server.objects.iter_ids())

            again = push(local, server, name="servers", session="b")
            direct = transfer(local, server, [e.id for e in local.log("b")][:1])

            assert [u.status for u in first.updates] == [CREATED]
            assert fork.transfer.epochs == [local.resolve_id("b")]
            assert [u.status for u in again.updates] == [UP_TO_DATE]
            assert again.transfer.objects == direct.objects == direct.docs == 0
            assert set(server.objects.iter_ids()) == stored
            assert server.metrics("b") == local.metrics("b")
            assert server.metrics("a") == local.metrics("a")
            assert server.head_session() == "a"
            assert_clean(server)

        cloned, report = clone(spec, tmp_path / "copy", durable=False)
        with cloned:
            assert {u.status for u in report.updates} == {CREATED}
            assert sorted(cloned.sessions()) == sorted(local.sessions())
            assert cloned.metrics("b") == local.metrics("b")
            _same_checkouts(cloned, local, "a")
            _same_checkouts(cloned, local, "b")
            assert_clean(cloned)

            # someone else moves b on the servers; a pull fast-forwards
            with open_remote(spec) as server:
                moved = server.session("b").commit(make_state("b", 4))
                pulled = pull(cloned, server, name="servers")

            statuses = {u.name: u.status for u in pulled.updates}
            assert statuses == {"a": UP_TO_DATE, "b": FAST_FORWARD}
            assert cloned.session_head("b") == moved.id
            assert pulled.transfer.epochs == [moved.id]
            assert_clean(cloned)
    finally:
        local.close()


def test_a_non_fast_forward_push_to_the_servers_is_refused(
    remote: RemoteUris, tmp_path: Path
) -> None:
    local = _local(tmp_path / "local")
    try:
        with open_remote(_spec(remote)) as server:
            push(local, server, name="servers", session="a")
            theirs = server.session("a").commit(make_state("x", 1))
            ours = local.session("a").commit(make_state("y", 1))
            assert theirs.id is not None and ours.id is not None

            with pytest.raises(NonFastForwardError) as refused:
                push(local, server, name="servers", session="a")

            assert theirs.id.short() in refused.value.message
            assert ours.id.short() in refused.value.message
            assert server.session_head("a") == theirs.id
    finally:
        local.close()


def _mvc(cwd: Path, *args: str) -> str:
    """Run `mvc` in ``cwd``; return its stdout, failing on a non-zero exit."""
    script = Path(sys.executable).with_name("mvc")
    proc = subprocess.run(
        [str(script), *args],
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "MVC_DIR"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_mvc_init_on_the_servers_then_push_through_the_cli(
    remote: RemoteUris, tmp_path: Path
) -> None:
    created = _mvc(
        tmp_path,
        "init",
        "server",
        "--objects",
        remote.objects,
        "--refs",
        remote.refs,
        "--metrics",
        remote.metrics,
    )
    config = json.loads((tmp_path / "server" / ".mvc" / "config.json").read_text())
    _local(tmp_path / "local").close()
    here = tmp_path / "local"

    _mvc(here, "remote", "add", "origin", "../server")
    pushed = _mvc(here, "push", "origin", "a")
    again = _mvc(here, "push", "origin", "a")

    assert f"objects in {remote.objects}" in created
    assert (config["objects"], config["refs"], config["metrics"]) == (
        remote.objects,
        remote.refs,
        remote.metrics,
    )
    assert "session a: new at" in pushed
    assert "nothing to transfer" in again
    with (
        Repo.open(tmp_path / "server") as server,
        Repo.open(tmp_path / "local") as mine,
    ):
        assert server.session_head("a") == mine.session_head("a")
        assert server.metrics("a") == mine.metrics("a")
