"""Coverage-guided fuzzing of every decoder with atheris (libFuzzer).

Usage::

    python tests/property/fuzz_atheris.py -runs=3000 -seed=1

It writes one scratch file, ``fuzz-input.safetensors``, in the working folder.

The first byte of each input picks the decoder; the rest is its input. A
decoder may decode or raise the one error its contract names; anything else
is a crash that atheris reports with the input that caused it (exit status
not 0). ``test_fuzz_atheris.py`` runs a bounded number of inputs in the test
suite when atheris is installed.
"""

from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports():
    from mvcstore.codec import KINDS, decode, hash_object, unframe
    from mvcstore.errors import (
        CorruptObjectError,
        InvalidInputError,
        ObjectNotFoundError,
    )
    from mvcstore.objects import decode_object
    from mvcstore.stfile import read_safetensors

_KINDS = sorted(KINDS)
_ID = hash_object("blob", b"fuzz")
# the scratch file for the safetensors reader lives in the working folder
# (the test suite runs this in its own temporary folder)
_FILE = os.path.abspath("fuzz-input.safetensors")


class _Source:
    """A frame source holding nothing: every base or chunk is missing."""

    def get_framed(self, oid: object) -> bytes:
        raise ObjectNotFoundError(str(oid))

    def describe(self, oid: object) -> str:
        return "fuzz"


def one_input(data: bytes) -> None:
    """Feed one input to the decoder its first byte picks."""
    if not data:
        return
    pick, rest = data[0] % 5, data[1:]
    try:
        if pick == 0:
            unframe(rest, object_id=_ID, location="fuzz", source=_Source())
        elif pick == 1:
            decode(rest)
        elif pick == 2:
            kind = _KINDS[rest[0] % len(_KINDS)] if rest else "epoch"
            decode_object(kind, rest[1:])
        elif pick == 3:
            unframe(rest)
        else:
            with open(_FILE, "wb") as handle:
                handle.write(rest)
            read_safetensors(_FILE)  # type: ignore[arg-type]
    except (CorruptObjectError, ObjectNotFoundError):
        if pick == 4:
            raise
    except InvalidInputError:
        # a user's file is refused as invalid input; so is a frame that names
        # other objects when read without its store
        if pick not in (3, 4):
            raise


def main() -> None:
    """Run the fuzzer with the arguments given (libFuzzer flags)."""
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
