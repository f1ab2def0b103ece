"""Model graphs of torch modules: capture, and rebuilding a module from one.

A captured graph is in the seed's ModelGraph shape. Each module that owns
tensors (or has no children) becomes a node keyed by its qualified name, whose
``data`` holds what rebuilding that layer needs: its class, its constructor
arguments, other simple attributes, and the shape and dtype of every parameter
and buffer. When ``torch.fx`` can trace the model, the nodes are wired with the
tensors that flow between them and the graph's ``meta["program"]`` keeps the
traced program in order, enough to rebuild a runnable module without the
model's own class; otherwise the graph falls back to the module tree. A layer
pruned with ``torch.nn.utils.prune`` keeps its logical tensors (``weight``) in
``data`` and the re-parametrisation in the node's ``wrapper`` (see
``mvcstore.torch.pruning``).

Rebuilding imports nothing named by stored data except ``torch.nn`` layer
classes and a short allow-list of tensor functions: a graph is data, never
code. This module never deep-copies a model and never reads the environment.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Final, cast

import torch
import torch.fx
import torch.nn.functional as F  # noqa: N812
from torch import nn

from mvcstore.codec import Value
from mvcstore.errors import InvalidInputError
from mvcstore.objects import Graph, Node
from mvcstore.torch.pruning import logical_tensors, pruning_wrapper
from mvcstore.torch.tensors import dtype_name, torch_dtype

__all__ = [
    "ROOT_ID",
    "class_path",
    "capture_graph",
    "iter_module_nodes",
    "with_pruning_plan",
    "module_args",
    "build_module",
    "rebuild_model",
    "fit_model",
]

ROOT_ID: Final = "(root)"
"""Node id of the model itself when it owns tensors directly."""

_CAPTURE_FX: Final = "fx"
_CAPTURE_TREE: Final = "module-tree"
_OUT: Final = "out"
_SKIPPED_ARGS: Final = frozenset({"self", "device", "dtype"})
_TRACE_ERRORS: Final = (
    torch.fx.proxy.TraceError,
    TypeError,
    ValueError,
    RuntimeError,
    NotImplementedError,
    AttributeError,
    IndexError,
    KeyError,
)
"""What symbolic tracing of arbitrary Python raises on control flow it cannot
follow; any of them means: fall back to the module tree."""
_BLOCKED_TORCH_FUNCTIONS: Final = frozenset({"from_file"})
_FACTORY_HINT: Final = (
    "pass factory=, a function returning a new model of the committed class,"
    " to mvcstore.torch.restore"
)


# -- capture ---------------------------------------------------------------


def _simple(value: object) -> Value | None:
    """Return ``value`` if it is a plain number, string or sequence of them."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        items = [_simple(item) for item in value]
        if all(
            item is not None or original is None
            for item, original in zip(items, value, strict=True)
        ):
            return items
    return None


def _is_simple(value: object) -> bool:
    return value is None or _simple(value) is not None


def class_path(cls: type) -> str:
    """Return ``module.QualifiedName`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def module_args(module: nn.Module) -> dict[str, Value]:
    """Return the constructor arguments a module can be rebuilt with.

    An argument is known when the module keeps an attribute of the same name
    holding a simple value (``Conv2d.in_channels``, ``BatchNorm2d.eps``), or,
    for ``bias``, from whether the module's bias parameter is set. Arguments
    it cannot know (``device``, ``dtype``, anything not kept) are left out.

    Args:
        module: The module.

    Returns:
        Argument name to value, for ``type(module)(**args)``.
    """
    try:
        signature = inspect.signature(type(module).__init__)
    except (TypeError, ValueError):
        return {}
    attributes = vars(module)
    args: dict[str, Value] = {}
    for name, parameter in signature.parameters.items():
        if name in _SKIPPED_ARGS or parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        if name in attributes and _is_simple(attributes[name]):
            args[name] = _simple(attributes[name])
        elif name == "bias" and "bias" in module._parameters:
            args[name] = module._parameters["bias"] is not None
    return args


def _tensor_facts(tensor: torch.Tensor) -> dict[str, Value]:
    return {
        "shape": [int(dim) for dim in tensor.shape],
        "dtype": dtype_name(tensor.dtype),
    }


def _module_data(
    module: nn.Module, path: str, aliases: Sequence[str]
) -> dict[str, Value]:
    args = module_args(module)
    attrs = {
        name: _simple(value)
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name != "training"
        and name not in args
        and _is_simple(value)
    }
    # a pruned tensor is recorded as the layer sees it; its re-parametrisation
    # goes into the node's wrapper
    own_params, own_buffers = logical_tensors(module)
    params = {name: _tensor_facts(param) for name, param in own_params.items()}
    buffers: dict[str, Value] = {}
    for name, buffer in own_buffers.items():
        facts = _tensor_facts(buffer)
        if name in module._non_persistent_buffers_set:
            facts["persistent"] = False
        buffers[name] = facts
    data: dict[str, Value] = {
        "op": "module",
        "class": class_path(type(module)),
        "path": path,
        "args": args,
        "attrs": attrs,
        "params": params,
        "buffers": buffers,
    }
    if aliases:
        data["aliases"] = list(aliases)
    return data


def _module_nodes(
    model: nn.Module, called: frozenset[str] = frozenset()
) -> dict[str, dict[str, Value]]:
    """Return the data of every module that is a node.

    A module is a node when it owns tensors, has no children, or the traced
    program calls it as one layer.
    """
    aliases: dict[int, list[str]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        aliases.setdefault(id(module), []).append(path)
    nodes: dict[str, dict[str, Value]] = {}
    for path, module in model.named_modules():
        owns = any(t is not None for t in module._parameters.values()) or any(
            t is not None for t in module._buffers.values()
        )
        is_leaf = not module._modules
        if path == "" and not owns:
            continue
        if owns or is_leaf or path in called:
            others = [alias for alias in aliases[id(module)] if alias != path]
            nodes[path or ROOT_ID] = _module_data(module, path, others)
    return nodes


def _function_name(target: object) -> str:
    module = getattr(target, "__module__", None) or "builtins"
    if module == "_operator":
        module = "operator"
    name = getattr(target, "__name__", None) or type(target).__name__
    return f"{module}.{name}"


def _encode_arg(value: object) -> Value:
    """Encode one argument of a traced call as a tagged tree."""
    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {"tuple": [_encode_arg(item) for item in value]}
    if isinstance(value, list):
        return {"list": [_encode_arg(item) for item in value]}
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"dict": {key: _encode_arg(item) for key, item in value.items()}}
    if isinstance(value, slice):
        return {
            "slice": [
                _encode_arg(value.start),
                _encode_arg(value.stop),
                _encode_arg(value.step),
            ]
        }
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    return {"unsupported": class_path(type(value))}


def _program(fx_graph: torch.fx.Graph) -> list[Value]:
    program: list[Value] = []
    for fx_node in fx_graph.nodes:
        target = fx_node.target
        program.append(
            {
                "op": fx_node.op,
                "name": fx_node.name,
                "target": target if isinstance(target, str) else _function_name(target),
                "args": _encode_arg(tuple(fx_node.args)),
                "kwargs": _encode_arg(dict(fx_node.kwargs)),
            }
        )
    return program


def _fx_nodes(
    fx_graph: torch.fx.Graph, modules: dict[str, dict[str, Value]]
) -> dict[str, dict[str, Value]]:
    """Return every graph node of a traced program, wired, keyed by id."""
    fx_names = {fx_node.name for fx_node in fx_graph.nodes}
    ids: dict[str, str] = {}
    calls: dict[str, int] = {}
    out_key: dict[str, str] = {}
    nodes: dict[str, dict[str, Value]] = {
        node_id: {"data": data, "inputs": {}, "outputs": {}}
        for node_id, data in modules.items()
    }
    for fx_node in fx_graph.nodes:
        if fx_node.op == "call_module":
            node_id = str(fx_node.target)
        else:
            node_id = fx_node.name
            # a module nobody calls may share a name with a traced function
            while node_id in modules or (
                node_id != fx_node.name and node_id in fx_names
            ):
                node_id += "_"
            data: dict[str, Value] = {
                "op": fx_node.op,
                "target": fx_node.target
                if isinstance(fx_node.target, str)
                else _function_name(fx_node.target),
            }
            constants = [_encode_arg(arg) for arg in fx_node.args]
            if fx_node.op != "output" and (constants or fx_node.kwargs):
                data["args"] = constants
                data["kwargs"] = _encode_arg(dict(fx_node.kwargs))
            nodes[node_id] = {"data": data, "inputs": {}, "outputs": {}}
        ids[fx_node.name] = node_id
        call = calls[node_id] = calls.get(node_id, 0) + 1
        suffix = "" if call == 1 else f"#{call}"
        out_key[fx_node.name] = _OUT + suffix

        inputs = cast(dict[str, Value], nodes[node_id]["inputs"])
        for position, source in enumerate(fx_node.all_input_nodes):
            key = f"in{position}{suffix}"
            inputs[key] = {
                "connections": [
                    {"node": ids[source.name], "output": out_key[source.name]}
                ]
            }
            outputs = cast(dict[str, Value], nodes[ids[source.name]]["outputs"])
            slot = cast(
                dict[str, list[Value]],
                outputs.setdefault(out_key[source.name], {"connections": []}),
            )
            slot["connections"].append({"node": node_id, "input": key})
    return nodes


def _tree_nodes(
    model: nn.Module, modules: dict[str, dict[str, Value]]
) -> dict[str, dict[str, Value]]:
    """Return module nodes wired only along ``nn.Sequential`` containers."""
    nodes: dict[str, dict[str, Value]] = {
        node_id: {"data": data, "inputs": {}, "outputs": {}}
        for node_id, data in modules.items()
    }
    for path, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = [f"{path}.{name}" if path else name for name in module._modules]
        for source, target in zip(children, children[1:], strict=False):
            if source in nodes and target in nodes:
                outputs = cast(dict[str, Value], nodes[source]["outputs"])
                outputs[_OUT] = {"connections": [{"node": target, "input": "in0"}]}
                inputs = cast(dict[str, Value], nodes[target]["inputs"])
                inputs["in0"] = {"connections": [{"node": source, "output": _OUT}]}
    return nodes


def _shapes_of(value: object) -> Value:
    if isinstance(value, torch.Tensor):
        return [int(dim) for dim in value.shape]
    if isinstance(value, list | tuple):
        return [_shapes_of(item) for item in value]
    return None


def _run_example(
    model: nn.Module, example_input: object, node_ids: Mapping[str, str]
) -> tuple[list[Value], dict[str, list[Value]]]:
    """Run one forward pass in eval mode, recording every module's output shape.

    Modes are put back afterwards, so batch-norm statistics and dropout are
    untouched.

    Raises:
        InvalidInputError: If the model cannot run on the example input.
    """
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    shapes: dict[str, list[Value]] = {}
    handles = []
    by_module = dict(model.named_modules())
    for path, node_id in node_ids.items():

        def hook(
            _module: nn.Module, _args: object, output: object, node_id: str = node_id
        ) -> None:
            shapes.setdefault(node_id, []).append(_shapes_of(output))

        handles.append(by_module[path].register_forward_hook(hook))
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"example input does not fit {type(model).__name__} ({exc})",
            hint="pass example_input= a batch shaped like the training data",
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.training = mode
    described: list[Value] = [
        {"shape": _shapes_of(item), "dtype": dtype_name(item.dtype)}
        if isinstance(item, torch.Tensor)
        else {"value": _simple(item)}
        for item in inputs
    ]
    return described, shapes


def capture_graph(model: nn.Module, example_input: object = None) -> Graph:
    """Capture a model's graph: its layers, their wiring, shapes and arguments.

    ``torch.fx`` symbolic tracing gives the wiring; a model it cannot trace
    (data-dependent control flow) is captured from its module tree instead,
    wired only along ``nn.Sequential`` containers. The model is not copied
    and not changed. The same model gives the same graph (and id) every time;
    another layer width or another wiring gives another.

    Args:
        model: The model.
        example_input: A tensor (or tuple of them) to run once in eval mode
            under ``torch.no_grad``, recording input and per-layer output
            shapes; nothing is run when None.

    Returns:
        The graph. ``meta["capture"]`` says how it was captured.

    Raises:
        InvalidInputError: If ``model`` is not a module, holds a tensor whose
            dtype cannot be stored, or cannot run on ``example_input``.
    """
    if not isinstance(model, nn.Module):
        raise InvalidInputError(
            f"expected a torch.nn.Module, got {type(model).__name__}",
            hint="pass the model itself, not its state_dict()",
        )
    meta: dict[str, Value] = {"framework": "torch", "class": class_path(type(model))}
    try:
        fx_graph: torch.fx.Graph | None = torch.fx.Tracer().trace(model)
    except _TRACE_ERRORS as exc:
        fx_graph = None
        meta["trace_error"] = class_path(type(exc))
    called = frozenset(
        str(fx_node.target)
        for fx_node in (fx_graph.nodes if fx_graph is not None else ())
        if fx_node.op == "call_module"
    )
    modules = _module_nodes(model, called)

    if fx_graph is not None:
        meta["capture"] = _CAPTURE_FX
        meta["program"] = _program(fx_graph)
        raw_nodes = _fx_nodes(fx_graph, modules)
    else:
        meta["capture"] = _CAPTURE_TREE
        raw_nodes = _tree_nodes(model, modules)

    if example_input is not None:
        module_ids = {
            cast(str, data["path"]): node_id for node_id, data in modules.items()
        }
        meta["inputs"], shapes = _run_example(model, example_input, module_ids)
        for node_id, found in shapes.items():
            data = cast(dict[str, Value], raw_nodes[node_id]["data"])
            data["output_shapes"] = found

    by_path = dict(model.named_modules())
    wrappers = {
        node_id: pruning_wrapper(by_path[cast(str, data["path"])])
        for node_id, data in modules.items()
    }
    nodes = {
        node_id: Node(
            id=node_id,
            name=node_id,
            data=cast(Mapping[str, Value], parts["data"]),
            inputs=cast(Mapping[str, Value], parts["inputs"]),
            outputs=cast(Mapping[str, Value], parts["outputs"]),
            wrapper=wrappers.get(node_id),
        )
        for node_id, parts in raw_nodes.items()
    }
    return Graph(nodes=nodes, meta=meta)


def with_pruning_plan(
    graph: Graph, plan_id: str, layers: Sequence[str] | None = None
) -> Graph:
    """Return the graph with ``pruning_plan_id`` set on the nodes a plan acts on.

    Args:
        graph: A captured graph.
        plan_id: The plan's id.
        layers: Module paths the plan acts on; every module node that owns
            parameters when None.

    Returns:
        The annotated graph.

    Raises:
        InvalidInputError: If a listed layer is not a node of the graph.
    """
    if layers is None:
        chosen = {
            node_id
            for node_id, node in graph.nodes.items()
            if node.data.get("op") == "module" and node.data.get("params")
        }
    else:
        by_path = {
            node.data.get("path"): node_id
            for node_id, node in graph.nodes.items()
            if node.data.get("op") == "module"
        }
        unknown = [layer for layer in layers if layer not in by_path]
        if unknown:
            raise InvalidInputError(
                f"pruning plan {plan_id!r} names layers the model lacks:"
                f" {', '.join(unknown)}",
                hint="list module paths as printed by 'model.named_modules()'",
            )
        chosen = {by_path[layer] for layer in layers}
    nodes = {
        node_id: replace(node, pruning_plan_id=plan_id) if node_id in chosen else node
        for node_id, node in graph.nodes.items()
    }
    return replace(graph, nodes=nodes)


# -- rebuilding ------------------------------------------------------------


def iter_module_nodes(graph: Graph) -> Iterator[tuple[str, Mapping[str, Value]]]:
    """Yield ``(path, data)`` of every module node, outer modules first."""
    found = [
        (cast(str, node.data.get("path", "")), node.data)
        for node in graph.nodes.values()
        if node.data.get("op") == "module"
    ]
    found.sort(key=lambda item: (item[0] != "", item[0].count(".")))
    yield from found


def _layer_class(name: str) -> type[nn.Module]:
    """Return a ``torch.nn`` layer class by its stored path, refusing others."""
    module_name, _, class_name = name.rpartition(".")
    if not module_name.startswith("torch.nn.") or class_name.startswith("_"):
        raise InvalidInputError(
            f"layer class {name} is not part of torch.nn, so it is not rebuilt"
            " from stored data",
            hint=_FACTORY_HINT,
        )
    found = getattr(nn, class_name, None)
    if not isinstance(found, type) or not issubclass(found, nn.Module):
        raise InvalidInputError(
            f"layer class {name} is unknown to this torch release", hint=_FACTORY_HINT
        )
    return found


def _is_layer_name(name: str) -> bool:
    return name.startswith("torch.nn.")


def _as_argument(value: Value) -> object:
    # stored lists were tuples when captured: layer code compares against tuples
    if isinstance(value, list):
        return tuple(_as_argument(item) for item in value)
    return value


def _tensor_shapes(module: nn.Module) -> dict[str, tuple[list[int], str]]:
    found: dict[str, tuple[list[int], str]] = {}
    params, buffers = logical_tensors(module)
    for kind, table in (("params", params), ("buffers", buffers)):
        for name, tensor in table.items():
            found[f"{kind}.{name}"] = (
                [int(dim) for dim in tensor.shape],
                dtype_name(tensor.dtype),
            )
    return found


def _stored_shapes(data: Mapping[str, Value]) -> dict[str, tuple[list[int], str]]:
    found: dict[str, tuple[list[int], str]] = {}
    for kind in ("params", "buffers"):
        table = cast(Mapping[str, Mapping[str, Value]], data.get(kind) or {})
        for name, facts in table.items():
            shape = [int(cast(int, dim)) for dim in cast(list[Value], facts["shape"])]
            found[f"{kind}.{name}"] = (shape, cast(str, facts["dtype"]))
    return found


def _fit_tensors(
    module: nn.Module, data: Mapping[str, Value], *, reshape: bool
) -> None:
    """Give a module's own tensors the stored dtypes (and shapes), in place.

    Raises:
        InvalidInputError: If a shape differs and ``reshape`` is False.
    """
    have = _tensor_shapes(module)
    buffers = cast(Mapping[str, Mapping[str, Value]], data.get("buffers") or {})
    for key, (shape, dtype) in _stored_shapes(data).items():
        if have.get(key) == (shape, dtype):
            continue
        kind, _, name = key.partition(".")
        if not reshape and key in have and have[key][0] != shape:
            raise InvalidInputError(
                f"layer {data.get('path')!r} built from its stored arguments has"
                f" {name} of shape {have[key][0]}, stored {shape}",
                hint=_FACTORY_HINT,
            )
        fresh = torch.zeros(tuple(shape), dtype=torch_dtype(dtype))
        if kind == "params":
            old = module._parameters.get(name)
            grad = old.requires_grad if old is not None else fresh.is_floating_point()
            module._parameters[name] = nn.Parameter(fresh, requires_grad=grad)
        else:
            module._buffers[name] = fresh
            if buffers[name].get("persistent") is False:
                module._non_persistent_buffers_set.add(name)


def build_module(
    data: Mapping[str, Value], cls: type[nn.Module] | None = None
) -> nn.Module:
    """Build a fresh layer from a graph node's data.

    Args:
        data: A module node's ``data``.
        cls: The class to build; the stored ``torch.nn`` class when None.

    Returns:
        A new layer with fresh weights, shaped and typed as stored.

    Raises:
        InvalidInputError: If the class is not a ``torch.nn`` layer, its stored
            arguments do not fit its constructor, or they build tensors of
            other shapes than the stored ones.
    """
    name = cast(str, data.get("class", "?"))
    layer_class = cls if cls is not None else _layer_class(name)
    args = {
        key: _as_argument(value)
        for key, value in cast(Mapping[str, Value], data.get("args") or {}).items()
    }
    try:
        module = layer_class(**args)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"layer {data.get('path')!r} of class {name} cannot be built from its"
            f" stored arguments ({exc})",
            hint=_FACTORY_HINT,
        ) from exc
    _fit_tensors(module, data, reshape=False)
    return module


def _submodule(root: nn.Module, path: str) -> nn.Module | None:
    module: nn.Module | None = root
    for part in path.split(".") if path else []:
        module = module._modules.get(part) if module is not None else None
    return module


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root
    for part in parent_path.split(".") if parent_path else []:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(name, module)


def fit_model(model: nn.Module, graph: Graph) -> nn.Module:
    """Reshape a freshly built model's layers to follow a stored graph.

    A module whose class, arguments or tensor shapes differ from its node is
    replaced by one built from the node: of the model's own class when that
    is the stored one, else of the stored ``torch.nn`` class. The model itself,
    and a module of the stored class that cannot be built from its recorded
    arguments, keep their objects and get their own tensors reshaped. The
    model is changed in place; modules the graph lacks, or the model lacks,
    are left for the strict state load to report.

    Args:
        model: A model from the user's factory.
        graph: The stored graph.

    Returns:
        ``model``.

    Raises:
        InvalidInputError: If a layer must change class and the stored class is
            not a ``torch.nn`` layer, or a layer cannot be built from its node.
    """
    for path, data in iter_module_nodes(graph):
        current = _submodule(model, path)
        if current is None:
            continue
        same_class = class_path(type(current)) == data.get("class")
        if (
            same_class
            and module_args(current) == dict(cast(Mapping[str, Value], data["args"]))
            and _tensor_shapes(current) == _stored_shapes(data)
        ):
            continue
        if path == "":
            _fit_tensors(current, data, reshape=True)
            continue
        try:
            rebuilt = build_module(data, type(current) if same_class else None)
        except InvalidInputError:
            if not same_class:
                raise
            # a class whose constructor arguments are not all known: keep the
            # object, give its own tensors the stored shapes
            _fit_tensors(current, data, reshape=True)
            continue
        for alias in [path, *cast(list[str], data.get("aliases", []))]:
            _set_submodule(model, alias, rebuilt)
    return model


def _resolve_function(target: str) -> Callable[..., object]:
    """Return a traced function by name, from an allow-list of tensor code."""
    module_name, _, name = target.rpartition(".")
    found: object = None
    if not name.startswith("_"):
        if module_name == "torch" and name not in _BLOCKED_TORCH_FUNCTIONS:
            # native operators only: torch.save and friends are Python functions
            if hasattr(torch._C._VariableFunctions, name):
                found = getattr(torch, name)
        elif module_name == "torch._C._nn":
            # the native layer operators that torch.nn layers call
            found = getattr(torch._C._nn, name, None)
        elif module_name == "torch.nn.functional":
            candidate = getattr(F, name, None)
            if getattr(candidate, "__module__", None) == "torch.nn.functional":
                found = candidate
        elif module_name in ("operator", "math"):
            found = getattr(operator if module_name == "operator" else math, name, None)
        elif target == "builtins.getattr":
            found = getattr
    if not callable(found):
        raise InvalidInputError(
            f"traced function {target} is not one mvcstore rebuilds from stored data",
            hint=_FACTORY_HINT,
        )
    return cast(Callable[..., object], found)


def _decode_arg(value: Value, made: Mapping[str, torch.fx.Node]) -> object:
    """Decode a tagged argument tree, with node names bound to new nodes."""
    if not isinstance(value, Mapping):
        if isinstance(value, list | bytes):
            raise InvalidInputError(f"traced argument {value!r} is not tagged")
        return value
    if len(value) != 1:
        raise InvalidInputError(f"traced argument {value!r} has not one tag")
    ((tag, payload),) = value.items()
    if tag == "node" and isinstance(payload, str) and payload in made:
        return made[payload]
    if tag in ("tuple", "list", "slice") and isinstance(payload, list):
        items = [_decode_arg(item, made) for item in payload]
        if tag == "slice" and len(items) == 3:
            return slice(*items)
        return tuple(items) if tag == "tuple" else items
    if tag == "dict" and isinstance(payload, Mapping):
        return {key: _decode_arg(item, made) for key, item in payload.items()}
    if tag == "ellipsis":
        return Ellipsis
    if tag == "dtype" and isinstance(payload, str):
        dtype = getattr(torch, payload, None)
        if isinstance(dtype, torch.dtype):
            return dtype
    if tag == "device" and isinstance(payload, str):
        return torch.device(payload)
    raise InvalidInputError(
        f"traced argument {value!r} cannot be rebuilt from stored data",
        hint=_FACTORY_HINT,
    )


def _check_name(kind: str, name: str) -> str:
    # private attributes and methods reach interpreter internals: never replayed
    if any(part.startswith("_") for part in name.split(".")):
        raise InvalidInputError(
            f"traced {kind} {name!r} is private, so it is not rebuilt",
            hint=_FACTORY_HINT,
        )
    return name


def _fx_program(program: Sequence[Mapping[str, Value]]) -> torch.fx.Graph:
    fx_graph = torch.fx.Graph()
    made: dict[str, torch.fx.Node] = {}
    for entry in program:
        op = cast(str, entry["op"])
        name = cast(str, entry["name"])
        target_name = cast(str, entry["target"])
        args = _decode_arg(entry["args"], made)
        kwargs = _decode_arg(entry["kwargs"], made)
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise InvalidInputError(f"traced call {name!r} has malformed arguments")
        if op == "output":
            made[name] = fx_graph.output(args[0] if args else None)
            continue
        target: object = target_name
        if op == "call_function":
            target = _resolve_function(target_name)
            if target is getattr:
                if len(args) != 2 or not isinstance(args[1], str):
                    raise InvalidInputError(f"traced getattr {name!r} is malformed")
                _check_name("attribute", args[1])
        elif op in ("call_method", "get_attr", "call_module"):
            _check_name(op.replace("_", " "), target_name)
        elif op != "placeholder":
            raise InvalidInputError(f"traced operation {op!r} is unknown")
        made[name] = fx_graph.create_node(
            op, cast(str, target), args, kwargs, name=name
        )
    return fx_graph


def rebuild_model(graph: Graph) -> nn.Module:
    """Build a runnable model from a graph alone, with fresh weights.

    Every layer is built from its node's class and arguments, and the traced
    program is replayed as a ``torch.fx.GraphModule``.

    Args:
        graph: A graph captured by ``capture_graph`` with ``torch.fx``.

    Returns:
        The model; load the epoch's state into it to get the committed weights.

    Raises:
        InvalidInputError: If the graph was not traced, or holds a layer or a
            function that is not rebuilt from stored data.
    """
    program = graph.meta.get("program")
    if graph.meta.get("capture") != _CAPTURE_FX or not isinstance(program, list):
        raise InvalidInputError(
            f"graph of {graph.meta.get('class', 'the model')} was captured from the"
            " module tree, so it cannot be rebuilt without the model's class",
            hint=_FACTORY_HINT,
        )

    # layers first, in a plain holder the traced program then takes them from;
    # a module the program only reads tensors of (the model itself, the user's
    # own blocks, which fx traces through) becomes a plain holder of them
    entries = cast(list[Mapping[str, Value]], program)
    called = {entry["target"] for entry in entries if entry["op"] == "call_module"}
    holder = nn.Module()
    for path, data in iter_module_nodes(graph):
        if path == "":
            _fit_tensors(holder, data, reshape=True)
            continue
        if path in called or _is_layer_name(cast(str, data.get("class", ""))):
            layer = build_module(data)
        else:
            layer = _submodule(holder, path) or nn.Module()
            _fit_tensors(layer, data, reshape=True)
        for alias in [path, *cast(list[str], data.get("aliases", []))]:
            _set_submodule(holder, alias, layer)
    fx_graph = _fx_program(entries)
    try:
        model = torch.fx.GraphModule(holder, fx_graph, class_name="RebuiltModel")
    except AttributeError as exc:
        raise InvalidInputError(
            f"traced program refers to a layer or tensor the graph lacks ({exc})",
            hint=_FACTORY_HINT,
        ) from exc

    # layers and tensors that the program never uses still own state
    for path, child in holder.named_modules(remove_duplicate=False):
        if path and _submodule(model, path) is None:
            _set_submodule(model, path, child)
    for name, param in holder._parameters.items():
        if name not in model._parameters:
            model.register_parameter(name, param)
    for name, buffer in holder._buffers.items():
        if name not in model._buffers:
            model.register_buffer(
                name, buffer, persistent=name not in holder._non_persistent_buffers_set
            )
    return model
