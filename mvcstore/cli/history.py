"""History commands: ``mvc log``, ``mvc show`` and ``mvc reflog``."""

from __future__ import annotations

import json

import click

from mvcstore.cli.common import echo_json, json_option, open_repo
from mvcstore.cli.format import (
    epoch_line,
    format_number,
    format_time,
    printable,
    ref_labels,
    table,
)
from mvcstore.cli.graph import children_first, draw_lineage
from mvcstore.codec import ObjectId
from mvcstore.errors import CorruptObjectError, RevisionNotFoundError
from mvcstore.objects import Epoch, State, Tensor
from mvcstore.refs import SESSION_PREFIX, TAG_PREFIX
from mvcstore.repo import Repo, epoch_to_json
from mvcstore.stores.base import ReflogEntry

__all__ = ["log", "show", "reflog"]


def _refs_json(repo: Repo) -> dict[ObjectId, dict[str, object]]:
    head = repo.head_session()
    sessions: dict[ObjectId, list[str]] = {}
    tags: dict[ObjectId, list[str]] = {}
    for name, oid in repo.sessions():
        sessions.setdefault(oid, []).append(name)
    for name, oid in repo.tags():
        tags.setdefault(oid, []).append(name)
    return {
        oid: {
            "head": head in sessions.get(oid, []),
            "sessions": sessions.get(oid, []),
            "tags": tags.get(oid, []),
        }
        for oid in sessions.keys() | tags.keys()
    }


def _no_refs() -> dict[str, object]:
    return {"head": False, "sessions": [], "tags": []}


@click.command()
@click.argument("revision", required=False, metavar="[REV]")
@click.option(
    "--all",
    "all_refs",
    is_flag=True,
    help="Show the epochs of every session and tag, not only REV's.",
)
@click.option(
    "--graph",
    "draw",
    is_flag=True,
    help="Draw the lineage: one column per line of history, '/' where it forked.",
)
@click.option(
    "-n",
    "--max-count",
    "limit",
    type=click.IntRange(min=0),
    metavar="N",
    help="Show at most N epochs.",
)
@json_option
def log(
    revision: str | None, all_refs: bool, draw: bool, limit: int | None, as_json: bool
) -> None:
    """List epochs reachable from REV (default HEAD), newest first.

    Each line shows the short id, the refs pointing at the epoch, session and
    epoch number, step, time, summary metrics and message. An epoch shared by
    several sessions is listed once. With --json, each epoch is its full record
    plus the refs pointing at it (--graph is ignored).
    """
    if all_refs and revision is not None:
        raise click.UsageError("give REV or --all, not both")
    repo = open_repo()
    epochs = list(repo.log(revision, all_refs=all_refs, limit=limit))

    if as_json:
        refs = _refs_json(repo)
        echo_json(
            [
                {**epoch_to_json(epoch), "refs": refs.get(_id(epoch), _no_refs())}
                for epoch in epochs
            ]
        )
        return

    labels = ref_labels(repo)
    if not draw:
        for epoch in epochs:
            click.echo(epoch_line(epoch, labels.get(_id(epoch), [])))
        return

    by_key = {_id(epoch).hex: epoch for epoch in epochs}
    order = children_first(
        [(key, [p.hex for p in epoch.parents]) for key, epoch in by_key.items()]
    )
    rows = draw_lineage([(key, [p.hex for p in by_key[key].parents]) for key in order])
    for row in rows:
        if row.key is None:
            click.echo(row.prefix)
        else:
            epoch = by_key[row.key]
            click.echo(f"{row.prefix} {epoch_line(epoch, labels.get(_id(epoch), []))}")


def _id(epoch: Epoch) -> ObjectId:
    if epoch.id is None:
        raise CorruptObjectError(None, "an epoch was read without its id")
    return epoch.id


def _state_size(repo: Repo, oid: ObjectId) -> tuple[int, int]:
    state = repo.get(oid)
    if not isinstance(state, State):
        raise CorruptObjectError(oid.hex, f"expected a state, found a {state.kind}")
    total = 0
    for tensor_id in state.tensors.values():
        tensor = repo.get(tensor_id)
        if not isinstance(tensor, Tensor):
            raise CorruptObjectError(
                tensor_id.hex, f"expected a tensor, found a {tensor.kind}"
            )
        total += tensor.nbytes
    return len(state.tensors), total


@click.command()
@click.argument("revision", metavar="REV")
@json_option
def show(revision: str, as_json: bool) -> None:
    """Show one epoch: its record, graph size and state size.

    Prints the id, the refs pointing at it, parents, session, epoch number,
    step, time, graph id and node count, state id, tensor count and bytes,
    other states, hyper-parameters, summary metrics and message.
    """
    repo = open_repo()
    epoch = repo.resolve(revision)
    oid = _id(epoch)
    nodes = len(repo.read_graph(epoch.graph).nodes) if epoch.graph else None
    # a state dropped by 'mvc retain' may be gone: its record says when and why
    dropped = repo.dropped_epochs([oid]).get(oid)
    gone = (
        f"weights dropped at {format_time(dropped.time_ns)} by '{dropped.policy}'"
        if dropped
        else None
    )
    tensors, nbytes = (
        _state_size(repo, epoch.state) if epoch.state and not gone else (0, 0)
    )
    extra = {
        role: _state_size(repo, sid) if not gone else (0, 0)
        for role, sid in epoch.extra.items()
    }

    if as_json:
        record = epoch_to_json(epoch)
        record.update(
            refs=_refs_json(repo).get(oid, _no_refs()),
            graph_nodes=nodes,
            tensors=tensors,
            state_bytes=nbytes,
            extra_states={
                role: {"id": epoch.extra[role].hex, "tensors": count, "bytes": size}
                for role, (count, size) in extra.items()
            },
            dropped=(
                {"time_ns": dropped.time_ns, "policy": dropped.policy}
                if dropped
                else None
            ),
        )
        echo_json(record)
        return

    labels = ref_labels(repo).get(oid, [])
    rows = [
        ["epoch", oid.hex],
        ["refs", ", ".join(labels) or "-"],
        ["session", epoch.session],
        ["number", str(epoch.number)],
        ["step", str(epoch.step)],
        ["time", format_time(epoch.time_ns)],
        ["parents", " ".join(p.hex for p in epoch.parents) or "- (first epoch)"],
        [
            "graph",
            f"{epoch.graph.hex} ({nodes} node{'' if nodes == 1 else 's'})"
            if epoch.graph
            else "- (no graph)",
        ],
        [
            "state",
            f"{epoch.state.hex} ({gone or _size(tensors, nbytes)})"
            if epoch.state
            else "-",
        ],
    ]
    for role, (count, size) in sorted(extra.items()):
        rows.append(
            [
                f"state:{role}",
                f"{epoch.extra[role].hex} ({gone or _size(count, size)})",
            ]
        )
    for line in table(rows):
        click.echo(line)
    _echo_block(
        "params",
        [[key, json.dumps(value)] for key, value in sorted(epoch.params.items())],
    )
    _echo_block(
        "summary",
        [[name, format_number(value)] for name, value in sorted(epoch.summary.items())],
    )
    if epoch.message:
        click.echo("message")
        for text in epoch.message.splitlines():
            click.echo(f"  {printable(text)}")


def _size(tensors: int, nbytes: int) -> str:
    noun = "tensor" if tensors == 1 else "tensors"
    return f"{tensors} {noun}, {nbytes} bytes"


def _echo_block(title: str, rows: list[list[str]]) -> None:
    if not rows:
        return
    click.echo(title)
    for line in table(rows):
        click.echo(f"  {printable(line)}")


def _reflog_entries(repo: Repo, ref: str | None) -> list[ReflogEntry]:
    if ref is None:
        return repo.refs.reflog()
    if ref.startswith((SESSION_PREFIX, TAG_PREFIX)):
        names = [ref]
    else:
        names = [SESSION_PREFIX + ref, TAG_PREFIX + ref]
    entries = [entry for name in names for entry in repo.refs.reflog(name)]
    if not entries:
        raise RevisionNotFoundError(
            ref, reason="no session or tag by that name ever moved"
        )
    entries.sort(key=lambda entry: entry.time_ns)
    return entries


@click.command()
@click.argument("ref", required=False, metavar="[REF]")
@json_option
def reflog(ref: str | None, as_json: bool) -> None:
    """List the moves of a session or tag (default: every ref), newest first.

    REF is a session or tag name, or a full ref such as sessions/NAME. Each
    line shows the time, the ref, the epoch it left and the one it reached,
    and why it moved. Deleted sessions and tags keep their history here.
    """
    repo = open_repo()
    entries = list(reversed(_reflog_entries(repo, ref)))
    if as_json:
        echo_json(
            [
                {
                    "ref": entry.ref,
                    "old": entry.old.hex if entry.old else None,
                    "new": entry.new.hex if entry.new else None,
                    "time": format_time(entry.time_ns),
                    "time_ns": entry.time_ns,
                    "message": entry.message,
                }
                for entry in entries
            ]
        )
        return
    rows = [
        [
            format_time(entry.time_ns),
            entry.ref,
            f"{entry.old.short() if entry.old else '(new)'}"
            f" -> {entry.new.short() if entry.new else '(deleted)'}",
            printable(entry.message),
        ]
        for entry in entries
    ]
    for line in table(rows):
        click.echo(line)
