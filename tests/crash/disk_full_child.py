"""Fill a tiny private file system with commits, then check what is left.

Run by ``test_disk_full.py`` inside ``unshare --user --map-root-user --mount``:
the tmpfs mounted here exists only in this process's mount namespace and goes
away with it, so nothing outside the test's own folder is touched. Prints one
JSON document describing what happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from mvcstore import Repo
from mvcstore.errors import MvcError
from mvcstore.gc import collect

SIZE = "3m"


def weights(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal(n).astype(np.float32)}


def main(folder: str) -> None:
    root = Path(folder)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(root)],
        check=True,
    )
    out: dict[str, object] = {}
    repo = Repo.init(root)
    small = repo.session("a")
    first = small.commit(weights(0, 1000), metrics={"acc": 0.1})
    big = repo.session("big")
    committed = []
    error: MvcError | None = None
    for seed in range(1, 40):
        try:
            big.log_metrics(big.next_step, loss=float(seed))
            epoch = big.commit(weights(seed, 300_000))
        except MvcError as exc:
            error = exc
            break
        committed.append((epoch.id.hex if epoch.id else "", seed))
    out["error_type"] = type(error).__name__ if error else None
    out["error"] = error.message if error else None
    out["hint"] = error.hint if error else None
    out["committed"] = len(committed)

    # the same guarantees as any failed commit
    head = repo.session_head("big")
    out["head_is_last"] = (head.hex if head else None) == (
        committed[-1][0] if committed else None
    )
    readable = True
    for oid, seed in committed:
        state = repo.checkout(oid).state["w"]
        readable &= state.tobytes() == weights(seed, 300_000)["w"].tobytes()
    out["readable"] = readable
    out["fsck"] = [p.detail for p in repo.fsck().problems]

    # free space: drop the big session, collect, commit a small epoch again
    repo.delete_session("big")
    big.refresh()  # the failed commit's open epoch would keep its base alive
    freed = collect(repo, grace_s=0, reflog_s=0)
    out["freed_objects"] = freed.objects
    again = small.commit(weights(1, 1000))
    out["recommitted"] = again.number == first.number + 1
    out["fsck_after"] = [p.detail for p in repo.fsck().problems]
    repo.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
