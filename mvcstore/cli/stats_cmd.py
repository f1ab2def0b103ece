"""``mvc stats``: what the epochs hold and what they cost in the store."""

from __future__ import annotations

import click

from mvcstore.cli.common import echo_json, json_option, open_repo
from mvcstore.cli.format import table
from mvcstore.errors import RevisionNotFoundError
from mvcstore.stores.stats import UsageStats

__all__ = ["stats"]


@click.command()
@click.argument("revision", required=False, metavar="[REV]")
@click.option(
    "--all",
    "all_refs",
    is_flag=True,
    help="Count the epochs of every session and tag, not only REV's.",
)
@json_option
def stats(revision: str | None, all_refs: bool, as_json: bool) -> None:
    """Show logical, unique and stored bytes, per session and in total.

    The epochs counted are those reachable from REV (default HEAD), or from
    every session and tag with --all. Logical bytes count every epoch's
    tensors as if stored whole; unique bytes, each distinct tensor once;
    stored bytes, every frame those epochs need. The ratios say what
    deduplication, deltas against the parent epoch and compression save.
    """
    if revision is not None and all_refs:
        raise click.UsageError("give REV or --all, not both")
    repo = open_repo()
    try:
        result = repo.stats(revision, all_refs=all_refs)
    except RevisionNotFoundError as exc:
        if revision is not None or repo.head_session() is not None:
            raise
        # no current session: the whole repository is what there is to count
        exc.hint = "give a revision, or count every session with 'mvc stats --all'"
        raise
    if as_json:
        echo_json(result.to_json())
        return
    rows = [["session", "epochs", "logical", "unique", "stored", "ratio"]]
    rows.extend(
        _row(name, usage)
        for name, usage in [*result.sessions.items(), ("total", result.total)]
    )
    for line in table(rows):
        click.echo(line)
    total = result.total
    click.echo("")
    click.echo(
        f"dedup {total.dedup_ratio:.2f}x, deltas {total.delta_ratio:.2f}x"
        f" ({_size(total.delta_bytes)} of data), compression"
        f" {total.compression_ratio:.2f}x ({_size(total.whole_bytes)} of data)"
    )


def _row(name: str, usage: UsageStats) -> list[str]:
    return [
        name,
        str(usage.epochs),
        _size(usage.logical_bytes),
        _size(usage.unique_bytes),
        _size(usage.stored_bytes),
        f"{usage.ratio:.2f}x",
    ]


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"
