"""Properties of names and of the revision parser."""

from __future__ import annotations

import re
import string

from hypothesis import example, given
from hypothesis import strategies as st

from mvcstore.errors import InvalidInputError, InvalidNameError
from mvcstore.refs import Revision, RevisionStep, check_name, parse_revision

NAME_CHARS = "abcXYZ019._-"
ALLOWED = string.ascii_letters + string.digits + "._-/"
parts = st.text(NAME_CHARS, min_size=1, max_size=12).filter(
    lambda part: part[0] not in ".-" and not part.endswith(".lock")
)
names = (
    st.lists(parts, min_size=1, max_size=4)
    .map("/".join)
    .filter(lambda name: name != "HEAD" and len(name) <= 200)
)
hex_prefixes = st.text("0123456789abcdef", min_size=4, max_size=64)
steps = st.lists(
    st.builds(RevisionStep, st.sampled_from("~#"), st.integers(0, 10**12 - 1)),
    max_size=4,
)
revision_like = st.text(
    st.sampled_from("aHEDf09~#/.-_ ~#\x00é٣") | st.characters(), max_size=24
)

# what the grammar accepts, written independently of the parser
GRAMMAR = re.compile(r"(HEAD|[0-9a-f]{4,64}|[A-Za-z0-9._/-]+)((~[0-9]*)|(#[0-9]+))*")


def _render(base: str, items: list[RevisionStep]) -> str:
    return base + "".join(f"{step.op}{step.count}" for step in items)


@given(revision_like)
@example("a~٣")
@example("a#")
@example("~")
@example("a" * 201 + "~1")
@example("a~" + "9" * 13)
@example("HEAD/x")
@example("a/..~1")
def test_parse_raises_only_invalid_input(text: str) -> None:
    try:
        revision = parse_revision(text)
    except InvalidInputError:
        return
    assert revision.text == text
    assert GRAMMAR.fullmatch(text)


@given(st.binary(max_size=30))
def test_parse_of_decoded_bytes_raises_only_invalid_input(data: bytes) -> None:
    try:
        parse_revision(data.decode("latin-1"))
    except InvalidInputError:
        pass


@given(names)
def test_valid_name_is_accepted_and_parses_as_itself(name: str) -> None:
    assert check_name(name) == name

    assert parse_revision(name) == Revision(text=name, base=name, steps=())


@given(names | hex_prefixes | st.just("HEAD"), steps)
def test_base_and_steps_round_trip(base: str, items: list[RevisionStep]) -> None:
    text = _render(base, items)

    parsed = parse_revision(text)

    assert parsed == Revision(text=text, base=base, steps=tuple(items))
    assert parse_revision(_render(parsed.base, list(parsed.steps))) == parsed


@given(names, st.integers(0, 3))
def test_bare_tilde_means_one_step_back(name: str, count: int) -> None:
    parsed = parse_revision(name + "~" * count)

    assert parsed.steps == (RevisionStep("~", 1),) * count


@given(st.text(max_size=40))
@example("HEAD")
@example("a/b.lock")
@example("-a")
@example(".a")
def test_check_name_raises_only_invalid_name(name: str) -> None:
    try:
        assert check_name(name) == name
    except InvalidNameError as exc:
        assert exc.name == name
        return
    assert re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", name)


@given(names, st.characters().filter(lambda char: char not in ALLOWED), st.data())
def test_name_with_a_foreign_character_is_refused(
    name: str, char: str, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(name)))
    spoiled = name[:position] + char + name[position:]

    try:
        check_name(spoiled)
    except InvalidNameError:
        return
    raise AssertionError(f"{spoiled!r} was accepted")
