"""Resuming training from an epoch: model, optimizer, scheduler, RNG, counters.

``resume`` brings back everything ``mvcstore.torch.commit`` stored so that
training continues as if it had never stopped: on the CPU, training epochs
1 to 6 in one process gives the same bits as training 1 to 3, committing, and
resuming in a new process for 4 to 6. The order is fixed, because building
things draws from the RNGs (a factory initialising weights, say):

1. the model (``restore``: layers follow the graph, pruning re-applied,
   state loaded strictly);
2. the optimizer from ``optimizer_factory(model)``, then the scheduler from
   ``scheduler_factory(optimizer)``, both fresh as in a training script;
3. the optimizer's state (by parameter name) and parameter groups, then the
   scheduler's state;
4. last, the RNG states: the data loader's generator, Python's ``random``,
   NumPy's global RNG, torch's CPU RNG, then each CUDA device's.

Whatever cannot be brought back (a loader with worker processes, a loader
without its own generator, no optimizer state) makes the resume inexact: the
result says why, and ``resume`` warns with ``InexactResumeWarning``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mvcstore.arrays import to_numpy
from mvcstore.codec import Value
from mvcstore.errors import InvalidInputError
from mvcstore.objects import Epoch
from mvcstore.repo import Repo
from mvcstore.torch.models import OPTIMIZER_ROLE, restore_epoch
from mvcstore.torch.tensors import TorchAdapter
from mvcstore.torch.training import (
    RNG_ROLE,
    SCHEDULER_ROLE,
    apply_rng,
    load_optimizer_state,
    load_scheduler_state,
)

__all__ = ["InexactResumeWarning", "Resumed", "resume"]

_ADAPTER = TorchAdapter()


class InexactResumeWarning(UserWarning):
    """A resume that cannot repeat the original training bit for bit."""


@dataclass(frozen=True, slots=True)
class Resumed:
    """What ``resume`` brought back.

    Attributes:
        model: The model, in training mode.
        optimizer: The optimizer, with its stored state and settings.
        scheduler: The scheduler with its stored state, or None.
        epoch: The number of the epoch resumed from: train ``epoch + 1`` next.
        step: The last step that epoch covered, as committed.
        exact: Whether training continues bit for bit as it would have.
        reasons: Why it does not, when ``exact`` is False.
        source: The epoch record resumed from.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    epoch: int
    step: int
    exact: bool
    reasons: tuple[str, ...]
    source: Epoch


def _torch_state(repo: Repo, epoch: Epoch, role: str) -> dict[str, torch.Tensor]:
    oid = epoch.extra.get(role)
    if oid is None:
        return {}
    return {name: _ADAPTER.from_raw(raw) for name, raw in repo.read_state(oid).items()}


def _mapping(value: Value | None) -> Mapping[str, Value] | None:
    return value if isinstance(value, Mapping) else None


def resume(
    repo: Repo,
    rev: str,
    factory: Callable[[], nn.Module] | None,
    optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer],
    *,
    scheduler_factory: Callable[[torch.optim.Optimizer], object] | None = None,
    loader: object | None = None,
) -> Resumed:
    """Bring back an epoch's training state, ready to train the next epoch.

    Args:
        repo: The repository.
        rev: The epoch to resume from (``a#3``, a session, an id prefix).
        factory: A function returning a new model of the committed class;
            None rebuilds the model from its graph alone.
        optimizer_factory: A function taking the restored model and returning
            a new optimizer over its parameters, built as in training
            (``lambda m: torch.optim.SGD(m.parameters(), lr=0.1,
            momentum=0.9)``); the stored settings then replace its own.
        scheduler_factory: A function taking the optimizer and returning a
            new scheduler, when training used one.
        loader: The training ``DataLoader``, created as in training (with
            ``generator=torch.Generator()``); its generator gets the stored
            state, so the data order continues where it stopped.

    Returns:
        The model, optimizer, scheduler and counters, with whether the resume
        is exact and why not.

    Raises:
        RevisionNotFoundError: If ``rev`` names no epoch.
        InvalidInputError: If the model, optimizer or scheduler built by the
            factories does not fit what the epoch stored.

    Warns:
        InexactResumeWarning: When the resume is not exact; the message lists
            every reason.
    """
    epoch = repo.resolve(rev)
    label = f"epoch {epoch.id.short() if epoch.id else rev}"
    meta = epoch.meta
    reasons: list[str] = []
    if meta.get("resume_exact") is not True:
        stored = meta.get("resume_reasons")
        if isinstance(stored, list) and stored:
            reasons.extend(str(reason) for reason in stored)
        else:
            reasons.append(
                f"{label} records no training state (committed without"
                " mvcstore.torch.commit)"
            )

    # 1-2: everything that may draw from the RNGs is built first
    model = restore_epoch(repo, epoch, factory)
    optimizer = optimizer_factory(model)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InvalidInputError(
            f"optimizer_factory returned a {type(optimizer).__name__}, not a"
            " torch.optim.Optimizer",
            hint="pass a function such as lambda model:"
            " torch.optim.SGD(model.parameters(), lr=0.1)",
        )
    scheduler = scheduler_factory(optimizer) if scheduler_factory else None

    # 3: states into the fresh objects
    described = _mapping(meta.get("optimizer"))
    if described is not None and OPTIMIZER_ROLE in epoch.extra:
        load_optimizer_state(
            model,
            optimizer,
            described,
            _torch_state(repo, epoch, OPTIMIZER_ROLE),
            label=label,
        )
    scheduler_meta = _mapping(meta.get("scheduler"))
    if scheduler is not None:
        if scheduler_meta is None:
            reasons.append(f"{label} stored no scheduler state")
        else:
            load_scheduler_state(
                scheduler,
                scheduler_meta,
                _torch_state(repo, epoch, SCHEDULER_ROLE),
                label=label,
            )
    elif scheduler_meta is not None:
        reasons.append(
            f"{label} stored a scheduler state, but no scheduler_factory was given"
        )

    # 4: the RNGs last, so nothing built above shifts their draws
    rng_oid = epoch.extra.get(RNG_ROLE)
    rng_meta = _mapping(meta.get("rng"))
    if rng_oid is not None and rng_meta is not None:
        arrays: dict[str, np.ndarray] = {
            name: to_numpy(raw) for name, raw in repo.read_state(rng_oid).items()
        }
        reasons.extend(apply_rng(arrays, rng_meta, loader=loader))

    model.train()
    unique = tuple(dict.fromkeys(reasons))
    if unique:
        _warn(label, unique)
    return Resumed(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        epoch=epoch.number,
        step=epoch.step,
        exact=not unique,
        reasons=unique,
        source=epoch,
    )


def _warn(label: str, reasons: Sequence[str]) -> None:
    warnings.warn(
        f"resume of {label} is not exact: {'; '.join(reasons)}",
        InexactResumeWarning,
        stacklevel=3,
    )
