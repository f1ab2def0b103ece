"""SIGKILL of a process that commits epochs in a loop.

The child runs this file as a script. Each epoch's weights are a function of
its epoch number alone (a few MB, so a commit takes a while and a kill lands
inside one), so after every kill the test regenerates what each epoch on the
session's line must hold and compares it bit for bit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from mvcstore import Graph, Repo

SESSION = "a"
KILLS = 5
SEED = 20240611
MAX_EPOCHS = 400
BIG = 1 << 20  # float32 elements: 4 MiB of incompressible data per epoch
WATCHDOG_S = 120.0


def make_state(number: int) -> dict[str, np.ndarray]:
    """Return the weights of epoch ``number``."""
    rng = np.random.default_rng(number)
    return {
        "big": rng.standard_normal(BIG, dtype=np.float32),
        "frozen": np.arange(BIG // 4, dtype=np.float32),
        "head": rng.integers(-100, 100, size=(8, 8), dtype=np.int16),
    }


def make_graph(number: int) -> Graph:
    """Return the graph of epoch ``number``: it changes every third epoch."""
    width = 16 + number // 3
    return Graph.from_value(
        {"nodes": [{"id": "fc", "data": {"class": "Linear", "out": width}}]}
    )


def _child(path: str) -> None:
    repo = Repo.open(path)
    session = repo.session(SESSION)
    print("ready", flush=True)
    for _ in range(MAX_EPOCHS):
        head = session.head
        number = head.number + 1 if head is not None else 1
        # logged before the commit: a kill from here leaves an open epoch
        session.log_metrics(10 * number, loss=1.0 / number)
        epoch = session.commit(
            make_state(number),
            graph=make_graph(number),
            params={"lr": 0.1, "epoch": number},
            metrics={"acc": number / 1000},
        )
        print(f"committed {epoch.number}", flush=True)
    repo.close()


def _run_and_kill(path: Path, delay: float, log: Path) -> int:
    """Start a committing child, SIGKILL it ``delay`` s after its first commit.

    Returns:
        The number of the last epoch the child reported committed.
    """
    with open(log, "ab") as stderr:
        child = subprocess.Popen(
            [sys.executable, __file__, str(path)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    watchdog = threading.Timer(WATCHDOG_S, child.kill)
    watchdog.start()
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n", log.read_text()
        first = child.stdout.readline()
        assert first.startswith("committed "), log.read_text()
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        # the last piece is empty or a line cut short by the kill
        rest = child.stdout.read().split("\n")[:-1]
        assert child.wait() == -signal.SIGKILL
    finally:
        watchdog.cancel()
        child.kill()
        child.wait()
    return int([first.strip(), *rest][-1].removeprefix("committed "))


def _check_history(path: Path, last_printed: int) -> int:
    """Check the repository after a kill; return the head's epoch number."""
    with Repo.open(path, durable=False) as repo:
        head = repo.resolve(SESSION)
        # the kill may land after the ref moved but before the child printed
        assert head.number in (last_printed, last_printed + 1)

        line = list(repo.log(SESSION))
        assert [epoch.number for epoch in line] == list(range(head.number, 0, -1))
        for epoch in line:
            assert epoch.id is not None
            checkout = repo.checkout(epoch.id.hex)
            expected = make_state(epoch.number)
            assert checkout.state.keys() == expected.keys()
            for name, array in expected.items():
                assert checkout.state[name].tobytes() == array.tobytes(), epoch
            assert checkout.graph == make_graph(epoch.number)
            assert checkout.epoch.params == {"lr": 0.1, "epoch": epoch.number}

        # one loss and one acc per committed epoch; a dead writer's open epoch
        # shows in no view
        docs = sorted((doc.step, doc.name) for doc in repo.metrics(SESSION))
        steps = [10 * number for number in range(1, head.number + 1)]
        assert docs == sorted(
            [(s, "acc") for s in steps] + [(s, "loss") for s in steps]
        )

        report = repo.fsck()
        assert report.problems == []
        assert report.epochs >= head.number
        return head.number


def test_sigkill_during_commits_leaves_a_readable_history(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    Repo.init(path).close()
    log = tmp_path / "child-stderr.log"
    delays = random.Random(SEED)
    numbers = []

    for _ in range(KILLS):
        last_printed = _run_and_kill(path, delays.uniform(0.0, 0.4), log)
        numbers.append(_check_history(path, last_printed))

    assert numbers == sorted(numbers)
    assert numbers[-1] >= KILLS
    with Repo.open(path, durable=False) as repo:
        session = repo.session(SESSION)
        epoch = session.commit(make_state(numbers[-1] + 1))
        assert epoch.number == numbers[-1] + 1
        assert list(repo.refs.iter_open_epochs()) == []
        assert repo.fsck().problems == []


if __name__ == "__main__":
    _child(sys.argv[1])
