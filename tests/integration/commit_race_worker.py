"""One of two processes committing to one session (run by test_concurrent_commits).

Usage: python commit_race_worker.py REPO_PATH START_TIME ROUNDS SIDE

Round k starts at START_TIME + k * GAP seconds. Before it, the session moves
on to the current head (the previous round's winner), so in every round both
processes commit on the same epoch. Prints a JSON list, one entry per round:
the committed epoch, or the conflict's three epochs.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from mvcstore import Repo
from mvcstore.errors import RefConflictError

GAP = 1.0


def main() -> None:
    path, start, rounds, side = (
        sys.argv[1],
        float(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    results = []
    with Repo.open(path, durable=False) as repo:
        session = repo.session("shared")
        for k in range(rounds):
            session.refresh()
            base = session.head_id.hex if session.head_id else None
            pause = start + k * GAP - time.time()
            if pause > 0:
                time.sleep(pause)
            try:
                epoch = session.commit(
                    {"w": np.full(4, side * 1000 + k, np.float32)},
                    metrics={"acc": side + k / 100},
                    message=f"side {side} round {k}",
                )
            except RefConflictError as exc:
                results.append(
                    {
                        "won": False,
                        "base": base,
                        "expected": exc.expected,
                        "actual": exc.actual,
                        "proposed": exc.proposed,
                    }
                )
            else:
                results.append({"won": True, "base": base, "epoch": epoch.id.hex})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
