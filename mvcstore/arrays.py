"""Conversion between in-memory arrays and raw tensor data.

A raw tensor is (dtype name, shape, little-endian C-order bytes). NumPy arrays
convert here (bfloat16 and float8 through ``ml_dtypes``); other frameworks
register an ``ArrayAdapter`` (``mvcstore.torch`` registers one for torch), so
this module never imports them.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mvcstore.errors import InvalidInputError
from mvcstore.objects import dtype_size

__all__ = [
    "RawTensor",
    "ArrayAdapter",
    "AllocatingAdapter",
    "allocate_numpy",
    "register_adapter",
    "adapter_for",
    "to_raw",
    "numpy_dtype",
    "dtype_name",
    "to_numpy",
]


@dataclass(frozen=True, slots=True)
class RawTensor:
    """A tensor's element type, shape and bytes.

    Attributes:
        dtype: One of ``objects.DTYPES``.
        shape: The size of each dimension.
        data: ``prod(shape) * dtype_size(dtype)`` bytes, little-endian, C order.
    """

    dtype: str
    shape: tuple[int, ...]
    data: memoryview


class ArrayAdapter(Protocol):
    """Converts one framework's arrays to and from raw tensors."""

    name: str

    def accepts(self, value: object) -> bool:
        """Return whether ``value`` is an array of this framework."""
        ...

    def to_raw(self, value: object) -> RawTensor:
        """Convert an array to a raw tensor (no copy where possible)."""
        ...

    def from_raw(self, raw: RawTensor) -> object:
        """Convert a raw tensor to an array of this framework."""
        ...


@runtime_checkable
class AllocatingAdapter(Protocol):
    """An adapter that can hand out a new array for data to be decoded into.

    Reading an epoch then writes each tensor's bytes once, straight into the
    framework's own memory; adapters without it get a NumPy buffer through
    ``from_raw``, which may copy.
    """

    def allocate(self, dtype: str, shape: tuple[int, ...]) -> tuple[object, memoryview]:
        """Return a new, writable array and a byte view of its memory (C order)."""
        ...


_NUMPY_DTYPES: Final[dict[str, npt.DTypeLike]] = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "U32": np.uint32,
    "I32": np.int32,
    "U64": np.uint64,
    "I64": np.int64,
    "F16": np.float16,
    "F32": np.float32,
    "F64": np.float64,
    "C64": np.complex64,
    "C128": np.complex128,
}
_ML_DTYPES: Final = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
"""Types NumPy lacks, from ``ml_dtypes``, imported only when one is used
(importing it costs more than the rest of a short ``mvc`` command)."""
_NAMES_BY_NUMPY: Final = {np.dtype(t): name for name, t in _NUMPY_DTYPES.items()}
_NAMES_BY_ML_DTYPE: Final = {attr: name for name, attr in _ML_DTYPES.items()}

_ADAPTERS: dict[str, ArrayAdapter] = {}
_PLUGINS: Final = {"torch": "mvcstore.torch.tensors"}


def numpy_dtype(dtype: str) -> np.dtype[np.generic]:
    """Return the little-endian NumPy dtype for a dtype name.

    Raises:
        InvalidInputError: If the name is unknown.
    """
    dtype_size(dtype)
    if dtype in _ML_DTYPES:
        import ml_dtypes

        extension: np.dtype[np.generic] = np.dtype(
            getattr(ml_dtypes, _ML_DTYPES[dtype])
        )
        return extension.newbyteorder("<")
    return np.dtype(_NUMPY_DTYPES[dtype]).newbyteorder("<")


def dtype_name(dtype: np.dtype[np.generic]) -> str:
    """Return the dtype name of a NumPy dtype.

    Raises:
        InvalidInputError: If the dtype has no mvcstore equivalent.
    """
    name = _NAMES_BY_NUMPY.get(dtype.newbyteorder("=")) or _NAMES_BY_ML_DTYPE.get(
        dtype.name
    )
    if name is None:
        raise InvalidInputError(
            f"arrays of dtype {dtype} cannot be stored",
            hint="convert the array to a numeric or bool dtype first",
        )
    return name


def _numpy_to_raw(
    value: np.ndarray[tuple[int, ...], np.dtype[np.generic]],
) -> RawTensor:
    name = dtype_name(value.dtype)
    if value.dtype.byteorder == ">" or (
        value.dtype.byteorder == "=" and sys.byteorder == "big"
    ):
        value = value.astype(value.dtype.newbyteorder("<"))
    contiguous = np.ascontiguousarray(value)
    data = contiguous.reshape(-1).view(np.uint8).data
    return RawTensor(dtype=name, shape=tuple(int(d) for d in value.shape), data=data)


def to_numpy(raw: RawTensor) -> np.ndarray[tuple[int, ...], np.dtype[np.generic]]:
    """Return a NumPy array over the raw tensor's bytes (no copy).

    The array is read-only when the bytes are.
    """
    array = np.frombuffer(raw.data, dtype=numpy_dtype(raw.dtype))
    return array.reshape(raw.shape)


def allocate_numpy(dtype: str, shape: tuple[int, ...]) -> tuple[object, memoryview]:
    """Return a new NumPy array of ``dtype`` and ``shape`` and a byte view of it.

    Raises:
        InvalidInputError: If the dtype name is unknown.
    """
    array = np.empty(shape, dtype=numpy_dtype(dtype))
    return array, array.reshape(-1).view(np.uint8).data


def register_adapter(adapter: ArrayAdapter) -> None:
    """Make a framework's arrays storable and restorable by name."""
    _ADAPTERS[adapter.name] = adapter


def adapter_for(name: str) -> ArrayAdapter:
    """Return the adapter registered as ``name``, loading a known plug-in.

    Raises:
        InvalidInputError: If no such adapter exists or its framework is not
            installed.
    """
    if name not in _ADAPTERS and name in _PLUGINS:
        try:
            importlib.import_module(_PLUGINS[name])
        except ImportError as exc:
            raise InvalidInputError(
                f"{name} is not installed ({exc})",
                hint=f"install it with: pip install 'mvcstore[{name}]'",
            ) from exc
    adapter = _ADAPTERS.get(name)
    if adapter is None:
        raise InvalidInputError(
            f"unknown array type {name!r}", hint="use 'numpy' or 'torch'"
        )
    return adapter


def to_raw(value: object) -> RawTensor:
    """Convert a NumPy array, a torch tensor or a ``RawTensor`` to a raw tensor.

    Raises:
        InvalidInputError: If the value is not a supported array.
    """
    if isinstance(value, RawTensor):
        return value
    if isinstance(value, np.ndarray):
        return _numpy_to_raw(value)
    if isinstance(value, np.generic):
        return _numpy_to_raw(np.asarray(value))
    module = type(value).__module__.split(".")[0]
    if module in _PLUGINS:
        return adapter_for(module).to_raw(value)
    for adapter in _ADAPTERS.values():
        if adapter.accepts(value):
            return adapter.to_raw(value)
    raise InvalidInputError(
        f"cannot store {_article(type(value).__name__)} as a tensor",
        hint="pass NumPy arrays or torch tensors",
    )


class _NumpyAdapter:
    name = "numpy"

    def accepts(self, value: object) -> bool:
        return isinstance(value, np.ndarray)

    def to_raw(self, value: object) -> RawTensor:
        if not isinstance(value, np.ndarray):
            raise InvalidInputError(
                f"expected a NumPy array, got {type(value).__name__}"
            )
        return _numpy_to_raw(value)

    def from_raw(self, raw: RawTensor) -> object:
        return to_numpy(raw)

    def allocate(self, dtype: str, shape: tuple[int, ...]) -> tuple[object, memoryview]:
        return allocate_numpy(dtype, shape)


register_adapter(_NumpyAdapter())


def _article(noun: str) -> str:
    """Return ``noun`` after "a" or "an", for messages."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
