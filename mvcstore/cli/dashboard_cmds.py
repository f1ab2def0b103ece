"""Dashboard commands: ``mvc compare``, ``mvc best``, ``mvc plot`` and ``mvc ui``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mvcstore.cli.common import echo_json, json_option, open_repo
from mvcstore.cli.format import format_number, printable, table
from mvcstore.codec import ObjectId
from mvcstore.dashboard.compare import Comparison, GraphFacts, ModelSummary, compare
from mvcstore.dashboard.plot import PLOT_FORMATS, lineage_traces, write_plot
from mvcstore.dashboard.select import Candidate, GraphGroup, Selection, select_best
from mvcstore.dashboard.views import MetricSummary, Mode, Point
from mvcstore.dashboard.where import parse_where
from mvcstore.errors import InvalidInputError
from mvcstore.objects import Epoch
from mvcstore.repo import find_repository

__all__ = ["compare_cmd", "best", "plot", "ui"]


def _short(oid: ObjectId | None) -> str:
    return oid.short() if oid is not None else "-"


def _epoch_label(epoch: Epoch | None) -> str:
    if epoch is None:
        return "-"
    return f"{epoch.session}#{epoch.number} ({_short(epoch.id)})"


def _count(value: int | None) -> str:
    return f"{value:,}" if value is not None else "-"


def _point_json(point: Point) -> dict[str, object]:
    return {
        "step": point.step,
        "value": point.value,
        "uid": point.uid,
        "number": point.number,
        "epoch": point.epoch.hex if point.epoch else None,
    }


def _size_json(size: GraphFacts) -> dict[str, object]:
    return {
        "graph": size.graph.hex if size.graph else None,
        "nodes": size.nodes,
        "params": size.params,
    }


def _epoch_json(epoch: Epoch | None) -> dict[str, object] | None:
    if epoch is None:
        return None
    return {
        "id": epoch.id.hex if epoch.id else None,
        "session": epoch.session,
        "number": epoch.number,
        "step": epoch.step,
    }


# -- compare ---------------------------------------------------------------


_HIGHER_IS_BETTER = ("acc", "auc", "f1", "precision", "recall", "score", "iou")
"""Name parts of metrics that are better when higher, unless --max says more."""


def _mode(name: str, maximise: tuple[str, ...]) -> Mode:
    # accuracy-like names are maximised without asking; others need --max
    lowered = name.lower()
    if name in maximise or any(part in lowered for part in _HIGHER_IS_BETTER):
        return "max"
    return "min"


def _model_json(model: ModelSummary, maximise: tuple[str, ...]) -> dict[str, object]:
    return {
        "revision": model.revision,
        "head": _epoch_json(model.head),
        "fork_point": _epoch_json(model.fork_point),
        "epochs": model.epochs,
        "own_epochs": model.own_epochs,
        **_size_json(model.size),
        "metrics": {
            name: {
                "count": item.count,
                "mode": _mode(name, maximise),
                "final": _point_json(item.latest),
                "best": _point_json(item.best(_mode(name, maximise))),
                "min": _point_json(item.min),
                "max": _point_json(item.max),
            }
            for name, item in model.metrics.items()
        },
        "pruning_plans": [
            {"plan": use.plan, "first": use.first, "last": use.last}
            for use in model.plans
        ],
        "graph_changes": model.graph_changes,
    }


def _value_at(point: Point) -> str:
    where = f"#{point.number}" if point.number is not None else "open"
    return f"{format_number(point.value)} (step {point.step}, {where})"


def _metric_rows(comparison: Comparison, maximise: tuple[str, ...]) -> list[list[str]]:
    names = sorted({name for model in comparison.models for name in model.metrics})
    rows: list[list[str]] = []
    for name in names:
        found: list[MetricSummary | None] = [
            model.metrics.get(name) for model in comparison.models
        ]
        mode = _mode(name, maximise)
        rows.append(
            [f"{name} final"]
            + [_value_at(item.latest) if item else "-" for item in found]
        )
        rows.append(
            [f"{name} best ({mode})"]
            + [_value_at(item.best(mode)) if item else "-" for item in found]
        )
    return rows


def _comparison_rows(
    comparison: Comparison, maximise: tuple[str, ...]
) -> list[list[str]]:
    models = comparison.models
    first = models[0].revision
    rows = [
        ["", *[printable(model.revision) for model in models]],
        ["head", *[_epoch_label(model.head) for model in models]],
        [
            f"fork point (with {printable(first)})",
            *[_epoch_label(model.fork_point) for model in models],
        ],
        [
            "epochs (own)",
            *[f"{model.epochs} ({model.own_epochs})" for model in models],
        ],
        *_metric_rows(comparison, maximise),
        ["params", *[_count(model.size.params) for model in models]],
        ["graph nodes", *[_count(model.size.nodes) for model in models]],
        ["graph", *[_short(model.size.graph) for model in models]],
        [
            "pruning plans",
            *[
                ", ".join(
                    f"{printable(use.plan)} (#{use.first}-#{use.last})"
                    for use in model.plans
                )
                or "-"
                for model in models
            ],
        ],
        [
            "graph changes",
            *[
                ", ".join(f"#{number}" for number in model.graph_changes) or "-"
                for model in models
            ],
        ],
    ]
    return rows


@click.command("compare")
@click.argument("revisions", nargs=-1, required=True, metavar="REV1 REV2 [REV ...]")
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="NAME",
    help="Only this metric; repeat for several.",
)
@click.option(
    "--max",
    "maximise",
    multiple=True,
    metavar="NAME",
    help=(
        "Metric NAME is better when higher (default: lower, except names with"
        " acc, auc, f1, precision, recall, score or iou); repeatable."
    ),
)
@json_option
def compare_cmd(
    revisions: tuple[str, ...],
    names: tuple[str, ...],
    maximise: tuple[str, ...],
    as_json: bool,
) -> None:
    """Compare models side by side: one column per revision.

    For each of REV1 REV2 ... shows the head epoch, the fork point it shares
    with REV1, its epochs (and how many are its own, after that fork point),
    the final and best value of each metric in its view, the parameter count
    and node count of its head's graph, the pruning plans in force along its
    line (with the epochs each covered) and the epochs where its graph changed.
    """
    if len(revisions) < 2:
        raise click.UsageError("give two or more revisions to compare")
    repo = open_repo()
    result = compare(repo, list(revisions), names=list(names) or None)
    if as_json:
        echo_json(
            {
                "models": [_model_json(model, maximise) for model in result.models],
                "fork_points": [
                    {"a": a, "b": b, "epoch": _epoch_json(epoch)}
                    for (a, b), epoch in result.fork_points.items()
                ],
            }
        )
        return
    for line in table(_comparison_rows(result, maximise)):
        click.echo(line)


# -- best ------------------------------------------------------------------


def _candidate_json(candidate: Candidate) -> dict[str, object]:
    return {
        "epoch": candidate.epoch.hex,
        "session": candidate.session,
        "number": candidate.number,
        "step": candidate.step,
        "value": candidate.value,
        "uid": candidate.uid,
        "graph": candidate.graph.hex if candidate.graph else None,
    }


def _group_json(rank: int, group: GraphGroup) -> dict[str, object]:
    return {
        "rank": rank,
        **_size_json(group.size),
        "epochs": group.epochs,
        "sessions": list(group.sessions),
        "first": group.first,
        "last": group.last,
        "best": _candidate_json(group.best),
    }


def _selection_json(
    selection: Selection, top: int, tag: dict[str, object] | None
) -> dict[str, object]:
    return {
        "metric": selection.metric,
        "mode": selection.mode,
        "revisions": selection.revisions,
        "scored": selection.scored,
        "passed": selection.passed,
        "best": _candidate_json(selection.winner) if selection.winner else None,
        "ranking": [_candidate_json(item) for item in selection.ranking[:top]],
        "groups": [
            _group_json(rank, group)
            for rank, group in enumerate(selection.groups, start=1)
        ],
        "tag": tag,
    }


def _echo_selection(selection: Selection, top: int) -> None:
    head = (
        f"best {selection.metric} ({selection.mode}) over"
        f" {', '.join(selection.revisions)}: {selection.scored} epochs scored"
    )
    if selection.passed != selection.scored:
        head += f", {selection.passed} pass --where"
    click.echo(printable(head))
    rows = [
        [
            str(rank),
            item.epoch.short(),
            printable(item.label),
            f"{selection.metric}={format_number(item.value)}",
            f"step {item.step}",
        ]
        for rank, item in enumerate(selection.ranking[:top], start=1)
    ]
    for line in table(rows):
        click.echo(line)
    if selection.groups:
        click.echo("by graph:")
        group_rows = [
            ["rank", "graph", "nodes", "params", "epochs", "sessions", "best", "value"]
        ]
        group_rows += [
            [
                str(rank),
                _short(group.graph),
                _count(group.size.nodes),
                _count(group.size.params),
                f"{group.epochs} (#{group.first}-#{group.last})",
                printable(",".join(group.sessions)),
                printable(group.best.label),
                format_number(group.best.value),
            ]
            for rank, group in enumerate(selection.groups, start=1)
        ]
        for line in table(group_rows):
            click.echo(f"  {line}")


@click.command()
@click.argument("revisions", nargs=-1, metavar="[REV ...]")
@click.option(
    "--all",
    "all_refs",
    is_flag=True,
    help="Search the views of every session and tag.",
)
@click.option(
    "--metric",
    required=True,
    metavar="NAME",
    help="Rank epochs by this metric, read at each epoch's last step.",
)
@click.option(
    "--mode",
    type=click.Choice(["max", "min"]),
    default="max",
    show_default=True,
    help="Whether higher (max) or lower (min) values are better.",
)
@click.option(
    "--where",
    "where_text",
    metavar="EXPR",
    help='Only epochs passing EXPR, e.g. "params < 50000 and lr <= 0.1".',
)
@click.option(
    "--per-graph",
    is_flag=True,
    help="Group the epochs by graph (one group per pruning stage); rank groups.",
)
@click.option(
    "--tag",
    "tag_name",
    metavar="NAME",
    help="Move tag NAME to the best epoch (reflogged; undo with 'mvc tag -f').",
)
@click.option(
    "-n",
    "--top",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Show the N best epochs.",
)
@json_option
def best(
    revisions: tuple[str, ...],
    all_refs: bool,
    metric: str,
    mode: Mode,
    where_text: str | None,
    per_graph: bool,
    tag_name: str | None,
    top: int,
    as_json: bool,
) -> None:
    """Find the best epoch across the views of REV ... (default HEAD).

    Each epoch reachable from a given revision is scored by --metric at its
    last step (where a commit logs its summary metrics); ties go to the
    earlier epoch. --where filters on metrics at that step and on
    hyper-parameters (a name such as hp.lr reads only hyper-parameters;
    pruning_plan.share reads into a nested one). --per-graph ranks the
    graphs the epochs trained. --tag moves a tag to the winner.
    """
    if all_refs and revisions:
        raise click.UsageError("give REV ... or --all, not both")
    where = parse_where(where_text) if where_text is not None else None
    repo = open_repo()
    chosen: list[str] | None = None if all_refs else (list(revisions) or ["HEAD"])
    selection = select_best(
        repo, chosen, metric=metric, mode=mode, where=where, per_graph=per_graph
    )
    winner = selection.winner
    if winner is None:
        filtered = " that passes --where" if where is not None else ""
        raise InvalidInputError(
            f"no epoch of {', '.join(selection.revisions) or 'any session'} has"
            f" metric {metric!r} at its last step{filtered}",
            hint="run 'mvc metrics REV --summary' to see the metrics of a view",
        )

    tag: dict[str, object] | None = None
    if tag_name is not None:
        previous = repo.refs.get(f"tags/{tag_name}")
        repo.tag(tag_name, winner.epoch.hex, force=True)
        tag = {
            "name": tag_name,
            "old": previous.hex if previous else None,
            "new": winner.epoch.hex,
        }
    if as_json:
        echo_json(_selection_json(selection, top, tag))
        return
    _echo_selection(selection, top)
    if tag is not None:
        old = tag["old"]
        undo = f"mvc tag -f {tag_name} {old}" if old else f"mvc tag -d {tag_name}"
        click.echo(
            printable(
                f"tag {tag_name}: {str(old)[:12] if old else '(new)'} ->"
                f" {winner.epoch.short()} (undo: {undo})"
            )
        )


# -- plot ------------------------------------------------------------------


@click.command()
@click.argument("revisions", nargs=-1, required=True, metavar="REV1 [REV ...]")
@click.option("--metric", required=True, metavar="NAME", help="The metric to draw.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Where to write: FILE.png (matplotlib) or FILE.html (plotly, offline).",
)
@click.option("--title", metavar="TEXT", help="The plot's title.")
@json_option
def plot(
    revisions: tuple[str, ...],
    metric: str,
    output: Path,
    title: str | None,
    as_json: bool,
) -> None:
    """Draw a metric along the lineage of REV1 REV2 ... into a PNG or HTML file.

    One trace per model. History shared by several models is drawn once,
    with the first model given that holds it; each later model branches off
    at its fork point. Epochs whose graph differs from their parent's (a
    pruning step) are marked. The HTML file carries its JavaScript inline and
    opens without a network.
    """
    if output.suffix.lower() not in PLOT_FORMATS:
        raise InvalidInputError(
            f"cannot tell the plot format of {str(output)!r} from its extension",
            hint="name the output file with .png or .html",
        )
    repo = open_repo()
    traces = lineage_traces(repo, list(revisions), metric)
    if not any(trace.steps for trace in traces):
        raise InvalidInputError(
            f"no document of metric {metric!r} in the views of {', '.join(revisions)}",
            hint="run 'mvc metrics REV --summary' to see the metrics of a view",
        )
    kind = write_plot(traces, output, metric=metric, title=title)
    if as_json:
        echo_json(
            {
                "file": str(output),
                "format": kind,
                "traces": [
                    {
                        "revision": trace.revision,
                        "points": len(trace.steps),
                        "first_step": trace.steps[0] if trace.steps else None,
                        "last_step": trace.steps[-1] if trace.steps else None,
                        "fork": (
                            {"step": trace.fork.step, "label": trace.fork.label}
                            if trace.fork
                            else None
                        ),
                        "graph_changes": [
                            {"step": mark.step, "label": mark.label}
                            for mark in trace.graph_changes
                        ],
                    }
                    for trace in traces
                ],
            }
        )
        return
    count = f"{len(traces)} trace{'' if len(traces) == 1 else 's'}"
    click.echo(printable(f"wrote {output} ({kind}, {count} of {metric})"))


# -- ui --------------------------------------------------------------------


@click.command()
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=8470,
    show_default=True,
    metavar="P",
    help="The port to listen on; 0 picks a free one.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="Only 127.0.0.1, localhost or ::1: the page is never served beyond.",
)
def ui(port: int, host: str) -> None:
    """Serve a local web page over the repository until interrupted.

    The page shows the lineage of every session, a session's metric curves
    (the part inherited from the sessions it forked from drawn apart from its
    own) and a comparison of chosen sessions. The repository is read afresh
    for every request, so new commits show up without a restart. It listens
    on the loopback interface only and prints the URL on stdout.
    """
    from mvcstore.dashboard.server import serve

    root = find_repository()
    serve(root, host=host, port=port, ready=_announce)


def _announce(url: str) -> None:
    # flushed at once: a caller waits for this line to learn the URL
    click.echo(f"serving {url} (Ctrl-C stops)")
    sys.stdout.flush()
