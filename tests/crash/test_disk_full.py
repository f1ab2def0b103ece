"""A full disk in the middle of a commit: a clear error, nothing lost.

First with a wrapper: the local store's file system calls fail with ENOSPC at
the N-th object file, for every N of one commit. Then for real, when the
machine allows it: a 3 MB tmpfs mounted in a private user and mount namespace
(``unshare``), which no other process sees and which goes away with the child.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from support import assert_clean, can_mount_privately

import mvcstore.stores.local as local_store
import mvcstore.stores.packs as packs_store
from mvcstore import Repo
from mvcstore.errors import BackendUnavailableError

CHILD = Path(__file__).with_name("disk_full_child.py")


def weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((32, 32)).astype(np.float32),
        "b": rng.standard_normal(32),
        "frozen": np.arange(100, dtype=np.int64),
    }


class FullDisk(ModuleType):
    """Stands in for ``os`` in the local store: the N-th rename hits ENOSPC.

    A rename into ``objects/`` is how every object file is published, and a
    full directory refuses it with ENOSPC, as a full disk refuses the write.
    """

    def __init__(self, fail_at: int | None) -> None:
        super().__init__("os")
        self.fail_at = fail_at
        self.renames = 0

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def replace(self, src: object, dst: object) -> None:
        self.renames += 1
        if self.renames == self.fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        os.replace(src, dst)  # type: ignore[arg-type]


def _start(path: Path) -> Repo:
    repo = Repo.init(path, durable=False)
    repo.session("a").commit(weights(1), metrics={"acc": 0.5})
    return repo


def test_enospc_at_every_object_of_a_commit_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = FullDisk(None)
    monkeypatch.setattr(local_store, "os", counting)
    monkeypatch.setattr(packs_store, "os", counting)
    repo = _start(tmp_path / "count")
    counting.renames = 0
    repo.session("a").commit(weights(2))
    repo.close()
    renames = counting.renames
    # a commit's objects are published by one rename: its pack's index
    assert renames >= 1

    for fail_at in range(1, renames + 1):
        full = FullDisk(None)
        monkeypatch.setattr(local_store, "os", full)
        monkeypatch.setattr(packs_store, "os", full)
        repo = _start(tmp_path / f"full-{fail_at}")
        try:
            first = repo.session_head("a")
            session = repo.session("a")
            session.log_metrics(session.next_step, loss=0.25)
            full.renames, full.fail_at = 0, fail_at

            with pytest.raises(BackendUnavailableError) as caught:
                session.commit(weights(2), metrics={"acc": 0.75})

            error = caught.value
            assert "No space left on device" in error.message
            assert error.hint is not None and "disk space" in error.hint
            assert repo.session_head("a") == first
            checkout = repo.checkout("a")
            for name, array in weights(1).items():
                assert checkout.state[name].tobytes() == array.tobytes()
            assert_clean(repo)

            # space freed: the same session commits, its logged loss included
            full.fail_at = None
            epoch = session.commit(weights(2), metrics={"acc": 0.75})
            assert repo.session_head("a") == epoch.id
            names = sorted(d.name for d in repo.metrics("a") if d.uid == epoch.uid)
            assert names == ["acc", "loss"]
            assert_clean(repo)
        finally:
            repo.close()


@pytest.mark.skipif(sys.platform != "linux", reason="needs Linux namespaces")
def test_a_full_tmpfs_fails_commits_clearly_and_loses_nothing(tmp_path: Path) -> None:
    if not can_mount_privately():
        pytest.skip("this machine does not allow a private mount namespace")
    folder = tmp_path / "small-disk"
    folder.mkdir()

    result = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            str(CHILD),
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["error_type"] == "BackendUnavailableError", out
    message = f"{out['error']} {out['hint']}".lower()
    assert "space" in message or "disk is full" in message, out
    assert "disk space" in out["hint"]
    assert out["committed"] >= 1
    assert out["head_is_last"] and out["readable"], out
    assert out["fsck"] == [] and out["fsck_after"] == [], out
    assert out["freed_objects"] > 0 and out["recommitted"], out
    # the tmpfs lived only in the child's namespace
    assert list(folder.iterdir()) == []
