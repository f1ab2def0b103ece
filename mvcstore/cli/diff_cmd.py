"""``mvc diff``: what changed between two epochs, in the graph and the weights."""

from __future__ import annotations

import click

from mvcstore.cli.common import echo_json, json_option, open_repo
from mvcstore.cli.format import format_number, printable, table
from mvcstore.diff import EpochDiff, NodeChange, Shape, TensorChange, diff_epochs
from mvcstore.objects import Epoch

__all__ = ["diff", "diff_lines"]

_NODE_ORDER = ("added", "removed", "changed")
_TENSOR_ORDER = ("added", "removed", "reshaped", "changed")


def _shape(shape: Shape | None) -> str:
    return "-" if shape is None else f"[{', '.join(str(dim) for dim in shape)}]"


def _short_class(name: str | None) -> str:
    return name.rpartition(".")[2] if name else "-"


def _epoch_label(epoch: Epoch) -> list[str]:
    oid = epoch.id.short() if epoch.id is not None else "?" * 12
    graph = epoch.graph.short() if epoch.graph is not None else "-"
    return [oid, f"{printable(epoch.session)}#{epoch.number}", f"graph {graph}"]


def _node_row(node: NodeChange) -> list[str]:
    cls = _short_class(node.new_class or node.old_class)
    if node.old_class and node.new_class and node.old_class != node.new_class:
        cls = f"{_short_class(node.old_class)} -> {_short_class(node.new_class)}"
    shapes = ", ".join(
        f"{name} {_shape(old)} -> {_shape(new)}"
        for name, (old, new) in node.shapes.items()
    )
    others = [field for field in node.fields if field not in ("params", "buffers")]
    detail = shapes
    if others and node.change == "changed":
        detail += ("; " if detail else "") + "also " + ", ".join(others)
    return [node.change, printable(node.node), cls, detail]


def _tensor_row(tensor: TensorChange) -> list[str]:
    if tensor.change == "added":
        detail = f"{_shape(tensor.new_shape)} {tensor.new_dtype}"
    elif tensor.change == "removed":
        detail = f"{_shape(tensor.old_shape)} {tensor.old_dtype}"
    elif tensor.change == "reshaped":
        detail = f"{_shape(tensor.old_shape)} -> {_shape(tensor.new_shape)}"
    else:
        value = tensor.relative_l2
        detail = "relative L2 " + (format_number(value) if value is not None else "?")
        if tensor.old_dtype != tensor.new_dtype:
            detail += f" ({tensor.old_dtype} -> {tensor.new_dtype})"
    return [tensor.change, printable(tensor.name), detail]


def diff_lines(result: EpochDiff) -> list[str]:
    """Return the text form of an epoch difference, one string per line.

    Args:
        result: The difference.

    Returns:
        The lines: both epochs, the graph changes, then the weight changes
        with a summary of counts.
    """
    lines = table(
        [["old", *_epoch_label(result.old)], ["new", *_epoch_label(result.new)]]
    )
    if result.old.graph == result.new.graph:
        lines.append("graph: same")
    else:
        counts = ", ".join(
            f"{len(result.nodes_of(kind))} {kind}" for kind in _NODE_ORDER
        )
        lines.append(f"graph: {counts}")
        rows = [
            _node_row(node) for kind in _NODE_ORDER for node in result.nodes_of(kind)
        ]
        lines.extend("  " + line for line in table(rows))
    counts = ", ".join(
        f"{len(result.tensors_of(kind))} {kind}" for kind in _TENSOR_ORDER
    )
    lines.append(
        f"weights: {counts}, {result.unchanged} unchanged; parameters"
        f" {result.params_before:,} -> {result.params_after:,}"
    )
    rows = [
        _tensor_row(tensor)
        for kind in _TENSOR_ORDER
        for tensor in result.tensors_of(kind)
    ]
    lines.extend("  " + line for line in table(rows))
    return lines


@click.command()
@click.argument("rev1", metavar="REV1")
@click.argument("rev2", metavar="REV2")
@json_option
def diff(rev1: str, rev2: str, as_json: bool) -> None:
    """Show what changed from epoch REV1 to epoch REV2.

    Graph: nodes added, removed and changed, with the old and new shape of
    each parameter and buffer that changed (a pruned convolution shows its
    weight going from [8, 3, 3, 3] to [5, 3, 3, 3]). Weights: tensors added,
    removed, reshaped, and changed with their relative L2 change
    ||new - old|| / ||old|| computed in float64; unchanged tensors are not
    read. Ends with the parameter counts before and after.
    """
    repo = open_repo()
    result = diff_epochs(repo, rev1, rev2)
    if as_json:
        echo_json(result.to_json())
        return
    for line in diff_lines(result):
        click.echo(line)
