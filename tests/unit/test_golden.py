"""Golden vectors: the one module that pins ids, canonical bytes and frames.

Every vector is recomputed with the code and must equal both the value pinned
here and the value printed in the vector block of ``docs/format.md``. A vector
that changes is a format change: bump ``FORMAT_VERSION`` and record it in the
spec's list of changes, in the same commit.
"""

from __future__ import annotations

import re
import struct
from dataclasses import replace
from pathlib import Path

import blake3
import numpy as np
import pytest

from mvcstore.codec import (
    ObjectId,
    bits_frame,
    chunked_frame,
    decode_into,
    delta_frame,
    diff_frame,
    encode,
    frame,
    hash_object,
    join_parts,
    planes_frame,
    unframe,
)
from mvcstore.errors import ObjectNotFoundError
from mvcstore.objects import (
    Blob,
    Epoch,
    Graph,
    Node,
    State,
    StoredObject,
    Tensor,
    decode_object,
    encode_object,
    object_id,
)
from mvcstore.stores.packs import (
    PACK_HEADER_SIZE,
    PACK_MAGIC,
    RECORD_HEADER_SIZE,
    decode_index,
    encode_index,
)

FORMAT_DOC = Path(__file__).resolve().parents[2] / "docs" / "format.md"
BLOCK_BEGIN = "<!-- test-vectors: begin -->"
BLOCK_END = "<!-- test-vectors: end -->"

# -- the inputs, exactly as docs/format.md describes them -----------------------


def _nan_with_payload() -> float:
    # a negative NaN with a payload: canonical encoding must still give 0x7ff8...
    value: float = struct.unpack("<d", struct.pack("<Q", 0xFFF0000000000001))[0]
    return value


CANONICAL_INPUTS: dict[str, object] = {
    "nil": None,
    "false": False,
    "true": True,
    "int-0": 0,
    "int-127": 127,
    "int-128": 128,
    "int-65536": 65536,
    "int-max-u64": (1 << 64) - 1,
    "int-minus-1": -1,
    "int-minus-33": -33,
    "int-min-i64": -(1 << 63),
    "float-1": 1.0,
    "float-0.1": 0.1,
    "float-minus-0": -0.0,
    "float-nan": _nan_with_payload(),
    "float-inf": float("inf"),
    "str-e-acute": "\u00e9",
    "bytes-0001": b"\x00\x01",
    "tuple-1-2": (1, 2),
    "map-sorted": {"b": 1, "a": 2, "\u00e9": 3, "B": 4},
    "map-utf8-order": {"\U0001f600": 2, "\uff61": 1},
    "object-id": ObjectId(bytes(range(32))),
}

TENSOR_DATA = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
TENSOR = Tensor(
    dtype="F32", shape=(2, 2), data=hash_object("blob", TENSOR_DATA), nbytes=16
)
STATE = State(tensors={"fc.weight": object_id(TENSOR)})
GRAPH = Graph(
    nodes={
        "fc": Node(
            id="fc",
            name="fc",
            data={
                "class": "Linear",
                "in_features": 2,
                "out_features": 2,
                "bias": False,
            },
            inputs={"x": {"node": "input", "port": 0}},
            outputs={"y": {"node": "relu", "port": 0}},
            pruning_plan_id="plan-1",
            wrapper={"class": "PruningWrapper", "amount": 0.5},
        ),
        "relu": Node(
            id="relu",
            name="relu",
            data={"class": "ReLU"},
            inputs={"x": {"node": "fc", "port": 0}},
            outputs={},
        ),
    },
    meta={"framework": "torch", "input_shape": [1, 2]},
)
EPOCH_1 = Epoch(
    parents=(),
    state=object_id(STATE),
    graph=object_id(GRAPH),
    extra={},
    params={"lr": 0.1, "batch_size": 32, "nesterov": True},
    number=1,
    step=100,
    time_ns=1_700_000_000_000_000_000,
    message="first epoch",
    summary={"val_loss": 0.25},
    uid="0123456789abcdef0123456789abcdef",
    session="main",
    meta={},
)
EPOCH_2 = Epoch(
    parents=(object_id(EPOCH_1),),
    state=object_id(STATE),
    graph=object_id(GRAPH),
    extra={"optimizer": object_id(STATE)},
    params={"lr": 0.05, "batch_size": 32, "nesterov": True},
    number=2,
    step=200,
    time_ns=1_700_000_060_000_000_000,
    message="",
    summary={},
    uid="fedcba9876543210fedcba9876543210",
    session="main",
    meta={"exact_resume": True},
)

# format 2 encodings: small enough that every section is stored, so the bytes
# do not depend on the zstandard release
PLANES_DATA = np.arange(1, 17, dtype="<f4")
DELTA_DATA = (PLANES_DATA * np.float32(1.5)).astype("<f4")
BITS_DATA = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 0], dtype=np.uint8)
CHUNKED_DATA = b"mvcstore chunks!"
CHUNKS = (CHUNKED_DATA[:10], CHUNKED_DATA[10:])


def _u8(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1).view(np.uint8)


def encoded_frames() -> dict[str, bytes]:
    """Return the format 2 frames pinned as vectors, by name."""
    base = hash_object("blob", _u8(PLANES_DATA).data)
    return {
        "planes-f32": join_parts(planes_frame(_u8(PLANES_DATA), 4)),
        "delta-f32": join_parts(
            delta_frame(_u8(DELTA_DATA), _u8(PLANES_DATA), base=base, depth=1, width=4)
        ),
        "diff-f32": join_parts(
            diff_frame(_u8(DELTA_DATA), _u8(PLANES_DATA), base=base, depth=1, width=4)
        ),
        "bits-bool": join_parts(bits_frame(BITS_DATA, 1, b"\x01")),
        "chunked-two": chunked_frame(
            len(CHUNKED_DATA),
            [(hash_object("blob", chunk), len(chunk)) for chunk in CHUNKS],
        ),
    }


def pack_of_one() -> tuple[bytes, bytes]:
    """Return a pack holding the frame of the blob ``mvcstore``, and its index."""
    framed = frame("blob", b"mvcstore")
    oid = hash_object("blob", b"mvcstore")
    pack = (
        PACK_MAGIC
        + bytes((1, 0, 0, 0))
        + oid.raw
        + struct.pack("<Q", len(framed))
        + framed
    )
    index = encode_index(
        {oid.raw: (PACK_HEADER_SIZE + RECORD_HEADER_SIZE, len(framed))}, len(pack)
    )
    return pack, index


OBJECTS: dict[str, StoredObject] = {
    "blob-empty": Blob(b""),
    "blob-mvcstore": Blob(b"mvcstore"),
    "blob-tensor-data": Blob(TENSOR_DATA),
    "tensor": TENSOR,
    "state": STATE,
    "graph": GRAPH,
    "epoch-1": EPOCH_1,
    "epoch-2": EPOCH_2,
    "blob-planes-f32": Blob(PLANES_DATA.tobytes()),
    "blob-delta-f32": Blob(DELTA_DATA.tobytes()),
    "blob-bits-bool": Blob(BITS_DATA.tobytes()),
    "blob-chunked-two": Blob(CHUNKED_DATA),
}
"""Objects whose ids are pinned; those not blobs also have their payload pinned."""


def compute_vectors() -> dict[str, str]:
    """Return every vector, recomputed with the code, as lower-case hex."""
    out = {f"canonical.{name}": encode(v).hex() for name, v in CANONICAL_INPUTS.items()}
    out["hash-input.blob-mvcstore"] = b"blob 8\x00mvcstore".hex()
    out["frame.blob-mvcstore"] = frame("blob", b"mvcstore").hex()
    out["frame-header.blob-zeros-4096"] = frame("blob", bytes(4096))[:16].hex()
    for name, obj in OBJECTS.items():
        if not isinstance(obj, Blob):
            out[f"payload.{name}"] = encode_object(obj).hex()
        out[f"id.{name}"] = object_id(obj).hex
    for name, framed in encoded_frames().items():
        out[f"frame.{name}"] = framed.hex()
    pack, index = pack_of_one()
    out["pack.blob-mvcstore"] = pack.hex()
    out["index.blob-mvcstore"] = index.hex()
    return out


# -- the pinned values ----------------------------------------------------------

PINNED: dict[str, str] = {
    "canonical.nil": "c0",
    "canonical.false": "c2",
    "canonical.true": "c3",
    "canonical.int-0": "00",
    "canonical.int-127": "7f",
    "canonical.int-128": "cc80",
    "canonical.int-65536": "ce00010000",
    "canonical.int-max-u64": "cfffffffffffffffff",
    "canonical.int-minus-1": "ff",
    "canonical.int-minus-33": "d0df",
    "canonical.int-min-i64": "d38000000000000000",
    "canonical.float-1": "cb3ff0000000000000",
    "canonical.float-0.1": "cb3fb999999999999a",
    "canonical.float-minus-0": "cb0000000000000000",
    "canonical.float-nan": "cb7ff8000000000000",
    "canonical.float-inf": "cb7ff0000000000000",
    "canonical.str-e-acute": "a2c3a9",
    "canonical.bytes-0001": "c4020001",
    "canonical.tuple-1-2": "920102",
    "canonical.map-sorted": "84a14204a16102a16201a2c3a903",
    "canonical.map-utf8-order": "82a3efbda101a4f09f988002",
    "canonical.object-id": (
        "c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    ),
    "hash-input.blob-mvcstore": "626c6f622038006d766373746f7265",
    "frame.blob-mvcstore": "6d76636f0101000008000000000000006d766373746f7265",
    "frame-header.blob-zeros-4096": "6d76636f010101000010000000000000",
    "id.blob-empty": (
        "4a0b6603381c7c38c557e9ceb3cba8876f0a7863146e7309801352e80b073b65"
    ),
    "id.blob-mvcstore": (
        "91cb7d338385a2101b5819527c9658e20ed108e942e105be7f1c4952956dc77e"
    ),
    "id.blob-tensor-data": (
        "d23c18e323ce6707e04557502c645cb4e93a078c4ea35795358a6d36969bb9b4"
    ),
    "payload.tensor": (
        "84a464617461c420d23c18e323ce6707e04557502c645cb4e93a078c4ea35795"
        "358a6d36969bb9b4a56474797065a3463332a66e627974657310a57368617065"
        "920202"
    ),
    "id.tensor": "301058b38b68fee114c395154759818ba363eb0da40ad254976554d1386363ed",
    "payload.state": (
        "81a774656e736f727381a966632e776569676874c420301058b38b68fee114c3"
        "95154759818ba363eb0da40ad254976554d1386363ed"
    ),
    "id.state": "c610e74ddb4fa2104e72abcf5e9663b18337d98279d3efb713fecc1dbbc785a7",
    "payload.graph": (
        "82a46d65746182a96672616d65776f726ba5746f726368ab696e7075745f7368"
        "617065920102a56e6f64657382a2666387a46461746184a462696173c2a5636c"
        "617373a64c696e656172ab696e5f666561747572657302ac6f75745f66656174"
        "7572657302a26964a26663a6696e7075747381a17882a46e6f6465a5696e7075"
        "74a4706f727400a46e616d65a26663a76f75747075747381a17982a46e6f6465"
        "a472656c75a4706f727400af7072756e696e675f706c616e5f6964a6706c616e"
        "2d31a77772617070657282a6616d6f756e74cb3fe0000000000000a5636c6173"
        "73ae5072756e696e6757726170706572a472656c7585a46461746181a5636c61"
        "7373a452654c55a26964a472656c75a6696e7075747381a17882a46e6f6465a2"
        "6663a4706f727400a46e616d65a472656c75a76f75747075747380"
    ),
    "id.graph": "0b519629982383c6087f4b16855b3f87663ed25f35bb24efd5d8f3a89dc25721",
    "payload.epoch-1": (
        "8da5657874726180a56772617068c4200b519629982383c6087f4b16855b3f87"
        "663ed25f35bb24efd5d8f3a89dc25721a76d657373616765ab66697273742065"
        "706f6368a46d65746180a66e756d62657201a6706172616d7383aa6261746368"
        "5f73697a6520a26c72cb3fb999999999999aa86e65737465726f76c3a7706172"
        "656e747390a773657373696f6ea46d61696ea57374617465c420c610e74ddb4f"
        "a2104e72abcf5e9663b18337d98279d3efb713fecc1dbbc785a7a47374657064"
        "a773756d6d61727981a876616c5f6c6f7373cb3fd0000000000000a774696d65"
        "5f6e73cf17979cfe362a0000a3756964d9203031323334353637383961626364"
        "656630313233343536373839616263646566"
    ),
    "id.epoch-1": "0607725ad188d1da22f40d77ebe72d85370bcb7f9cfdf6f4fdafbb33247ac54f",
    "payload.epoch-2": (
        "8da5657874726181a96f7074696d697a6572c420c610e74ddb4fa2104e72abcf"
        "5e9663b18337d98279d3efb713fecc1dbbc785a7a56772617068c4200b519629"
        "982383c6087f4b16855b3f87663ed25f35bb24efd5d8f3a89dc25721a76d6573"
        "73616765a0a46d65746181ac65786163745f726573756d65c3a66e756d626572"
        "02a6706172616d7383aa62617463685f73697a6520a26c72cb3fa99999999999"
        "9aa86e65737465726f76c3a7706172656e747391c4200607725ad188d1da22f4"
        "0d77ebe72d85370bcb7f9cfdf6f4fdafbb33247ac54fa773657373696f6ea46d"
        "61696ea57374617465c420c610e74ddb4fa2104e72abcf5e9663b18337d98279"
        "d3efb713fecc1dbbc785a7a473746570ccc8a773756d6d61727980a774696d65"
        "5f6e73cf17979d0c2e715800a3756964d9206665646362613938373635343332"
        "313066656463626139383736353433323130"
    ),
    "id.epoch-2": "73dad654d8744beff25d323e3c65b5f80bd9a0c6f157b7e3efee49403870ed4c",
    "id.blob-planes-f32": (
        "f3461e9cc52caa2e8d4d39a53992921764a3f8fb3438848082cea61ec6a03f6a"
    ),
    "id.blob-delta-f32": (
        "d69a825a846e6010e6c5a5e02d7538a733c90a998bccac74dd617ba99e7fc324"
    ),
    "id.blob-bits-bool": (
        "3e9c8e72ba2b421d8f0b588e74f9da35dd04954db6c916a49eb0fbb95340301a"
    ),
    "id.blob-chunked-two": (
        "37c2723b6fa623676cb5bd16b97f51434a857d6b7e97c13989a969beed7c24eb"
    ),
    "frame.planes-f32": (
        "6d76636f01010200400000000000000004001000000000000000000000000000"
        "0000000000000000000000100000000000000000000000000000000000000000"
        "00000000100000000000000080004080a0c0e000102030405060708000100000"
        "00000000003f404040404040414141414141414141"
    ),
    "frame.delta-f32": (
        "6d76636f010103004000000000000000f3461e9cc52caa2e8d4d39a539929217"
        "64a3f8fb3438848082cea61ec6a03f6a01040010000000000000000000000000"
        "0000000000000000000000001000000000000000000000000000000000000000"
        "000000000010000000000000004040d04050d0c8404850b4d0ccc8c440001000"
        "00000000000000000000000101000000000000000000"
    ),
    "frame.diff-f32": (
        "6d76636f010106004000000000000000f3461e9cc52caa2e8d4d39a539929217"
        "64a3f8fb3438848082cea61ec6a03f6a01040010000000000000000000000000"
        "0000000000000000000000001000000000000000000000000000000000000000"
        "000000000010000000000000008080a080a0a0908090a0a8a098908880001000"
        "00000000000000000000000000000000000000000000"
    ),
    "frame.bits-bool": "6d76636f010104000a0000000000000001010002000000000000008d01",
    "frame.chunked-two": (
        "6d76636f0101050010000000000000000200000000000000b1421d5002777de5"
        "7a4b2cf27aa8e5eb50eeed48580d8dbc1dc0a54490b49ee30a00000000000000"
        "e4f2d5edb7eb140be5dad8f49e904dfc951f3814f9f18341a60cf16ebbd5dbf7"
        "0600000000000000"
    ),
    "pack.blob-mvcstore": (
        "6d7663700100000091cb7d338385a2101b5819527c9658e20ed108e942e105be"
        "7f1c4952956dc77e18000000000000006d76636f010100000800000000000000"
        "6d766373746f7265"
    ),
    "index.blob-mvcstore": (
        "6d766369010000000100000000000000480000000000000091cb7d338385a210"
        "1b5819527c9658e20ed108e942e105be7f1c4952956dc77e3000000000000000"
        "1800000000000000430bf9be736c7a1726ef9578f7bf4b2793d5847143ecb9ff"
        "9db1c8c4f8324687"
    ),
}


# -- the vector block of docs/format.md ------------------------------------------

_LINE = re.compile(r"([a-z0-9][a-z0-9.-]*) =(?: ([0-9a-f]+))?")
_MORE = re.compile(r" {4}([0-9a-f]+)")


def parse_vector_block(text: str) -> dict[str, str]:
    """Parse the block between the markers: ``name = hex`` lines.

    A long value continues on following lines indented by four spaces; lines
    starting with ``#`` and the code fence are ignored.
    """
    if text.count(BLOCK_BEGIN) != 1 or text.count(BLOCK_END) != 1:
        raise ValueError("the vector block markers must appear exactly once")
    body = text.split(BLOCK_BEGIN, 1)[1].split(BLOCK_END, 1)[0]
    out: dict[str, str] = {}
    current: str | None = None
    for line in body.splitlines():
        if not line.strip() or line.startswith(("#", "```")):
            continue
        more = _MORE.fullmatch(line)
        if more is not None and current is not None:
            out[current] += more.group(1)
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ValueError(f"unparsable vector line {line!r}")
        current = match.group(1)
        if current in out:
            raise ValueError(f"vector {current!r} appears twice")
        out[current] = match.group(2) or ""
    return out


@pytest.fixture(scope="module")
def documented() -> dict[str, str]:
    return parse_vector_block(FORMAT_DOC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def computed() -> dict[str, str]:
    return compute_vectors()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_vector_equals_pinned_value(name: str, computed: dict[str, str]) -> None:
    assert computed[name] == PINNED[name]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_vector_is_printed_in_format_doc(name: str, documented: dict[str, str]) -> None:
    assert documented.get(name) == PINNED[name]


def test_every_vector_is_pinned_and_documented(
    computed: dict[str, str], documented: dict[str, str]
) -> None:
    assert sorted(computed) == sorted(PINNED)
    assert sorted(documented) == sorted(PINNED)


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_pinned_payload_decodes_to_the_object(name: str) -> None:
    obj = OBJECTS[name]
    payload = (
        obj.data if isinstance(obj, Blob) else bytes.fromhex(PINNED[f"payload.{name}"])
    )
    oid = ObjectId.from_hex(PINNED[f"id.{name}"])

    assert hash_object(obj.kind, payload) == oid
    assert decode_object(obj.kind, payload, oid=oid) == obj


def test_pinned_frame_unframes_to_its_blob() -> None:
    framed = bytes.fromhex(PINNED["frame.blob-mvcstore"])
    oid = ObjectId.from_hex(PINNED["id.blob-mvcstore"])

    decoded = unframe(framed, object_id=oid)

    assert (decoded.kind, decoded.payload) == ("blob", b"mvcstore")


def test_compressed_frame_keeps_the_pinned_header() -> None:
    framed = frame("blob", bytes(4096))

    assert framed[:16].hex() == PINNED["frame-header.blob-zeros-4096"]
    assert unframe(framed, object_id=hash_object("blob", bytes(4096))).payload == (
        bytes(4096)
    )


class _Frames:
    """The pinned frames as a store, for the frames that name others."""

    def __init__(self) -> None:
        self.frames = {
            hash_object("blob", _u8(PLANES_DATA).data): encoded_frames()["planes-f32"]
        }
        for chunk in CHUNKS:
            self.frames[hash_object("blob", chunk)] = frame("blob", chunk)

    def get_framed(self, oid: ObjectId) -> bytes:
        try:
            return self.frames[oid]
        except KeyError:
            raise ObjectNotFoundError(oid.hex) from None

    def describe(self, oid: ObjectId) -> str:
        return "pinned"


@pytest.mark.parametrize(
    ("name", "blob"),
    [
        ("planes-f32", "blob-planes-f32"),
        ("delta-f32", "blob-delta-f32"),
        ("diff-f32", "blob-delta-f32"),
        ("bits-bool", "blob-bits-bool"),
        ("chunked-two", "blob-chunked-two"),
    ],
)
def test_pinned_format_2_frame_decodes_to_its_blob(name: str, blob: str) -> None:
    framed = bytes.fromhex(PINNED[f"frame.{name}"])
    oid = ObjectId.from_hex(PINNED[f"id.{blob}"])
    expected = OBJECTS[blob]
    assert isinstance(expected, Blob)

    decoded = unframe(framed, object_id=oid, source=_Frames())
    out = np.empty(len(expected.data), dtype=np.uint8)
    decode_into(oid, out, _Frames(), framed=framed)

    assert decoded.payload == expected.data
    assert out.tobytes() == expected.data


def test_pinned_pack_index_finds_the_pinned_frame() -> None:
    pack = bytes.fromhex(PINNED["pack.blob-mvcstore"])
    entries, size = decode_index(
        bytes.fromhex(PINNED["index.blob-mvcstore"]), where="pinned"
    )
    oid = ObjectId.from_hex(PINNED["id.blob-mvcstore"])

    offset, length = entries[oid.raw]

    assert size == len(pack)
    assert pack[offset : offset + length].hex() == PINNED["frame.blob-mvcstore"]
    assert pack[offset - RECORD_HEADER_SIZE : offset - 8] == oid.raw


def test_epoch_id_field_is_never_hashed() -> None:
    other = ObjectId.from_hex(PINNED["id.blob-empty"])

    assert object_id(replace(EPOCH_1, id=other)).hex == PINNED["id.epoch-1"]


def test_id_is_plain_blake3_of_the_hash_input() -> None:
    hashed = bytes.fromhex(PINNED["hash-input.blob-mvcstore"])

    assert hashed == b"blob 8\x00mvcstore"
    assert blake3.blake3(hashed).hexdigest() == PINNED["id.blob-mvcstore"]
