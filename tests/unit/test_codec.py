"""The canonical encoding, ids and the stored frame."""

from __future__ import annotations

import math
import struct

import msgpack
import numpy as np
import pytest

from mvcstore import codec
from mvcstore.codec import FRAME_HEADER_SIZE, ObjectId
from mvcstore.errors import CorruptObjectError, InvalidInputError

NEGATIVE_NAN = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000001))[0]
SIGNALLING_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001))[0]


def _id(value: object) -> ObjectId:
    return codec.hash_object("graph", codec.encode(value))


def test_round_trip_keeps_every_supported_type() -> None:
    value = {
        "none": None,
        "flag": True,
        "int": -(1 << 63),
        "big": (1 << 64) - 1,
        "float": 2.5,
        "text": "héllo",
        "raw": b"\x00\xff",
        "list": [1, [2.0, "x"], {}],
    }

    assert codec.decode(codec.encode(value)) == value


def test_key_order_does_not_change_the_bytes() -> None:
    forward = {"a": 1, "b": {"x": 1, "y": 2}, "c": 3}
    backward = {"c": 3, "b": {"y": 2, "x": 1}, "a": 1}

    assert codec.encode(forward) == codec.encode(backward)
    assert _id(forward) == _id(backward)


def test_keys_sort_by_utf8_bytes() -> None:
    decoded = codec.decode(codec.encode({"é": 1, "z": 2, "B": 3, "a": 4}))

    assert isinstance(decoded, dict)
    assert list(decoded) == ["B", "a", "z", "é"]


def test_negative_zero_encodes_as_zero() -> None:
    assert codec.encode(-0.0) == codec.encode(0.0)
    assert math.copysign(1.0, codec.decode(codec.encode(-0.0))) == 1.0


def test_every_nan_encodes_as_one_value() -> None:
    encodings = {
        codec.encode(math.nan),
        codec.encode(-math.nan),
        codec.encode(NEGATIVE_NAN),
        codec.encode(SIGNALLING_NAN),
        codec.encode(float(np.float32("nan"))),
    }

    assert len(encodings) == 1


def test_bool_int_and_float_encode_differently() -> None:
    encodings = {codec.encode(True), codec.encode(1), codec.encode(1.0)}

    assert len(encodings) == 3
    assert len({_id([True]), _id([1]), _id([1.0])}) == 3


def test_floats_always_take_eight_bytes() -> None:
    # a float that fits in 32 bits must not get a shorter encoding
    assert len(codec.encode(0.5)) == 9


def test_tuples_encode_as_lists() -> None:
    assert codec.encode((1, 2, (3,))) == codec.encode([1, 2, [3]])


def test_numpy_scalars_encode_as_python_numbers() -> None:
    assert codec.encode(np.int64(7)) == codec.encode(7)
    assert codec.encode(np.float32(0.5)) == codec.encode(0.5)
    assert codec.encode(np.bool_(True)) == codec.encode(True)


def test_object_ids_encode_as_raw_bytes() -> None:
    oid = codec.hash_object("blob", b"data")

    assert codec.encode({"x": oid}) == codec.encode({"x": oid.raw})


def test_bytearray_and_memoryview_encode_as_bytes() -> None:
    assert codec.encode(bytearray(b"ab")) == codec.encode(b"ab")
    assert codec.encode(memoryview(b"ab")) == codec.encode(b"ab")


@pytest.mark.parametrize("value", [1 << 64, -(1 << 63) - 1])
def test_integer_outside_64_bits_is_refused(value: int) -> None:
    with pytest.raises(InvalidInputError, match="64 bits"):
        codec.encode(value)


def test_non_string_map_key_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="map keys must be strings"):
        codec.encode({1: "x"})


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="UTF-8"):
        codec.encode({"\ud800": 1})


@pytest.mark.parametrize("value", [{1, 2}, object(), 1 + 2j, np.zeros(3)])
def test_unsupported_type_is_refused(value: object) -> None:
    with pytest.raises(InvalidInputError, match="cannot encode"):
        codec.encode(value)


def test_decode_refuses_trailing_bytes() -> None:
    with pytest.raises(CorruptObjectError, match="bad msgpack"):
        codec.decode(codec.encode(1) + b"\x00")


def test_decode_refuses_bytes_map_keys() -> None:
    data = msgpack.packb({b"key": 1}, use_bin_type=True)

    with pytest.raises(CorruptObjectError, match="map key"):
        codec.decode(data)


def test_decode_refuses_extension_types() -> None:
    data = msgpack.packb([msgpack.ExtType(3, b"xy")], use_bin_type=True)

    with pytest.raises(CorruptObjectError, match="ExtType"):
        codec.decode(data)


def test_decode_error_names_the_object() -> None:
    oid = codec.hash_object("graph", b"\xc1")

    with pytest.raises(CorruptObjectError) as caught:
        codec.decode(b"\xc1", object_id=oid)

    assert caught.value.object_id == oid.hex
    assert oid.hex in str(caught.value)


def test_id_depends_on_kind() -> None:
    payload = codec.encode({"x": 1})

    ids = {codec.hash_object(kind, payload) for kind in codec.KINDS}

    assert len(ids) == len(codec.KINDS)


def test_id_of_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown object kind"):
        codec.hash_object("commit", b"")


def test_object_id_hex_round_trips() -> None:
    oid = codec.hash_object("blob", b"payload")

    assert ObjectId.from_hex(oid.hex) == oid
    assert str(oid) == oid.hex
    assert oid.short() == oid.hex[:12]
    assert oid.short(4) == oid.hex[:4]


@pytest.mark.parametrize("text", ["", "ab", "g" * 64, "0" * 63, "0" * 65])
def test_object_id_from_bad_hex_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        ObjectId.from_hex(text)


@pytest.mark.parametrize("raw", [b"", b"\x00" * 31, b"\x00" * 33])
def test_object_id_needs_32_bytes(raw: bytes) -> None:
    with pytest.raises(InvalidInputError):
        ObjectId(raw)


def test_compressible_payload_is_stored_compressed() -> None:
    payload = b"abcd" * 4096

    framed = codec.frame("blob", payload)

    assert len(framed) < len(payload) // 4
    assert codec.unframe(framed).payload == payload


def test_incompressible_payload_is_stored_raw() -> None:
    payload = np.random.default_rng(0).bytes(4096)

    framed = codec.frame("blob", payload)

    assert framed[FRAME_HEADER_SIZE:] == payload


def test_level_zero_stores_raw() -> None:
    payload = b"abcd" * 4096

    framed = codec.frame("blob", payload, level=0)

    assert framed[FRAME_HEADER_SIZE:] == payload


def test_compression_does_not_change_the_id() -> None:
    payload = b"abcd" * 4096
    oid = codec.hash_object("blob", payload)

    for level in (0, 1, 3, 19):
        framed = codec.frame("blob", payload, level=level)
        assert codec.unframe(framed, object_id=oid).payload == payload


def test_unframe_returns_kind_and_payload() -> None:
    payload = codec.encode({"tensors": {}})

    decoded = codec.unframe(codec.frame("state", payload))

    assert decoded.kind == "state"
    assert decoded.payload == payload


def _header(
    *,
    magic: bytes = b"mvco",
    version: int = 1,
    code: int = 1,
    encoding: int = 0,
    reserved: int = 0,
    size: int = 0,
) -> bytes:
    return struct.pack("<4sBBBBQ", magic, version, code, encoding, reserved, size)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter than a frame header"),
        (b"mvco", "shorter than a frame header"),
        (_header(magic=b"MVCO"), "bad frame magic"),
        (_header(version=2), "unknown frame version"),
        (_header(reserved=1), "unknown frame version"),
        (_header(code=0), "unknown kind code"),
        (_header(code=6), "unknown kind code"),
        (_header(encoding=7), "unknown encoding"),
        (_header(size=(1 << 36) + 1), "exceeds the limit"),
        (_header(size=4) + b"abc", "header says 4"),
        (_header(size=2) + b"abc", "header says 2"),
        (_header(encoding=1, size=3) + b"abc", "bad zstandard"),
    ],
)
def test_malformed_frame_is_corrupt(data: bytes, reason: str) -> None:
    with pytest.raises(CorruptObjectError, match=reason):
        codec.unframe(data)


def test_compressed_frame_with_wrong_declared_size_is_corrupt() -> None:
    framed = bytearray(codec.frame("blob", b"abcd" * 4096))
    framed[8:16] = struct.pack("<Q", 4 * 4096 - 1)

    with pytest.raises(CorruptObjectError, match="header says"):
        codec.unframe(bytes(framed))


def test_frame_of_other_content_does_not_verify() -> None:
    oid = codec.hash_object("blob", b"expected")

    with pytest.raises(CorruptObjectError, match="does not hash to its id") as caught:
        codec.unframe(codec.frame("blob", b"received"), object_id=oid, location="here")

    assert caught.value.object_id == oid.hex
    assert caught.value.location == "here"


def test_frame_of_other_kind_does_not_verify() -> None:
    payload = codec.encode({})
    oid = codec.hash_object("graph", payload)

    with pytest.raises(CorruptObjectError, match="does not hash to its id"):
        codec.unframe(codec.frame("state", payload), object_id=oid)


def test_frame_of_unknown_kind_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown object kind"):
        codec.frame("commit", b"")
