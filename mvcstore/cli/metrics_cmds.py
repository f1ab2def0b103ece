"""``mvc metrics``: the metric documents of a view, their summary, latest or best."""

from __future__ import annotations

import click

from mvcstore import lineage
from mvcstore.cli.common import echo_json, json_option, open_repo
from mvcstore.cli.format import format_number, table
from mvcstore.dashboard.views import (
    Mode,
    Point,
    StepRange,
    open_view,
    parse_range,
    series,
    summarize,
)
from mvcstore.errors import InvalidInputError, RevisionNotFoundError
from mvcstore.repo import Repo
from mvcstore.stores.base import EpochEntry

__all__ = ["metrics"]


def _entries_by_uid(repo: Repo, revision: str) -> dict[str, EpochEntry]:
    """Map the uids of the epochs reachable from ``revision`` to their entries."""
    try:
        head = repo.resolve_id(revision)
    except RevisionNotFoundError:
        # a session with no epoch yet: its view holds only its open epoch
        return {}
    reach = lineage.reachable(repo.index, [head])
    return {entry.uid: entry for entry in repo.index.get_many(reach).values()}


@click.command()
@click.argument("revision", required=False, metavar="[REV]")
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="NAME",
    help="Only this metric; repeat for several.",
)
@click.option(
    "--steps",
    "steps_text",
    metavar="A:B",
    help="Only steps A to B (inclusive); A: or :B leaves one end open.",
)
@click.option(
    "--epochs",
    "epochs_text",
    metavar="A:B",
    help="Only epochs numbered A to B on REV's line (inclusive).",
)
@click.option(
    "--summary",
    is_flag=True,
    help="Per metric: count, last value, min and max, with their steps.",
)
@click.option(
    "--latest",
    is_flag=True,
    help="Per metric: the value at the largest step, and its epoch.",
)
@click.option(
    "--best",
    "best_mode",
    type=click.Choice(["min", "max"]),
    metavar="min|max",
    help="Per metric: the smallest (min) or largest (max) value, and its epoch.",
)
@json_option
def metrics(
    revision: str | None,
    names: tuple[str, ...],
    steps_text: str | None,
    epochs_text: str | None,
    summary: bool,
    latest: bool,
    best_mode: Mode | None,
    as_json: bool,
) -> None:
    """List the metric documents of REV's view (default HEAD).

    The view is every document whose epoch is reachable from REV: a forked
    session shows its parent's documents up to the fork, then its own. For a
    session name the documents of its epoch in progress are included. Each
    line shows step, metric name, value, the epoch that logged it ('open' for
    the epoch in progress) and the short uid its documents carry. --steps and
    --epochs narrow the view; --summary, --latest and --best summarise it.
    """
    if sum((summary, latest, best_mode is not None)) > 1:
        raise click.UsageError("give at most one of --summary, --latest, --best")
    steps = option_range(steps_text, what="steps", option="--steps")
    epochs = option_range(epochs_text, what="epochs", option="--epochs")
    repo = open_repo()
    rev = revision or "HEAD"
    wanted = list(names) or None

    if latest or best_mode is not None:
        _echo_points(repo, rev, wanted, steps, epochs, best_mode, as_json)
        return
    if summary:
        stats = repo.metrics_index.stats(
            open_view(repo, rev).uids(epochs),
            names=wanted,
            min_step=steps[0],
            max_step=steps[1],
        )
        ordered = [stats[key] for key in sorted(stats)]
        if as_json:
            echo_json(
                [
                    {
                        "name": item.name,
                        "count": item.count,
                        "first_step": item.first_step,
                        "last_step": item.last_step,
                        "last": item.last,
                        "min": item.min,
                        "min_step": item.min_step,
                        "max": item.max,
                        "max_step": item.max_step,
                    }
                    for item in ordered
                ]
            )
            return
        rows = [["name", "count", "last (step)", "min (step)", "max (step)"]]
        rows += [
            [
                item.name,
                str(item.count),
                f"{format_number(item.last)} ({item.last_step})",
                f"{format_number(item.min)} ({item.min_step})",
                f"{format_number(item.max)} ({item.max_step})",
            ]
            for item in ordered
        ]
        for line in table(rows):
            click.echo(line)
        return

    docs = list(series(repo, rev, names=wanted, steps=steps, epochs=epochs))
    by_uid = _entries_by_uid(repo, rev)
    if as_json:
        echo_json(
            [
                {
                    "step": doc.step,
                    "name": doc.name,
                    "value": doc.value,
                    "uid": doc.uid,
                    "epoch": by_uid[doc.uid].id.hex if doc.uid in by_uid else None,
                    "number": by_uid[doc.uid].number if doc.uid in by_uid else None,
                }
                for doc in docs
            ]
        )
        return
    rows = [["step", "name", "value", "epoch", "uid"]]
    for doc in docs:
        entry = by_uid.get(doc.uid)
        where = f"{entry.id.short()} #{entry.number}" if entry else "open"
        rows.append(
            [str(doc.step), doc.name, format_number(doc.value), where, doc.uid[:12]]
        )
    if len(rows) > 1:
        for line in table(rows):
            click.echo(line)


def _echo_points(
    repo: Repo,
    rev: str,
    names: list[str] | None,
    steps: StepRange,
    epochs: StepRange,
    mode: Mode | None,
    as_json: bool,
) -> None:
    """Print one point per metric: the latest, or the best in ``mode``."""
    view = open_view(repo, rev)
    summaries = summarize(repo, rev, names=names, steps=steps, epochs=epochs, view=view)
    points: list[Point] = [
        item.latest if mode is None else item.best(mode) for item in summaries.values()
    ]
    if as_json:
        echo_json(
            [
                {
                    "name": point.name,
                    "step": point.step,
                    "value": point.value,
                    "uid": point.uid,
                    "epoch": point.epoch.hex if point.epoch else None,
                    "number": point.number,
                }
                for point in points
            ]
        )
        return
    rows = [["name", "value", "step", "epoch"]]
    for point in points:
        item = view.epoch(point.uid)
        where = (
            f"{point.epoch.short()} {item.label}"
            if point.epoch is not None and item is not None
            else (item.label if item is not None else "-")
        )
        rows.append([point.name, format_number(point.value), str(point.step), where])
    if len(rows) > 1:
        for line in table(rows):
            click.echo(line)


def option_range(text: str | None, *, what: str, option: str) -> StepRange:
    """Parse an ``A:B`` option; a malformed one is a usage error (exit 2)."""
    try:
        return parse_range(text, what=what)
    except InvalidInputError as exc:
        raise click.BadParameter(exc.message, param_hint=option) from exc
