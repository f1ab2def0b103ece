"""gc of packed objects: packs are rewritten whole, and a crash inside leaves garbage.

A commit stores its new objects in one pack. After ``retain`` drops an epoch's
weights, that pack holds a live epoch object next to a dead state, so gc
rewrites it without the dead objects. Each step of the rewrite fails in turn
(as a crash there would stop it); afterwards every kept epoch reads back bit
for bit, fsck is clean, and gc run again finishes the job. A second repository
object, whose pack list predates the rewrite, still reads every object.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from support import assert_clean

import mvcstore.stores.local as local_store
from mvcstore import Repo
from mvcstore.errors import BackendUnavailableError, WeightsDroppedError
from mvcstore.gc import RetainPolicy, collect, retain
from mvcstore.stores.packs import PackWriter


def weights(number: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(number)
    return {
        "w": rng.standard_normal((32, 32)).astype(np.float32),
        "frozen": np.arange(300, dtype=np.float32),
    }


def _packs(repo: Repo) -> list[str]:
    folder = repo.path / "objects" / "packs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _history(path: Path) -> Repo:
    repo = Repo.init(path, durable=False)
    session = repo.session("a")
    for number in range(1, 5):
        session.commit(weights(number), extra={"opt": {"m": np.full(4, number)}})
    retain(repo, "a", RetainPolicy(keep_last=1))
    return repo


def _assert_history(repo: Repo) -> None:
    dropped = repo.dropped_epochs()
    for back in range(4):
        epoch = repo.resolve(f"a~{back}")
        assert epoch.id is not None
        if epoch.id in dropped:
            with pytest.raises(WeightsDroppedError):
                repo.checkout(epoch.id.hex)
            continue
        state = repo.checkout(epoch.id.hex).state
        for name, array in weights(epoch.number).items():
            assert state[name].tobytes() == array.tobytes()
    assert_clean(repo)


def test_gc_rewrites_packs_that_hold_live_and_dead_objects(tmp_path: Path) -> None:
    repo = _history(tmp_path)
    try:
        if not _packs(repo):
            pytest.skip("this repository stores loose objects only")
        before = len(list(repo.objects.iter_ids()))

        report = collect(repo, grace_s=0)

        assert report.objects > 0
        assert len(list(repo.objects.iter_ids())) == before - report.objects
        _assert_history(repo)
        # every epoch record survived, in whatever pack it now lives
        assert [e.number for e in repo.log("a")] == [4, 3, 2, 1]
    finally:
        repo.close()


def _fail_writer_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    def finish(self: PackWriter) -> object:
        raise BackendUnavailableError("packs", "injected failure writing a pack")

    monkeypatch.setattr(PackWriter, "finish", finish)


def _fail_removal(nth: int) -> Callable[[pytest.MonkeyPatch], None]:
    def install(monkeypatch: pytest.MonkeyPatch) -> None:
        calls = {"n": 0}
        remove = local_store.remove_quietly

        def failing(path: Path) -> None:
            if path.suffix in (".idx", ".pack"):
                calls["n"] += 1
                if calls["n"] == nth:
                    raise BackendUnavailableError("packs", f"injected failure {nth}")
            remove(path)

        monkeypatch.setattr(local_store, "remove_quietly", failing)

    return install


STEPS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "writing the new pack": _fail_writer_finish,
    "removing the old index": _fail_removal(1),
    "removing the old pack": _fail_removal(2),
}


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_inside_a_pack_rewrite_leaves_only_garbage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    repo = _history(tmp_path)
    try:
        if not _packs(repo):
            pytest.skip("this repository stores loose objects only")
        with monkeypatch.context() as patch:
            STEPS[step](patch)
            with pytest.raises(BackendUnavailableError, match="injected failure"):
                collect(repo, grace_s=0)

        _assert_history(repo)
        # a fresh look at the folder sees the same whole history
        with Repo.open(tmp_path, durable=False) as again:
            _assert_history(again)
        collect(repo, grace_s=0)
        _assert_history(repo)
        assert collect(repo, grace_s=0).objects == 0
    finally:
        repo.close()


def test_a_reader_that_loaded_the_old_packs_still_reads_everything(
    tmp_path: Path,
) -> None:
    writer = _history(tmp_path)
    reader = Repo.open(tmp_path, durable=False)
    try:
        if not _packs(writer):
            pytest.skip("this repository stores loose objects only")
        # the reader has loaded every pack; the writer's gc rewrites them
        list(reader.log("a"))
        collect(writer, grace_s=0)

        _assert_history(reader)
        epoch = reader.session("a").commit(weights(5))
        assert epoch.number == 5
        _assert_history(writer)
    finally:
        reader.close()
        writer.close()
