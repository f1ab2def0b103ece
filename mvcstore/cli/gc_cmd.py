"""Storage maintenance commands: ``mvc gc`` and ``mvc retain``.

Both parse their options, call ``mvcstore.gc`` and format what it reports;
neither holds storage logic.
"""

from __future__ import annotations

import re
from typing import Final

import click

from mvcstore.cli.common import echo_json, json_option, open_repo
from mvcstore.cli.format import table
from mvcstore.errors import InvalidInputError
from mvcstore.gc import (
    DEFAULT_GRACE_S,
    DEFAULT_REFLOG_S,
    GcReport,
    RetainPolicy,
    RetainReport,
    collect,
    retain,
)

__all__ = ["gc", "retain_command", "Duration", "parse_duration"]

_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")


def parse_duration(text: str) -> float:
    """Return ``text`` (``90``, ``90s``, ``30m``, ``1h``, ``2d``, ``1w``) in seconds.

    Raises:
        ValueError: If ``text`` is not a duration.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


class Duration(click.ParamType[float]):
    """A click parameter for durations such as ``1h`` or ``30d``."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """Return the duration in seconds, or fail as a usage error."""
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError:
            self.fail(
                f"{value!r} is not a duration such as 0, 90s, 30m, 1h or 30d",
                param,
                ctx,
            )


def _size(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} bytes"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@click.command()
@click.option(
    "--dry-run", is_flag=True, help="Report what would be removed; remove nothing."
)
@click.option(
    "--grace",
    "grace_s",
    type=Duration(),
    default=DEFAULT_GRACE_S,
    show_default="1h",
    metavar="DURATION",
    help="Keep unreferenced objects, documents and temporary files younger than"
    " this. 0 is safe only while nothing else writes to the repository.",
)
@click.option(
    "--reflog-expiry",
    "reflog_s",
    type=Duration(),
    default=DEFAULT_REFLOG_S,
    show_default="30d",
    metavar="DURATION",
    help="Keep the epochs of reflog entries younger than this.",
)
@json_option
def gc(dry_run: bool, grace_s: float, reflog_s: float, as_json: bool) -> None:
    """Remove objects, epochs and metric documents no view can reach.

    Keeps everything reachable from every session and tag, from the reflog
    entries younger than --reflog-expiry, and from live open epochs, and
    everything younger than --grace. Removes the rest: objects, their epochs'
    index rows, metric documents of epochs gone, abandoned open epochs and
    stale temporary files. Weights dropped by 'mvc retain' go here too.
    """
    repo = open_repo()
    report = collect(repo, grace_s=grace_s, reflog_s=reflog_s, dry_run=dry_run)
    if as_json:
        echo_json(_gc_json(report))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {_plural(report.objects, 'object')} ({_size(report.bytes)}),"
        f" {_plural(report.epochs, 'epoch')},"
        f" {_plural(report.docs, 'metric document')},"
        f" {_plural(report.open_epochs, 'abandoned open epoch')},"
        f" {_plural(report.temporaries, 'temporary file')}"
        f" ({_size(report.temporary_bytes)})"
    )
    click.echo(
        f"kept {_plural(report.reachable, 'object')} reachable from sessions,"
        " tags, the reflog or open epochs, and"
        f" {report.kept_young} unreferenced younger than the grace period"
    )


def _gc_json(report: GcReport) -> dict[str, object]:
    return {
        "dry_run": report.dry_run,
        "objects": report.objects,
        "bytes": report.bytes,
        "epochs": report.epochs,
        "docs": report.docs,
        "uids": report.uids,
        "open_epochs": report.open_epochs,
        "temporaries": report.temporaries,
        "temporary_bytes": report.temporary_bytes,
        "reachable": report.reachable,
        "kept_young": report.kept_young,
    }


@click.command("retain")
@click.argument("sessions", nargs=-1, required=True, metavar="SESSION...")
@click.option(
    "--keep-last",
    type=click.IntRange(min=0),
    metavar="N",
    help="Keep the weights of the newest N epochs of each line.",
)
@click.option(
    "--keep-best",
    type=click.IntRange(min=1),
    metavar="N",
    help="Keep the weights of the N best epochs by --metric.",
)
@click.option(
    "--metric",
    metavar="NAME",
    help="The metric ranking epochs for --keep-best (its last value per epoch).",
)
@click.option(
    "--mode",
    type=click.Choice(["max", "min"]),
    help="Whether the best values of --metric are the largest or the smallest.",
)
@click.option(
    "--keep-every",
    type=click.IntRange(min=1),
    metavar="K",
    help="Keep the weights of epochs whose number is a multiple of K.",
)
@click.option(
    "--keep-tagged", is_flag=True, help="Keep the weights of epochs a tag points at."
)
@click.option(
    "--dry-run", is_flag=True, help="Show what would be dropped; record nothing."
)
@json_option
def retain_command(
    sessions: tuple[str, ...],
    keep_last: int | None,
    keep_best: int | None,
    metric: str | None,
    mode: str | None,
    keep_every: int | None,
    keep_tagged: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Drop the weights of epochs a policy does not keep; keep every record.

    Works on each SESSION's first-parent line. Epoch records, graphs and metric
    documents all stay, so log, views and comparisons are unchanged; checking
    out a dropped epoch says when and by which policy its weights went. Always
    kept: each head, the best epoch by --metric, the base of a live open epoch,
    epochs another session reaches and fork points. Run 'mvc gc' afterwards
    to free the space.
    """
    policy = RetainPolicy(
        keep_last=keep_last,
        keep_best=keep_best,
        metric=metric,
        mode=mode,
        keep_every=keep_every,
        keep_tagged=keep_tagged,
    )
    try:
        policy.check()
    except InvalidInputError as exc:
        # a policy that is missing or malformed is a usage error (exit 2)
        detail = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        raise click.UsageError(detail) from exc
    repo = open_repo()
    report = retain(repo, sessions, policy, dry_run=dry_run)
    if as_json:
        echo_json(_retain_json(report))
        return
    for line in table([["epoch", "#", "weights", "why"], *_retain_rows(report)]):
        click.echo(line)
    verb = "would drop" if dry_run else "dropped"
    click.echo(
        f"{verb} the weights of {_plural(len(report.dropped), 'epoch')}"
        f" ({len(report.already_dropped)} dropped earlier); policy: {report.policy}"
    )
    if report.dropped and not dry_run:
        click.echo("run 'mvc gc' to free their space")


def _retain_rows(report: RetainReport) -> list[list[str]]:
    rows = []
    dropped = set(report.dropped)
    ordered = sorted(
        report.entries.values(), key=lambda entry: (-entry.number, -entry.time_ns)
    )
    for entry in ordered:
        if entry.id in report.kept:
            status, why = "kept", ", ".join(report.kept[entry.id])
        elif entry.id in dropped:
            status, why = "drop", ""
        else:
            status, why = "dropped", "earlier policy"
        rows.append([entry.id.short(), str(entry.number), status, why])
    return rows


def _retain_json(report: RetainReport) -> dict[str, object]:
    return {
        "sessions": report.sessions,
        "policy": report.policy,
        "dry_run": report.dry_run,
        "kept": {oid.hex: why for oid, why in report.kept.items()},
        "dropped": [oid.hex for oid in report.dropped],
        "already_dropped": [oid.hex for oid in report.already_dropped],
    }
