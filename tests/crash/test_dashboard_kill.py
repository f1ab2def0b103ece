"""Views after killed writers: a SIGKILLed epoch leaves nothing in any view.

Session ``a`` commits epochs 1-5 (``loss`` at steps 1-50). A writer process
logs steps 51-57 of epoch 6 and is SIGKILLed; a new process continues from
``a#5`` and commits its own epoch 6 with steps 51-60 and other values. Then
``b`` forks at ``a#3``: a writer commits ``b#4`` (steps 31-35), logs 36-38 and
is killed; a new process commits ``b#5`` with steps 36-40.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import assert_clean

from mvcstore import Repo
from mvcstore.dashboard import series

WRITER = r"""
import sys, time
import numpy as np
from mvcstore import Repo

path, name, first, last, offset, then = sys.argv[1:7]
repo = Repo.open(path)
session = repo.session(name)
for step in range(int(first), int(last) + 1):
    session.log_metrics(step, loss=round(1.0 / step + float(offset), 6))
if then == "commit":
    session.commit({"w": np.full(2, float(last), np.float32)}, step=int(last))
    print("committed", flush=True)
else:
    print("logged", session.open_uid, flush=True)
    time.sleep(120)
"""


def _write(path: Path, name: str, steps: range, offset: float, then: str) -> str:
    """Run a writer; for ``then='die'`` SIGKILL it once it logged everything."""
    args = [str(path), name, str(steps[0]), str(steps[-1]), str(offset), then]
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if then == "die":
        os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) in (0, -signal.SIGKILL)
    process.stdout.close()
    return line.split()[-1]


def _loss(step: int, offset: float) -> float:
    return round(1.0 / step + offset, 6)


@pytest.fixture
def killed_history(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    with Repo.init(tmp_path) as repo:
        session = repo.session("a")
        for number in range(1, 6):
            for step in range(10 * number - 9, 10 * number + 1):
                session.log_metrics(step, loss=_loss(step, 0.0))
            session.commit(
                {"w": np.full(2, float(number), np.float32)}, step=10 * number
            )
    dead = {"a": _write(tmp_path, "a", range(51, 58), 0.5, "die")}
    _write(tmp_path, "a", range(51, 61), 0.1, "commit")
    with Repo.open(tmp_path) as repo:
        repo.create_session("b", at="a#3")
    _write(tmp_path, "b", range(31, 36), 0.2, "commit")
    dead["b"] = _write(tmp_path, "b", range(36, 39), 0.7, "die")
    _write(tmp_path, "b", range(36, 41), 0.3, "commit")
    return tmp_path, dead


def _losses(repo: Repo, revision: str) -> list[tuple[int, float, str]]:
    return [
        (doc.step, doc.value, doc.uid) for doc in series(repo, revision, names=["loss"])
    ]


def test_killed_epochs_leave_nothing_in_any_view(killed_history) -> None:
    path, dead = killed_history
    with Repo.open(path) as repo:
        a = _losses(repo, "a")
        b = _losses(repo, "b")
        stored = repo.metrics_index.count(set(dead.values()))
        assert_clean(repo)

    assert [step for step, _, _ in a] == list(range(1, 61))
    assert [value for step, value, _ in a if step > 50] == [
        _loss(step, 0.1) for step in range(51, 61)
    ]
    assert [step for step, _, _ in b] == list(range(1, 41))
    assert [value for step, value, _ in b][:30] == [value for _, value, _ in a][:30]
    assert [value for step, value, _ in b if step > 30] == [
        _loss(step, 0.2) for step in range(31, 36)
    ] + [_loss(step, 0.3) for step in range(36, 41)]
    # the dead epochs' documents are stored, and seen by no view
    assert stored == 7 + 3
    for uid in dead.values():
        assert uid not in {item for _, _, item in a + b}


def test_a_forks_work_leaves_its_parents_view_alone(tmp_path: Path) -> None:
    with Repo.init(tmp_path) as repo:
        session = repo.session("a")
        for number in range(1, 6):
            for step in range(10 * number - 9, 10 * number + 1):
                session.log_metrics(step, loss=_loss(step, 0.0))
            session.commit({"w": np.zeros(2, np.float32)}, step=10 * number)
        before = _losses(repo, "a")
        repo.create_session("b", at="a#3")

    _write(tmp_path, "b", range(31, 36), 0.2, "commit")
    _write(tmp_path, "b", range(36, 39), 0.7, "die")

    with Repo.open(tmp_path) as repo:
        assert _losses(repo, "a") == before


def test_log_graph_still_shows_where_b_forked(killed_history) -> None:
    path, _ = killed_history
    mvc = Path(sys.executable).with_name("mvc")
    env = {k: v for k, v in os.environ.items() if k != "MVC_DIR"}

    out = subprocess.run(
        [str(mvc), "log", "--all", "--graph"],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    lines = out.splitlines()
    fork_row = next(i for i, line in enumerate(lines) if " a#3 " in line)
    assert lines[fork_row].startswith("*")
    # b's line joins a's just above a#3: a connector row, then the fork point
    assert "/" in lines[fork_row - 1]
    assert sum(" b#" in line for line in lines) == 2
    assert sum(" a#" in line for line in lines) == 6
