"""What every command family shares: the open repository and JSON output.

Commands open the repository through ``open_repo`` so it is closed when the
command ends, whatever happens; listing commands print JSON through
``echo_json`` so ``--json`` output is strict JSON (NaN and infinities become
strings, ids become hex).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import click

from mvcstore.repo import Repo, json_safe

__all__ = ["open_repo", "echo_json", "json_option"]

_F = TypeVar("_F", bound=Callable[..., object])


def open_repo() -> Repo:
    """Open the repository for the running command (``MVC_DIR`` or cwd upwards).

    Returns:
        The repository; it is closed when the command's context ends.

    Raises:
        RepositoryNotFoundError: If there is none.
        RepositoryFormatError: If its format cannot be read.
    """
    context = click.get_current_context()
    return context.with_resource(Repo.open())


def echo_json(value: object) -> None:
    """Print ``value`` as strict, indented JSON on stdout."""
    text = json.dumps(json_safe(value), indent=2, sort_keys=True, allow_nan=False)
    click.echo(text)


def json_option(function: _F) -> _F:
    """Add the ``--json`` flag, passed to the command as ``as_json``."""
    decorate = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print only JSON on stdout, for scripts.",
    )
    return decorate(function)
