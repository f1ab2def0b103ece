"""Committing torch models as epochs, and restoring runnable models from them.

A model's epoch holds its captured graph, its ``state_dict()`` as the state
(a tensor tied under several names is converted once and the ties are kept in
the epoch's ``meta["tied"]``), and, when given, the optimizer's state keyed by
parameter name rather than by position, so it survives layers being rebuilt,
plus the scheduler's state, the RNG states and the data loader's generator
that ``mvcstore.torch.resume`` needs to continue training bit for bit.
Restoring builds a model whose layers follow the stored graph, re-applies
``torch.nn.utils.prune`` re-parametrisations, and loads the state strictly.
Nothing here is unpickled; every tensor goes through the project's own tensor
encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final, cast

import torch
from torch import nn

from mvcstore.arrays import RawTensor
from mvcstore.codec import Value
from mvcstore.errors import InvalidInputError
from mvcstore.objects import Epoch, Graph
from mvcstore.repo import Repo, Session
from mvcstore.torch.graph import (
    capture_graph,
    class_path,
    fit_model,
    rebuild_model,
    with_pruning_plan,
)
from mvcstore.torch.pruning import (
    apply_pruning,
    refresh_pruned,
    with_pruning_history,
)
from mvcstore.torch.tensors import TorchAdapter
from mvcstore.torch.training import (
    RNG_ROLE,
    SCHEDULER_ROLE,
    capture_rng,
    is_stale,
    loader_facts,
    scheduler_state,
)

__all__ = [
    "OPTIMIZER_ROLE",
    "commit",
    "restore",
    "restore_epoch",
    "optimizer_state",
    "load_state",
]

OPTIMIZER_ROLE: Final = "optimizer"
"""The role of the optimizer's state among an epoch's extra states."""

_ADAPTER: Final = TorchAdapter()
_LISTED: Final = 20
"""How many names an error lists before it counts the rest."""


def _listing(names: Sequence[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:_LISTED])
    more = len(names) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _setting(value: object) -> Value | None:
    """Return an optimizer setting as a plain value, or None if it has none."""
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return cast(Value, value.item())
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        items = [_setting(item) for item in value]
        if all(item is not None for item in items):
            return items
    return None


def _model_state(model: nn.Module) -> tuple[dict[str, RawTensor], dict[str, str]]:
    """Return a model's state as raw tensors, and its tied names.

    Returns:
        Tensor name to raw tensor, and each later name of a tied tensor to the
        first name it appears under.
    """
    state: dict[str, RawTensor] = {}
    tied: dict[str, str] = {}
    first: dict[int, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if not isinstance(tensor, torch.Tensor):
            raise InvalidInputError(
                f"state entry {name!r} is a {type(tensor).__name__}, not a tensor",
                hint="keep only tensors in the model's state_dict()"
                " (override get_extra_state to return one)",
            )
        if id(tensor) in first:
            tied[name] = first[id(tensor)]
            state[name] = state[tied[name]]
            continue
        first[id(tensor)] = name
        state[name] = _ADAPTER.to_raw(tensor)
    return state, tied


def optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Value]]:
    """Return an optimizer's state keyed by the model's parameter names.

    A state tensor is stale when it has as many dimensions as its parameter
    but a size that is neither the parameter's nor 1 in some dimension: what
    is left when a layer is pruned in place (``weight.data = weight[keep]``)
    while the optimizer keeps its old momentum. Factored state that
    broadcasts to its parameter (Adafactor's row and column statistics) and
    scalars (Adam's ``step``) are not stale. Stale state is refused, never
    sliced: which channels were kept is known only to the code that pruned.

    Args:
        model: The model whose parameters the optimizer updates.
        optimizer: The optimizer.

    Returns:
        Tensors named ``PARAMETER/KEY`` (``fc.weight/momentum_buffer``), and a
        description: the optimizer's class, its parameter groups (settings
        plus parameter names) and any per-parameter values that are not
        tensors.

    Raises:
        InvalidInputError: If the optimizer updates a tensor that is not one of
            the model's parameters (named by position when the counts agree),
            keeps stale state (each parameter is named with both shapes), or
            keeps state that is neither a tensor nor a plain value.
    """
    named = list(model.named_parameters())
    names = {id(param): name for name, param in named}
    updated = [param for group in optimizer.param_groups for param in group["params"]]
    if any(id(param) not in names for param in updated):
        raise _foreign_parameters(optimizer, updated, named, names)
    packed = optimizer.state_dict()
    by_index: dict[int, str] = {}
    params_by_index: dict[int, torch.Tensor] = {}
    groups: list[Value] = []
    for group, packed_group in zip(
        optimizer.param_groups, packed["param_groups"], strict=True
    ):
        group_names: list[Value] = []
        for param, index in zip(group["params"], packed_group["params"], strict=True):
            name = names[id(param)]
            by_index[index] = name
            params_by_index[index] = param
            group_names.append(name)
        settings: dict[str, Value] = {}
        for key, value in packed_group.items():
            if key != "params" and (value is None or _setting(value) is not None):
                settings[key] = _setting(value)
        settings["params"] = group_names
        groups.append(settings)

    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Value] = {}
    stale: list[str] = []
    for index, values in packed["state"].items():
        name = by_index[index]
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                if is_stale(value, params_by_index[index]):
                    stale.append(
                        f"{name}/{key} {list(value.shape)} vs parameter"
                        f" {list(params_by_index[index].shape)}"
                    )
                tensors[f"{name}/{key}"] = value
            elif value is None or _setting(value) is not None:
                per_param = cast(dict[str, Value], scalars.setdefault(name, {}))
                per_param[key] = _setting(value)
            else:
                raise InvalidInputError(
                    f"optimizer state {key!r} of {name} is a {type(value).__name__},"
                    " which cannot be stored",
                    hint="commit without optimizer= and save that state yourself",
                )
    if stale:
        raise InvalidInputError(
            f"optimizer {type(optimizer).__name__} keeps state of other shapes than"
            f" the parameters: {_listing(stale)}",
            hint="build a new optimizer over model.parameters() after pruning"
            " (or slice its state to the kept channels), then run"
            " mvcstore.torch.commit again",
        )
    described: dict[str, Value] = {
        "class": class_path(type(optimizer)),
        "param_groups": groups,
    }
    if scalars:
        described["scalars"] = scalars
    return tensors, described


def _foreign_parameters(
    optimizer: torch.optim.Optimizer,
    updated: Sequence[torch.Tensor],
    named: Sequence[tuple[str, torch.Tensor]],
    names: Mapping[int, str],
) -> InvalidInputError:
    """Return the error for an optimizer over tensors the model does not own."""
    foreign = [param for param in updated if id(param) not in names]
    if len(updated) == len(named):
        # layers replaced after the optimizer was built: the order still tells
        # which parameter each stale tensor stood for
        detail = "; by position they stand for " + _listing(
            [
                f"{name} (optimizer {list(param.shape)}, model {list(now.shape)})"
                for param, (name, now) in zip(updated, named, strict=True)
                if id(param) not in names
            ]
        )
    else:
        detail = ", of shapes " + _listing([str(list(p.shape)) for p in foreign])
    count = len(foreign)
    return InvalidInputError(
        f"optimizer {type(optimizer).__name__} updates {count}"
        f" tensor{'s' if count > 1 else ''}, each not a parameter of the"
        f" model{detail}",
        hint="build the optimizer from model.parameters() of the model you commit"
        " (a new one after layers were replaced), then run mvcstore.torch.commit"
        " again",
    )


def _plan_parts(plan: Mapping[str, object]) -> tuple[str, list[str] | None]:
    if not isinstance(plan, Mapping):
        raise InvalidInputError(
            f"a pruning plan is a mapping, got {type(plan).__name__}",
            hint="pass pruning_plan={'id': 'NAME', ...}",
        )
    plan_id = plan.get("id")
    if not isinstance(plan_id, str) or not plan_id:
        raise InvalidInputError(
            "a pruning plan needs a non-empty string 'id'",
            hint="pass pruning_plan={'id': 'NAME', ...}",
        )
    layers = plan.get("layers")
    if layers is None:
        return plan_id, None
    if not isinstance(layers, list | tuple) or not all(
        isinstance(layer, str) for layer in layers
    ):
        raise InvalidInputError(
            f"pruning plan {plan_id!r}: 'layers' must be a list of module paths"
        )
    return plan_id, list(layers)


def commit(
    session: Session,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: object | None = None,
    loader: object | None = None,
    rng: bool = True,
    metrics: Mapping[str, object] | None = None,
    params: Mapping[str, object] | None = None,
    message: str | None = None,
    step: int | None = None,
    pruning_plan: Mapping[str, object] | None = None,
    example_input: object = None,
) -> Epoch:
    """Commit a model, and what resuming its training needs, as the next epoch.

    The epoch holds the graph, the model's ``state_dict()`` (a pruned layer's
    ``weight_orig`` and ``weight_mask``, with the re-parametrisation in its
    graph node's ``wrapper``) and, for ``mvcstore.torch.resume``: the
    optimizer's state by parameter name with its parameter groups, the
    scheduler's state, every RNG state and the data loader's generator. The
    epoch's own ``number`` and ``step`` are the counters. ``meta`` records
    ``resume_exact`` and, when False, ``resume_reasons``. Nothing here draws
    from an RNG.

    Args:
        session: The session to extend.
        model: The model; its graph is captured and its ``state_dict()`` stored.
        optimizer: Its state is stored as the ``optimizer`` extra state, keyed
            by parameter name, with its settings in ``meta["optimizer"]``.
        scheduler: A learning-rate scheduler; its ``state_dict()`` is kept in
            ``meta["scheduler"]`` (tensors in it, if any, as the
            ``scheduler`` extra state).
        loader: The training ``DataLoader``; its generator's state is stored
            (create it with ``generator=torch.Generator()``), and why its
            order may not repeat is recorded (workers, no generator).
        rng: Whether to store the RNG states (torch CPU and CUDA, NumPy's
            global RNG, Python's ``random``) as the ``rng`` extra state.
        metrics: Summary metrics of the epoch.
        params: Hyper-parameters; the parent epoch's when None.
        message: Free text.
        step: The epoch's last training step.
        pruning_plan: The pruning plan in force: a mapping with a string
            ``id``, optionally ``layers`` (module paths it acts on; every
            layer with parameters otherwise) and any other settings. It is
            kept in ``params["pruning_plan"]`` and its id on the graph nodes.
        example_input: Passed to ``capture_graph`` to record shapes.

    Returns:
        The committed epoch.

    Raises:
        InvalidInputError: If the model, optimizer, scheduler, loader, plan or
            an input cannot be stored (an optimizer whose state no longer fits
            its parameters is refused, see ``optimizer_state``); nothing is
            changed then.
        RefConflictError: If another writer moved the session meanwhile.
    """
    graph = capture_graph(model, example_input)
    head = session.head
    if head is not None and head.graph is not None:
        # torch forgets prune.remove: the parent's graph remembers the pruning
        graph = with_pruning_history(graph, session.repo.read_graph(head.graph))
    merged: dict[str, object] | None = dict(params) if params is not None else None
    if pruning_plan is not None:
        plan_id, layers = _plan_parts(pruning_plan)
        graph = with_pruning_plan(graph, plan_id, layers)
        if merged is None:
            merged = dict(head.params) if head is not None else {}
        merged["pruning_plan"] = dict(pruning_plan)

    state, tied = _model_state(model)
    meta: dict[str, object] = {"framework": f"torch {torch.__version__}"}
    if tied:
        meta["tied"] = tied
    extra: dict[str, Mapping[str, object]] = {}
    reasons: list[str] = []
    if optimizer is not None:
        tensors, meta["optimizer"] = optimizer_state(model, optimizer)
        extra[OPTIMIZER_ROLE] = tensors
    else:
        reasons.append("the epoch was committed without optimizer=")
    if scheduler is not None:
        scheduler_tensors, meta["scheduler"] = scheduler_state(scheduler)
        if scheduler_tensors:
            extra[SCHEDULER_ROLE] = scheduler_tensors
    if loader is not None:
        meta["loader"], loader_reasons = loader_facts(loader)
        reasons.extend(loader_reasons)
    if rng:
        extra[RNG_ROLE], meta["rng"] = capture_rng(loader)
    else:
        reasons.append("the epoch was committed with rng=False")
    meta["resume_exact"] = not reasons
    if reasons:
        meta["resume_reasons"] = reasons
    return session.commit(
        state,
        graph=graph,
        params=merged,
        metrics=metrics,
        message=message,
        step=step,
        extra=extra or None,
        meta=meta,
    )


def load_state(
    model: nn.Module,
    state: Mapping[str, object],
    *,
    label: str = "the state",
    tied: Mapping[str, str] | None = None,
) -> None:
    """Load tensors into a model strictly, then tie the names that were tied.

    Args:
        model: The model.
        state: Tensor name to torch tensor.
        label: What the state is, for messages (``epoch 1a2b3c4d5e6f``).
        tied: Later name to first name of each tied tensor.

    Raises:
        InvalidInputError: If names are missing or unexpected (all are listed),
            or a tensor's shape differs from the model's.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InvalidInputError(
            f"{label} does not fit the model: missing {_listing(missing)};"
            f" unexpected {_listing(unexpected)}",
            hint="pass factory=, a function returning a new model of the"
            " committed class, to mvcstore.torch.restore",
        )
    mismatched = [
        f"{name} {list(cast(torch.Tensor, state[name]).shape)} vs model"
        f" {list(tensor.shape)}"
        for name, tensor in expected.items()
        if cast(torch.Tensor, state[name]).shape != tensor.shape
    ]
    if mismatched:
        raise InvalidInputError(
            f"{label} has tensors of other shapes than the model:"
            f" {_listing(mismatched)}",
            hint="restore with mvcstore.torch.restore, which reshapes layers"
            " to the stored graph",
        )
    model.load_state_dict(cast(Mapping[str, torch.Tensor], state), strict=True)
    for later, first in (tied or {}).items():
        _tie(model, later, first)


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attribute = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attribute


def _tie(model: nn.Module, later: str, first: str) -> None:
    later_owner, later_name = _owner(model, later)
    first_owner, first_name = _owner(model, first)
    shared = getattr(first_owner, first_name)
    if getattr(later_owner, later_name) is shared:
        return
    if isinstance(shared, nn.Parameter):
        setattr(later_owner, later_name, shared)
    else:
        later_owner._buffers[later_name] = shared


def restore(
    repo: Repo, rev: str, factory: Callable[[], nn.Module] | None = None
) -> nn.Module:
    """Rebuild the model of an epoch, with its weights, on the CPU.

    With a factory, the factory's model is built first and every layer whose
    stored shapes differ (a pruned convolution, say) is replaced by one built
    from the stored graph. Without one, the whole model is rebuilt from the
    graph: its ``torch.nn`` layers and its traced program. Layers that were
    re-parametrised by ``torch.nn.utils.prune`` get their pruning back (the
    ``_orig`` parameter, the ``_mask`` buffer and the forward pre-hook);
    permanently pruned ones come back plain, zeros included. Either way the
    state is loaded strictly, so the model computes exactly what the committed
    one did. The model is returned in training mode, as a new model is; call
    ``eval()`` for inference. The global torch RNG is left as it was: the
    fresh weights of the layers built meanwhile are drawn from a fork of it.

    Args:
        repo: The repository.
        rev: The epoch's revision (``a#6``, ``b``, an id prefix).
        factory: A function returning a new model of the committed class.

    Returns:
        The model.

    Raises:
        RevisionNotFoundError: If ``rev`` names no epoch.
        InvalidInputError: If no model can be built from the epoch, or its
            state does not fit the model (missing and unexpected names are
            listed).
    """
    return restore_epoch(repo, repo.resolve(rev), factory)


def _build_model(
    graph: Graph | None, factory: Callable[[], nn.Module] | None, label: str
) -> nn.Module:
    if factory is not None:
        model = factory()
        if not isinstance(model, nn.Module):
            raise InvalidInputError(
                f"factory returned a {type(model).__name__}, not a torch.nn.Module",
                hint="pass the model's class, or a function that returns a model",
            )
        if graph is not None:
            fit_model(model, graph)
        return model
    if graph is None:
        raise InvalidInputError(
            f"{label} has no graph, so no model can be built from it alone",
            hint="pass factory=, a function returning a new model of the committed"
            " class, to mvcstore.torch.restore",
        )
    return rebuild_model(graph)


def restore_epoch(
    repo: Repo, epoch: Epoch, factory: Callable[[], nn.Module] | None = None
) -> nn.Module:
    """Rebuild the model of an epoch record; see ``restore``.

    Only the epoch's weights and graph are read, not its other states.

    Raises:
        InvalidInputError: If no model can be built from the epoch, or its
            state does not fit the model.
    """
    label = f"epoch {epoch.id.short() if epoch.id else epoch.number}"
    state: dict[str, object] = {}
    if epoch.state is not None:
        state = {
            name: _ADAPTER.from_raw(raw)
            for name, raw in repo.read_state(epoch.state).items()
        }
    graph = repo.read_graph(epoch.graph) if epoch.graph is not None else None
    # building layers draws their fresh weights from the global torch RNG,
    # which the caller's training must not notice
    with torch.random.fork_rng(devices=[]):
        model = _build_model(graph, factory, label)
        if graph is not None:
            apply_pruning(model, graph, state)
    tied = epoch.meta.get("tied")
    load_state(
        model,
        state,
        label=label,
        tied=cast(Mapping[str, str], tied) if isinstance(tied, Mapping) else None,
    )
    refresh_pruned(model)
    return model
