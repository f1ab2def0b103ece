"""Training state beyond the weights: optimizer, scheduler, RNG and data order.

Everything here turns live training objects into tensors plus plain values
(so an epoch stores them without pickle: tensors through the project's tensor
encoding, small values as canonical msgpack in the epoch's ``meta``), and
puts them back. It stores nothing itself; ``mvcstore.torch.commit`` and
``mvcstore.torch.resume`` call it.

Random number generators captured: tensors of the ``rng`` state, and plain
facts in the epoch's ``meta["rng"]``:

- torch's CPU RNG: ``torch`` (U8, ``torch.get_rng_state()``);
- each CUDA device's: ``torch.cuda.N`` (U8), with ``cuda_devices`` in meta;
- Python's ``random``: ``python`` (the 625 words of ``getstate()``, U32) and
  ``python.gauss_next`` (F64, when set), with the state's ``version`` in meta;
- NumPy's legacy global RNG: ``numpy.keys`` (U32 [624]) and
  ``numpy.cached_gaussian`` (F64), with ``name``, ``pos`` and ``has_gauss``
  in meta;
- the data loader: ``loader.generator`` (U8), and ``loader.sampler`` when its
  sampler has a generator of its own.

Floats of the generators are kept as F64 tensors, not in ``meta``: the
canonical encoding folds ``-0.0`` into ``0.0``, and a generator's state must
come back bit for bit.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Final, cast

import numpy as np
import torch
from torch import nn
from torch.utils import data as tud

from mvcstore.codec import Value
from mvcstore.errors import InvalidInputError

__all__ = [
    "RNG_ROLE",
    "SCHEDULER_ROLE",
    "TENSOR_TAG",
    "capture_rng",
    "apply_rng",
    "loader_facts",
    "scheduler_state",
    "load_scheduler_state",
    "load_optimizer_state",
    "is_stale",
]

RNG_ROLE: Final = "rng"
"""The role of the RNG states among an epoch's extra states."""
SCHEDULER_ROLE: Final = "scheduler"
"""The role of a scheduler's tensors (if it keeps any) among extra states."""
TENSOR_TAG: Final = "$tensor"
"""In a stored scheduler state, ``{"$tensor": NAME}`` stands for a tensor."""
_ITEMS_TAG: Final = "$items"
"""In a stored scheduler state, ``{"$items": [[KEY, VALUE], ...]}`` stands for
a map whose keys are not strings (``MultiStepLR``'s milestone counter)."""

_RANDOM_SAMPLERS: Final = (
    tud.RandomSampler,
    tud.SubsetRandomSampler,
    tud.WeightedRandomSampler,
)
_TORCH_SAMPLERS: Final = (*_RANDOM_SAMPLERS, tud.SequentialSampler, tud.BatchSampler)
_OPTIMIZER_HINT: Final = (
    "build the optimizer in optimizer_factory as it was built for training,"
    " over model.parameters(), then call mvcstore.torch.resume again"
)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# -- data loaders -----------------------------------------------------------


def _check_loader(loader: object) -> tud.DataLoader[object]:
    if not isinstance(loader, tud.DataLoader):
        raise InvalidInputError(
            f"loader must be a torch.utils.data.DataLoader, got"
            f" {type(loader).__name__}",
            hint="pass the DataLoader the training loop iterates over",
        )
    return loader


def _loader_generators(loader: tud.DataLoader[object]) -> dict[str, torch.Generator]:
    found: dict[str, torch.Generator] = {}
    if isinstance(loader.generator, torch.Generator):
        found["loader.generator"] = loader.generator
    own = getattr(loader.sampler, "generator", None)
    if isinstance(own, torch.Generator) and own is not loader.generator:
        found["loader.sampler"] = own
    return found


def loader_facts(loader: object) -> tuple[dict[str, Value], list[str]]:
    """Return what a data loader's order depends on, and why it may not repeat.

    Args:
        loader: The ``DataLoader`` the training loop iterates over.

    Returns:
        Facts for the epoch's ``meta`` (sampler class, whether it has its own
        generator, worker count), and the reasons a resume with it is not
        exact (none when it is).

    Raises:
        InvalidInputError: If ``loader`` is not a ``DataLoader``.
    """
    checked = _check_loader(loader)
    generators = _loader_generators(checked)
    sampler = checked.sampler
    reasons: list[str] = []
    if isinstance(sampler, _RANDOM_SAMPLERS) and not generators:
        reasons.append(
            "the data loader shuffles without a torch.Generator of its own, so its"
            " order depends on whatever else draws from the global torch RNG"
        )
    for part in (sampler, checked.batch_sampler):
        if part is not None and not isinstance(part, _TORCH_SAMPLERS):
            reasons.append(
                f"the data loader's sampler {_class_path(type(part))} is not one of"
                " torch.utils.data's, so its state is not captured"
            )
    if checked.num_workers > 0:
        reasons.append(
            f"the data loader uses {checked.num_workers} worker processes, whose"
            " RNG states are not captured"
        )
    facts: dict[str, Value] = {
        "sampler": _class_path(type(sampler)),
        "generators": sorted(generators),
        "num_workers": int(checked.num_workers),
    }
    return facts, reasons


# -- random number generators ----------------------------------------------


def capture_rng(
    loader: object | None = None,
) -> tuple[dict[str, object], dict[str, Value]]:
    """Return the states of every RNG training draws from, without drawing.

    Args:
        loader: The training ``DataLoader``, whose generator (and sampler's
            generator) is captured too.

    Returns:
        Tensors for the ``rng`` state, and plain facts for ``meta["rng"]``.

    Raises:
        InvalidInputError: If ``loader`` is not a ``DataLoader``.
    """
    tensors: dict[str, object] = {"torch": torch.get_rng_state()}
    meta: dict[str, Value] = {}
    if torch.cuda.is_available():
        cuda_states = torch.cuda.get_rng_state_all()
        for index, state in enumerate(cuda_states):
            tensors[f"torch.cuda.{index}"] = state
        meta["cuda_devices"] = len(cuda_states)

    version, words, gauss_next = random.getstate()
    tensors["python"] = np.array(words, dtype=np.uint32)
    if gauss_next is not None:
        tensors["python.gauss_next"] = np.array(gauss_next, dtype=np.float64)
    meta["python"] = {"version": version}

    name, keys, pos, has_gauss, cached = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True)
    )
    tensors["numpy.keys"] = np.asarray(keys, dtype=np.uint32)
    tensors["numpy.cached_gaussian"] = np.array(cached, dtype=np.float64)
    meta["numpy"] = {"name": name, "pos": int(pos), "has_gauss": int(has_gauss)}

    if loader is not None:
        for key, generator in _loader_generators(_check_loader(loader)).items():
            tensors[key] = generator.get_state()
    return tensors, meta


def _scalar(array: np.ndarray) -> float:
    return float(array.reshape(-1)[0])


def apply_rng(
    tensors: Mapping[str, np.ndarray],
    meta: Mapping[str, Value],
    *,
    loader: object | None = None,
) -> list[str]:
    """Set every captured RNG state, in a fixed order.

    The order: the data loader's generators, Python's ``random``, NumPy's
    global RNG, torch's CPU RNG, then each CUDA device's. Call it after
    everything that may draw from them is built (model, optimizer,
    scheduler): those draws would otherwise shift every later one.

    Args:
        tensors: The ``rng`` state as NumPy arrays.
        meta: The epoch's ``meta["rng"]``.
        loader: The ``DataLoader`` to continue with.

    Returns:
        Why the RNG part of a resume is not exact (none when it is).

    Raises:
        InvalidInputError: If the stored states are malformed, or ``loader``
            has no generator where one was stored.
    """
    reasons: list[str] = []
    if loader is not None:
        generators = _loader_generators(_check_loader(loader))
        stored = sorted(key for key in tensors if key.startswith("loader."))
        if not stored:
            reasons.append(
                "a loader was given, but the epoch stored no data loader"
                " generator state"
            )
        for key in stored:
            generator = generators.get(key)
            if generator is None:
                raise InvalidInputError(
                    f"the epoch stored the state of {key}, but the given loader"
                    " has no such generator",
                    hint="create the DataLoader with generator=torch.Generator()"
                    " as in training, then call mvcstore.torch.resume again",
                )
            generator.set_state(torch.from_numpy(np.array(tensors[key], np.uint8)))
    elif any(key.startswith("loader.") for key in tensors):
        reasons.append(
            "the epoch stored a data loader's generator state, but no loader= was"
            " given, so the data order is not restored"
        )

    try:
        python = cast(Mapping[str, Value], meta["python"])
        words = tuple(int(word) for word in tensors["python"].tolist())
        gauss = tensors.get("python.gauss_next")
        random.setstate(
            (
                int(cast(int, python["version"])),
                words,
                _scalar(gauss) if gauss is not None else None,
            )
        )
        numpy_facts = cast(Mapping[str, Value], meta["numpy"])
        np.random.set_state(
            (
                str(numpy_facts["name"]),
                np.array(tensors["numpy.keys"], dtype=np.uint32),
                int(cast(int, numpy_facts["pos"])),
                int(cast(int, numpy_facts["has_gauss"])),
                _scalar(tensors["numpy.cached_gaussian"]),
            )
        )
        torch.set_rng_state(torch.from_numpy(np.array(tensors["torch"], np.uint8)))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InvalidInputError(
            f"stored RNG states are malformed ({exc})",
            hint="run 'mvc fsck', then resume from another epoch",
        ) from exc

    cuda = sorted(key for key in tensors if key.startswith("torch.cuda."))
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() >= len(cuda):
            torch.cuda.set_rng_state_all(
                [torch.from_numpy(np.array(tensors[key], np.uint8)) for key in cuda]
            )
        else:
            have = torch.cuda.device_count() if torch.cuda.is_available() else 0
            reasons.append(
                f"the epoch stored the RNG states of {len(cuda)} CUDA devices, this"
                f" process has {have}"
            )
    return reasons


# -- schedulers --------------------------------------------------------------


def _plain(value: object, path: str, tensors: dict[str, torch.Tensor]) -> Value:
    """Return a state tree as plain values, moving tensors into ``tensors``."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value
        return {TENSOR_TAG: path}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [
            _plain(item, f"{path}.{index}", tensors) for index, item in enumerate(value)
        ]
    if isinstance(value, Mapping):
        if all(isinstance(key, str) for key in value):
            return {
                key: _plain(item, f"{path}.{key}" if path else key, tensors)
                for key, item in value.items()
            }
        return {
            _ITEMS_TAG: [
                [
                    _plain(key, f"{path}.key{index}", tensors),
                    _plain(item, f"{path}.{index}", tensors),
                ]
                for index, (key, item) in enumerate(value.items())
            ]
        }
    raise InvalidInputError(
        f"scheduler state {path!r} is a {type(value).__name__}, which cannot be stored",
        hint="commit without scheduler= and keep that state yourself",
    )


def _restored(value: Value, tensors: Mapping[str, torch.Tensor]) -> object:
    if isinstance(value, list):
        return [_restored(item, tensors) for item in value]
    if isinstance(value, Mapping):
        if set(value) == {TENSOR_TAG}:
            return tensors[cast(str, value[TENSOR_TAG])]
        if set(value) == {_ITEMS_TAG}:
            pairs = cast(list[list[Value]], value[_ITEMS_TAG])
            return {
                _restored(key, tensors): _restored(item, tensors) for key, item in pairs
            }
        return {key: _restored(item, tensors) for key, item in value.items()}
    return value


def _like(value: object, template: object) -> object:
    """Return ``value`` in the container types of a freshly built ``template``."""
    if isinstance(template, tuple) and isinstance(value, list):
        return tuple(
            _like(item, template[index] if index < len(template) else None)
            for index, item in enumerate(value)
        )
    if isinstance(template, list) and isinstance(value, list):
        return [
            _like(item, template[index] if index < len(template) else None)
            for index, item in enumerate(value)
        ]
    if isinstance(template, Counter) and isinstance(value, Mapping):
        return Counter(value)
    if isinstance(template, Mapping) and isinstance(value, Mapping):
        return {key: _like(item, template.get(key)) for key, item in value.items()}
    if isinstance(template, torch.Tensor) and isinstance(value, int | float):
        return torch.tensor(value, dtype=template.dtype, device=template.device)
    return value


def scheduler_state(
    scheduler: object,
) -> tuple[dict[str, torch.Tensor], dict[str, Value]]:
    """Return a learning-rate scheduler's state as tensors plus plain values.

    Args:
        scheduler: Anything with ``state_dict()`` and ``load_state_dict()``,
            such as a ``torch.optim.lr_scheduler.LRScheduler``.

    Returns:
        Tensors of the state (usually none), and ``{"class": ..., "state":
        TREE}`` for ``meta["scheduler"]``, where each tensor is replaced by
        ``{"$tensor": NAME}``.

    Raises:
        InvalidInputError: If it has no ``state_dict``, or its state holds a
            value that is neither a tensor nor plain data.
    """
    state_dict = getattr(scheduler, "state_dict", None)
    if not callable(state_dict) or not callable(
        getattr(scheduler, "load_state_dict", None)
    ):
        raise InvalidInputError(
            f"scheduler {type(scheduler).__name__} has no state_dict() and"
            " load_state_dict()",
            hint="pass a torch.optim.lr_scheduler scheduler as scheduler=",
        )
    tensors: dict[str, torch.Tensor] = {}
    tree = _plain(state_dict(), "", tensors)
    return tensors, {"class": _class_path(type(scheduler)), "state": tree}


def load_scheduler_state(
    scheduler: object,
    described: Mapping[str, Value],
    tensors: Mapping[str, torch.Tensor],
    *,
    label: str,
) -> None:
    """Load a stored scheduler state into a freshly built scheduler.

    Args:
        scheduler: The scheduler, built over the resumed optimizer.
        described: The epoch's ``meta["scheduler"]``.
        tensors: The ``scheduler`` state's tensors.
        label: The epoch, for messages.

    Raises:
        InvalidInputError: If the scheduler's class differs from the stored
            one, or the state does not load.
    """
    stored_class = described.get("class")
    if stored_class != _class_path(type(scheduler)):
        raise InvalidInputError(
            f"{label} stored the state of a {stored_class} scheduler,"
            f" scheduler_factory built a {_class_path(type(scheduler))}",
            hint="build the scheduler in scheduler_factory as it was built for"
            " training, then call mvcstore.torch.resume again",
        )
    fresh = getattr(scheduler, "state_dict")()  # noqa: B009
    state = _like(_restored(described.get("state"), tensors), fresh)
    try:
        getattr(scheduler, "load_state_dict")(state)  # noqa: B009
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"scheduler state of {label} does not load ({exc})",
            hint="build the scheduler in scheduler_factory as it was built for"
            " training, then call mvcstore.torch.resume again",
        ) from exc


# -- optimizers --------------------------------------------------------------


def _names(names: Sequence[str], shown: int = 8) -> str:
    if not names:
        return "none"
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def is_stale(value: torch.Tensor, param: torch.Tensor) -> bool:
    """Return whether optimizer state no longer fits its parameter.

    State is stale when it has as many dimensions as the parameter but, in
    some dimension, a size that is neither the parameter's nor 1 (momentum
    left from before a layer was pruned in place). Scalars (Adam's ``step``)
    and factored statistics that broadcast to the parameter are not.

    Args:
        value: A per-parameter state tensor.
        param: Its parameter.

    Returns:
        Whether the state is stale.
    """
    return value.dim() == param.dim() and any(
        have not in (want, 1)
        for have, want in zip(value.shape, param.shape, strict=True)
    )


def load_optimizer_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    described: Mapping[str, Value],
    tensors: Mapping[str, torch.Tensor],
    *,
    label: str,
) -> None:
    """Load an optimizer state stored by parameter name into a new optimizer.

    Parameters are matched by name, group by group, so the new optimizer
    must have the same parameter groups over the same parameters; each
    group's stored settings (``lr`` as a scheduler left it, ``momentum``,
    ``betas`` ...) replace the fresh ones.

    Args:
        model: The restored model.
        optimizer: A new optimizer over the model's parameters.
        described: The epoch's ``meta["optimizer"]``.
        tensors: The ``optimizer`` state (``PARAMETER/KEY`` to tensor).
        label: The epoch, for messages.

    Raises:
        InvalidInputError: If the optimizer's class, groups or parameters
            differ from the stored ones, or a stored tensor does not fit its
            parameter.
    """
    stored_class = described.get("class")
    if stored_class != _class_path(type(optimizer)):
        raise InvalidInputError(
            f"{label} stored the state of a {stored_class} optimizer,"
            f" optimizer_factory built a {_class_path(type(optimizer))}",
            hint=_OPTIMIZER_HINT,
        )
    names = {id(param): name for name, param in model.named_parameters()}
    stored_groups = cast(Sequence[Mapping[str, Value]], described.get("param_groups"))
    if len(stored_groups) != len(optimizer.param_groups):
        raise InvalidInputError(
            f"{label} stored {len(stored_groups)} parameter groups, the optimizer"
            f" has {len(optimizer.param_groups)}",
            hint=_OPTIMIZER_HINT,
        )

    # each group takes the stored order of its parameters: the order training
    # used, which a rebuilt layer may not have (prune.remove moves a tensor)
    for number, (group, stored) in enumerate(
        zip(optimizer.param_groups, stored_groups, strict=True)
    ):
        by_name = {names.get(id(param), "?"): param for param in group["params"]}
        wanted = [str(name) for name in cast(list[Value], stored.get("params") or [])]
        if sorted(by_name) != sorted(wanted) or len(by_name) != len(group["params"]):
            missing = sorted(set(wanted) - set(by_name))
            unexpected = sorted(set(by_name) - set(wanted))
            raise InvalidInputError(
                f"parameter group {number} of the optimizer does not hold the"
                f" parameters {label} stored: missing {_names(missing)};"
                f" unexpected {_names(unexpected)}",
                hint=_OPTIMIZER_HINT,
            )
        group["params"] = [by_name[name] for name in wanted]

    per_param: dict[str, dict[str, object]] = {}
    for key, tensor in tensors.items():
        name, _, state_key = key.rpartition("/")
        per_param.setdefault(name, {})[state_key] = tensor
    scalars = described.get("scalars")
    if isinstance(scalars, Mapping):
        for name, entries in scalars.items():
            if isinstance(entries, Mapping):
                per_param.setdefault(name, {}).update(entries)

    packed = optimizer.state_dict()
    state: dict[int, dict[str, object]] = {}
    groups: list[dict[str, object]] = []
    for group, packed_group, stored in zip(
        optimizer.param_groups, packed["param_groups"], stored_groups, strict=True
    ):
        settings = dict(packed_group)
        for key, value in stored.items():
            if key != "params":
                settings[key] = _like(value, packed_group.get(key))
        groups.append(settings)
        for index, param in zip(packed_group["params"], group["params"], strict=True):
            name = names[id(param)]
            if name not in per_param:
                continue
            values = per_param.pop(name)
            for state_key, entry in values.items():
                if isinstance(entry, torch.Tensor) and is_stale(entry, param):
                    raise InvalidInputError(
                        f"optimizer state {state_key!r} of {name} in {label} has"
                        f" shape {list(entry.shape)}, the parameter has"
                        f" {list(param.shape)}",
                        hint=_OPTIMIZER_HINT,
                    )
            state[index] = values
    if per_param:
        raise InvalidInputError(
            f"{label} stored optimizer state for parameters the optimizer does not"
            f" update: {_names(sorted(per_param))}",
            hint=_OPTIMIZER_HINT,
        )
    optimizer.load_state_dict({"state": state, "param_groups": groups})
