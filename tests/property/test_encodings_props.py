"""Every storage encoding gives back the exact bytes; none changes an id.

Tensors of every dtype and of many shapes, full of the values that break
careless code (NaN payloads, -0.0, infinities, denormals, the largest and
smallest numbers), go through each frame encoding and come back bit for bit;
committed with any storage options, an epoch gets the same id.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mvcstore import Repo
from mvcstore.arrays import numpy_dtype
from mvcstore.codec import (
    ObjectId,
    bits_frame,
    chunked_frame,
    decode_into,
    delta_frame,
    diff_frame,
    frame,
    hash_object,
    join_parts,
    planes_frame,
    unframe,
)
from mvcstore.encodings import (
    SECTION_PACKED,
    Section,
    as_bytes,
    check_section_size,
    compress_section,
    find_bit_pattern,
    pack_small,
    plane_width,
    section_bytes,
    unpack_small,
)
from mvcstore.errors import CorruptObjectError, ObjectNotFoundError
from mvcstore.objects import DTYPES
from mvcstore.stores.blobs import StorageOptions

SPECIAL_BITS: dict[int, list[int]] = {
    # NaN with payloads (quiet and signalling, both signs), -0.0, infinities,
    # denormals, the largest finite numbers
    2: [0x7E01, 0xFC02, 0x7C01, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x03FF, 0x7BFF],
    4: [
        0x7FC00001,
        0xFFA00002,
        0x7F800001,
        0x80000000,
        0x7F800000,
        0xFF800000,
        0x00000001,
        0x007FFFFF,
        0x7F7FFFFF,
    ],
    8: [
        0x7FF8000000000001,
        0xFFF4000000000002,
        0x7FF0000000000001,
        0x8000000000000000,
        0x7FF0000000000000,
        0xFFF0000000000000,
        0x0000000000000001,
        0x000FFFFFFFFFFFFF,
        0x7FEFFFFFFFFFFFFF,
    ],
    1: [0x7F, 0xFF, 0x80, 0x01, 0x00, 0x78, 0x88],
}


class DictSource:
    """A frame source over a dict, as a store would be."""

    def __init__(self) -> None:
        self.frames: dict[ObjectId, bytes] = {}

    def put(self, data: np.ndarray, framed: bytes) -> ObjectId:
        oid = hash_object("blob", as_bytes(data).data)
        self.frames[oid] = framed
        return oid

    def get_framed(self, oid: ObjectId) -> bytes:
        try:
            return self.frames[oid]
        except KeyError:
            raise ObjectNotFoundError(oid.hex) from None

    def describe(self, oid: ObjectId) -> str:
        return f"memory:{oid.short()}"


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    """A tensor of any dtype and shape, its bits drawn raw or from specials."""
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=0, max_size=3)))
    size = DTYPES[dtype]
    count = math.prod(shape)
    width = plane_width(size)
    kind = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[width]
    specials = SPECIAL_BITS[width]
    words = draw(
        st.lists(
            st.one_of(
                st.sampled_from(specials),
                st.integers(0, (1 << (8 * width)) - 1),
            ),
            min_size=count * size // width,
            max_size=count * size // width,
        )
    )
    raw = np.array(words, dtype=kind).view(np.uint8)
    if dtype == "BOOL":
        raw = raw & 1
    return dtype, raw.view(numpy_dtype(dtype)).reshape(shape)


def _round_trip(source: DictSource, data: np.ndarray, framed: bytes) -> None:
    oid = source.put(data, framed)
    out = np.empty(data.nbytes, dtype=np.uint8)
    decode_into(oid, out, source)
    assert out.tobytes() == data.tobytes()
    assert unframe(framed, object_id=oid, source=source).payload == data.tobytes()


@given(tensors())
@example(("F32", np.zeros(64, dtype=np.float32)))
@example(("F32", np.full(64, -0.0, dtype=np.float32)))
@example(("BOOL", np.ones(17, dtype=np.bool_)))
def test_every_encoding_round_trips_bit_for_bit(tensor: tuple[str, np.ndarray]) -> None:
    dtype, array = tensor
    data = as_bytes(np.ascontiguousarray(array))
    width = plane_width(DTYPES[dtype])
    source = DictSource()

    _round_trip(source, array, frame("blob", data.data, level=0))
    _round_trip(source, array, frame("blob", data.data, level=1))
    if width in (2, 4, 8):
        _round_trip(
            source, array, join_parts(planes_frame(data, width, min_saving=1.1))
        )
    pattern = find_bit_pattern(data, width)
    if pattern is not None:
        _round_trip(source, array, join_parts(bits_frame(data, width, pattern)))

    # a delta against another blob of the same length
    base = np.random.default_rng(data.size).integers(0, 256, data.size, dtype=np.uint8)
    if base.tobytes() == data.tobytes():
        return
    base_id = source.put(base, frame("blob", base.data, level=0))
    for make in (delta_frame, diff_frame):
        for saving in (1.1, 0.97):
            delta = make(
                data, base, base=base_id, depth=1, width=width, min_saving=saving
            )
            _round_trip(source, array, join_parts(delta))
    # a difference on top of an XOR delta: a mixed chain of depth 2
    middle = base ^ np.uint8(0x5A)
    xor = delta_frame(middle, base, base=base_id, depth=1, width=width)
    middle_id = source.put(middle, join_parts(xor))
    mixed = diff_frame(data, middle, base=middle_id, depth=2, width=width)
    _round_trip(source, array, join_parts(mixed))


@given(tensors(), st.integers(2, 4))
def test_chunks_of_any_length_round_trip(
    tensor: tuple[str, np.ndarray], pieces: int
) -> None:
    _, array = tensor
    data = as_bytes(np.ascontiguousarray(array))
    if data.size < pieces:
        return
    source = DictSource()
    step = math.ceil(data.size / pieces)
    chunks = []
    for start in range(0, data.size, step):
        piece = data[start : start + step]
        chunks.append(
            (source.put(piece, frame("blob", piece.data, level=1)), piece.size)
        )

    _round_trip(source, array, chunked_frame(data.size, chunks))


def _values(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(3000).astype(np.float32)
    specials = np.array(SPECIAL_BITS[4], dtype=np.uint32).view(np.float32)
    noise[: specials.size] = specials
    return {
        "w": noise.reshape(30, 100),
        "h": rng.standard_normal(777).astype(np.float16),
        "d": rng.standard_normal((9, 9)),
        "mask": rng.integers(0, 2, 1000).astype(np.bool_),
        "ones": np.ones(500, dtype=np.float32),
        "zeros": np.zeros(300, dtype=np.int64),
        "step": np.array(seed, dtype=np.int64),
    }


OPTIONS = {
    "format-1-frames": StorageOptions(encodings=False, max_delta_depth=0),
    "no-deltas": StorageOptions(max_delta_depth=0),
    "deltas": StorageOptions(max_delta_depth=3),
    "small-chunks": StorageOptions(chunk_size=256, max_delta_depth=2),
    "no-cache": StorageOptions(delta_cache_bytes=0, chunk_size=1024),
}


@settings(max_examples=3)
@given(st.integers(0, 1000))
def test_an_epoch_id_is_the_same_whichever_encoding_stored_it(
    tmp_path_factory: pytest.TempPathFactory, seed: int
) -> None:
    found: dict[str, list[ObjectId | None]] = {}
    for label, options in OPTIONS.items():
        folder = tmp_path_factory.mktemp(label)
        with Repo.init(folder, durable=False) as repo:
            repo.storage = options
            session = repo.session("main")
            ids = []
            for number in range(4):
                state = _values(seed + number // 2)
                epoch = session.commit(
                    state, params={"n": number}, meta={"t": 0}, step=number
                )
                ids.append(epoch.state)
                checkout = repo.checkout("main")
                for name, array in state.items():
                    assert checkout.state[name].tobytes() == array.tobytes(), name
            assert repo.fsck().problems == []
            found[label] = ids

    assert len({tuple(ids) for ids in found.values()}) == 1


def test_same_state_under_every_option_gives_one_state_id(tmp_path: Path) -> None:
    ids = set()
    for label, options in OPTIONS.items():
        with Repo.init(tmp_path / label, durable=False) as repo:
            repo.storage = options
            ids.add(repo.write_state(_values(5)))
    assert len(ids) == 1


@given(st.sampled_from([1, 2, 4]), st.data())
def test_small_values_pack_and_unpack_bit_for_bit(
    bits: int, data: st.DataObject
) -> None:
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=100))
    array = np.array(values, dtype=np.uint8)

    packed = pack_small(array, bits)
    out = np.empty(array.size, dtype=np.uint8)
    unpack_small(packed, bits, out)

    assert packed.size == -(-array.size // (8 // bits))
    assert out.tobytes() == array.tobytes()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 15), st.integers(1 << 16, 1 << 18), st.integers(0, 2**32 - 1))
def test_a_plane_of_small_values_is_packed_and_reads_back(
    top: int, size: int, seed: int
) -> None:
    # mostly zeros, some small values, as the high planes of a delta
    rng = np.random.default_rng(seed)
    plane = np.where(rng.random(size) < 0.8, 0, rng.integers(0, top + 1, size)).astype(
        np.uint8
    )

    method, body = compress_section(plane, min_saving=0.9)

    section = Section(method, memoryview(bytes(body)))
    check_section_size(section, size, _corrupt)
    assert section_bytes(section, size, _corrupt).tobytes() == plane.tobytes()
    if top > 0:
        assert method == SECTION_PACKED


def _corrupt(reason: str) -> CorruptObjectError:
    return CorruptObjectError(None, reason)


def test_a_chain_decodes_whatever_depths_its_members_declare() -> None:
    # two writers storing the same new blob at once may leave frames of
    # different depths for one id; every frame decodes to the same bytes
    rng = np.random.default_rng(11)
    x = rng.standard_normal(256).astype(np.float32)
    y = x + np.float32(1e-3)
    z = y * np.float32(1.001)
    source = DictSource()
    x_id = source.put(x, join_parts(planes_frame(as_bytes(x), 4)))
    y_id = source.put(
        y, join_parts(diff_frame(as_bytes(y), as_bytes(x), base=x_id, depth=1, width=4))
    )
    # the writer of z believed y whole: depth 1 over a base of depth 1
    z_frame = join_parts(
        diff_frame(as_bytes(z), as_bytes(y), base=y_id, depth=1, width=4)
    )
    z_id = source.put(z, z_frame)
    out = np.empty(z.nbytes, dtype=np.uint8)
    decode_into(z_id, out, source)
    assert out.tobytes() == z.tobytes()
    # and one that believed y three deep
    deep = join_parts(diff_frame(as_bytes(z), as_bytes(y), base=y_id, depth=4, width=4))
    source.frames[z_id] = deep
    decode_into(z_id, out, source)
    assert out.tobytes() == z.tobytes()


def test_a_chain_longer_than_255_deltas_is_refused() -> None:
    base = np.zeros(64, dtype=np.float32)
    source = DictSource()
    previous = source.put(base, join_parts(planes_frame(as_bytes(base), 4)))
    current = base
    for step in range(256):
        following = current + np.float32(1.0)
        previous = source.put(
            following,
            join_parts(
                diff_frame(
                    as_bytes(following),
                    as_bytes(current),
                    base=previous,
                    depth=min(step + 1, 255),
                    width=4,
                )
            ),
        )
        current = following
    out = np.empty(current.nbytes, dtype=np.uint8)
    with pytest.raises(CorruptObjectError, match="longer than 255"):
        decode_into(previous, out, source)
