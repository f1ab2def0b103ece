"""Ref commands: ``mvc branch`` (sessions), ``mvc tag`` and ``mvc checkout``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import click

from mvcstore.arrays import RawTensor
from mvcstore.cli.common import echo_json, json_option, open_repo
from mvcstore.cli.format import table
from mvcstore.codec import ObjectId
from mvcstore.errors import InvalidInputError
from mvcstore.objects import Graph
from mvcstore.refs import session_ref
from mvcstore.repo import Checkout, Repo, epoch_to_json
from mvcstore.stfile import write_safetensors
from mvcstore.stores.base import EpochEntry

__all__ = ["checkout", "branch", "tag"]


def _entries(repo: Repo, oids: list[ObjectId]) -> dict[ObjectId, EpochEntry]:
    return repo.index.get_many(oids)


def _where(entry: EpochEntry | None) -> str:
    return f"{entry.session}#{entry.number}" if entry else "?"


# -- checkout ------------------------------------------------------------


def _raw_state(tensors: Mapping[str, object]) -> dict[str, RawTensor]:
    out: dict[str, RawTensor] = {}
    for name, value in tensors.items():
        if not isinstance(value, RawTensor):
            raise InvalidInputError(f"tensor {name!r} was not read as raw bytes")
        out[name] = value
    return out


def _beyond_safetensors(result: Checkout) -> list[str]:
    # C128 is mvcstore's, not safetensors': the file holds it all the same
    states = {"": result.state, **result.extra}
    return [
        f"{role}/{name}" if role else name
        for role, tensors in sorted(states.items())
        for name, value in tensors.items()
        if isinstance(value, RawTensor) and value.dtype == "C128"
    ]


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def _write_text(path: Path, text: str) -> None:
    # through a temporary name, so a reader never sees half a file
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _graph_text(graph: Graph) -> str:
    return json.dumps(graph.to_value(), indent=2, default=_json_default) + "\n"


def _write_checkout(result: Checkout, directory: Path) -> list[str]:
    written = ["weights.safetensors"]
    directory.mkdir(parents=True, exist_ok=True)
    stored = result.epoch.meta.get("safetensors_metadata")
    metadata = (
        {str(key): str(value) for key, value in stored.items()}
        if isinstance(stored, dict)
        else None
    )
    write_safetensors(
        directory / "weights.safetensors", _raw_state(result.state), metadata=metadata
    )
    graph_path = directory / "graph.json"
    if result.graph is not None:
        _write_text(graph_path, _graph_text(result.graph))
        written.append("graph.json")
    elif graph_path.exists():
        # a graph left from another epoch would be read as this one's
        graph_path.unlink()
    for role, tensors in sorted(result.extra.items()):
        target = directory / "extra" / f"{role}.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(target, _raw_state(tensors))
        written.append(f"extra/{role}.safetensors")
    epoch_text = json.dumps(
        epoch_to_json(result.epoch), indent=2, sort_keys=True, allow_nan=False
    )
    _write_text(directory / "epoch.json", epoch_text + "\n")
    written.append("epoch.json")
    return written


@click.command()
@click.argument("revision", metavar="REV")
@click.option(
    "-o",
    "--output",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    default=Path("checkout"),
    show_default=True,
    help="Folder to write the epoch's files into; created if missing.",
)
@click.option(
    "-b",
    "new_session",
    metavar="NEW",
    help="Create session NEW at REV and make it the current session.",
)
@json_option
def checkout(
    revision: str, directory: Path, new_session: str | None, as_json: bool
) -> None:
    """Write an epoch's files into a folder, verifying every byte.

    Writes DIR/weights.safetensors, DIR/graph.json (if the epoch has a graph),
    DIR/extra/ROLE.safetensors for other states and DIR/epoch.json (the
    record); files of those names are replaced. If REV is exactly a session
    name, that session becomes current; -b NEW starts a new session there.
    """
    repo = open_repo()
    epoch_id = repo.resolve_id(revision)
    if new_session is not None:
        session_ref(new_session)
        if repo.read_only:
            raise InvalidInputError(
                f"cannot start session {new_session!r}: the repository is"
                " read-only here",
                hint="check out without -b, or where the repository can be written",
            )
        if repo.session_head(new_session) is not None:
            raise InvalidInputError(
                f"session {new_session!r} already exists",
                hint=f"run 'mvc checkout {new_session}' to switch to it,"
                " or choose another name",
            )

    # read and verify everything before the first file is written
    result = repo.checkout(epoch_id.hex, as_="raw")
    try:
        written = _write_checkout(result, directory)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write the checkout into {directory}: {exc.strerror or exc}",
            hint="choose another folder with 'mvc checkout REV -o DIR'",
        ) from exc
    unreadable = _beyond_safetensors(result)
    if unreadable:
        verb = "is" if len(unreadable) == 1 else "are"
        click.echo(
            f"warning: {', '.join(unreadable)} {verb} complex128 (C128), which"
            " the safetensors library does not read (mvcstore does); read"
            " this epoch through the library instead: Repo.checkout(REV)",
            err=True,
        )

    head: str | None = None
    if new_session is not None:
        repo.create_session(
            new_session, at=epoch_id.hex, message=f"checkout -b from {revision}"
        )
        head = new_session
    elif revision in {name for name, _ in repo.sessions()}:
        head = revision
    if head is not None and repo.head_session() != head:
        if repo.read_only:
            click.echo(
                f"note: {head} is not made the current session: the repository"
                " is read-only here",
                err=True,
            )
            head = None
        else:
            repo.set_head(head)

    if as_json:
        echo_json(
            {
                "epoch": epoch_id.hex,
                "directory": str(directory.absolute()),
                "files": written,
                "head": head,
            }
        )
        return
    epoch = result.epoch
    click.echo(
        f"wrote epoch {epoch_id.short()} ({epoch.session}#{epoch.number})"
        f" to {directory}: {', '.join(written)}"
    )
    if head is not None:
        click.echo(f"current session is now {head}")


# -- branch --------------------------------------------------------------


def _list_sessions(repo: Repo, as_json: bool) -> None:
    head = repo.head_session()
    sessions = repo.sessions()
    entries = _entries(repo, [oid for _, oid in sessions])
    listed: list[tuple[str, ObjectId | None]] = list(sessions)
    if head is not None and head not in {name for name, _ in sessions}:
        listed.append((head, None))
        listed.sort(key=lambda item: item[0])
    if as_json:
        echo_json(
            [
                {
                    "name": name,
                    "epoch": oid.hex if oid else None,
                    "number": entries[oid].number if oid in entries else None,
                    "current": name == head,
                }
                for name, oid in listed
            ]
        )
        return
    rows = [
        [
            name,
            oid.short() if oid else "-",
            f"#{entries[oid].number}" if oid in entries else "(no epoch yet)",
        ]
        for name, oid in listed
    ]
    for (name, _), line in zip(listed, table(rows), strict=True):
        # '*' marks the current session, as git does
        click.echo(f"{'*' if name == head else ' '} {line}")


def _current_epoch(repo: Repo) -> ObjectId | None:
    head = repo.head_session()
    return repo.session_head(head) if head is not None else None


@click.command()
@click.argument("name", required=False)
@click.option(
    "--from",
    "start",
    metavar="REV",
    help="The epoch the new session starts at; default: HEAD.",
)
@click.option(
    "-d",
    "--delete",
    is_flag=True,
    help="Delete session NAME; its epochs stay stored and readable by id.",
)
@json_option
def branch(name: str | None, start: str | None, delete: bool, as_json: bool) -> None:
    """List sessions, or create or delete session NAME.

    Without NAME, lists every session with its head epoch's short id and
    number; '*' marks the current session (HEAD). With NAME, creates a session
    at --from REV (default HEAD); nothing is copied. In a repository whose
    current session has no epoch yet, NAME becomes the current session and
    'mvc commit' starts it.
    """
    if name is None:
        if start is not None or delete:
            raise click.UsageError("--from and -d need a session NAME")
        _list_sessions(open_repo(), as_json)
        return
    if as_json:
        raise click.UsageError("--json lists sessions; it takes no NAME")
    repo = open_repo()

    if delete:
        if start is not None:
            raise click.UsageError("-d takes no --from")
        session_ref(name)
        if repo.head_session() == name:
            raise InvalidInputError(
                f"cannot delete session {name!r}: it is the current session",
                hint="run 'mvc checkout OTHER_SESSION' first, then delete it",
            )
        old = repo.delete_session(name)
        click.echo(f"deleted session {name} (was at {old.short()})")
        return

    if start is None and _current_epoch(repo) is None:
        # nothing to start from yet: the session begins with its first commit
        session_ref(name)
        if repo.session_head(name) is not None:
            raise InvalidInputError(
                f"session {name!r} already exists",
                hint=f"run 'mvc checkout {name}' to switch to it",
            )
        repo.set_head(name)
        click.echo(f"session {name} has no epoch yet; it is now current")
        return
    target = repo.create_session(
        name, at=start or "HEAD", message=f"branch from {start or 'HEAD'}"
    )
    where = _where(_entries(repo, [target]).get(target))
    click.echo(f"created session {name} at {target.short()} ({where})")


# -- tag -----------------------------------------------------------------


@click.command()
@click.argument("name", required=False)
@click.argument("revision", required=False, metavar="[REV]")
@click.option("-d", "--delete", is_flag=True, help="Delete tag NAME.")
@click.option("-f", "--force", is_flag=True, help="Move tag NAME if it already exists.")
@json_option
def tag(
    name: str | None,
    revision: str | None,
    delete: bool,
    force: bool,
    as_json: bool,
) -> None:
    """List tags, or point tag NAME at REV (default HEAD), or delete it.

    A tag names one epoch for good, such as the best model of a comparison;
    unlike a session it never moves unless --force is given.
    """
    repo = open_repo()
    if name is None:
        if revision is not None or delete or force:
            raise click.UsageError("-d and --force need a tag NAME")
        tags = repo.tags()
        entries = _entries(repo, [oid for _, oid in tags])
        if as_json:
            echo_json(
                [
                    {
                        "name": tag_name,
                        "epoch": oid.hex,
                        "session": entries[oid].session if oid in entries else None,
                        "number": entries[oid].number if oid in entries else None,
                    }
                    for tag_name, oid in tags
                ]
            )
            return
        for tag_name, oid in tags:
            click.echo(f"{tag_name}  {oid.short()}  {_where(entries.get(oid))}")
        return
    if as_json:
        raise click.UsageError("--json lists tags; it takes no NAME")

    if delete:
        if revision is not None or force:
            raise click.UsageError("-d takes only the tag NAME")
        old = repo.delete_tag(name)
        click.echo(f"deleted tag {name} (was at {old.short()})")
        return
    target = repo.tag(name, revision or "HEAD", force=force)
    where = _where(_entries(repo, [target]).get(target))
    click.echo(f"tagged {target.short()} ({where}) as {name}")
