"""`mvc fsck --repair --from PATH` restores damaged objects from another copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import assert_clean, make_graph

from mvcstore import Repo
from mvcstore.codec import (
    DELTA_ENCODINGS,
    FRAME_HEADER_SIZE,
    ObjectId,
    chain_readable_in,
)
from mvcstore.errors import InvalidInputError, RepositoryNotFoundError
from mvcstore.objects import State, Tensor
from mvcstore.repair import repair
from mvcstore.stores.local import LocalObjectStore

MVC = [str(Path(sys.executable).with_name("mvc"))]


def weights(number: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(number)
    return {
        "w": rng.standard_normal((16, 16)).astype(np.float32),
        "frozen": np.zeros(512, dtype=np.float32),
    }


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A repository and a backup copy of it, both closed."""
    work = tmp_path / "work"
    repo = Repo.init(work, durable=False)
    # loose files, so that one object can be damaged by hand (packed objects
    # are damaged through their pack in tests/unit/test_integrity.py)
    assert isinstance(repo.objects, LocalObjectStore)
    repo.objects.use_packs = False
    session = repo.session("a")
    for number in range(1, 4):
        session.commit(weights(number), graph=make_graph(8) if number == 1 else None)
    repo.fork("b", at="a#2").commit(weights(10))
    repo.close()
    backup = tmp_path / "backup"
    shutil.copytree(work, backup)
    return work / ".mvc", backup


def _ids(repo: Repo, revision: str) -> dict[str, ObjectId]:
    epoch = repo.resolve(revision)
    assert epoch.id is not None and epoch.state is not None
    state = repo.get(epoch.state)
    assert isinstance(state, State)
    tensor = repo.get(state.tensors["w"])
    assert isinstance(tensor, Tensor)
    return {
        "epoch": epoch.id,
        "state": epoch.state,
        "tensor": state.tensors["w"],
        "blob": tensor.data,
    }


def _file(repo: Repo, oid: ObjectId) -> Path:
    return repo.path / "objects" / oid.hex[:2] / oid.hex[2:]


def _assert_reads_back(repo: Repo) -> None:
    for revision, number in [("a", 3), ("a~1", 2), ("a~2", 1), ("b", 10)]:
        state = repo.checkout(revision).state
        for name, array in weights(number).items():
            assert state[name].tobytes() == array.tobytes(), revision


def test_flipped_truncated_and_deleted_objects_are_restored(
    pair: tuple[Path, Path],
) -> None:
    work, backup = pair
    with Repo.open(work, durable=False) as repo:
        a3, a2 = _ids(repo, "a"), _ids(repo, "a~1")
        blob = _file(repo, a3["blob"])
        data = bytearray(blob.read_bytes())
        data[FRAME_HEADER_SIZE + 5] ^= 0x10
        blob.write_bytes(bytes(data))
        _file(repo, a2["tensor"]).write_bytes(b"mvco")
        _file(repo, a2["epoch"]).unlink()
        damaged = {a3["blob"], a2["tensor"], a2["epoch"]}
        assert {p.object_id for p in repo.fsck().problems} == {o.hex for o in damaged}

        report = repair(repo, backup)

        assert set(report.repaired) == damaged
        assert report.unrepaired == {} and report.fsck.problems == []
        _assert_reads_back(repo)
        assert_clean(repo)


def test_a_missing_state_and_the_tensors_behind_it_come_back_in_rounds(
    pair: tuple[Path, Path],
) -> None:
    work, backup = pair
    with Repo.open(work, durable=False) as repo:
        ids = _ids(repo, "a")
        for oid in (ids["state"], ids["tensor"], ids["blob"]):
            _file(repo, oid).unlink()
        # fsck sees only the state missing: what it names is unknown until then
        assert [p.object_id for p in repo.fsck().problems] == [ids["state"].hex]

        report = repair(repo, backup)

        assert set(report.repaired) == {ids["state"], ids["tensor"], ids["blob"]}
        assert report.fsck.problems == []
        _assert_reads_back(repo)


def test_an_object_the_source_lacks_or_holds_damaged_is_reported(
    pair: tuple[Path, Path],
) -> None:
    work, backup = pair
    with Repo.open(work, durable=False) as repo, Repo.open(backup) as other:
        ids = _ids(repo, "b")
        _file(repo, ids["blob"]).unlink()
        _file(other, ids["blob"]).write_bytes(b"garbage")
        lost = _ids(repo, "a")["tensor"]
        _file(repo, lost).unlink()
        _file(other, lost).unlink()

        report = repair(repo, backup)

        assert report.repaired == []
        assert "damaged too" in report.unrepaired[ids["blob"]]
        assert "does not hold it" in report.unrepaired[lost]
        assert {p.object_id for p in report.fsck.problems} == {
            ids["blob"].hex,
            lost.hex,
        }


def test_bad_sources_are_refused(pair: tuple[Path, Path], tmp_path: Path) -> None:
    work, _ = pair
    with Repo.open(work, durable=False) as repo:
        with pytest.raises(InvalidInputError, match="only local"):
            repair(repo, "mongodb://user:secret@host/db")
        with pytest.raises(InvalidInputError, match="being repaired"):
            repair(repo, work)
        with pytest.raises(RepositoryNotFoundError):
            repair(repo, tmp_path / "nowhere")


def test_uris_in_refusals_never_show_credentials(pair: tuple[Path, Path]) -> None:
    work, _ = pair
    with Repo.open(work, durable=False) as repo:
        with pytest.raises(InvalidInputError) as caught:
            repair(repo, "mongodb://user:secret@host/db")
    assert "secret" not in str(caught.value) and "user" not in str(caught.value)


def _mvc(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MVC_DIR": str(work)}
    return subprocess.run(
        [*MVC, *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_mvc_fsck_repair_from_a_copy(pair: tuple[Path, Path]) -> None:
    work, backup = pair
    with Repo.open(work, durable=False) as repo:
        blob = _ids(repo, "a")["blob"]
    _file_path = work / "objects" / blob.hex[:2] / blob.hex[2:]
    _file_path.unlink()

    broken = _mvc(work, "fsck")
    fixed = _mvc(work, "fsck", "--repair", "--from", str(backup))
    after = _mvc(work, "fsck")

    assert broken.returncode == 1 and "--repair --from" in broken.stderr
    assert fixed.returncode == 0, fixed.stderr
    assert f"restored {blob.hex}" in fixed.stdout
    assert fixed.stdout.rstrip().endswith(": ok")
    assert after.returncode == 0


@pytest.mark.parametrize(
    "args", [["--repair"], ["--from", "somewhere"]], ids=["no-from", "no-repair"]
)
def test_repair_and_from_go_together(pair: tuple[Path, Path], args: list[str]) -> None:
    work, _ = pair

    result = _mvc(work, "fsck", *args)

    assert result.returncode == 2
    assert "--repair and --from PATH go together" in result.stderr


def test_mvc_fsck_repair_from_nowhere_fails_clearly(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    work, _ = pair

    result = _mvc(work, "fsck", "--repair", "--from", str(tmp_path / "nowhere"))

    assert result.returncode == 1
    assert result.stderr.startswith("error: no mvcstore repository found")
    assert "hint: " in result.stderr and "Traceback" not in result.stderr


def test_a_damaged_packed_object_is_restored(tmp_path: Path) -> None:
    work = tmp_path / "work"
    repo = Repo.init(work, durable=False)
    session = repo.session("a")
    for number in range(1, 4):
        session.commit(weights(number))
    repo.close()
    backup = tmp_path / "backup"
    shutil.copytree(work, backup)

    with Repo.open(work, durable=False) as repo:
        blob = _ids(repo, "a~1")["blob"]
        where = getattr(repo.objects, "locate", lambda oid: None)(blob)
        if where is None:
            pytest.skip("this repository stores loose objects only")
        with open(where.pack, "r+b") as handle:
            handle.seek(where.offset + where.length // 2)
            byte = handle.read(1)
            handle.seek(where.offset + where.length // 2)
            handle.write(bytes([byte[0] ^ 0x40]))
        assert [p.object_id for p in repo.fsck().problems] == [blob.hex]

        report = repair(repo, backup)

        assert report.repaired == [blob] and report.fsck.problems == []
        for back, number in enumerate(range(3, 0, -1)):
            state = repo.checkout(f"a~{back}").state
            for name, array in weights(number).items():
                assert state[name].tobytes() == array.tobytes()
        assert_clean(repo)


def test_a_format_2_repository_is_repaired_with_frames_it_reads(
    tmp_path: Path,
) -> None:
    # the copy is format 3 (differences, packed sections); the damaged
    # repository is format 2 and must stay readable by the mvcstore of format 2
    rng = np.random.default_rng(7)
    series = [rng.standard_normal(1 << 16).astype(np.float32)]
    for _ in range(3):
        noise = rng.standard_normal(series[0].size).astype(np.float32)
        series.append((series[-1] * (1 + np.float32(1e-3) * noise)).astype(np.float32))
    source = Repo.init(tmp_path / "copy", durable=False)
    epochs = [source.session("a").commit({"w": w}) for w in series]
    source.close()
    work = tmp_path / "work"
    shutil.copytree(tmp_path / "copy", work)
    config = work / ".mvc" / "config.json"
    config.write_text(config.read_text().replace('"version": 3', '"version": 2'))

    with Repo.open(work, durable=False) as repo:
        assert repo.format_version == 2
        # drop every blob, as if lost: what comes back must be format 2 frames
        blobs = [_ids(repo, epoch.id.hex)["blob"] for epoch in epochs if epoch.id]
        for blob in blobs:
            repo.objects.delete(blob)

        report = repair(repo, tmp_path / "copy")

        assert set(blobs) <= set(report.repaired)
        for blob in blobs:
            assert chain_readable_in(repo.objects.get_framed(blob), 2, repo.objects)
        for epoch, w in zip(epochs, series, strict=True):
            assert epoch.id is not None
            assert repo.checkout(epoch.id.hex).state["w"].tobytes() == w.tobytes()


def test_a_truncated_pack_is_repaired_whole(tmp_path: Path) -> None:
    # several objects cut off at once: removing the first rewrites the pack,
    # which must not stop on the others (they are restored after it)
    source = Repo.init(tmp_path / "copy", durable=False)
    line = source.session("a")
    for number in range(1, 4):
        line.commit(weights(number))
    source.close()
    work = tmp_path / "work"
    shutil.copytree(tmp_path / "copy", work)
    packs = sorted((work / ".mvc" / "objects" / "packs").glob("*.pack"))
    last = packs[-1]
    os.truncate(last, last.stat().st_size - 1000)

    with Repo.open(work, durable=False) as repo:
        problems = repo.fsck().problems
        damaged = {p.object_id for p in problems if p.object_id is not None}
        assert len(damaged) > 1

        report = repair(repo, tmp_path / "copy")

        assert {oid.hex for oid in report.repaired} >= damaged
        assert report.unrepaired == {} and report.fsck.problems == []
        for revision, number in [("a", 3), ("a~1", 2), ("a~2", 1)]:
            state = repo.checkout(revision).state
            for name, array in weights(number).items():
                assert state[name].tobytes() == array.tobytes(), revision


def _two_close_epochs(tmp_path: Path, seed: int) -> tuple[Path, Path, np.ndarray]:
    # a#2 stores "w" as a delta against a#1; loose files, and a backup copy
    work, backup = tmp_path / "work", tmp_path / "backup"
    repo = Repo.init(work, durable=False)
    assert isinstance(repo.objects, LocalObjectStore)
    repo.objects.use_packs = False
    rng = np.random.default_rng(seed)
    first = rng.standard_normal(4096).astype(np.float32)
    second = first + np.float32(1e-3) * rng.standard_normal(4096).astype(np.float32)
    session = repo.session("a")
    session.commit({"w": first})
    session.commit({"w": second})
    repo.close()
    shutil.copytree(work, backup)
    return work, backup, second


def test_a_delta_whose_base_id_lost_a_bit_is_fetched_whole(tmp_path: Path) -> None:
    # the frame then names a base no copy holds: fsck reports that id as
    # missing, and repair fetches the frame that names it from the source
    work, backup, second = _two_close_epochs(tmp_path, 3)

    with Repo.open(work, durable=False) as repo:
        blob = _ids(repo, "a")["blob"]
        path = _file(repo, blob)
        data = bytearray(path.read_bytes())
        assert data[6] in DELTA_ENCODINGS
        data[FRAME_HEADER_SIZE + 3] ^= 0x40
        path.write_bytes(bytes(data))
        problems = repo.fsck().problems
        assert [p.kind for p in problems] == ["missing"]
        assert problems[0].object_id != blob.hex
        assert f"named by the frame of blob {blob.hex}" in problems[0].detail

        report = repair(repo, backup / ".mvc")

        assert blob in report.repaired
        assert report.fsck.problems == []
        back = repo.checkout("a").state["w"]
        assert back.tobytes() == second.tobytes()
        assert_clean(repo)


def test_a_frame_whose_base_the_source_lacks_is_reported_as_such(
    tmp_path: Path,
) -> None:
    work, backup, _ = _two_close_epochs(tmp_path, 4)

    with Repo.open(work, durable=False) as repo, Repo.open(backup) as other:
        delta, base = _ids(repo, "a")["blob"], _ids(repo, "a~1")["blob"]
        assert _file(repo, delta).read_bytes()[6] in DELTA_ENCODINGS
        _file(repo, delta).unlink()
        _file(repo, base).unlink()
        _file(other, base).unlink()

        report = repair(repo, backup)

        assert report.repaired == []
        assert "does not hold it" in report.unrepaired[base]
        why = report.unrepaired[delta]
        assert f"holds it but not object {base.hex}" in why
