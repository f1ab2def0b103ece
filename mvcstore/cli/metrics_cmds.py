"""``mvc metrics``: the metric documents of a view, or their summary."""

from __future__ import annotations

import click

from mvcstore import lineage
from mvcstore.cli.common import echo_json, json_option, open_repo
from mvcstore.cli.format import format_number, table
from mvcstore.errors import RevisionNotFoundError
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
    "--summary",
    is_flag=True,
    help="Per metric: count, last value, min and max, with their steps.",
)
@json_option
def metrics(
    revision: str | None, names: tuple[str, ...], summary: bool, as_json: bool
) -> None:
    """List the metric documents of REV's view (default HEAD).

    The view is every document whose epoch is reachable from REV: a forked
    session shows its parent's documents up to the fork, then its own. For a
    session name the documents of its epoch in progress are included. Each
    line shows step, metric name, value, the epoch that logged it ('open' for
    the epoch in progress) and the short uid its documents carry.
    """
    repo = open_repo()
    rev = revision or "HEAD"
    wanted = list(names) or None

    if summary:
        stats = repo.metric_stats(rev, names=wanted)
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

    docs = repo.metrics(rev, names=wanted)
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
