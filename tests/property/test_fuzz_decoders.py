"""Hostile bytes given to every decoder raise only the project's own errors.

Arbitrary bytes, valid frames with bytes flipped, cut or appended, msgpack
trees of the wrong shape and safetensors files with lying headers go to the
frame decoder, the msgpack decoder, the object decoders, the verified read of
a store and the safetensors reader. Each either decodes or raises the one
error its contract names (CorruptObjectError for stored objects,
InvalidInputError for a user's file); none may hang, raise anything else or
allocate what an unchecked length field claims (a hostile length must fail
before the allocation: the tests below would run out of memory otherwise).
"""

from __future__ import annotations

import struct
import tempfile
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mvcstore.codec import (
    FRAME_HEADER_SIZE,
    KINDS,
    MAX_OBJECT_SIZE,
    ObjectId,
    decode,
    frame,
    hash_object,
    unframe,
)
from mvcstore.errors import CorruptObjectError, InvalidInputError, ObjectNotFoundError
from mvcstore.objects import decode_object
from mvcstore.stfile import read_safetensors
from mvcstore.stores.base import get_object

EXAMPLES = settings(max_examples=300)

_HEADER = struct.Struct("<4sBBBBQ")


class DictStore:
    """A minimal object store over a dict, for the verified read path."""

    location = "memory"

    def __init__(self, frames: dict[ObjectId, bytes]) -> None:
        self.frames = frames

    def get_framed(self, oid: ObjectId) -> bytes:
        if oid not in self.frames:
            raise ObjectNotFoundError(oid.hex, location="memory")
        return self.frames[oid]

    def describe(self, oid: ObjectId) -> str:
        return f"memory:{oid.short()}"

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        return {oid for oid in oids if oid in self.frames}

    def iter_ids(self) -> Iterator[ObjectId]:
        return iter(self.frames)

    def put_if_absent(self, oid: ObjectId, framed: bytes) -> bool:
        return self.frames.setdefault(oid, framed) is framed

    def delete(self, oid: ObjectId) -> None:
        self.frames.pop(oid, None)

    def flush(self) -> None:
        return None


SOME_ID = hash_object("blob", b"some blob")


def headers() -> st.SearchStrategy[bytes]:
    """Frame headers with plausible and implausible fields."""
    return st.builds(
        lambda kind, encoding, size: _HEADER.pack(b"mvco", 1, kind, encoding, 0, size),
        st.integers(0, 7),
        st.integers(0, 7),
        st.one_of(
            st.integers(0, 4096),
            st.sampled_from([MAX_OBJECT_SIZE, MAX_OBJECT_SIZE + 1, 2**63, 2**64 - 1]),
        ),
    )


frame_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda head, body: head + body, headers(), st.binary(max_size=300)),
)


def _unframe_only_corrupt(data: bytes, oid: ObjectId | None) -> None:
    source = DictStore({SOME_ID: frame("blob", b"some blob")})
    try:
        unframe(data, object_id=oid, location="fuzz", source=source)
    except (CorruptObjectError, ObjectNotFoundError):
        pass


@EXAMPLES
@given(frame_bytes)
@example(_HEADER.pack(b"mvco", 1, 1, 0, 0, MAX_OBJECT_SIZE))
@example(_HEADER.pack(b"mvco", 1, 1, 1, 0, MAX_OBJECT_SIZE) + b"\x28\xb5\x2f\xfd")
@example(_HEADER.pack(b"mvco", 1, 1, 2, 0, MAX_OBJECT_SIZE) + b"\x04")
@example(_HEADER.pack(b"mvco", 1, 1, 4, 0, MAX_OBJECT_SIZE) + b"\x04\0\0\0\0")
@example(_HEADER.pack(b"mvco", 1, 1, 5, 0, 2**47) + struct.pack("<Q", 2**40))
def test_unframe_of_arbitrary_bytes_raises_only_corrupt_object(data: bytes) -> None:
    _unframe_only_corrupt(data, None)
    _unframe_only_corrupt(data, SOME_ID)


@EXAMPLES
@given(
    st.sampled_from(sorted(KINDS)),
    st.binary(min_size=0, max_size=2000),
    st.integers(0, 3),
    st.data(),
)
def test_a_damaged_valid_frame_never_decodes_to_other_content(
    kind: str, payload: bytes, level: int, data: st.DataObject
) -> None:
    stored = frame(kind, payload, level=level)
    oid = hash_object(kind, payload)
    damage = data.draw(st.sampled_from(["flip", "cut", "append", "swap-header"]))
    mutated = bytearray(stored)
    if damage == "flip":
        at = data.draw(st.integers(0, len(mutated) - 1))
        mutated[at] ^= data.draw(st.integers(1, 255))
    elif damage == "cut":
        del mutated[data.draw(st.integers(0, len(mutated) - 1)) :]
    elif damage == "append":
        mutated += data.draw(st.binary(min_size=1, max_size=20))
    else:
        mutated[:FRAME_HEADER_SIZE] = data.draw(headers())

    try:
        decoded = unframe(bytes(mutated), object_id=oid, location="fuzz")
    except CorruptObjectError:
        return
    # a change the id cannot see is one that changes nothing decoded
    assert (decoded.kind, decoded.payload) == (kind, payload)


# msgpack trees of every shape, including the ones no object has
trees = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=40),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
    ),
    max_leaves=25,
)


@EXAMPLES
@given(st.binary(max_size=400))
@example(b"\xdd\xff\xff\xff\xff")  # array32 claiming 4 billion items
@example(b"\xdf\xff\xff\xff\xff")  # map32 claiming 4 billion entries
@example(b"\xc6\xff\xff\xff\xff")  # bin32 claiming 4 GiB
@example(b"\xdb\xff\xff\xff\xff")  # str32 claiming 4 GiB
@example(b"\xc9\xff\xff\xff\xff\x01")  # ext32 claiming 4 GiB
@example(b"\x91" * 5000 + b"\xc0")  # deep nesting
def test_decode_of_arbitrary_bytes_raises_only_corrupt_object(data: bytes) -> None:
    try:
        decode(data)
    except CorruptObjectError:
        pass


@EXAMPLES
@given(st.sampled_from(sorted(KINDS)), st.one_of(st.binary(max_size=300), trees))
def test_decode_object_raises_only_corrupt_object(kind: str, value: object) -> None:
    payload = value if isinstance(value, bytes) else msgpack.packb(value)
    try:
        decode_object(kind, payload, oid=SOME_ID)
    except CorruptObjectError:
        pass


@EXAMPLES
@given(st.sampled_from(["tensor", "state", "epoch"]), st.data())
def test_objects_with_fields_of_the_wrong_type_are_corrupt(
    kind: str, data: st.DataObject
) -> None:
    fields = {
        "tensor": ["dtype", "shape", "data", "nbytes"],
        "state": ["tensors"],
        "epoch": [
            "parents",
            "state",
            "graph",
            "extra",
            "params",
            "number",
            "step",
            "time_ns",
            "message",
            "summary",
            "uid",
            "session",
            "meta",
        ],
    }[kind]
    value = {name: data.draw(trees, label=name) for name in fields}
    try:
        decode_object(kind, msgpack.packb(value), oid=SOME_ID)
    except CorruptObjectError:
        pass


@EXAMPLES
@given(frame_bytes)
def test_a_verified_read_of_arbitrary_bytes_raises_only_corrupt_object(
    data: bytes,
) -> None:
    store = DictStore({SOME_ID: data})
    try:
        get_object(store, SOME_ID)
    except (CorruptObjectError, ObjectNotFoundError):
        pass


def _read_safetensors_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.safetensors"
        path.write_bytes(data)
        try:
            read_safetensors(path)
        except InvalidInputError:
            pass


def _safetensors(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


@EXAMPLES
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda size, rest: struct.pack("<Q", size) + rest,
            st.integers(0, 2**64 - 1),
            st.binary(max_size=100),
        ),
        st.builds(
            lambda header, data: _safetensors(header.encode(), data),
            st.text(max_size=200),
            st.binary(max_size=64),
        ),
    )
)
@example(struct.pack("<Q", 2**63) + b"{}")  # a header claiming 8 EiB
@example(
    _safetensors(b'{"t":{"dtype":"F32","shape":[4294967296],"data_offsets":[0,4]}}')
)
@example(
    _safetensors(b'{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', b"\0" * 4)
)
@example(
    _safetensors(b'{"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}', b"\0" * 4)
)
@example(_safetensors(b'{"__metadata__":{"a":1}}'))
@example(_safetensors(b"[" * 100_000))
def test_safetensors_reader_raises_only_invalid_input(data: bytes) -> None:
    _read_safetensors_bytes(data)


def test_a_safetensors_header_claiming_a_huge_size_is_refused_before_reading(
    tmp_path: Path,
) -> None:
    path = tmp_path / "liar.safetensors"
    path.write_bytes(struct.pack("<Q", 50 * 2**30) + b"{}" + b" " * 64)

    try:
        read_safetensors(path)
    except InvalidInputError as exc:
        assert "header claims" in exc.message and str(path) in exc.message
    else:
        raise AssertionError("a lying header was accepted")


def test_a_valid_safetensors_file_still_reads(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "ok.safetensors"
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_file({"x": array}, str(path))

    tensors, _ = read_safetensors(path)

    assert bytes(tensors["x"].data) == array.tobytes()


_CHUNK = hash_object("blob", b"a chunk").raw
_SECTION = struct.Struct("<BQ")
HUGE_CLAIMS = {
    "planes": _HEADER.pack(b"mvco", 1, 1, 2, 0, MAX_OBJECT_SIZE)
    + bytes([4])
    + _SECTION.pack(0, 0) * 4,
    "bits": _HEADER.pack(b"mvco", 1, 1, 4, 0, MAX_OBJECT_SIZE)
    + bytes([4])
    + bytes(4)
    + _SECTION.pack(0, 0),
    "delta": _HEADER.pack(b"mvco", 1, 1, 3, 0, MAX_OBJECT_SIZE)
    + _CHUNK
    + bytes([1, 4])
    + _SECTION.pack(0, 0) * 4,
    "chunked": _HEADER.pack(b"mvco", 1, 1, 5, 0, 16 * MAX_OBJECT_SIZE)
    + struct.pack("<Q", 16)
    + (_CHUNK + struct.pack("<Q", MAX_OBJECT_SIZE)) * 16,
}


@pytest.mark.parametrize("encoding", sorted(HUGE_CLAIMS))
def test_a_small_frame_claiming_a_huge_size_fails_before_allocating(
    encoding: str,
) -> None:
    # tens of bytes that claim 64 GiB or more: refused without the allocation,
    # measured by tracemalloc (numpy reports its buffers to it)
    source = DictStore({})
    tracemalloc.start()
    try:
        unframe(HUGE_CLAIMS[encoding], object_id=SOME_ID, source=source)
    except (CorruptObjectError, ObjectNotFoundError):
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{encoding}: {peak} bytes allocated"
