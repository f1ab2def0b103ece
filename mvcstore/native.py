"""The compiled helpers of ``mvcstore/_kernels.c``, where they were built.

pip builds the extension with the package when a C compiler is at hand.
Where it is missing, or where the environment variable ``MVCSTORE_NO_KERNELS``
is set to anything but ``0``, ``false``, ``no``, ``off`` or nothing (it is
read once, when mvcstore is imported), ``kernels`` is None and every caller
runs its NumPy code instead, which writes the same bytes (the C loops are
tested against it); only the speed differs.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["kernels", "start_writeback"]

_UNSET = ("", "0", "false", "no", "off")
"""Values of ``MVCSTORE_NO_KERNELS`` that leave the extension on."""

kernels: ModuleType | None
try:
    kernels = importlib.import_module("mvcstore._kernels")
except ImportError:  # built without a compiler
    kernels = None
if os.environ.get("MVCSTORE_NO_KERNELS", "").strip().lower() not in _UNSET:
    kernels = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the system to start writing a range of a file to disk, not waiting.

    A hint that lets the disk work while the caller goes on; the range becomes
    durable only with the fsync that follows. Does nothing where the call is
    not available.
    """
    if kernels is not None:
        kernels.writeback(fd, offset, length)
