"""Many processes at once: 8 writers on 8 sessions, 4 racing on one, 2 readers.

Every worker is a separate process (``workers.py``) started together. No
epoch is lost: each one a writer or racer reports is on its session's line,
every race a racer loses raised a RefConflictError naming both epochs and its
epoch lives on as a new session, and the readers, running all along, checked
out every epoch they saw, bit for bit, without one failing read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import assert_clean

from mvcstore import Repo
from mvcstore.errors import RefConflictError

WORKERS = Path(__file__).with_name("workers.py")
WRITERS = 8
RACERS = 4
READERS = 2
COMMITS = 4
SEED = 1000


def _start(args: list[str], log: Path) -> subprocess.Popen[str]:
    with open(log, "ab") as stderr:
        return subprocess.Popen(
            [sys.executable, str(WORKERS), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


def _lines(proc: subprocess.Popen[str], log: Path) -> list[dict[str, object]]:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log.read_text()[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_concurrent_writers_racers_and_readers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    Repo.init(path, durable=False).close()
    go, stop, log = tmp_path / "go", tmp_path / "stop", tmp_path / "workers.log"
    writers = [
        _start(
            ["writer", str(path), f"s{i}", str(COMMITS), str(SEED + i), str(go)], log
        )
        for i in range(WRITERS)
    ]
    racers = [
        _start(
            ["racer", str(path), "shared", str(COMMITS), str(SEED + 100 + i), str(go)],
            log,
        )
        for i in range(RACERS)
    ]
    readers = [
        _start(["reader", str(path), str(stop), str(go)], log) for _ in range(READERS)
    ]
    everyone = writers + racers + readers
    try:
        for proc in everyone:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n", log.read_text()[-3000:]
        go.touch()
        reports = [line for proc in writers + racers for line in _lines(proc, log)]
        stop.touch()
        read = [line for proc in readers for line in _lines(proc, log)]
    finally:
        stop.touch()
        for proc in everyone:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    won = [r for r in reports if r["kind"] == "won"]
    lost = [r for r in reports if r["kind"] == "lost"]
    assert len(won) + len(lost) == (WRITERS + RACERS) * COMMITS
    assert len([r for r in won if r["session"] == "shared"]) >= 1
    # the racers all read the empty session before going: their first commits
    # all continue from nothing, and only one can win
    assert len(lost) >= RACERS - 1
    with Repo.open(path, durable=False) as repo:
        # every epoch reported is on its session's line: nothing was lost
        lines = {
            name: {e.id.hex for e in repo.log(name) if e.id}
            for name, _ in repo.sessions()
        }
        for report in won + lost:
            assert report["epoch"] in lines[str(report["session"])], report
        for i in range(WRITERS):
            assert len(lines[f"s{i}"]) == COMMITS
        shared = [e for e in repo.log("shared")]
        assert len(shared) == len([r for r in won if r["session"] == "shared"])
        for report in lost:
            # the winner it was told about is on the shared line
            assert report["winner"] in lines["shared"], report
        # after the readers, one more read of everything, then fsck
        for name in lines:
            for epoch in repo.log(name):
                assert epoch.id is not None
                repo.checkout(epoch.id.hex)
        assert_clean(repo)
    assert len(read) == READERS
    assert all(r["epochs"] >= 1 and r["rounds"] >= 1 for r in read), read


def test_a_lost_race_can_be_kept_from_the_error_alone(tmp_path: Path) -> None:
    sys.path.insert(0, str(WORKERS.parent))
    repo = Repo.init(tmp_path, durable=False)
    try:
        import workers

        first, second = repo.session("x"), repo.session("x")
        won = first.commit(workers.weights("1:0"), message="1:0")
        with pytest.raises(RefConflictError) as caught:
            second.commit(workers.weights("2:0"), message="2:0")

        error = caught.value
        assert won.id is not None and error.actual == won.id.hex
        assert error.proposed is not None and error.proposed in str(error)
        assert won.id.hex in str(error) and error.hint and error.proposed in error.hint
        kept = repo.create_session("kept", at=error.proposed)
        assert kept.hex == error.proposed
        checkout = repo.checkout("kept")
        assert checkout.epoch.message == "2:0"
        assert checkout.state["w"].tobytes() == workers.weights("2:0")["w"].tobytes()
        assert_clean(repo)
    finally:
        sys.path.remove(str(WORKERS.parent))
        repo.close()
