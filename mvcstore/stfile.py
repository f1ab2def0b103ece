"""Reading and writing safetensors files, with every length checked first.

The safetensors layout: an 8-byte little-endian header size, a JSON header
mapping tensor names to dtype, shape and byte offsets (plus an optional
``__metadata__`` map of strings), then the data. This reader checks the header
size against the file before reading it, and every offset against the data,
so a hostile file cannot make it allocate or read beyond what is there. Nothing
here unpickles anything.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from mvcstore.arrays import RawTensor
from mvcstore.errors import InvalidInputError
from mvcstore.objects import DTYPES

__all__ = ["MAX_HEADER_SIZE", "read_safetensors", "write_safetensors"]

MAX_HEADER_SIZE: Final = 100 * 1024 * 1024
"""Largest JSON header accepted (100 MiB), as the reference implementation."""


def _bad(path: Path, reason: str) -> InvalidInputError:
    return InvalidInputError(
        f"{path} is not a valid safetensors file: {reason}",
        hint="save the weights with safetensors' save_file and run 'mvc commit' again",
    )


def read_safetensors(path: Path) -> tuple[dict[str, RawTensor], dict[str, str]]:
    """Read every tensor of a safetensors file.

    Args:
        path: The file.

    Returns:
        Tensors by name, in file order, and the file's metadata.

    Raises:
        InvalidInputError: If the file cannot be read or is not a well-formed
            safetensors file.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise InvalidInputError(
                f"{path} is not a regular file",
                hint="give the path of a .safetensors file",
            )
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise _bad(path, f"{size} bytes is shorter than the 8-byte header size")
            (header_size,) = struct.unpack("<Q", head)
            if header_size > MAX_HEADER_SIZE or header_size > size - 8:
                raise _bad(
                    path, f"header claims {header_size} bytes in a {size}-byte file"
                )
            header_bytes = handle.read(header_size)
            data = handle.read()
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the file path"
        ) from exc
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    # a header nested deeper than the JSON parser's recursion limit is refused
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _bad(path, f"header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str)
        for key, value in metadata.items()
    ):
        raise _bad(path, "__metadata__ must map strings to strings")

    view = memoryview(data)
    tensors: dict[str, RawTensor] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        tensors[name] = _tensor(path, name, info, view, spans)
    _check_coverage(path, spans, len(data))
    return tensors, dict(metadata)


def _tensor(
    path: Path,
    name: str,
    info: object,
    data: memoryview,
    spans: list[tuple[int, int, str]],
) -> RawTensor:
    if not isinstance(info, dict):
        raise _bad(path, f"entry {name!r} is not an object")
    dtype = info.get("dtype")
    shape = info.get("shape")
    offsets = info.get("data_offsets")
    if dtype not in DTYPES:
        raise _bad(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
    ):
        raise _bad(path, f"tensor {name!r} has a bad shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise _bad(path, f"tensor {name!r} has bad data_offsets {offsets!r}")
    begin, end = offsets
    expected = math.prod(shape) * DTYPES[str(dtype)]
    if not 0 <= begin <= end <= len(data):
        raise _bad(path, f"tensor {name!r} lies outside the {len(data)}-byte data")
    if end - begin != expected:
        raise _bad(
            path, f"tensor {name!r} has {end - begin} bytes, its shape needs {expected}"
        )
    spans.append((begin, end, name))
    return RawTensor(dtype=str(dtype), shape=tuple(shape), data=data[begin:end])


def _check_coverage(path: Path, spans: list[tuple[int, int, str]], size: int) -> None:
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise _bad(
                path, f"tensor {name!r} overlaps or leaves a gap at byte {begin}"
            )
        position = end
    if position != size:
        raise _bad(path, f"{size - position} bytes after the last tensor")


def write_safetensors(
    path: Path,
    tensors: Mapping[str, RawTensor],
    *,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write tensors as a safetensors file, through a temporary file.

    Args:
        path: The file to write (replaced if it exists).
        tensors: Tensors by name, written in this order.
        metadata: Optional string metadata.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, raw in tensors.items():
        header[name] = {
            "dtype": raw.dtype,
            "shape": list(raw.shape),
            "data_offsets": [offset, offset + raw.data.nbytes],
        }
        offset += raw.data.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for raw in tensors.values():
            handle.write(raw.data)
    os.replace(tmp, path)
