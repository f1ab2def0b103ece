"""A small, safe filter language for choosing epochs: ``params < 50000 and lr <= 0.1``.

The language has comparisons (``<``, ``<=``, ``>``, ``>=``, ``==``, ``=``,
``!=``) between names and literals (numbers, quoted strings), joined with
``and``, ``or``, ``not`` and parentheses. Names may hold letters, digits, ``_``,
``.`` and ``/``; any other name is written between backticks. The text is
tokenised and parsed here into a tree of plain functions: nothing is ever
handed to ``eval`` and no Python object is reachable from an expression.

A name the epoch lacks makes its comparison unknown; ``and``, ``or`` and
``not`` treat unknown as SQL does, and an epoch whose filter is unknown is
left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mvcstore.errors import InvalidInputError

__all__ = ["Filter", "parse_where"]

Scalar = float | int | str | bool
Lookup = Callable[[str], Scalar | None]
_Node = Callable[[Lookup], bool | None]

_HINT: Final = (
    "write comparisons joined by and/or, e.g. --where 'params < 50000 and lr <= 0.1'"
)
_TOKEN: Final = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<op><=|>=|==|!=|<|>|=)
  | (?P<paren>[()])
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<quoted>`[^`]+`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_./]*)
    """,
    re.VERBOSE,
)
_KEYWORDS: Final = {"and", "or", "not", "true", "false"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    column: int


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed filter expression.

    Attributes:
        text: The expression as given.
        names: Every name the expression reads.
    """

    text: str
    names: frozenset[str]
    _root: _Node

    def matches(self, lookup: Lookup) -> bool:
        """Return whether an epoch passes; unknown (a missing name) is False.

        Args:
            lookup: Returns the value of a name for the epoch, or None if the
                epoch has no such value.
        """
        return self._root(lookup) is True


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise InvalidInputError(
                f"where expression {text!r} has an unexpected character"
                f" {text[position]!r} at column {position + 1}",
                hint=_HINT,
            )
        kind = match.lastgroup or ""
        if kind != "space":
            value = match.group()
            if kind == "name" and value.lower() in _KEYWORDS:
                kind = value.lower()
            out.append(_Token(kind, value, position + 1))
        position = match.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0
        self.names: set[str] = set()

    def error(self, expected: str) -> InvalidInputError:
        if self.at < len(self.tokens):
            token = self.tokens[self.at]
            found = f"{token.text!r} at column {token.column}"
        else:
            found = "the end"
        return InvalidInputError(
            f"where expression {self.text!r} expects {expected}, found {found}",
            hint=_HINT,
        )

    def peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, kind: str) -> _Token | None:
        token = self.peek()
        if token is not None and token.kind == kind:
            self.at += 1
            return token
        return None

    def parse(self) -> _Node:
        if not self.tokens:
            raise self.error("a comparison")
        node = self.disjunction()
        if self.peek() is not None:
            raise self.error("'and', 'or' or the end")
        return node

    def disjunction(self) -> _Node:
        parts = [self.conjunction()]
        while self.take("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else _any(parts)

    def conjunction(self) -> _Node:
        parts = [self.negation()]
        while self.take("and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else _all(parts)

    def negation(self) -> _Node:
        if self.take("not"):
            inner = self.negation()
            return lambda lookup: _not(inner(lookup))
        if self.take("paren") is not None:
            # take() matched "(" or ")": only an opening one may start a term
            if self.tokens[self.at - 1].text != "(":
                self.at -= 1
                raise self.error("a comparison")
            node = self.disjunction()
            closing = self.take("paren")
            if closing is None or closing.text != ")":
                if closing is not None:
                    self.at -= 1
                raise self.error("')'")
            return node
        return self.comparison()

    def operand(self) -> Callable[[Lookup], Scalar | None]:
        token = self.peek()
        if token is None:
            raise self.error("a name or a value")
        self.at += 1
        if token.kind == "number":
            number = _number(token.text)
            return lambda lookup: number
        if token.kind == "string":
            literal = token.text[1:-1]
            return lambda lookup: literal
        if token.kind in ("true", "false"):
            flag = token.kind == "true"
            return lambda lookup: flag
        if token.kind in ("name", "quoted"):
            name = token.text.strip("`")
            self.names.add(name)
            return lambda lookup: lookup(name)
        self.at -= 1
        raise self.error("a name or a value")

    def comparison(self) -> _Node:
        left = self.operand()
        op = self.take("op")
        if op is None:
            raise self.error("a comparison operator (<, <=, >, >=, ==, !=)")
        right = self.operand()
        compare = _COMPARE[op.text]
        return lambda lookup: compare(left(lookup), right(lookup))


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _kind(value: Scalar) -> str:
    return "str" if isinstance(value, str) else "number"


def _ordered(
    test: Callable[[float | str, float | str], bool],
) -> Callable[[Scalar | None, Scalar | None], bool | None]:
    def compare(left: Scalar | None, right: Scalar | None) -> bool | None:
        if left is None or right is None or _kind(left) != _kind(right):
            return None
        return test(left, right)

    return compare


def _equal(left: Scalar | None, right: Scalar | None) -> bool | None:
    if left is None or right is None:
        return None
    if _kind(left) != _kind(right):
        return False
    return left == right


def _unequal(left: Scalar | None, right: Scalar | None) -> bool | None:
    same = _equal(left, right)
    return None if same is None else not same


_COMPARE: Final[dict[str, Callable[[Scalar | None, Scalar | None], bool | None]]] = {
    "<": _ordered(lambda a, b: a < b),  # type: ignore[operator]
    "<=": _ordered(lambda a, b: a <= b),  # type: ignore[operator]
    ">": _ordered(lambda a, b: a > b),  # type: ignore[operator]
    ">=": _ordered(lambda a, b: a >= b),  # type: ignore[operator]
    "==": _equal,
    "=": _equal,
    "!=": _unequal,
}


def _not(value: bool | None) -> bool | None:
    return None if value is None else not value


def _all(parts: list[_Node]) -> _Node:
    def node(lookup: Lookup) -> bool | None:
        results = [part(lookup) for part in parts]
        if False in results:
            return False
        return None if None in results else True

    return node


def _any(parts: list[_Node]) -> _Node:
    def node(lookup: Lookup) -> bool | None:
        results = [part(lookup) for part in parts]
        if True in results:
            return True
        return None if None in results else False

    return node


def parse_where(text: str) -> Filter:
    """Parse a filter expression.

    Args:
        text: Such as ``params < 50000 and (lr <= 0.1 or plan == 'p2')``.

    Returns:
        The parsed filter.

    Raises:
        InvalidInputError: If the text is not a valid expression; the message
            names the column where it goes wrong.
    """
    parser = _Parser(text)
    root = parser.parse()
    return Filter(text=text, names=frozenset(parser.names), _root=root)
