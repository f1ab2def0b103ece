"""Storage encodings through a repository: deltas, bits, chunks, packs, format 1.

Each test commits epochs with chosen ``StorageOptions``, looks at how the
blobs were stored (frame encodings, delta depths, packs), and reads every
epoch back bit for bit. Damage is done in place, wherever an object is
stored (see ``support.overwrite_region``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from support import assert_clean, drop_object, overwrite_region, stored_region

import mvcstore.stores.packs as packs_module
from mvcstore import Epoch, Repo
from mvcstore.codec import (
    ENCODING_BITS,
    ENCODING_CHUNKED,
    ENCODING_DELTA,
    ENCODING_DIFF,
    ENCODING_PLANES,
    ENCODING_RAW,
    ENCODING_ZSTD,
    ObjectId,
    parse_frame,
    readable_in,
)
from mvcstore.errors import (
    BackendUnavailableError,
    CorruptObjectError,
    InvalidInputError,
    ObjectNotFoundError,
    RepositoryFormatError,
    RepositoryNotFoundError,
)
from mvcstore.gc import collect
from mvcstore.objects import State, Tensor
from mvcstore.repair import repair
from mvcstore.repo import FORMAT_VERSION
from mvcstore.stores.blobs import StorageOptions
from mvcstore.stores.local import LocalObjectStore

SIZE = 4096


def _weights(number: int) -> dict[str, np.ndarray]:
    """Epoch ``number`` of a slowly trained model: each is the last plus noise."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(SIZE).astype(np.float32)
    for step in range(1, number + 1):
        noise = np.random.default_rng(step).standard_normal(SIZE).astype(np.float32)
        w = (w * (1 + np.float32(1e-3) * noise)).astype(np.float32)
    return {
        "w": w.reshape(64, 64),
        "mask": (np.arange(SIZE) % (number + 2) == 0).reshape(64, 64),
        "counter": np.array([number * 100], dtype=np.int64),
    }


def _blob(repo: Repo, epoch: Epoch, name: str) -> ObjectId:
    assert epoch.state is not None
    state = repo.get(epoch.state)
    assert isinstance(state, State)
    tensor = repo.get(state.tensors[name])
    assert isinstance(tensor, Tensor)
    return tensor.data


def _encoding(repo: Repo, oid: ObjectId) -> tuple[int, int]:
    """Return a blob's frame encoding and delta depth."""
    layout = parse_frame(repo.objects.get_framed(oid))
    return layout.encoding, layout.depth


def _commit(repo: Repo, numbers: range, session: str = "main") -> list[Epoch]:
    line = repo.session(session)
    return [line.commit(_weights(number), step=number) for number in numbers]


def _assert_epoch(repo: Repo, revision: str, number: int) -> None:
    checkout = repo.checkout(revision)
    for name, array in _weights(number).items():
        assert checkout.state[name].dtype == array.dtype
        assert checkout.state[name].shape == array.shape
        assert checkout.state[name].tobytes() == array.tobytes(), (revision, name)


def _base(repo: Repo, oid: ObjectId) -> ObjectId | None:
    return parse_frame(repo.objects.get_framed(oid)).base


@pytest.mark.parametrize("cache", [True, False], ids=["cached", "read-back"])
def test_delta_chain_reaches_its_maximum_depth_then_stays_there(
    repo: Repo, cache: bool
) -> None:
    repo.storage = StorageOptions(
        max_delta_depth=3, delta_cache_bytes=1 << 20 if cache else 0, full_every=0
    )

    epochs = _commit(repo, range(9))

    blobs = [_blob(repo, epoch, "w") for epoch in epochs]
    found = [_encoding(repo, blob) for blob in blobs]
    assert found == [(ENCODING_PLANES, 0)] + [
        (ENCODING_DIFF, min(number, 3)) for number in range(1, 9)
    ]
    # the chain grows to depth 3; later epochs hang beside it, on epoch 2
    assert [_base(repo, blob) for blob in blobs[1:4]] == blobs[:3]
    assert {_base(repo, blob) for blob in blobs[3:]} == {blobs[2]}
    for number in range(9):
        _assert_epoch(repo, f"main#{number + 1}", number)


@pytest.mark.parametrize("cache", [True, False], ids=["cached", "read-back"])
def test_by_default_every_epoch_is_one_delta_against_the_last_full_copy(
    repo: Repo, cache: bool
) -> None:
    if not cache:
        repo.storage = StorageOptions(delta_cache_bytes=0)
    epochs = _commit(repo, range(8))

    # epochs 1 and 6 (numbers 1, 1 + 5) are full copies, the others deltas
    blobs = [_blob(repo, epoch, "w") for epoch in epochs]
    for full in (0, 5):
        assert _encoding(repo, blobs[full]) == (ENCODING_PLANES, 0)
        for blob in blobs[full + 1 : full + 5]:
            assert _encoding(repo, blob) == (ENCODING_DIFF, 1)
            assert _base(repo, blob) == blobs[full]
    # a fork continues from its own line's full copy
    side = repo.fork("side", at="main#3").commit(_weights(9), step=9)
    assert side.number == 4
    assert _base(repo, _blob(repo, side, "w")) == blobs[0]
    for number in range(8):
        _assert_epoch(repo, f"main#{number + 1}", number)


def test_a_tensor_far_from_its_base_starts_a_new_full_copy(repo: Repo) -> None:
    line = repo.session("main")
    rng = np.random.default_rng(5)
    states = [rng.standard_normal(SIZE).astype(np.float32)]
    states.append(states[0] * np.float32(1.001))
    states.append(rng.standard_normal(SIZE).astype(np.float32))  # retrained
    states.append(states[2] * np.float32(1.001))
    epochs = [line.commit({"w": w}) for w in states]

    blobs = [_blob(repo, epoch, "w") for epoch in epochs]
    encodings = [_encoding(repo, blob)[0] for blob in blobs]
    assert encodings == [ENCODING_PLANES, ENCODING_DIFF, ENCODING_PLANES, ENCODING_DIFF]
    assert _base(repo, blobs[3]) == blobs[2]
    for epoch, w in zip(epochs, states, strict=True):
        assert epoch.id is not None
        assert repo.checkout(epoch.id.hex).state["w"].tobytes() == w.tobytes()


def test_differences_of_every_width_round_trip_through_a_repository(
    repo: Repo,
) -> None:
    rng = np.random.default_rng(9)
    line = repo.session("main")
    first = {
        "f16": rng.standard_normal(999).astype(np.float16),
        "f64": rng.standard_normal(333).astype(np.float64),
        "c128": (rng.standard_normal(100) + 1j).astype(np.complex128),
        "i8": rng.integers(-128, 128, 1000).astype(np.int8),
        "u16": rng.integers(0, 1 << 16, 500).astype(np.uint16),
    }
    # small updates, wrap-arounds and sign flips
    second = {
        "f16": (first["f16"] * np.float16(1.01)).astype(np.float16),
        "f64": -first["f64"],
        "c128": first["c128"] * 1.0001,
        "i8": (first["i8"].astype(np.int16) + 200).astype(np.int8),
        "u16": first["u16"] - np.uint16(3),
    }
    epochs = [line.commit(first), line.commit(second)]
    for epoch, state in zip(epochs, (first, second), strict=True):
        assert epoch.id is not None
        found = repo.checkout(epoch.id.hex).state
        for name, array in state.items():
            assert found[name].tobytes() == array.tobytes(), name
    assert _encoding(repo, _blob(repo, epochs[1], "f16"))[0] == ENCODING_DIFF


@pytest.mark.damaged
def test_checkout_in_the_middle_of_a_chain_reads_only_its_own_bases(
    repo: Repo,
) -> None:
    repo.storage = StorageOptions(max_delta_depth=4)
    epochs = _commit(repo, range(5))
    middle = _blob(repo, epochs[2], "w")
    assert _encoding(repo, middle) == (ENCODING_DIFF, 2)

    # the epochs after the middle one are not needed to read it
    for later in epochs[3:]:
        drop_object(repo, _blob(repo, later, "w"))

    _assert_epoch(repo, "main#3", 2)
    _assert_epoch(repo, "main#2", 1)


def test_session_cache_and_reading_bases_back_store_the_same_frames(
    tmp_path: Path,
) -> None:
    frames = []
    for cache in (1 << 20, 0):
        with Repo.init(tmp_path / str(cache), durable=False) as repo:
            repo.storage = StorageOptions(max_delta_depth=4, delta_cache_bytes=cache)
            epochs = _commit(repo, range(4))
            frames.append(
                [repo.objects.get_framed(_blob(repo, e, "w")) for e in epochs]
            )
            assert_clean(repo)
    # the same bytes either way (zstandard is deterministic for one version)
    assert frames[0] == frames[1]


def test_new_session_objects_continue_the_chain_of_the_head(repo: Repo) -> None:
    repo.storage = StorageOptions(max_delta_depth=4)
    _commit(repo, range(2))

    # a fresh Session has no cache: it reads the parent's bytes back
    third = repo.session("main").commit(_weights(2), step=2)

    assert _encoding(repo, _blob(repo, third, "w")) == (ENCODING_DIFF, 2)
    _assert_epoch(repo, "main", 2)


@pytest.mark.damaged
def test_a_damaged_delta_base_fails_its_dependents_naming_the_base(
    repo: Repo,
) -> None:
    repo.storage = StorageOptions(max_delta_depth=4)
    epochs = _commit(repo, range(4))
    base = _blob(repo, epochs[1], "w")
    dependent = _blob(repo, epochs[3], "w")
    assert _encoding(repo, dependent) == (ENCODING_DIFF, 3)

    def flip(frame: bytearray) -> None:
        frame[-1] ^= 0x01

    overwrite_region(stored_region(repo, base), flip)

    for revision in ("main#2", "main#3", "main#4"):
        with pytest.raises(CorruptObjectError) as caught:
            repo.checkout(revision)
        assert caught.value.object_id == base.hex
        assert base.hex in str(caught.value)
    with pytest.raises(CorruptObjectError) as caught:
        repo.get(dependent)
    assert caught.value.object_id == base.hex
    assert f"in the delta chain of {dependent.hex}" in str(caught.value)
    _assert_epoch(repo, "main#1", 0)

    # fsck names the base alone, with every epoch that needs it
    report = repo.fsck()
    assert [problem.object_id for problem in report.problems] == [base.hex]
    affects = report.problems[0].affects
    for epoch in epochs[1:]:
        assert epoch.id is not None
        assert any(epoch.id.short() in item for item in affects)
    assert epochs[0].id is not None
    assert not any(epochs[0].id.short() in item for item in affects)


@pytest.mark.damaged
def test_a_missing_delta_base_is_reported_missing(repo: Repo) -> None:
    repo.storage = StorageOptions(max_delta_depth=4)
    epochs = _commit(repo, range(3))
    base = _blob(repo, epochs[1], "w")

    drop_object(repo, base)

    report = repo.fsck()
    assert [(p.kind, p.object_id) for p in report.problems] == [("missing", base.hex)]


def test_masks_and_constant_tensors_are_stored_as_bits(repo: Repo) -> None:
    state = {
        "mask": np.random.default_rng(1).integers(0, 2, 10_000).astype(np.bool_),
        "keep": np.where(np.arange(5000) % 3 == 0, 1.0, 0.0).astype(np.float32),
        "zeros": np.zeros(2048, dtype=np.float64),
        "minus-zero": np.full(512, -0.0, dtype=np.float16),
    }

    epoch = repo.session("main").commit(state)

    for name, array in state.items():
        blob = _blob(repo, epoch, name)
        assert _encoding(repo, blob)[0] == ENCODING_BITS, name
        assert len(repo.objects.get_framed(blob)) < array.nbytes / 7
    checkout = repo.checkout("main")
    for name, array in state.items():
        assert checkout.state[name].tobytes() == array.tobytes()


@pytest.mark.parametrize("size", [1024, 1000, 1024 + 4, 3 * 1024 - 4])
def test_a_large_tensor_is_stored_in_chunks_with_its_tail(
    repo: Repo, size: int
) -> None:
    repo.storage = StorageOptions(chunk_size=1024, max_delta_depth=3)
    rng = np.random.default_rng(size)
    first = rng.standard_normal(size // 4).astype(np.float32)
    second = (first * np.float32(1.001)).astype(np.float32)

    epochs = [
        repo.session("main").commit({"big": first, "small": first[:8]}),
        repo.session("main").commit({"big": second, "small": first[:8]}),
    ]

    for epoch, array in zip(epochs, (first, second), strict=True):
        blob = _blob(repo, epoch, "big")
        layout = parse_frame(repo.objects.get_framed(blob))
        if size <= 1024:
            assert layout.encoding != ENCODING_CHUNKED
            continue
        assert layout.encoding == ENCODING_CHUNKED
        lengths = [length for _, length in layout.chunks]
        assert lengths[:-1] == [1024] * (len(lengths) - 1)
        assert 0 < lengths[-1] <= 1024 and sum(lengths) == size
        checkout = repo.checkout(epoch.id.hex if epoch.id else "")
        assert checkout.state["big"].tobytes() == array.tobytes()
    if size > 1024:
        # the second epoch's chunks are deltas against the first's, chunk by chunk
        layout = parse_frame(repo.objects.get_framed(_blob(repo, epochs[1], "big")))
        encodings = {_encoding(repo, chunk)[0] for chunk, _ in layout.chunks}
        # (a tail under 64 bytes is stored raw)
        assert ENCODING_DIFF in encodings
        assert encodings <= {ENCODING_DIFF, ENCODING_PLANES, ENCODING_RAW}


@pytest.mark.damaged
def test_a_damaged_chunk_is_named(repo: Repo) -> None:
    repo.storage = StorageOptions(chunk_size=1024)
    data = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
    epoch = repo.session("main").commit({"big": data})
    layout = parse_frame(repo.objects.get_framed(_blob(repo, epoch, "big")))
    chunk = layout.chunks[1][0]

    overwrite_region(stored_region(repo, chunk), lambda frame: frame.reverse())

    with pytest.raises(CorruptObjectError) as caught:
        repo.checkout("main")
    assert caught.value.object_id == chunk.hex
    assert [p.object_id for p in repo.fsck().problems] == [chunk.hex]


def test_unchanged_chunks_of_a_large_tensor_are_stored_once(repo: Repo) -> None:
    repo.storage = StorageOptions(chunk_size=1024)
    table = np.random.default_rng(4).standard_normal(4096).astype(np.float32)
    changed = table.copy()
    changed[-1] += 1

    epochs = [repo.session("main").commit({"t": array}) for array in (table, changed)]

    chunk_lists = [
        parse_frame(repo.objects.get_framed(_blob(repo, epoch, "t"))).chunks
        for epoch in epochs
    ]
    shared = {c for c, _ in chunk_lists[0]} & {c for c, _ in chunk_lists[1]}
    assert len(shared) == len(chunk_lists[0]) - 1


def test_a_commit_writes_one_pack_and_fsyncs_a_handful_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo.init(tmp_path)
    try:
        session = repo.session("main")
        session.commit(_weights(0))
        calls = []
        real_fsync = os.fsync

        def counting(fd: int) -> None:
            calls.append(fd)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", counting)
        many = {
            f"t{index}": np.full(64, index, dtype=np.float32) for index in range(200)
        }

        session.commit({**_weights(1), **many})

        assert isinstance(repo.objects, LocalObjectStore)
        # pack, index, packs folder; SQLite's own fsyncs come on top
        assert 3 <= len(calls) <= 12
        assert len(list((repo.path / "objects" / "packs").glob("*.pack"))) == 2
        assert not [p for p in (repo.path / "objects").iterdir() if len(p.name) == 2]
    finally:
        repo.close()
    with Repo.open(tmp_path, durable=False) as reopened:
        assert_clean(reopened)


@pytest.mark.parametrize("step", ["after-pack", "index-written"])
def test_a_crash_between_a_pack_and_its_index_leaves_garbage_only(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    first = _commit(repo, range(1))[0]
    real_replace = packs_module.os.replace

    def crash(src: object, dst: object) -> None:
        if step == "index-written":
            real_replace(src, dst)  # type: ignore[arg-type]
            # the index is in place but the folder entry never became durable:
            # after a power loss it may be gone, which the next lines simulate
            Path(str(dst)).unlink()
        raise BackendUnavailableError("test", "the machine stopped here")

    class CrashingOs:
        def __getattr__(self, name: str) -> object:
            return crash if name == "replace" else getattr(os, name)

    monkeypatch.setattr(packs_module, "os", CrashingOs())
    monkeypatch.setattr(
        packs_module, "remove_quietly", lambda path: None
    )  # a crash removes nothing
    with pytest.raises(BackendUnavailableError):
        repo.session("main").commit(_weights(1), step=1)
    monkeypatch.undo()

    with Repo.open(repo.path, durable=False) as after:
        assert after.session_head("main") == first.id
        report = after.fsck()
        assert report.problems == []
        assert report.unreferenced > 0  # the pack without index, counted as garbage
        orphans = after.objects.packs.orphans()  # type: ignore[attr-defined]
        assert len(orphans) == 1
        _assert_epoch(after, "main", 0)
        # committing again works and reads back
        after.session("main").commit(_weights(1), step=1)
        _assert_epoch(after, "main", 1)
        assert after.fsck().problems == []


@pytest.mark.damaged
def test_a_damaged_pack_index_is_named_and_its_objects_missing(repo: Repo) -> None:
    epochs = _commit(repo, range(2))
    assert epochs[1].id is not None
    index = _damage_index(stored_region(repo, epochs[1].id).path)

    with Repo.open(repo.path, durable=False) as after:
        report = after.fsck()
        details = [p.detail for p in report.problems if p.object_id is None]
        assert any(str(index) in detail for detail in details)
        assert any(p.kind == "missing" for p in report.problems)
        # reading an object it lists names the skipped index, not just a path
        with pytest.raises(
            ObjectNotFoundError, match=f"damaged pack index {index.name}"
        ):
            after.checkout("main")


@pytest.mark.damaged
@pytest.mark.parametrize(
    "offset", [0, 4, 5, 7], ids=["magic", "version", "reserved", "last"]
)
def test_fsck_names_a_pack_whose_header_is_damaged(repo: Repo, offset: int) -> None:
    epochs = _commit(repo, range(1))
    assert epochs[0].id is not None
    pack = stored_region(repo, epochs[0].id).path
    data = bytearray(pack.read_bytes())
    data[offset] ^= 0x01
    pack.write_bytes(bytes(data))

    with Repo.open(repo.path, durable=False) as after:
        details = [p.detail for p in after.fsck().problems if p.object_id is None]
        assert details == [f"pack {pack} has a bad header"]


@pytest.mark.damaged
@pytest.mark.parametrize("damage", ["header", "tail"])
def test_repair_rewrites_a_pack_whose_objects_are_sound(
    repo: Repo, tmp_path: Path, damage: str
) -> None:
    _, backup, pack = _backed_up_pack(repo, tmp_path)
    data = bytearray(pack.read_bytes())
    if damage == "header":
        data[6] = 0xFF  # a reserved byte
    else:
        data += b"left over"
    pack.write_bytes(bytes(data))

    with Repo.open(repo.path, durable=False) as after:
        assert [p.object_id for p in after.fsck().problems] == [None]
        report = repair(after, backup)

        assert report.fsck.problems == [] and report.repaired == []
        assert not pack.exists()
        _assert_epoch(after, "main~1", 0)
        _assert_epoch(after, "main", 1)
        assert_clean(after)


def _backed_up_pack(repo: Repo, tmp_path: Path) -> tuple[list[Epoch], Path, Path]:
    # two epochs committed, a copy of the repository, and the pack of the second
    epochs = _commit(repo, range(2))
    assert epochs[1].id is not None
    repo.objects.flush()
    backup = tmp_path / "backup"
    shutil.copytree(repo.path, backup)
    return epochs, backup, stored_region(repo, epochs[1].id).path


def _damage_index(pack: Path) -> Path:
    index = pack.with_suffix(".idx")
    data = bytearray(index.read_bytes())
    data[30] ^= 0xFF
    index.write_bytes(bytes(data))
    return index


@pytest.mark.damaged
def test_repair_drops_a_damaged_index_once_its_objects_are_restored(
    repo: Repo, tmp_path: Path
) -> None:
    _, backup, pack = _backed_up_pack(repo, tmp_path)
    index = _damage_index(pack)

    with Repo.open(repo.path, durable=False) as after:
        assert after.fsck().problems != []
        report = repair(after, backup)

        assert report.fsck.problems == []
        assert not index.exists()
        assert index.with_suffix(".pack").exists()  # garbage now, for gc
        _assert_epoch(after, "main~1", 0)
        _assert_epoch(after, "main", 1)


@pytest.mark.damaged
def test_repair_drops_a_damaged_index_whose_pack_was_emptied(
    repo: Repo, tmp_path: Path
) -> None:
    _, backup, pack = _backed_up_pack(repo, tmp_path)
    index = pack.with_suffix(".idx")
    index.write_bytes(b"")
    pack.write_bytes(b"")

    with Repo.open(repo.path, durable=False) as after:
        report = repair(after, backup)

        assert report.fsck.problems == []
        assert not index.exists()
        _assert_epoch(after, "main", 1)
        assert collect(after, grace_s=0).temporaries >= 1  # the empty pack
        assert not pack.exists()
        assert after.fsck().problems == []


@pytest.mark.damaged
def test_a_damaged_index_stays_when_its_pack_does_not_read_whole(
    repo: Repo, tmp_path: Path
) -> None:
    # a record header damaged too: what lies past it is unknown, so the
    # index is kept (and reported) even when every record before it is restored
    _, backup, pack = _backed_up_pack(repo, tmp_path)
    index = _damage_index(pack)
    body = bytearray(pack.read_bytes())
    records = packs_module.scan_records(pack)
    assert len(records) > 1
    # the top byte of the last record's length (8 bytes, little-endian)
    last = body.rfind(records[-1].raw)
    body[last + 32 + 7] ^= 0x01
    pack.write_bytes(bytes(body))
    assert packs_module.scan_pack(pack)[1] is False

    with Repo.open(repo.path, durable=False) as after:
        report = repair(after, backup)

        assert index.exists()
        details = [p.detail for p in report.fsck.problems if p.object_id is None]
        assert any(str(index) in detail for detail in details)


@pytest.mark.damaged
def test_a_pack_file_deleted_under_its_index_is_reported_and_repaired(
    repo: Repo, tmp_path: Path
) -> None:
    epochs, backup, pack = _backed_up_pack(repo, tmp_path)
    pack.unlink()

    with Repo.open(repo.path, durable=False) as after:
        found = after.fsck()  # reports, does not stop at the first read
        assert any(p.object_id == epochs[1].id.hex for p in found.problems)
        with pytest.raises(ObjectNotFoundError):
            after.checkout("main")

        report = repair(after, backup)

        assert report.fsck.problems == []
        assert not pack.with_suffix(".idx").exists()
        _assert_epoch(after, "main~1", 0)
        _assert_epoch(after, "main", 1)


def test_open_folder_opens_exactly_the_folder_given(repo: Repo, tmp_path: Path) -> None:
    _commit(repo, range(1))
    repo.objects.flush()
    copy = tmp_path / "copy-of-mvc"  # inside the repository's own folder
    shutil.copytree(repo.path, copy)
    with Repo.open_folder(copy, durable=False) as opened:
        assert opened.path == copy
        _assert_epoch(opened, "main", 0)
    with pytest.raises(RepositoryNotFoundError):
        Repo.open_folder(tmp_path / "nothing-here")


@pytest.mark.damaged
def test_a_damaged_index_whose_objects_are_nowhere_else_is_kept(
    repo: Repo, tmp_path: Path
) -> None:
    epochs = _commit(repo, range(2))
    assert epochs[1].id is not None
    index = stored_region(repo, epochs[1].id).path.with_suffix(".idx")
    data = bytearray(index.read_bytes())
    data[30] ^= 0xFF
    index.write_bytes(bytes(data))
    empty = Repo.init(tmp_path / "empty", durable=False)
    empty.close()

    with Repo.open(repo.path, durable=False) as after:
        report = repair(after, tmp_path / "empty")

        assert report.unrepaired
        assert index.exists()
        details = [p.detail for p in report.fsck.problems if p.object_id is None]
        assert any(str(index) in detail for detail in details)


def _write_format_1(path: Path) -> list[Epoch]:
    # what mvcstore 0.1 wrote: whole frames (raw or zstandard) in loose files
    repo = Repo.init(path, durable=False)
    try:
        repo._use_format(1)
        epochs = _commit(repo, range(3))
        repo.fork("side", at="main#2").commit(_weights(9), step=9)
    finally:
        repo.close()
    config = path / ".mvc" / "config.json"
    values = json.loads(config.read_text())
    values["version"] = 1
    config.write_text(json.dumps(values))
    return epochs


def test_a_format_1_repository_is_read_and_written_as_format_1(tmp_path: Path) -> None:
    epochs = _write_format_1(tmp_path)

    with Repo.open(tmp_path, durable=False) as repo:
        assert repo.format_version == 1
        for number, epoch in enumerate(epochs):
            assert epoch.id is not None
            _assert_epoch(repo, epoch.id.hex, number)
        _assert_epoch(repo, "side", 9)
        more = _commit(repo, range(3, 5))
        _assert_epoch(repo, "main", 4)
        assert_clean(repo)
        for oid in repo.objects.iter_ids():
            assert _encoding(repo, oid)[0] in (ENCODING_RAW, ENCODING_ZSTD)
        assert not list((tmp_path / ".mvc" / "objects").glob("packs/*.pack"))
        assert more[-1].id is not None
    assert json.loads((tmp_path / ".mvc" / "config.json").read_text())["version"] == 1


def test_a_format_1_repository_upgrades_without_rewriting_objects(
    tmp_path: Path,
) -> None:
    epochs = _write_format_1(tmp_path)

    with Repo.open(tmp_path, durable=False) as repo:
        before = set(repo.objects.iter_ids())
        repo.upgrade_format()
        assert repo.format_version == FORMAT_VERSION
        later = repo.session("main").commit(_weights(3), step=3)
        _assert_epoch(repo, "main", 3)
        assert before <= set(repo.objects.iter_ids())
        assert _encoding(repo, _blob(repo, later, "w"))[0] == ENCODING_DIFF
        assert_clean(repo)
    with Repo.open(tmp_path, durable=False) as reopened:
        assert reopened.format_version == FORMAT_VERSION
        for number, epoch in enumerate(epochs):
            assert epoch.id is not None
            _assert_epoch(reopened, epoch.id.hex, number)


def test_a_newer_format_is_refused_with_a_hint(tmp_path: Path) -> None:
    Repo.init(tmp_path, durable=False).close()
    config = tmp_path / ".mvc" / "config.json"
    values = json.loads(config.read_text())
    values["version"] = FORMAT_VERSION + 1
    config.write_text(json.dumps(values))

    with pytest.raises(RepositoryFormatError) as caught:
        Repo.open(tmp_path)
    assert caught.value.hint is not None and "upgrade mvcstore" in caught.value.hint


def test_stats_split_dedup_deltas_and_compression(repo: Repo) -> None:
    repo.storage = StorageOptions(max_delta_depth=3)
    epochs = _commit(repo, range(5))
    repo.fork("side", at="main#3").commit(_weights(2), step=10)
    repo.fork("idle", at="main#2")  # no epoch of its own yet

    stats = repo.stats(all_refs=True)

    total = stats.total
    assert total.epochs == 6 and total.tensors == 18
    assert total.logical_bytes == 6 * sum(a.nbytes for a in _weights(0).values())
    assert total.unique_bytes < total.logical_bytes  # side repeats main#3
    assert total.dedup_ratio > 1
    assert total.delta_ratio > 1.3 and total.compression_ratio > 1
    assert total.stored_bytes < total.logical_bytes
    assert total.stored_bytes > total.data_stored_bytes > 0
    assert dict(total.encodings)["diff"] == 4
    assert set(stats.sessions) == {"main", "side", "idle"}
    assert stats.sessions["main"].epochs == 5 and stats.sessions["side"].epochs == 1
    assert stats.sessions["idle"].epochs == 0
    assert stats.sessions["idle"].stored_bytes == 0
    head = repo.stats("main~2")
    assert head.total.epochs == 3
    assert epochs[-1].id is not None
    json.dumps(stats.to_json())


@pytest.mark.damaged
def test_a_damaged_parent_does_not_stop_the_next_commit(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    repo.storage = StorageOptions(max_delta_depth=4)
    epochs = _commit(repo, range(2))
    damaged = _blob(repo, epochs[1], "w")

    def flip(frame: bytearray) -> None:
        frame[-1] ^= 0x01

    overwrite_region(stored_region(repo, damaged), flip)

    # a new session object has no cache: it would read the parent back
    third = repo.session("main").commit(_weights(2), step=2)

    assert _encoding(repo, _blob(repo, third, "w"))[0] == ENCODING_PLANES
    assert damaged.hex in caplog.text
    _assert_epoch(repo, "main", 2)
    assert [p.object_id for p in repo.fsck().problems] == [damaged.hex]


def _write_format_2(path: Path) -> list[Epoch]:
    # what format 2 wrote: XOR deltas, here in chains of up to 4
    repo = Repo.init(path, durable=False)
    try:
        repo._use_format(2)
        repo.storage = replace(repo.storage, max_delta_depth=4)
        epochs = _commit(repo, range(3))
    finally:
        repo.close()
    config = path / ".mvc" / "config.json"
    values = json.loads(config.read_text())
    values["version"] = 2
    config.write_text(json.dumps(values))
    return epochs


def test_a_format_2_repository_keeps_xor_deltas_until_upgraded(tmp_path: Path) -> None:
    epochs = _write_format_2(tmp_path)

    with Repo.open(tmp_path, durable=False) as repo:
        assert repo.format_version == 2
        assert _encoding(repo, _blob(repo, epochs[2], "w")) == (ENCODING_DELTA, 2)
        repo.storage = replace(repo.storage, max_delta_depth=4)
        third = repo.session("main").commit(_weights(3), step=3)
        assert _encoding(repo, _blob(repo, third, "w")) == (ENCODING_DELTA, 3)

        repo.upgrade_format()
        assert repo.format_version == FORMAT_VERSION
        repo.storage = StorageOptions(max_delta_depth=8)
        # a difference on top of a chain of XOR deltas: one chain, both kinds
        fourth = repo.session("main").commit(_weights(4), step=4)
        assert _encoding(repo, _blob(repo, fourth, "w")) == (ENCODING_DIFF, 4)
        for number in range(5):
            _assert_epoch(repo, f"main#{number + 1}", number)
        assert_clean(repo)
    with Repo.open(tmp_path, durable=False) as reopened:
        assert reopened.format_version == FORMAT_VERSION
        _assert_epoch(reopened, "main", 4)


@pytest.mark.parametrize("cache", [True, False], ids=["cached", "read-back"])
def test_a_full_copy_epoch_keeps_deltas_against_a_parent_stored_whole(
    repo: Repo, cache: bool
) -> None:
    repo.storage = StorageOptions(
        full_every=2, delta_cache_bytes=1 << 20 if cache else 0
    )
    line = repo.session("main")
    rng = np.random.default_rng(3)
    big = rng.standard_normal(SIZE).astype(np.float32)
    pruned = big[: SIZE // 2].copy()  # a new shape: no base, stored whole
    states = [
        {"w": big, "v": big},
        {"w": pruned, "v": big * np.float32(1.001)},
        {"w": pruned * np.float32(1.001), "v": big * np.float32(1.002)},
    ]
    epochs = [line.commit(state) for state in states]

    # epoch 3 is a full-copy epoch: "v" (a delta before) is stored whole, but
    # "w" is a delta against epoch 2's, which is a full copy already
    w = [_blob(repo, epoch, "w") for epoch in epochs]
    v = [_blob(repo, epoch, "v") for epoch in epochs]
    assert _encoding(repo, w[1])[0] == ENCODING_PLANES
    assert _encoding(repo, w[2])[0] == ENCODING_DIFF and _base(repo, w[2]) == w[1]
    assert _encoding(repo, v[1])[0] == ENCODING_DIFF
    assert _encoding(repo, v[2])[0] == ENCODING_PLANES
    for epoch, state in zip(epochs, states, strict=True):
        assert epoch.id is not None
        found = repo.checkout(epoch.id.hex).state
        for name, array in state.items():
            assert found[name].tobytes() == array.tobytes()


@pytest.mark.parametrize("version", [1, 2])
def test_options_set_on_an_older_repository_keep_its_format(
    tmp_path: Path, version: int
) -> None:
    repo = Repo.init(tmp_path, durable=False)
    repo._use_format(version)
    repo.storage = StorageOptions(max_delta_depth=4, delta_cache_bytes=0)
    rng = np.random.default_rng(2)
    w = rng.standard_normal(1 << 16).astype(np.float32)
    line = repo.session("main")
    for _ in range(4):
        w = (w * np.float32(1.0005)).astype(np.float32)
        line.commit({"w": w})

    for oid in repo.objects.iter_ids():
        framed = repo.objects.get_framed(oid)
        assert readable_in(framed, version), parse_frame(framed).encoding
    assert_clean(repo)
    repo.close()


def test_a_blob_shared_by_two_dtypes_keeps_each_chain_to_one_width(
    repo: Repo,
) -> None:
    # the same bytes as float32 and as float16: one blob, stored once with one
    # width; the float16 tensor's chain must not grow on it with another
    repo.storage = StorageOptions(max_delta_depth=3, delta_cache_bytes=0)
    rng = np.random.default_rng(6)
    raw = rng.standard_normal(1024).astype(np.float32)
    line = repo.session("main")
    states = []
    for _ in range(5):
        raw = (raw * np.float32(1.0001)).astype(np.float32)
        states.append({"a": raw.copy(), "b": raw.view(np.float16).copy()})
        line.commit(states[-1])
    for number, state in enumerate(states, start=1):
        found = repo.checkout(f"main#{number}").state
        for name, array in state.items():
            assert found[name].tobytes() == array.tobytes(), (number, name)
    assert_clean(repo)


@pytest.mark.parametrize(
    "options",
    [
        {"level": 23},
        {"level": 0},
        {"level": "x"},
        {"chunk_size": 64.0},
        {"min_saving": -1},
        {"min_saving": 5.0},
        {"min_saving": float("nan")},
        {"delta_cache_bytes": -1},
        {"max_delta_depth": 2.5},
        {"full_every": 1.5},
        {"full_every": True},
    ],
)
def test_storage_options_refuse_values_a_commit_could_not_use(
    options: dict[str, object],
) -> None:
    with pytest.raises(InvalidInputError):
        StorageOptions(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [0, -1, "3", True, None, 2.0])
def test_a_damaged_format_version_is_called_damaged(
    tmp_path: Path, version: object
) -> None:
    Repo.init(tmp_path, durable=False).close()
    config = tmp_path / ".mvc" / "config.json"
    values = json.loads(config.read_text())
    values["version"] = version
    config.write_text(json.dumps(values))

    with pytest.raises(RepositoryFormatError) as caught:
        Repo.open(tmp_path)
    assert "not a format version" in str(caught.value)
    assert caught.value.hint is not None and "damaged" in caught.value.hint
