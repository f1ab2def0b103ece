"""Dashboards over one model's history: views, comparisons, best epochs, plots.

Everything here reads a ``Repo`` and writes nothing but what a caller asks
for (a plot file, a tag moved by the CLI). ``views`` narrows metric views by
name, step and epoch range; ``compare`` sets models side by side; ``select``
ranks epochs by a metric under a ``where`` filter; ``plot`` draws the lineage
of a metric; ``server`` serves a local web page over the same functions.
Plotting libraries are imported only by ``plot``, when a plot is written.
"""

from mvcstore.dashboard.compare import (
    Comparison,
    GraphFacts,
    ModelSummary,
    PlanUse,
    compare,
)
from mvcstore.dashboard.plot import Trace, lineage_traces, write_plot
from mvcstore.dashboard.select import Candidate, GraphGroup, Selection, select_best
from mvcstore.dashboard.views import (
    MetricSummary,
    Point,
    View,
    ViewEpoch,
    open_view,
    parse_range,
    series,
    summarize,
)
from mvcstore.dashboard.where import Filter, parse_where

__all__ = [
    "Candidate",
    "Comparison",
    "Filter",
    "GraphFacts",
    "GraphGroup",
    "MetricSummary",
    "ModelSummary",
    "PlanUse",
    "Point",
    "Selection",
    "Trace",
    "View",
    "ViewEpoch",
    "best",
    "compare",
    "lineage_traces",
    "open_view",
    "parse_range",
    "parse_where",
    "select_best",
    "series",
    "summarize",
    "write_plot",
]

best = select_best
"""``mvcstore.dashboard.best(repo, revisions, metric=...)``: see ``select_best``."""
