"""Reading the tensors of a ``.pt`` / ``.pth`` file, and nothing else.

``torch.save`` files are pickles. This module loads them only with
``torch.load(weights_only=True)``, whose unpickler rebuilds tensors and plain
containers and refuses every other global, so no code named by the file ever
runs. Files in torch's zip format are memory-mapped rather than read whole.
What is accepted: a state dict (names to tensors), or a dict whose
``state_dict`` or ``model`` entry is one.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from pickle import UnpicklingError  # the exception type only: nothing unpickles here
from typing import Final

import torch

from mvcstore.arrays import RawTensor
from mvcstore.errors import InvalidInputError
from mvcstore.torch.tensors import TorchAdapter

__all__ = ["ENTRIES", "read_torch_file"]

ENTRIES: Final = ("state_dict", "model")
"""Entries of a dict that may hold the state dict, tried in this order."""

_ZIP_MAGIC: Final = b"PK\x03\x04"
_HINT: Final = (
    "save only tensors, with torch.save(model.state_dict(), FILE) or as"
    " safetensors, then run 'mvc import' again"
)
_ADAPTER: Final = TorchAdapter()


def _refusal(exc: UnpicklingError) -> str:
    """Return the one line of torch's refusal that says what was refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        _, found, rest = line.partition("WeightsUnpickler error:")
        if found:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            reason = (rest.strip() or following).split(". ")[0].rstrip(".")
            if reason:
                return reason[0].lower() + reason[1:]
    return "it holds something other than tensors and plain containers"


def _state_dict(loaded: object, path: Path) -> tuple[Mapping[str, object], str]:
    if isinstance(loaded, Mapping) and all(
        isinstance(key, str) and isinstance(value, torch.Tensor)
        for key, value in loaded.items()
    ):
        return loaded, "state dict"
    if isinstance(loaded, Mapping):
        for entry in ENTRIES:
            inner = loaded.get(entry)
            if isinstance(inner, Mapping):
                found, _ = _state_dict(inner, path)
                return found, f"entry {entry!r}"
        others = [
            f"{key!r} ({type(value).__name__})"
            for key, value in loaded.items()
            if not isinstance(value, torch.Tensor)
        ]
        raise InvalidInputError(
            f"{path} holds a dict that is not a state dict of tensors: entries"
            f" {', '.join(others[:8])} are not tensors, and it has no"
            f" {' or '.join(repr(entry) for entry in ENTRIES)} entry",
            hint=_HINT,
        )
    raise InvalidInputError(
        f"{path} holds a {type(loaded).__name__}, not a state dict of tensors",
        hint=_HINT,
    )


def read_torch_file(path: Path) -> tuple[dict[str, RawTensor], str]:
    """Read the tensors of a ``torch.save`` file without running its code.

    Args:
        path: A ``.pt`` or ``.pth`` file.

    Returns:
        Tensors by name, and where they were found (``state dict``, ``entry
        'model'``).

    Raises:
        InvalidInputError: If the file cannot be read, holds anything the
            weights-only unpickler refuses (its message says what), or does not
            hold a state dict of storable tensors.
    """
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(_ZIP_MAGIC))
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the file path"
        ) from exc
    try:
        with warnings.catch_warnings():
            # torch's note on pickle protocols is noise on the command line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            mmap = magic == _ZIP_MAGIC
            loaded = torch.load(path, weights_only=True, mmap=mmap, map_location="cpu")
    except UnpicklingError as exc:
        raise InvalidInputError(
            f"{path} is refused by torch.load(weights_only=True), which never runs"
            f" code from a file: {_refusal(exc)}",
            hint=_HINT,
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty"
        raise InvalidInputError(
            f"{path} is not a torch file: {first}",
            hint=_HINT,
        ) from exc

    state, where = _state_dict(loaded, path)
    tensors: dict[str, RawTensor] = {}
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise InvalidInputError(
                f"{path}: {where} entry {name!r} is a {type(value).__name__},"
                " not a tensor",
                hint=_HINT,
            )
        tensors[name] = _ADAPTER.to_raw(value)
    return tensors, where
