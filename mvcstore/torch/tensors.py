"""The torch array adapter: torch tensors to and from raw tensors.

Importing this module registers the adapter under the name ``torch``, which is
what ``mvcstore.arrays.adapter_for("torch")`` loads on request. Tensor bytes
move as bytes: a tensor is viewed as ``uint8`` and exposed as a memoryview, so
bfloat16, float8 and complex values never pass through a NumPy dtype and keep
every bit. This module only converts; it stores nothing.
"""

from __future__ import annotations

import math
import sys
from typing import Final

import numpy as np
import torch

from mvcstore.arrays import RawTensor, register_adapter
from mvcstore.errors import InvalidInputError
from mvcstore.objects import dtype_size

__all__ = [
    "DTYPE_NAMES",
    "TorchAdapter",
    "dtype_name",
    "torch_dtype",
    "tensor_bytes",
    "tensor_from_bytes",
]


def _optional_dtypes(*names: tuple[str, str]) -> dict[torch.dtype, str]:
    # unsigned 16/32/64-bit and float8 types exist only in newer torch releases
    found: dict[torch.dtype, str] = {}
    for attribute, name in names:
        dtype = getattr(torch, attribute, None)
        if isinstance(dtype, torch.dtype):
            found[dtype] = name
    return found


DTYPE_NAMES: Final[dict[torch.dtype, str]] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.complex64: "C64",
    torch.complex128: "C128",
    **_optional_dtypes(
        ("uint16", "U16"),
        ("uint32", "U32"),
        ("uint64", "U64"),
        ("float8_e4m3fn", "F8_E4M3"),
        ("float8_e5m2", "F8_E5M2"),
    ),
}
"""Torch dtypes that can be stored, with their ``objects.DTYPES`` names."""

_TORCH_DTYPES: Final = {name: dtype for dtype, name in DTYPE_NAMES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """Return the ``objects.DTYPES`` name of a torch dtype.

    Raises:
        InvalidInputError: If the dtype has no stored equivalent.
    """
    name = DTYPE_NAMES.get(dtype)
    if name is None:
        raise InvalidInputError(
            f"tensors of dtype {dtype} cannot be stored",
            hint="convert the tensor with '.to(torch.float32)' or another"
            " plain dtype first",
        )
    return name


def torch_dtype(name: str) -> torch.dtype:
    """Return the torch dtype for an ``objects.DTYPES`` name.

    Raises:
        InvalidInputError: If the name is unknown, or this torch release lacks
            the dtype.
    """
    dtype_size(name)
    dtype = _TORCH_DTYPES.get(name)
    if dtype is None:
        raise InvalidInputError(
            f"this torch release has no dtype for {name}",
            hint="upgrade torch, or check the epoch out with as_='numpy'",
        )
    return dtype


def _check_storable(value: torch.Tensor) -> None:
    if value.is_meta:
        raise InvalidInputError(
            "cannot store a meta tensor: it has a shape but no data",
            hint="materialise it first, e.g. 'model.to_empty(device=\"cpu\")'"
            " then load real weights",
        )
    if value.layout != torch.strided:
        raise InvalidInputError(
            f"cannot store a tensor with layout {value.layout}",
            hint="convert it with '.to_dense()' first",
        )
    if value.is_quantized:
        raise InvalidInputError(
            f"cannot store a quantized tensor of dtype {value.dtype}",
            hint="store '.dequantize()' or '.int_repr()' of it instead",
        )


def _swap_to_little_endian(data: np.ndarray, dtype: str) -> np.ndarray:
    # complex numbers are two floats, each swapped on its own
    width = dtype_size(dtype) // (2 if dtype.startswith("C") else 1)
    if width == 1:
        return data
    return np.ascontiguousarray(data.reshape(-1, width)[:, ::-1]).reshape(-1)


def tensor_bytes(value: torch.Tensor) -> tuple[str, tuple[int, ...], memoryview]:
    """Return a tensor's dtype name, shape and little-endian C-order bytes.

    The tensor is detached, copied to the CPU when it lives elsewhere and made
    contiguous; a CPU tensor that is already contiguous is not copied.

    Raises:
        InvalidInputError: If the tensor is a meta, sparse or quantized tensor,
            or its dtype cannot be stored.
    """
    _check_storable(value)
    name = dtype_name(value.dtype)
    shape = tuple(int(dim) for dim in value.shape)
    flat = value.detach()
    if flat.device.type != "cpu":
        flat = flat.cpu()
    # lazily conjugated or negated views must be made real before their bytes
    flat = flat.resolve_conj().resolve_neg().contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy()
    if sys.byteorder == "big":
        data = _swap_to_little_endian(data, name)
    return name, shape, data.data


def tensor_from_bytes(
    dtype: str, shape: tuple[int, ...], data: memoryview
) -> torch.Tensor:
    """Return a new, writable CPU tensor holding a copy of raw tensor bytes.

    Raises:
        InvalidInputError: If the byte count does not match the dtype and shape,
            or bool data holds a byte other than 0 or 1.
    """
    target = torch_dtype(dtype)
    source = np.frombuffer(data, dtype=np.uint8)
    expected = math.prod(shape) * dtype_size(dtype)
    if source.size != expected:
        raise InvalidInputError(
            f"tensor of {dtype} {list(shape)} needs {expected} bytes, got {source.size}"
        )
    if dtype == "BOOL" and source.size and int(source.max()) > 1:
        raise InvalidInputError("bool tensor data holds a byte other than 0 or 1")
    if sys.byteorder == "big":
        source = _swap_to_little_endian(source, dtype)

    # torch allocates (and owns) the memory; the bytes are copied in once
    out = torch.empty(expected, dtype=torch.uint8)
    out.numpy()[:] = source
    return out.view(target).reshape(shape)


class TorchAdapter:
    """Converts torch tensors to and from raw tensors, bit for bit."""

    name = "torch"

    def accepts(self, value: object) -> bool:
        """Return whether ``value`` is a torch tensor."""
        return isinstance(value, torch.Tensor)

    def to_raw(self, value: object) -> RawTensor:
        """Convert a torch tensor to a raw tensor.

        Raises:
            InvalidInputError: If ``value`` is not a storable torch tensor.
        """
        if not isinstance(value, torch.Tensor):
            raise InvalidInputError(
                f"expected a torch tensor, got {type(value).__name__}",
                hint="pass torch tensors to the torch adapter",
            )
        dtype, shape, data = tensor_bytes(value)
        return RawTensor(dtype=dtype, shape=shape, data=data)

    def from_raw(self, raw: RawTensor) -> torch.Tensor:
        """Convert a raw tensor to a new, writable CPU torch tensor.

        Raises:
            InvalidInputError: If the raw tensor's bytes do not match its dtype
                and shape.
        """
        return tensor_from_bytes(raw.dtype, raw.shape, raw.data)

    if sys.byteorder == "little":
        # stored bytes are little-endian: only then can they land in place

        def allocate(
            self, dtype: str, shape: tuple[int, ...]
        ) -> tuple[torch.Tensor, memoryview]:
            """Return a new CPU tensor and a byte view of its memory.

            A checkout decodes straight into it: the bytes are written once,
            into torch's own memory (``arrays.AllocatingAdapter``).

            Raises:
                InvalidInputError: If this torch release lacks the dtype.
            """
            out = torch.empty(shape, dtype=torch_dtype(dtype))
            view: memoryview = out.reshape(-1).view(torch.uint8).numpy().data
            return out, view


register_adapter(TorchAdapter())
