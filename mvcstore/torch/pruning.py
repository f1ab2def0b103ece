"""Pruning re-parametrisations of ``torch.nn.utils.prune``: record and re-apply.

``torch.nn.utils.prune`` replaces a parameter ``weight`` with a parameter
``weight_orig``, a buffer ``weight_mask`` and a forward pre-hook that sets
``weight = weight_orig * weight_mask`` before each forward pass. This module
describes that wrapper as graph data, and puts it back on a freshly built
layer. A graph node keeps the layer's logical tensors (``weight``, with its
shape) in its ``data``, and the re-parametrisation in its ``wrapper``::

    {"kind": "prune",
     "tensors": {"weight": {"steps": [{"method": "l1_unstructured",
                                       "amount": 0.5}],
                            "permanent": False}}}

``steps`` lists the pruning methods applied, oldest first (one entry per
method of a ``PruningContainer``). ``permanent`` is True once ``prune.remove``
made the pruning permanent: the layer is plain again, with its zeros in the
weights. torch keeps no trace of such a removal, so it is learnt from the
parent epoch's graph (see ``with_pruning_history``).

This module reads the pruning hooks the way ``torch.nn.utils.prune`` itself
finds them, through the module's forward pre-hooks. It never stores a mask in
graph data: masks live in the state, as ``NAME_mask``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Final, cast

import torch
from torch import nn
from torch.nn.utils import prune

from mvcstore.codec import Value
from mvcstore.errors import InvalidInputError
from mvcstore.objects import Graph, Node

__all__ = [
    "WRAPPER_KIND",
    "pruning_hooks",
    "pruning_wrapper",
    "logical_tensors",
    "with_pruning_history",
    "apply_pruning",
    "refresh_pruned",
]

WRAPPER_KIND: Final = "prune"
"""The ``kind`` of a pruning wrapper on a graph node."""

_ORIG: Final = "_orig"
_MASK: Final = "_mask"
_METHOD_NAMES: Final[dict[type, str]] = {
    prune.Identity: "identity",
    prune.RandomUnstructured: "random_unstructured",
    prune.L1Unstructured: "l1_unstructured",
    prune.RandomStructured: "random_structured",
    prune.LnStructured: "ln_structured",
    prune.CustomFromMask: "custom_from_mask",
}
_SETTINGS: Final = ("amount", "n", "dim")
"""Constructor arguments of torch's pruning methods, kept with each step."""
_REPLAYS: Final[dict[str, Callable[..., object]]] = {
    "identity": prune.identity,
    "l1_unstructured": prune.l1_unstructured,
    "random_unstructured": prune.random_unstructured,
    "ln_structured": prune.ln_structured,
    "random_structured": prune.random_structured,
}
"""The public function of ``torch.nn.utils.prune`` that applies each method."""
_CUSTOM: Final[Callable[..., object]] = prune.custom_from_mask


def pruning_hooks(module: nn.Module) -> dict[str, prune.BasePruningMethod]:
    """Return the live pruning hooks of a module, by the tensor they prune.

    Args:
        module: Any module; only its own hooks are read, not its children's.

    Returns:
        Tensor name (``weight``) to the pruning method (or container) that
        recomputes it before each forward pass.
    """
    found: dict[str, prune.BasePruningMethod] = {}
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, prune.BasePruningMethod):
            name = getattr(hook, "_tensor_name", None)
            if isinstance(name, str):
                found[name] = hook
    return found


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _step(method: prune.BasePruningMethod) -> dict[str, Value]:
    step: dict[str, Value] = {
        "method": _METHOD_NAMES.get(type(method), _class_path(type(method)))
    }
    for setting in _SETTINGS:
        value = getattr(method, setting, None)
        if isinstance(value, bool | int | float | str):
            step[setting] = value
    return step


def _steps(hook: prune.BasePruningMethod) -> list[Value]:
    if isinstance(hook, prune.PruningContainer):
        return [_step(method) for method in hook]
    return [_step(hook)]


def pruning_wrapper(module: nn.Module) -> dict[str, Value] | None:
    """Return the graph wrapper describing a module's live pruning, if any.

    Args:
        module: A layer.

    Returns:
        ``{"kind": "prune", "tensors": {NAME: {"steps": [...], "permanent":
        False}}}``, or None when no tensor of the module is re-parametrised.
    """
    hooks = pruning_hooks(module)
    if not hooks:
        return None
    tensors: dict[str, Value] = {
        name: {"steps": _steps(hook), "permanent": False}
        for name, hook in sorted(hooks.items())
    }
    return {"kind": WRAPPER_KIND, "tensors": tensors}


def logical_tensors(
    module: nn.Module,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Return a module's own parameters and buffers as the layer sees them.

    A tensor pruned with ``torch.nn.utils.prune`` is listed once under its
    own name (``weight``, with the shape of ``weight_orig``); its mask is left
    out. Unpruned modules give their parameters and buffers as they are.

    Args:
        module: A layer.

    Returns:
        Parameters and buffers by name, leaving out unset (None) entries.
    """
    pruned = pruning_hooks(module)
    params: dict[str, torch.Tensor] = {}
    for name, param in module._parameters.items():
        if param is None:
            continue
        base = name.removesuffix(_ORIG)
        params[base if name.endswith(_ORIG) and base in pruned else name] = param
    buffers = {
        name: buffer
        for name, buffer in module._buffers.items()
        if buffer is not None
        and not (name.endswith(_MASK) and name.removesuffix(_MASK) in pruned)
    }
    return params, buffers


def _prune_tensors(node: Node) -> dict[str, Mapping[str, Value]]:
    wrapper = node.wrapper
    if wrapper is None or wrapper.get("kind") != WRAPPER_KIND:
        return {}
    tensors = wrapper.get("tensors")
    if not isinstance(tensors, Mapping):
        return {}
    return {
        name: entry for name, entry in tensors.items() if isinstance(entry, Mapping)
    }


def with_pruning_history(graph: Graph, parent: Graph | None) -> Graph:
    """Return the graph with permanent pruning carried over from its parent.

    A tensor that the parent epoch's graph records as pruned (live or
    permanent), and that is now a plain parameter of a layer of the same
    class, was made permanent with ``prune.remove``: it is recorded with
    ``"permanent": True`` and the parent's steps.

    Args:
        graph: The graph just captured.
        parent: The parent epoch's graph, if any.

    Returns:
        The annotated graph (``graph`` itself when nothing carries over).
    """
    if parent is None:
        return graph
    nodes = dict(graph.nodes)
    changed = False
    for node_id, node in graph.nodes.items():
        old = parent.nodes.get(node_id)
        if old is None or old.data.get("class") != node.data.get("class"):
            continue
        live = _prune_tensors(node)
        params = node.data.get("params")
        carried: dict[str, Value] = {}
        for name, entry in _prune_tensors(old).items():
            if name in live or not isinstance(params, Mapping) or name not in params:
                continue
            carried[name] = {"steps": entry.get("steps", []), "permanent": True}
        if not carried:
            continue
        tensors: dict[str, Value] = {**carried, **live}
        wrapper: dict[str, Value] = {
            "kind": WRAPPER_KIND,
            "tensors": dict(sorted(tensors.items())),
        }
        nodes[node_id] = replace(node, wrapper=wrapper)
        changed = True
    return replace(graph, nodes=nodes) if changed else graph


def _replay(
    module: nn.Module,
    name: str,
    steps: list[Value],
    mask: torch.Tensor | None,
    label: str,
) -> None:
    """Re-parametrise ``module.name`` with the recorded pruning steps."""
    for raw in steps:
        step: Mapping[str, Value] = raw if isinstance(raw, Mapping) else {}
        method = step.get("method")
        settings = {key: step[key] for key in _SETTINGS if key in step}
        replay = _REPLAYS.get(method) if isinstance(method, str) else None
        try:
            if replay is not None:
                replay(module, name, **settings)
            else:
                # a custom mask, or a pruning class of the user's: the stored
                # mask is what the forward pass needs, and it is loaded next
                ones = torch.ones_like(getattr(module, name))
                _CUSTOM(module, name, mask=mask if mask is not None else ones)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidInputError(
                f"pruning of {label} cannot be re-applied ({exc})",
                hint="pass factory=, a function returning a new model of the"
                " committed class, to mvcstore.torch.restore",
            ) from exc


def apply_pruning(
    model: nn.Module, graph: Graph, state: Mapping[str, object]
) -> list[str]:
    """Re-parametrise the layers whose graph nodes record live pruning.

    Each recorded step is replayed with ``torch.nn.utils.prune`` (random
    methods under ``torch.random.fork_rng``, so the global RNG is left as it
    was); the masks it computes are placeholders, which loading the stored
    state then overwrites with the stored ``NAME_orig`` and ``NAME_mask``.
    Tensors already pruned in ``model`` (a factory that prunes) and permanent
    pruning are left alone: a permanently pruned layer comes back plain.

    Args:
        model: A model whose layers follow the graph.
        graph: The stored graph.
        state: The stored state, by tensor name (for custom masks).

    Returns:
        The qualified names of the tensors re-parametrised.

    Raises:
        InvalidInputError: If a pruning step cannot be replayed on the layer.
    """
    done: list[str] = []
    with torch.random.fork_rng(devices=[]):
        for node in graph.nodes.values():
            path = node.data.get("path")
            if not isinstance(path, str):
                continue
            tensors = _prune_tensors(node)
            if not tensors:
                continue
            try:
                module = model.get_submodule(path)
            except AttributeError:
                continue
            already = pruning_hooks(module)
            for name, entry in tensors.items():
                if entry.get("permanent") is True:
                    # prune.remove puts the tensor back last among the layer's
                    # parameters; keep that order, which optimizers iterate in
                    if name in module._parameters and name not in already:
                        module._parameters[name] = module._parameters.pop(name)
                    continue
                if name in already:
                    continue
                qualified = f"{path}.{name}" if path else name
                mask = state.get(qualified + _MASK)
                steps = entry.get("steps")
                _replay(
                    module,
                    name,
                    cast(list[Value], steps) if isinstance(steps, list) else [],
                    mask if isinstance(mask, torch.Tensor) else None,
                    qualified,
                )
                done.append(qualified)
    return done


def refresh_pruned(model: nn.Module) -> None:
    """Recompute every pruned tensor from its loaded ``_orig`` and ``_mask``.

    Loading a state copies into ``NAME_orig`` and ``NAME_mask`` in place, but
    the pruned tensor itself is only recomputed by the next forward pass;
    this recomputes it at once, so it can be read right after a restore.

    Args:
        model: The model.
    """
    for module in model.modules():
        for name, hook in pruning_hooks(module).items():
            apply_mask: Callable[[nn.Module], torch.Tensor] = hook.apply_mask
            setattr(module, name, apply_mask(module))
