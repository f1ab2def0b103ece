"""``mvc commit``: commit one epoch from files on disk.

Every input is read and checked before the repository is touched: the weights
file, the graph file, hyper-parameters, metric values and the session name. A
bad input therefore leaves the repository exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import click

from mvcstore.cli.common import open_repo
from mvcstore.codec import canonical
from mvcstore.errors import InvalidInputError
from mvcstore.metrics.base import check_metric_name
from mvcstore.objects import Graph, encode_object
from mvcstore.repo import Session
from mvcstore.stfile import read_safetensors

__all__ = ["commit", "parse_param", "parse_metric", "read_json_file", "read_graph"]

_METRIC_HINT = "pass --metric NAME=NUMBER to 'mvc commit', such as --metric loss=0.25"
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def parse_param(text: str) -> tuple[str, object]:
    """Parse ``KEY=VALUE``; VALUE is JSON when it parses, else a string.

    So ``lr=0.1`` is a number, ``amp=true`` a bool, ``opt=adam`` the string
    ``"adam"`` and ``sizes=[1,2]`` a list.

    Raises:
        InvalidInputError: If there is no ``=`` or the key is empty.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise InvalidInputError(
            f"parameter {text!r} is not KEY=VALUE",
            hint="pass --param KEY=VALUE to 'mvc commit', such as --param lr=0.01",
        )
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    except RecursionError as exc:
        raise InvalidInputError(
            f"parameter {key!r} is nested too deeply",
            hint="pass a flatter value, or put it in a file given to --params",
        ) from exc
    return key, value


def parse_metric(text: str) -> tuple[str, float]:
    """Parse ``NAME=NUMBER``.

    Raises:
        InvalidInputError: If there is no ``=``, the name is not a valid metric
            name, or the value is not a number.
    """
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise InvalidInputError(
            f"metric {text!r} is not NAME=VALUE",
            hint=_METRIC_HINT,
        )
    check_metric_name(name)
    try:
        value = float(raw.strip())
    except ValueError as exc:
        raise InvalidInputError(
            f"metric {name!r} must be a number, got {raw!r}",
            hint=_METRIC_HINT,
        ) from exc
    return name, value


def read_json_file(path: Path, what: str) -> object:
    """Read and parse one JSON file.

    Args:
        path: The file.
        what: What the file holds, for messages (``graph``, ``parameters``).

    Raises:
        InvalidInputError: If it cannot be read or is not JSON.
    """
    hint = f"check the file with 'python -m json.tool {path}', then commit again"
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {what} file {path}: {exc.strerror or exc}", hint=hint
        ) from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{what} file {path} is not JSON: not UTF-8 text", hint=hint
        ) from exc
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise InvalidInputError(
            f"{what} file {path} is nested too deeply to read", hint=hint
        ) from exc
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{what} file {path} is not JSON: {exc.msg} at line {exc.lineno}"
            f" column {exc.colno}",
            hint=hint,
        ) from exc


def read_graph(path: Path) -> Graph:
    """Read a graph JSON file and check that it can be stored.

    Raises:
        InvalidInputError: If it is not JSON, not a graph, or holds values the
            canonical encoding refuses.
    """
    value = read_json_file(path, "graph")
    try:
        graph = Graph.from_value(value)
        encode_object(graph)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"graph file {path} is not a valid graph: {exc.message}",
            hint='write the graph as {"nodes": {...}, "meta": {...}}, see'
            " 'mvc checkout' output for an example graph.json",
        ) from exc
    return graph


def _collect_params(
    pairs: Sequence[str], params_file: Path | None, parent: Mapping[str, object]
) -> dict[str, object] | None:
    if not pairs and params_file is None:
        return None
    if params_file is not None:
        loaded = read_json_file(params_file, "parameters")
        if not isinstance(loaded, dict):
            raise InvalidInputError(
                f"parameters file {params_file} must hold a JSON object,"
                f" got {type(loaded).__name__}",
                hint='write the file as {"lr": 0.1, ...} and commit again',
            )
        params: dict[str, object] = dict(loaded)
    else:
        params = dict(parent)
    given: set[str] = set()
    for text in pairs:
        key, value = parse_param(text)
        if key in given:
            raise InvalidInputError(
                f"parameter {key!r} is given twice",
                hint="pass each --param KEY once to 'mvc commit'",
            )
        given.add(key)
        params[key] = value
    try:
        canonical(params)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"parameters cannot be stored: {exc.message}",
            hint="use numbers, strings, bools, null, lists and objects in --param",
        ) from exc
    return params


def _collect_metrics(pairs: Sequence[str]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for text in pairs:
        name, value = parse_metric(text)
        if name in metrics:
            raise InvalidInputError(
                f"metric {name!r} is given twice",
                hint="pass each --metric NAME once to 'mvc commit'",
            )
        metrics[name] = value
    return metrics


@click.command()
@click.option(
    "--session",
    "-s",
    "session_name",
    metavar="NAME",
    help="Session to commit to (created if new); default: the current session.",
)
@click.option(
    "--weights",
    "-w",
    required=True,
    type=_FILE,
    help="The weights, as a .safetensors file (never unpickled).",
)
@click.option(
    "--graph",
    "-g",
    "graph_file",
    type=_FILE,
    help="The model graph as JSON; default: the parent epoch's graph.",
)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A hyper-parameter; VALUE is JSON if it parses, else a string. Repeatable.",
)
@click.option(
    "--params",
    "params_file",
    type=_FILE,
    help="Hyper-parameters as a JSON object; --param values override it.",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME=VALUE",
    help="A summary metric (a number), also logged at --step. Repeatable.",
)
@click.option(
    "--step",
    type=click.IntRange(min=0),
    metavar="N",
    help="The epoch's last training step; default: the parent's step.",
)
@click.option("--message", "-m", help="A message describing the epoch.")
def commit(
    session_name: str | None,
    weights: Path,
    graph_file: Path | None,
    params: tuple[str, ...],
    params_file: Path | None,
    metrics: tuple[str, ...],
    step: int | None,
    message: str | None,
) -> None:
    """Commit an epoch: weights, graph, hyper-parameters and metrics.

    The epoch continues from the session's head (a new session starts with
    epoch 1). Without --graph the parent's graph is kept. Without --param and
    --params the parent's hyper-parameters are kept; --param changes single
    keys of them, --params replaces them all. The session becomes the current
    one (HEAD). Prints the new epoch's full id.
    """
    # inputs that need no repository first: a typo costs no repository access
    summary = _collect_metrics(metrics)
    graph = read_graph(graph_file) if graph_file is not None else None
    tensors, file_metadata = read_safetensors(weights)

    repo = open_repo()
    name = session_name if session_name is not None else repo.head_session()
    if name is None:
        raise InvalidInputError(
            "no current session to commit to",
            hint="run 'mvc branch NAME' to start one, or pass --session NAME",
        )
    session = Session(repo, name)
    parent = session.head
    param_values = _collect_params(params, params_file, parent.params if parent else {})

    epoch = session.commit(
        tensors,
        graph=graph,
        params=param_values,
        metrics=summary,
        message=message,
        step=step,
        # kept so that checkout writes the file's own metadata back
        meta={"safetensors_metadata": file_metadata} if file_metadata else None,
    )
    # HEAD moves only once the epoch is safely in the session
    repo.set_head(name)
    if epoch.id is not None:
        click.echo(epoch.id.hex)
