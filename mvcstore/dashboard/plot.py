"""Plotting a metric along the lineage of several models: PNG or offline HTML.

Each model is one trace. The history two models share is drawn once, by the
first model given whose line holds it; every later model's trace starts at its
fork point (the last shared point) and runs on from there, so forks branch off
where they forked. Points where the graph changed (a pruning step) are marked.
matplotlib (Agg, no display) writes PNG; plotly writes one self-contained HTML
file with its JavaScript inline, which opens without a network. Both are
imported here only, when a plot is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mvcstore.codec import ObjectId
from mvcstore.dashboard.views import ViewEpoch, open_view
from mvcstore.errors import InvalidInputError
from mvcstore.repo import Repo

__all__ = ["Trace", "Mark", "lineage_traces", "write_plot", "PLOT_FORMATS"]

PLOT_FORMATS: Final = {".png": "png", ".html": "html", ".htm": "html"}
_COLOURS: Final = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
)


@dataclass(frozen=True, slots=True)
class Mark:
    """A labelled point on a trace.

    Attributes:
        step: Where.
        value: The metric value there.
        label: What happened (``graph changed at b#5``, ``fork at a#3``).
    """

    step: int
    value: float
    label: str


@dataclass(slots=True)
class Trace:
    """One model's curve: its own part of the lineage.

    Attributes:
        revision: The revision as given.
        steps: The steps, ascending.
        values: The values at those steps.
        fork: Where it branches off an earlier trace (its first point), or None
            when it starts at the root.
        graph_changes: Points whose epoch trained another graph than its parent.
    """

    revision: str
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    fork: Mark | None = None
    graph_changes: list[Mark] = field(default_factory=list)


def lineage_traces(repo: Repo, revisions: Sequence[str], metric: str) -> list[Trace]:
    """Return one trace per revision, sharing no point but their fork points.

    Args:
        repo: The repository.
        revisions: The models, in drawing order.
        metric: The metric to draw.

    Returns:
        The traces, in the order of ``revisions``.

    Raises:
        InvalidInputError: If no revision is given.
        RevisionNotFoundError: If a revision names nothing.
    """
    if not revisions:
        raise InvalidInputError(
            "nothing to plot", hint="name one or more sessions, e.g. 'mvc plot a b'"
        )
    drawn: set[str] = set()
    last_point: dict[str, tuple[int, float]] = {}
    traces: list[Trace] = []
    for revision in revisions:
        view = open_view(repo, revision)
        line = view.line()
        own = [epoch for epoch in line if epoch.uid not in drawn]
        shared = [epoch for epoch in line if epoch.uid in drawn]
        trace = Trace(revision=revision)
        if shared and own:
            base = shared[-1]
            at = last_point.get(base.uid)
            if at is not None:
                trace.fork = Mark(at[0], at[1], f"fork at {base.label}")
                trace.steps.append(at[0])
                trace.values.append(at[1])
        first_of: dict[str, int] = {}
        for doc in repo.metrics_index.query(
            {epoch.uid for epoch in own}, names=[metric]
        ):
            first_of.setdefault(doc.uid, len(trace.steps))
            trace.steps.append(doc.step)
            trace.values.append(doc.value)
            last_point[doc.uid] = (doc.step, doc.value)
        trace.graph_changes = _graph_changes(repo, own, first_of, trace)
        drawn.update(epoch.uid for epoch in own)
        traces.append(trace)
    return traces


def _graph_changes(
    repo: Repo, own: Sequence[ViewEpoch], first_of: dict[str, int], trace: Trace
) -> list[Mark]:
    graphs: dict[ObjectId, ObjectId | None] = {}
    marks: list[Mark] = []
    for epoch in own:
        if epoch.id is None or not epoch.parents or epoch.uid not in first_of:
            continue
        parent = epoch.parents[0]
        for oid in (epoch.id, parent):
            if oid not in graphs:
                graphs[oid] = repo.read_epoch(oid).graph
        if graphs[epoch.id] != graphs[parent]:
            index = first_of[epoch.uid]
            marks.append(
                Mark(
                    trace.steps[index],
                    trace.values[index],
                    f"graph changed at {epoch.label}",
                )
            )
    return marks


def write_plot(
    traces: Sequence[Trace], path: Path, *, metric: str, title: str | None = None
) -> str:
    """Write the traces to ``path`` as PNG or HTML, chosen by its extension.

    Args:
        traces: From ``lineage_traces``.
        path: Ends in ``.png``, ``.html`` or ``.htm``.
        metric: The metric drawn (the y axis label).
        title: The plot's title; the metric and models when None.

    Returns:
        The format written: ``png`` or ``html``.

    Raises:
        InvalidInputError: If the extension is not one of those.
    """
    kind = PLOT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError(
            f"cannot tell the plot format of {str(path)!r} from its extension",
            hint="name the output file with .png or .html",
        )
    heading = title or f"{metric}: " + ", ".join(t.revision for t in traces)
    if kind == "png":
        _write_png(traces, path, metric=metric, title=heading)
    else:
        _write_html(traces, path, metric=metric, title=heading)
    return kind


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _write_png(traces: Sequence[Trace], path: Path, *, metric: str, title: str) -> None:
    # the Figure API with the Agg canvas: no display, no global pyplot state
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, trace in enumerate(traces):
        colour = _COLOURS[index % len(_COLOURS)]
        axes.plot(trace.steps, trace.values, color=colour, label=trace.revision)
        if trace.fork is not None:
            axes.plot([trace.fork.step], [trace.fork.value], "o", color=colour)
            axes.annotate(
                trace.fork.label,
                (trace.fork.step, trace.fork.value),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=8,
                color=colour,
            )
        if trace.graph_changes:
            axes.plot(
                [mark.step for mark in trace.graph_changes],
                [mark.value for mark in trace.graph_changes],
                "D",
                color=colour,
                markersize=6,
                markerfacecolor="white",
            )
    if any(trace.graph_changes for trace in traces):
        axes.plot(
            [], [], "D", color="grey", markerfacecolor="white", label="graph changed"
        )
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, format="png")


def _write_html(
    traces: Sequence[Trace], path: Path, *, metric: str, title: str
) -> None:
    import plotly.graph_objects as go  # type: ignore[import-untyped]

    figure = go.Figure()
    for index, trace in enumerate(traces):
        colour = _COLOURS[index % len(_COLOURS)]
        changed = {mark.step for mark in trace.graph_changes}
        figure.add_trace(
            go.Scatter(
                x=trace.steps,
                y=[_finite(value) for value in trace.values],
                mode="lines+markers",
                name=trace.revision,
                uid=f"model-{index}",
                line={"color": colour},
                # one trace per model: graph changes are its larger markers
                marker={
                    "size": [10 if step in changed else 0 for step in trace.steps],
                    "symbol": "diamond-open",
                    "color": colour,
                },
                hovertemplate="step %{x}<br>%{y}<extra>" + trace.revision + "</extra>",
            )
        )
        marks = ([trace.fork] if trace.fork else []) + trace.graph_changes
        for mark in marks:
            figure.add_annotation(
                x=mark.step,
                y=_finite(mark.value),
                text=mark.label,
                showarrow=True,
                arrowhead=2,
                font={"size": 10, "color": colour},
            )
    figure.update_layout(
        title=title, xaxis_title="step", yaxis_title=metric, template="plotly_white"
    )
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)
