"""A MongoDB-compatible server that stops in the middle of a commit.

The test runs a FerretDB of its own (the binary the services script built) on
a free port, kills it by its PID while a commit is writing objects, checks
that the commit fails with a clear error, starts it again on the same data and
checks that nothing committed before was lost.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pymongo
import pytest
import servers
from support import assert_clean

from mvcstore import Repo
from mvcstore.codec import ObjectId
from mvcstore.errors import BackendUnavailableError
from mvcstore.stores.base import ObjectStore
from mvcstore.stores.mongo import MongoDatabase, MongoRefStore

pytestmark = pytest.mark.integration


class PrivateFerretDB:
    """One FerretDB process on loopback, with its data in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (folder / "data").mkdir(parents=True)
        (folder / "state").mkdir()

    @property
    def uri(self) -> str:
        return (
            f"mongodb://127.0.0.1:{self.port}/mvc_down?directConnection=true"
            "&retryWrites=false&serverSelectionTimeoutMS=2000"
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                str(servers.ferretdb_binary()),
                "--handler=sqlite",
                f"--sqlite-url=file:{self.folder / 'data'}/",
                f"--listen-addr=127.0.0.1:{self.port}",
                f"--state-dir={self.folder / 'state'}",
                "--debug-addr=-",
                "--telemetry=disable",
                "--log-level=warn",
            ],
            env={**os.environ, "DO_NOT_TRACK": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.uri, serverSelectionTimeoutMS=500
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.admin.command("ping")
                    return
                except pymongo.errors.PyMongoError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise
                    time.sleep(0.2)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class StopsServerOnPut:
    """An object store that kills the server just before its Nth write."""

    def __init__(self, store: ObjectStore, server: PrivateFerretDB, nth: int) -> None:
        self.store = store
        self.server = server
        self.nth = nth
        self.location = store.location
        self._writes = 0
        self._lock = threading.Lock()

    def put_if_absent(self, oid: ObjectId, framed: bytes) -> bool:
        with self._lock:
            self._writes += 1
            if self._writes == self.nth:
                self.server.kill()
        return self.store.put_if_absent(oid, framed)

    def get_framed(self, oid: ObjectId) -> bytes:
        return self.store.get_framed(oid)

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        return self.store.has_many(oids)

    def iter_ids(self) -> Iterator[ObjectId]:
        return self.store.iter_ids()

    def describe(self, oid: ObjectId) -> str:
        return self.store.describe(oid)

    def delete(self, oid: ObjectId) -> None:
        self.store.delete(oid)

    def flush(self) -> None:
        self.store.flush()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateFerretDB]:
    private = PrivateFerretDB(tmp_path / "ferretdb")
    private.start()
    try:
        yield private
    finally:
        private.stop()


def _state(n: int) -> dict[str, np.ndarray]:
    return {
        "w": np.full((64, 64), n, np.float32),
        "b": np.arange(n, n + 8, dtype=np.int64),
    }


def test_a_server_stopped_mid_commit_fails_the_commit_and_loses_nothing(
    server: PrivateFerretDB, tmp_path: Path
) -> None:
    path = tmp_path / "repo"
    with Repo.init(path, objects=server.uri, refs=server.uri) as repo:
        session = repo.session("a")
        committed = [
            session.commit(_state(n), metrics={"acc": n / 10}) for n in range(1, 4)
        ]

        repo.objects = StopsServerOnPut(repo.objects, server, nth=2)
        with pytest.raises(BackendUnavailableError) as caught:
            session.commit(_state(4), metrics={"acc": 0.4})

    error = caught.value
    assert error.uri.startswith(f"mongodb://127.0.0.1:{server.port}/mvc_down")
    assert "cannot reach the server" in error.reason
    assert error.hint

    # the client keeps credentials out of every message
    secret = MongoRefStore(
        MongoDatabase(server.uri, username="alice", password="s3cret-pw")
    )
    with pytest.raises(BackendUnavailableError) as down:
        secret.get("sessions/a")
    assert "s3cret-pw" not in str(down.value) and "alice" not in str(down.value)
    secret.database.close()

    server.start()
    with Repo.open(path) as repo:
        assert_clean(repo)
        assert [e.id for e in repo.log("a")] == [e.id for e in reversed(committed)]
        for n, epoch in enumerate(committed, start=1):
            out = repo.checkout(epoch.id.hex)
            assert np.array_equal(out.state["w"], _state(n)["w"])
            assert np.array_equal(out.state["b"], _state(n)["b"])
        again = repo.session("a").commit(_state(4), metrics={"acc": 0.4})
        assert again.parents == (committed[-1].id,)
        assert sorted(d.value for d in repo.metrics("a")) == [0.1, 0.2, 0.3, 0.4]
        assert_clean(repo)
