"""Session and tag names, and the revision syntax (parsing only).

Refs are stored under full names: ``sessions/NAME`` and ``tags/NAME``. This
module checks names against the documented rules and parses revision
expressions into a base and a list of steps; it resolves nothing (that needs
the stores, which ``repo`` owns).

Revision grammar::

    revision := base step*
    base     := "HEAD" | name | hex-prefix (4 to 64 hex digits)
    step     := "~" [N]      N epochs back along first parents (default 1)
              | "#" N        the epoch numbered N on the first-parent line
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from mvcstore.errors import InvalidInputError, InvalidNameError

__all__ = [
    "SESSION_PREFIX",
    "TAG_PREFIX",
    "REMOTE_PREFIX",
    "MAX_NAME_LENGTH",
    "check_name",
    "session_ref",
    "tag_ref",
    "short_name",
    "Revision",
    "RevisionStep",
    "parse_revision",
    "is_hex_prefix",
]

SESSION_PREFIX: Final = "sessions/"
TAG_PREFIX: Final = "tags/"
REMOTE_PREFIX: Final = "remotes/"
MAX_NAME_LENGTH: Final = 200
MIN_PREFIX: Final = 4

_PART: Final = re.compile(r"[A-Za-z0-9._-]+")
_HEX: Final = re.compile(r"[0-9a-f]{4,64}")
_STEP: Final = re.compile(r"([~#])([0-9]*)")


def check_name(name: str, *, what: str = "session") -> str:
    """Return ``name`` if it is a valid session, tag or remote name.

    Rules: 1 to 200 characters; parts separated by ``/``, each non-empty and
    made of ASCII letters, digits, ``.``, ``_`` and ``-``; no part is ``.`` or
    ``..`` or starts with ``.`` or ``-``; no part ends with ``.lock``; the name
    is not ``HEAD``. So a name can never leave the repository as a path, and
    never reads as an option or a revision step.

    Args:
        name: The proposed name.
        what: What kind of name it is, for the message.

    Returns:
        The name, unchanged.

    Raises:
        InvalidNameError: If a rule is broken; the message says which.
    """
    if not isinstance(name, str) or not name:
        raise InvalidNameError(str(name), f"a {what} name cannot be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(name, f"a {what} name is at most 200 characters")
    if name == "HEAD":
        raise InvalidNameError(name, "HEAD is reserved")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise InvalidNameError(name, "control characters are not allowed")
    for part in name.split("/"):
        if not part:
            raise InvalidNameError(name, "empty part (leading, trailing or double '/')")
        if not _PART.fullmatch(part):
            raise InvalidNameError(
                name, "only letters, digits, '.', '_', '-' and '/' are allowed"
            )
        if part.startswith("."):
            raise InvalidNameError(name, "a part cannot start with '.'")
        if part.startswith("-"):
            raise InvalidNameError(name, "a part cannot start with '-'")
        if part.endswith(".lock"):
            raise InvalidNameError(name, "a part cannot end with '.lock'")
    return name


def session_ref(name: str) -> str:
    """Return the full ref of session ``name``, checking the name."""
    return SESSION_PREFIX + check_name(name, what="session")


def tag_ref(name: str) -> str:
    """Return the full ref of tag ``name``, checking the name."""
    return TAG_PREFIX + check_name(name, what="tag")


def short_name(ref: str) -> str:
    """Return a ref's name without its ``sessions/`` or ``tags/`` prefix."""
    for prefix in (SESSION_PREFIX, TAG_PREFIX):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def is_hex_prefix(text: str) -> bool:
    """Return whether ``text`` can be an id prefix (4 to 64 lower-case hex)."""
    return bool(_HEX.fullmatch(text))


@dataclass(frozen=True, slots=True)
class RevisionStep:
    """One step applied after a revision's base.

    Attributes:
        op: ``~`` (back N first parents) or ``#`` (epoch number N).
        count: N.
    """

    op: str
    count: int


@dataclass(frozen=True, slots=True)
class Revision:
    """A parsed revision expression.

    Attributes:
        text: The expression as given.
        base: ``HEAD``, a name or a hex prefix.
        steps: Steps applied in order.
    """

    text: str
    base: str
    steps: tuple[RevisionStep, ...]


def parse_revision(text: str) -> Revision:
    """Parse a revision expression.

    Args:
        text: Such as ``a``, ``a~3``, ``a#6``, ``5f1c0a9e``, ``HEAD~1``.

    Returns:
        The parsed revision.

    Raises:
        InvalidInputError: If the expression is malformed.
    """
    if not isinstance(text, str):
        raise InvalidInputError(
            f"a revision is text, not {type(text).__name__}",
            hint="give a session, tag or epoch id, such as 'main~1'",
        )
    if not text.strip():
        raise InvalidInputError(
            "empty revision", hint="give a session, tag or epoch id, such as 'main~1'"
        )
    cut = min((i for i, char in enumerate(text) if char in "~#"), default=len(text))
    base, rest = text[:cut], text[cut:]
    if not base:
        raise InvalidInputError(
            f"revision {text!r} has no session, tag or id before {rest[:1]!r}"
        )
    if base != "HEAD" and not is_hex_prefix(base):
        try:
            check_name(base, what="revision")
        except InvalidNameError as exc:
            raise InvalidInputError(
                f"malformed revision {text!r}: {exc.reason}",
                hint="give a session, tag or epoch id, then ~N or #N",
            ) from exc
    steps: list[RevisionStep] = []
    position = 0
    while position < len(rest):
        match = _STEP.match(rest, position)
        if match is None or match.end() == position:
            raise InvalidInputError(f"malformed revision {text!r}")
        op, digits = match.group(1), match.group(2)
        if op == "#" and not digits:
            raise InvalidInputError(
                f"malformed revision {text!r}: '#' needs an epoch number",
                hint="write SESSION#N, such as 'a#6'",
            )
        if len(digits) > 12:
            raise InvalidInputError(f"malformed revision {text!r}: number too large")
        steps.append(RevisionStep(op=op, count=int(digits) if digits else 1))
        position = match.end()
    return Revision(text=text, base=base, steps=tuple(steps))
