"""SIGKILL a committing process at random points, many times, and check each time.

Usage (``make crash-test`` runs the first)::

    python tests/crash/harness.py --kills 200
    python tests/crash/harness.py --kills 20 --seed 7 --dir /tmp/crash-repo

A child process commits epochs in a loop, logging a metric before each
commit; the parent kills it with SIGKILL after a random delay and then checks
the repository: the session is on the epoch the child last reported or the one
after it; the epochs form one unbroken line; every epoch not checked before
reads back bit for bit (weights, graph, hyper-parameters); the session's view
holds exactly one ``loss`` and one ``acc`` per epoch; fsck finds no problem
(unreferenced garbage is allowed and counted). Every ``--gc-every`` kills, gc
runs with grace 0 (no writer is alive then) and every epoch is read back again.
At the end every epoch is read back once more and one more commit succeeds.
The delays come from ``--seed``, so a run can be repeated.

``run`` is also called by ``test_kill_harness.py`` with a small sample.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mvcstore import Graph, Repo
from mvcstore.gc import collect

SESSION = "run"
ELEMENTS = 1 << 15  # float32 elements: 128 KiB of incompressible data per epoch
MAX_DELAY_S = 0.06
"""Kills land within a few commits of the child's start: the history stays short."""
WATCHDOG_S = 120.0


def make_state(number: int) -> dict[str, np.ndarray]:
    """Return the weights of epoch ``number``."""
    rng = np.random.default_rng(number)
    return {
        "w": rng.standard_normal(ELEMENTS, dtype=np.float32),
        "frozen": np.arange(ELEMENTS // 4, dtype=np.float32),
        "b": rng.integers(-100, 100, size=(4, 4), dtype=np.int16),
    }


def make_graph(number: int) -> Graph:
    """Return the graph of epoch ``number``: it changes every third epoch."""
    return Graph.from_value(
        {"nodes": [{"id": "fc", "data": {"class": "Linear", "out": 8 + number // 3}}]}
    )


def _child(path: str) -> None:
    repo = Repo.open(path)
    session = repo.session(SESSION)
    print("ready", flush=True)
    while True:
        head = session.head
        number = head.number + 1 if head is not None else 1
        step = 10 * number
        # logged before the commit: a kill from here leaves an open epoch
        session.log_metrics(step, loss=1.0 / number)
        epoch = session.commit(
            make_state(number),
            graph=make_graph(number),
            params={"lr": 0.1, "epoch": number},
            metrics={"acc": number / 1000},
            step=step,
        )
        print(f"committed {epoch.number}", flush=True)


@dataclass
class Summary:
    """What a run did.

    Attributes:
        kills: Children killed.
        epochs: Epochs on the session at the end.
        after_ref: Kills that landed after the ref moved, before the report.
        left_garbage: Kills after which more unreferenced objects were found
            (the kill landed inside a commit, after some of its writes).
        collected: Objects gc removed over the run.
        seconds: How long the run took.
    """

    kills: int = 0
    epochs: int = 0
    after_ref: int = 0
    left_garbage: int = 0
    collected: int = 0
    seconds: float = 0.0


def _run_and_kill(path: Path, delay: float, log: Path) -> int:
    """Start a committing child and SIGKILL it ``delay`` s after it is ready.

    Returns:
        The number of the last epoch the child reported (0 if none).
    """
    with open(log, "ab") as stderr:
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", str(path)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    watchdog = threading.Timer(WATCHDOG_S, child.kill)
    watchdog.start()
    try:
        assert child.stdout is not None
        ready = child.stdout.readline()
        if ready != "ready\n":
            raise AssertionError(f"child did not start: {log.read_text()[-2000:]}")
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        # the last piece is empty or a line cut short by the kill
        lines = child.stdout.read().split("\n")[:-1]
        if child.wait() != -signal.SIGKILL:
            raise AssertionError(f"child ended on its own: {log.read_text()[-2000:]}")
    finally:
        watchdog.cancel()
        child.kill()
        child.wait()
    reported = [int(line.removeprefix("committed ")) for line in lines]
    return reported[-1] if reported else -1


def _check(repo: Repo, number: int, verified: set[int], *, everything: bool) -> None:
    """Check epochs of the session's line read back, all or only new ones."""
    line = list(repo.log(SESSION)) if number else []
    numbers = [epoch.number for epoch in line]
    if numbers != list(range(number, 0, -1)):
        raise AssertionError(f"the line is broken: {numbers}")
    for epoch in line:
        if epoch.number in verified and not everything:
            continue
        assert epoch.id is not None
        checkout = repo.checkout(epoch.id.hex)
        expected = make_state(epoch.number)
        if checkout.state.keys() != expected.keys():
            raise AssertionError(f"epoch {epoch.number} lost tensors")
        for name, array in expected.items():
            if checkout.state[name].tobytes() != array.tobytes():
                raise AssertionError(f"epoch {epoch.number} tensor {name} differs")
        if checkout.graph != make_graph(epoch.number):
            raise AssertionError(f"epoch {epoch.number} graph differs")
        if checkout.epoch.params != {"lr": 0.1, "epoch": epoch.number}:
            raise AssertionError(f"epoch {epoch.number} params differ")
        verified.add(epoch.number)

    # one loss and one acc per committed epoch; a dead writer's open epoch
    # shows in no view
    docs = sorted((doc.step, doc.name) for doc in repo.metrics(SESSION)) if line else []
    steps = [10 * n for n in range(1, number + 1)]
    if docs != sorted([(s, "acc") for s in steps] + [(s, "loss") for s in steps]):
        raise AssertionError(f"the view of {number} epochs is wrong: {docs[-6:]}")


def run(
    kills: int, *, seed: int, folder: Path, gc_every: int = 25, quiet: bool = True
) -> Summary:
    """Kill a committing child ``kills`` times, checking the repository each time.

    Raises:
        AssertionError: Naming the first thing found wrong.
    """
    started = time.monotonic()
    path = folder / "repo"
    Repo.init(path).close()
    log = folder / "child-stderr.log"
    delays = random.Random(seed)
    summary = Summary()
    verified: set[int] = set()
    last = 0
    garbage = 0

    for kill in range(1, kills + 1):
        printed = _run_and_kill(path, delays.uniform(0.0, MAX_DELAY_S), log)
        summary.kills += 1
        with Repo.open(path, durable=False) as repo:
            head = repo.session_head(SESSION)
            number = repo.read_epoch(head).number if head is not None else 0
            # the kill may land after the ref moved but before the report
            allowed = {max(last, printed), max(last, printed) + 1}
            if number not in allowed:
                raise AssertionError(
                    f"kill {kill}: head is epoch {number}, expected one of {allowed}"
                )
            summary.after_ref += number == printed + 1
            _check(repo, number, verified, everything=False)
            report = repo.fsck()
            if report.problems:
                raise AssertionError(f"kill {kill}: fsck found {report.problems}")
            summary.left_garbage += report.unreferenced > garbage
            garbage = report.unreferenced
            if kill % gc_every == 0:
                summary.collected += collect(repo, grace_s=0).objects
                _check(repo, number, verified, everything=True)
                after = repo.fsck()
                if after.problems:
                    raise AssertionError(f"kill {kill}: fsck after gc found problems")
                garbage = after.unreferenced
        last = number
        if not quiet:
            print(f"kill {kill}: epoch {number}", flush=True)

    with Repo.open(path, durable=False) as repo:
        _check(repo, last, verified, everything=True)
        session = repo.session(SESSION)
        session.log_metrics(10 * (last + 1), loss=1.0 / (last + 1))
        epoch = session.commit(
            make_state(last + 1),
            graph=make_graph(last + 1),
            params={"lr": 0.1, "epoch": last + 1},
            metrics={"acc": (last + 1) / 1000},
            step=10 * (last + 1),
        )
        if epoch.number != last + 1 or list(repo.refs.iter_open_epochs()):
            raise AssertionError("the commit after the last kill went wrong")
        _check(repo, last + 1, verified, everything=True)
        if repo.fsck().problems:
            raise AssertionError("fsck found problems at the end")
        summary.epochs = epoch.number
    summary.seconds = round(time.monotonic() - started, 1)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run the harness (or be the child)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--gc-every", type=int, default=25)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child)
        return
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        summary = run(
            args.kills,
            seed=args.seed,
            folder=args.dir,
            gc_every=args.gc_every,
            quiet=False,
        )
    else:
        with tempfile.TemporaryDirectory(prefix="mvc-crash-") as tmp:
            summary = run(
                args.kills,
                seed=args.seed,
                folder=Path(tmp),
                gc_every=args.gc_every,
                quiet=False,
            )
    print(json.dumps(asdict(summary)))


if __name__ == "__main__":
    main()
