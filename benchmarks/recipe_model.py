"""The model and the epochs of the checkpoint benchmark recipe.

``/work/shared/benchmarks/recipe.md`` fixes the workload: a ResNet-50 written
by hand (same layout, parameter count and state-dict keys as the usual
``resnet50``), an epoch-0 state drawn from fixed seeds, and ``next_epoch``,
which stands in for one epoch of training. Everything here is deterministic:
two runs, or two machines, make the same bytes.

Three scenarios: ``full`` (every tensor changes), ``head`` (only the
classifier changes) and ``prune`` (as ``full``, and every 2 epochs 10% of the
output channels of every 3x3 convolution are removed, so shapes change).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "EPOCHS",
    "PARAMETERS",
    "PRUNE_EVERY",
    "PRUNE_FRACTION",
    "SCENARIOS",
    "STATE_TENSORS",
    "Bottleneck",
    "ResNet50",
    "build_model",
    "epoch_states",
    "initial_state",
    "next_epoch",
    "prune_state",
]

PARAMETERS = 25_557_032
"""Trainable parameters of ResNet-50 for 1000 classes."""

STATE_TENSORS = 320
"""161 parameters, plus 3 buffers for each of the 53 BatchNorm layers."""

EPOCHS = 10
"""Epochs per scenario, numbered 0 to 9."""

SCENARIOS = ("full", "head", "prune")
"""What changes between epochs: every tensor, only ``fc.weight`` and ``fc.bias``,
or every tensor with 3x3 convolutions pruned every ``PRUNE_EVERY`` epochs."""

PRUNE_EVERY = 2
"""In ``prune``, epochs 2, 4, 6 and 8 come out of a pruning step."""

PRUNE_FRACTION = 0.1
"""Share of a 3x3 convolution's output channels removed at each pruning step."""

_HEAD = ("fc.weight", "fc.bias")


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand, plus the shortcut.

    Submodules are created and registered in the order of the usual
    ``resnet50``: the downsample branch is built first (its caller builds it
    there) but registered last, so default initialisation draws the same
    random numbers in the same order and the state dict has the same key order.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out),
            )
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet50(nn.Module):
    """ResNet-50: a 7x7 stem, bottleneck stages [3, 4, 6, 3], a linear head."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        stages = []
        for planes, blocks, stride in (
            (64, 3, 1),
            (128, 4, 2),
            (256, 6, 2),
            (512, 3, 2),
        ):
            layers = []
            for index in range(blocks):
                layers.append(Bottleneck(inplanes, planes, stride if index == 0 else 1))
                inplanes = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_model() -> ResNet50:
    """Return the recipe's epoch-0 model.

    ``torch.manual_seed(0)`` and default initialisation; then one generator
    seeded 1 walks the modules in order: each BatchNorm2d draws its weight,
    bias, running mean and running variance, in that order, and the final
    Linear draws its bias. ``num_batches_tracked`` stays 0.
    """
    torch.manual_seed(0)
    model = ResNet50()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                shape = module.weight.shape
                module.weight.copy_(1 + 0.1 * torch.randn(shape, generator=g))
                module.bias.copy_(0.1 * torch.randn(shape, generator=g))
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=g))
                module.running_var.copy_(
                    1 + 0.1 * torch.randn(shape, generator=g).abs()
                )
            elif isinstance(module, nn.Linear):
                module.bias.copy_(0.01 * torch.randn(module.bias.shape, generator=g))
    return model


def initial_state() -> dict[str, torch.Tensor]:
    """Return the epoch-0 state dict, detached from the model."""
    return {k: t.detach().clone() for k, t in build_model().state_dict().items()}


def prune_state(
    sd: dict[str, torch.Tensor], fraction: float = PRUNE_FRACTION
) -> dict[str, torch.Tensor]:
    """Return ``sd`` with the weakest output channels of every 3x3 conv removed.

    Works on the state dict alone. For every 4-d weight with a 3x3 kernel (in
    ResNet-50 the ``conv2`` of each bottleneck block; the 7x7 stem is not one),
    ``int(fraction * channels)`` output channels with the lowest L1 norm are
    removed (ties broken by the lower index); the kept ones stay in their
    order. The matching entries of the BatchNorm that follows (``bn2``:
    weight, bias, running mean and variance) and the input channels of the
    next convolution (``conv3``) go too. Every other tensor is the same
    object.
    """
    out = dict(sd)
    for key, weight in sd.items():
        if not (key.endswith(".conv2.weight") and weight.dim() == 4):
            continue
        if tuple(weight.shape[2:]) != (3, 3):
            continue
        channels = weight.shape[0]
        drop = int(fraction * channels)
        if drop == 0:
            continue
        norms = weight.abs().sum(dim=(1, 2, 3))
        order = torch.argsort(norms, stable=True)
        keep = torch.sort(order[drop:]).values
        block = key[: -len(".conv2.weight")]
        out[key] = weight.index_select(0, keep).contiguous()
        for name in ("weight", "bias", "running_mean", "running_var"):
            bn = f"{block}.bn2.{name}"
            out[bn] = sd[bn].index_select(0, keep).contiguous()
        nxt = f"{block}.conv3.weight"
        out[nxt] = sd[nxt].index_select(1, keep).contiguous()
    return out


def next_epoch(
    sd: dict[str, torch.Tensor], epoch: int, scenario: str
) -> dict[str, torch.Tensor]:
    """Return the state of epoch ``epoch + 1`` from the state of ``epoch``.

    Every changed floating tensor gets relative noise of 1e-3 from a generator
    seeded ``1000 + epoch`` (drawn in state-dict order), every changed integer
    tensor (``num_batches_tracked``) grows by 100; an unchanged tensor is the
    same object, so it has the same bytes. In ``prune`` every tensor changes
    as in ``full``, then, when ``epoch + 1`` is a multiple of
    ``PRUNE_EVERY``, ``prune_state`` removes channels.

    Raises:
        ValueError: If the scenario is not one of ``SCENARIOS``.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario {scenario!r} is not one of {', '.join(SCENARIOS)}")
    g = torch.Generator().manual_seed(1000 + epoch)
    out = {}
    for k, t in sd.items():
        if scenario in ("full", "prune") or k in _HEAD:
            if t.is_floating_point():
                out[k] = t + 1e-3 * torch.randn(t.shape, generator=g) * t.abs()
            else:
                out[k] = t + 100
        else:
            out[k] = t
    if scenario == "prune" and (epoch + 1) % PRUNE_EVERY == 0:
        out = prune_state(out)
    return out


def epoch_states(scenario: str, epochs: int = EPOCHS) -> list[dict[str, torch.Tensor]]:
    """Return the states of epochs 0 to ``epochs - 1`` of a scenario.

    Raises:
        ValueError: If the scenario is not one of ``SCENARIOS``.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario {scenario!r} is not one of {', '.join(SCENARIOS)}")
    states = [initial_state()]
    for epoch in range(epochs - 1):
        states.append(next_epoch(states[-1], epoch, scenario))
    return states
