"""``mvc remote``, ``mvc push``, ``mvc pull`` and ``mvc clone``: other repositories.

The commands parse options, open this repository and the remote's, call
``mvcstore.remote`` and print what moved. A transfer's progress (objects and
bytes) goes to stderr: one line redrawn in place on a terminal, otherwise a
line every few seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

import click

from mvcstore.cli.common import open_repo
from mvcstore.codec import ObjectId
from mvcstore.remote import (
    AHEAD,
    CREATED,
    DIVERGED,
    FAST_FORWARD,
    FORCED,
    RefUpdate,
    SyncReport,
    TransferProgress,
    add_remote,
    get_remote,
    list_remotes,
    open_remote,
    remote_spec,
    remove_remote,
)
from mvcstore.remote import clone as clone_repository
from mvcstore.remote import pull as pull_from
from mvcstore.remote import push as push_to

__all__ = ["remote", "push", "pull", "clone"]

_F = TypeVar("_F", bound=Callable[..., object])

_LINE_INTERVAL_S: Final = 5.0
"""Seconds between progress lines when stderr is not a terminal."""
_TTY_INTERVAL_S: Final = 0.1
"""Seconds between redraws of the progress line on a terminal."""

CLONE_REMOTE: Final = "origin"
"""The name a clone gives the repository it was copied from."""


def _uri_options(function: _F) -> _F:
    for part, serves in (
        ("metrics", "es+http://HOST:PORT/INDEX or os+http://HOST:PORT/INDEX"),
        ("refs", "mongodb://HOST:PORT/DATABASE"),
        ("objects", "gs://BUCKET/PREFIX or mongodb://HOST:PORT/DATABASE"),
    ):
        function = click.option(
            f"--{part}",
            metavar="URI",
            help=f"The remote's {part}: {serves}.",
        )(function)
    return function


class _ProgressDisplay:
    """Shows a transfer's progress on stderr while it runs.

    On a terminal one line is rewritten in place (at most ten times a
    second); otherwise a line is printed every few seconds, and a last one at
    the end if any was.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self._last = time.monotonic()
        self._latest: TransferProgress | None = None
        self._width = 0
        self._shown = False

    def __enter__(self) -> _ProgressDisplay:
        return self

    def __call__(self, progress: TransferProgress) -> None:
        self._latest = progress
        now = time.monotonic()
        interval = _TTY_INTERVAL_S if self.tty else _LINE_INTERVAL_S
        if now - self._last < interval:
            return
        self._last = now
        self._show(progress)

    def _show(self, progress: TransferProgress) -> None:
        text = _progress_line(self.label, progress)
        if self.tty:
            click.echo("\r" + text.ljust(self._width), err=True, nl=False)
            self._width = len(text)
        else:
            click.echo(text, err=True)
        self._shown = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._shown or self._latest is None:
            return
        self._show(self._latest)
        if self.tty:
            click.echo("", err=True)


def _progress_line(label: str, progress: TransferProgress) -> str:
    return (
        f"{label}: {progress.objects}/{progress.total} objects, {_size(progress.bytes)}"
    )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _short(oid: ObjectId | None) -> str:
    return oid.short() if oid is not None else "nothing"


@click.group(invoke_without_command=True)
@click.option("-v", "--verbose", is_flag=True, help="Show where each remote is, too.")
@click.pass_context
def remote(ctx: click.Context, verbose: bool) -> None:
    """List the remotes: other repositories to push to and pull from.

    'mvc remote add NAME LOCATION' adds one, where LOCATION is the folder of
    another repository, or its backend URIs given with --objects, --refs and
    --metrics; 'mvc remote remove NAME' removes one and its tracking refs.
    """
    if ctx.invoked_subcommand is not None:
        return
    repo = open_repo()
    for spec in list_remotes(repo):
        click.echo(f"{spec.name}  {spec.location}" if verbose else spec.name)


@remote.command("add")
@click.argument("name")
@click.argument("locations", nargs=-1, metavar="[LOCATION]...")
@_uri_options
def add(
    name: str,
    locations: tuple[str, ...],
    objects: str | None,
    refs: str | None,
    metrics: str | None,
) -> None:
    """Add remote NAME: another repository's folder, or its backend URIs.

    LOCATION is the folder of a repository (or its .mvc folder), or backend
    URIs, each serving the part its scheme serves (gs:// objects, mongodb://
    refs, es+http:// or os+http:// metrics); --objects, --refs and --metrics
    name the parts explicitly. A URI holding credentials is refused.
    """
    repo = open_repo()
    spec = remote_spec(name, locations, objects=objects, refs=refs, metrics=metrics)
    add_remote(repo, spec)
    click.echo(f"added remote {spec.name}: {spec.location}")


@remote.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Remove remote NAME and its tracking refs; no epoch or object is removed."""
    repo = open_repo()
    spec = remove_remote(repo, name)
    click.echo(f"removed remote {spec.name}")


@click.command()
@click.argument("name")
@click.argument("session", required=False)
@click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Move the remote's session even if epochs only it has are left behind.",
)
@click.option("--tags", is_flag=True, help="Push every tag too.")
def push(name: str, session: str | None, force: bool, tags: bool) -> None:
    """Send SESSION (default: the current one) to remote NAME.

    Only the epochs and objects the remote lacks are sent, with the metric
    documents of those epochs. The remote's session moves forward only: if
    the remote has epochs on it that SESSION lacks, the push is refused (pull
    first, or --force). The tracking ref remotes/NAME/SESSION follows.
    """
    repo = open_repo()
    spec = get_remote(repo, name)
    with open_remote(spec) as other, _ProgressDisplay("sending") as shown:
        report = push_to(
            repo,
            other,
            name=spec.name,
            session=session,
            force=force,
            tags=tags,
            progress=shown,
        )
    for update in report.updates:
        click.echo(_push_line(update))
    _summary(report, verb="sent", direction=f"to {spec.name}")


def _push_line(update: RefUpdate) -> str:
    label = f"{update.kind} {update.name}"
    if update.status == CREATED:
        return f"{label}: new at {update.new.short()}"
    if update.status == FAST_FORWARD:
        return f"{label}: {_short(update.old)}..{update.new.short()} (fast-forward)"
    if update.status == FORCED:
        return f"{label}: {_short(update.old)}...{update.new.short()} (forced)"
    return f"{label}: up to date at {update.new.short()}"


@click.command()
@click.argument("name")
@click.argument("session", required=False)
def pull(name: str, session: str | None) -> None:
    """Fetch SESSION (default: every session and tag) from remote NAME.

    Only the epochs and objects this repository lacks are received, with
    their metric documents. A session missing here is created; one behind
    the remote fast-forwards; one that diverged stays, and the remote's head
    is kept as the tracking ref remotes/NAME/SESSION, which the output names
    with the command that keeps it as a session. A tag that differs here is
    left alone.
    """
    repo = open_repo()
    spec = get_remote(repo, name)
    with open_remote(spec) as other, _ProgressDisplay("receiving") as shown:
        report = pull_from(repo, other, name=spec.name, session=session, progress=shown)
    for update in report.updates:
        for line in _pull_lines(update, spec.name):
            click.echo(line)
    _summary(report, verb="received", direction=f"from {spec.name}")


def _pull_lines(update: RefUpdate, name: str) -> list[str]:
    label = f"{update.kind} {update.name}"
    if update.status == CREATED:
        return [f"{label}: new at {update.new.short()}"]
    if update.status == FAST_FORWARD:
        return [f"{label}: {_short(update.old)}..{update.new.short()} (fast-forward)"]
    if update.status == AHEAD:
        return [
            f"{label}: ahead of {name} (here {_short(update.old)}, there"
            f" {update.new.short()}); 'mvc push {name} {update.name}' sends it"
        ]
    if update.status == DIVERGED and update.tracking is not None:
        return [
            f"{label}: diverged from {name}: kept its head {update.new.short()} as"
            f" {update.tracking}; {update.name} stays at {_short(update.old)}",
            f"  keep it as a session with 'mvc branch NEW_NAME --from"
            f" {update.tracking}'",
        ]
    if update.status == DIVERGED:
        return [
            f"{label}: differs from {name} (here {_short(update.old)}, there"
            f" {update.new.short()}); left as it is"
        ]
    return [f"{label}: up to date at {update.new.short()}"]


def _summary(report: SyncReport, *, verb: str, direction: str) -> None:
    sent = report.transfer
    if not sent.epochs:
        click.echo(f"nothing to transfer {direction}: every epoch is there already")
        return
    click.echo(
        f"{verb} {_plural(len(sent.epochs), 'epoch')},"
        f" {_plural(sent.objects, 'object')} ({_size(sent.bytes)}),"
        f" {_plural(sent.docs, 'metric document')} {direction}"
    )


@click.command()
@click.argument("args", nargs=-1, required=True, metavar="[LOCATION]... DIR")
@_uri_options
def clone(
    args: tuple[str, ...],
    objects: str | None,
    refs: str | None,
    metrics: str | None,
) -> None:
    """Copy a repository into DIR/.mvc, a new embedded repository.

    LOCATION is the folder of a repository, or its backend URIs (as for 'mvc
    remote add'); the copy gets every session and tag, their epochs, objects
    and metric documents, and knows the source as remote 'origin'. If the
    copy fails, nothing of DIR/.mvc is left.
    """
    *locations, target = args
    spec = remote_spec(
        CLONE_REMOTE, locations, objects=objects, refs=refs, metrics=metrics
    )
    with _ProgressDisplay("receiving") as shown:
        repo, report = clone_repository(spec, Path(target), progress=shown)
    with repo:
        sessions = [u for u in report.updates if u.kind == "session"]
        tags = [u for u in report.updates if u.kind == "tag"]
        click.echo(
            f"cloned {spec.location} into {repo.path.absolute()}:"
            f" {_plural(len(sessions), 'session')}, {_plural(len(tags), 'tag')}"
        )
        _summary(report, verb="received", direction=f"from {spec.name}")
