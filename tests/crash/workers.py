"""Worker processes for the concurrency test (run as a script, one role each).

Roles::

    workers.py writer REPO SESSION COUNT SEED GO
    workers.py racer  REPO SESSION COUNT SEED GO
    workers.py reader REPO STOP GO

Each prints ``ready``, waits for the file GO to exist, then works and prints
one JSON document per line. A writer commits COUNT epochs to its own session.
A racer commits COUNT times to a session shared with other racers; when it
loses a race it checks that the RefConflictError names both epochs, keeps its
epoch as a new session and continues from the winner. A reader, until the file
STOP exists, lists every session, checks out every epoch it has not seen
before, comparing each tensor with what the epoch's message says was
committed, and reads each session's view. Every epoch's weights follow from
its message, ``SEED:I``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from mvcstore import Repo
from mvcstore.errors import RefConflictError


def weights(label: str) -> dict[str, np.ndarray]:
    """Return the weights an epoch with message ``label`` holds."""
    seed, index = (int(part) for part in label.split(":"))
    rng = np.random.default_rng([seed, index])
    return {
        "w": rng.standard_normal((16, 16)).astype(np.float32),
        "b": rng.standard_normal(16),
        "shared": np.arange(256, dtype=np.int32),
    }


def _emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _wait(go: Path) -> None:
    print("ready", flush=True)
    deadline = time.monotonic() + 120
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never told to go")
        time.sleep(0.005)


def _commit(session: object, label: str, step: int) -> object:
    session.log_metrics(step, loss=1.0 / (step + 1))  # type: ignore[attr-defined]
    return session.commit(  # type: ignore[attr-defined]
        weights(label), metrics={"acc": 0.5}, message=label, step=step
    )


def writer(path: str, name: str, count: int, seed: int, go: Path) -> None:
    """Commit ``count`` epochs to session ``name``."""
    with Repo.open(path, durable=False) as repo:
        session = repo.session(name)
        _wait(go)
        for index in range(count):
            epoch = _commit(session, f"{seed}:{index}", session.next_step)
            _emit(kind="won", session=name, epoch=epoch.id.hex)  # type: ignore[attr-defined]


def racer(path: str, name: str, count: int, seed: int, go: Path) -> None:
    """Commit ``count`` times to a shared session, keeping every lost epoch."""
    with Repo.open(path, durable=False) as repo:
        session = repo.session(name)
        _wait(go)
        for index in range(count):
            label = f"{seed}:{index}"
            try:
                epoch = _commit(session, label, session.next_step)
            except RefConflictError as exc:
                assert exc.proposed and exc.actual, exc
                assert exc.proposed in exc.message and exc.actual in exc.message
                kept = f"kept-{seed}-{index}"
                repo.create_session(kept, at=exc.proposed)
                _emit(kind="lost", session=kept, epoch=exc.proposed, winner=exc.actual)
                session.refresh()
                continue
            _emit(kind="won", session=name, epoch=epoch.id.hex)  # type: ignore[attr-defined]


def reader(path: str, stop: Path, go: Path) -> None:
    """Check out every epoch that appears, until told to stop."""
    seen: set[str] = set()
    rounds = 0
    with Repo.open(path, durable=False) as repo:
        _wait(go)
        while True:
            done = stop.exists()
            for name, _ in repo.sessions():
                for epoch in repo.log(name):
                    assert epoch.id is not None
                    if epoch.id.hex in seen:
                        continue
                    checkout = repo.checkout(epoch.id.hex)
                    for tensor, array in weights(epoch.message).items():
                        got = checkout.state[tensor]
                        assert got.tobytes() == array.tobytes(), epoch.message
                    seen.add(epoch.id.hex)
                docs = repo.metrics(name)
                assert all(doc.name in ("loss", "acc") for doc in docs)
            rounds += 1
            if done:
                break
    _emit(kind="reader", epochs=len(seen), rounds=rounds)


def main(argv: list[str]) -> None:
    """Run one role."""
    role = argv[0]
    if role == "reader":
        reader(argv[1], Path(argv[2]), Path(argv[3]))
    elif role == "writer":
        writer(argv[1], argv[2], int(argv[3]), int(argv[4]), Path(argv[5]))
    elif role == "racer":
        racer(argv[1], argv[2], int(argv[3]), int(argv[4]), Path(argv[5]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
