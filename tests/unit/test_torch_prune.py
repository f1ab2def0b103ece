"""Pruning: torch.nn.utils.prune wrappers, permanent and structural pruning.

Covers committing and restoring re-parametrised layers (``weight_orig`` and
``weight_mask`` with their forward pre-hook), layers made permanent with
``prune.remove``, layers whose channels were removed, and an optimizer whose
state no longer fits its pruned parameters.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.nn.utils import prune  # noqa: E402

import mvcstore.torch as mvt  # noqa: E402
from mvcstore import InvalidInputError, Repo  # noqa: E402
from mvcstore.torch.pruning import pruning_hooks  # noqa: E402

ROWS = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
TARGET = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
IMAGES = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
KEEP = [0, 2, 3, 5, 7]
"""Output channels of PoolNet.conv1 left after removing channels 1, 4 and 6."""


class TwoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 3)
        self.second = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.first(x) + self.second(x)


class PoolNet(nn.Module):
    """Conv -> BatchNorm -> ReLU -> Conv -> global average pool -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.fc(self.conv2(x).mean(dim=(2, 3)))


# the restoring process knows only plain layers: no pruning, no stored data
RESTORE_SCRIPT = """
import json, sys
import torch
from safetensors.torch import save_file
from torch import nn
import mvcstore
import mvcstore.torch as mvt
from mvcstore.torch.pruning import pruning_hooks

class TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 3)
        self.second = nn.Linear(4, 3)

    def forward(self, x):
        return self.first(x) + self.second(x)

repo_dir, out = sys.argv[1], sys.argv[2]
with mvcstore.Repo.open(repo_dir) as repo:
    model = mvt.restore(repo, "a", factory=TwoLinear)
tensors = {
    "first.weight_orig": model.first.weight_orig.detach().clone(),
    "first.weight_mask": model.first.weight_mask.clone(),
    "first.weight": model.first.weight.detach().clone(),
    "second.weight": model.second.weight.detach().clone(),
}
hooks = {
    name: [type(hook).__name__, hook.amount]
    for name, hook in pruning_hooks(model.first).items()
}
second = [list(model.second._parameters), list(model.second._buffers),
          len(pruning_hooks(model.second))]

rows = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
target = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
optimizer.zero_grad()
((model(rows) - target) ** 2).mean().backward()
optimizer.step()
model(rows)  # the forward pre-hook recomputes weight from weight_orig and mask
tensors["first.weight_after_step"] = model.first.weight.detach().clone()
save_file(tensors, out + "/tensors.safetensors")
with open(out + "/facts.json", "w") as handle:
    json.dump({"hooks": hooks, "second": second}, handle)
"""


def sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    ((model(ROWS) - TARGET) ** 2).mean().backward()
    optimizer.step()


def pruned_two_linear() -> TwoLinear:
    torch.manual_seed(0)
    model = TwoLinear()
    prune.l1_unstructured(model.first, "weight", amount=0.5)
    prune.l1_unstructured(model.second, "weight", amount=0.5)
    return model


def remove_channels(model: PoolNet, keep: list[int]) -> None:
    """Rebuild conv1, bn1 and conv2 with only conv1's ``keep`` channels."""
    conv1 = nn.Conv2d(3, len(keep), 3, padding=1)
    conv1.weight.data = model.conv1.weight.data[keep].clone()
    conv1.bias.data = model.conv1.bias.data[keep].clone()
    bn1 = nn.BatchNorm2d(len(keep))
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn1, name).data = getattr(model.bn1, name).data[keep].clone()
    bn1.num_batches_tracked = model.bn1.num_batches_tracked.clone()
    conv2 = nn.Conv2d(len(keep), 4, 3, padding=1)
    conv2.weight.data = model.conv2.weight.data[:, keep].clone()
    conv2.bias.data = model.conv2.bias.data.clone()
    model.conv1, model.bn1, model.conv2 = conv1, bn1, conv2


def remove_channels_in_place(model: PoolNet, keep: list[int]) -> None:
    """The same, keeping every Parameter object (as some pruning tools do)."""
    for param in (model.conv1.weight, model.conv1.bias):
        param.data = param.data[keep].clone()
    for name in ("weight", "bias"):
        param = getattr(model.bn1, name)
        param.data = param.data[keep].clone()
    for name in ("running_mean", "running_var"):
        setattr(model.bn1, name, getattr(model.bn1, name)[keep].clone())
    model.conv2.weight.data = model.conv2.weight.data[:, keep].clone()
    model.conv1.out_channels = len(keep)
    model.bn1.num_features = len(keep)
    model.conv2.in_channels = len(keep)


def eval_output(model: nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(IMAGES)


def trained_pool_net() -> tuple[PoolNet, torch.optim.Optimizer]:
    torch.manual_seed(3)
    model = PoolNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    target = torch.tensor([0, 1])
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(IMAGES), target).backward()
        optimizer.step()
    return model, optimizer


# -- torch.nn.utils.prune re-parametrisation ---------------------------------


def test_pruned_layer_restores_in_a_new_process_with_its_mask_and_hook(
    repo: Repo, tmp_path: Path
) -> None:
    model = pruned_two_linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sgd_step(model, optimizer)
    session = repo.session("a")
    mvt.commit(session, model, optimizer=optimizer)
    prune.remove(model.second, "weight")
    epoch = mvt.commit(session, model, optimizer=optimizer)
    state = repo.get(epoch.state).tensors
    out = tmp_path / "out"
    out.mkdir()

    run = subprocess.run(
        [sys.executable, "-c", RESTORE_SCRIPT, str(repo.path), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 0, run.stderr
    assert {"first.weight_orig", "first.weight_mask", "second.weight"} <= set(state)
    restored = load_file(out / "tensors.safetensors")
    facts = json.loads((out / "facts.json").read_text())
    assert torch.equal(restored["first.weight_orig"], model.first.weight_orig)
    assert torch.equal(restored["first.weight_mask"], model.first.weight_mask)
    assert torch.equal(
        restored["first.weight"], model.first.weight_orig * model.first.weight_mask
    )
    assert facts["hooks"] == {"weight": ["L1Unstructured", 0.5]}
    masked = model.first.weight_mask == 0
    assert int(masked.sum()) == 6
    assert torch.all(restored["first.weight_after_step"][masked] == 0)
    assert not torch.equal(
        restored["first.weight_after_step"], restored["first.weight"]
    )
    assert facts["second"] == [["bias", "weight"], [], 0]
    assert torch.equal(restored["second.weight"], model.second.weight)
    assert int((restored["second.weight"] == 0).sum()) == 6


def test_plain_reparametrised_and_removed_layers_have_three_graph_ids(
    repo: Repo,
) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    session = repo.session("a")

    plain = mvt.commit(session, layer)
    prune.l1_unstructured(layer, "weight", amount=0.5)
    live = mvt.commit(session, layer)
    prune.remove(layer, "weight")
    removed = mvt.commit(session, layer)

    assert len({plain.graph, live.graph, removed.graph}) == 3
    node = repo.read_graph(live.graph).nodes[mvt.ROOT_ID]
    assert node.wrapper == {
        "kind": "prune",
        "tensors": {
            "weight": {
                "steps": [{"method": "l1_unstructured", "amount": 0.5}],
                "permanent": False,
            }
        },
    }
    assert node.data["params"]["weight"] == {"shape": [3, 4], "dtype": "F32"}
    after = repo.read_graph(removed.graph).nodes[mvt.ROOT_ID]
    assert after.wrapper["tensors"]["weight"]["permanent"] is True
    assert repo.read_graph(plain.graph).nodes[mvt.ROOT_ID].wrapper is None


def test_permanent_pruning_is_kept_on_later_epochs(repo: Repo) -> None:
    layer = nn.Linear(4, 3)
    session = repo.session("a")
    prune.random_unstructured(layer, "weight", amount=0.25)
    mvt.commit(session, layer)
    prune.remove(layer, "weight")

    removed = mvt.commit(session, layer)
    later = mvt.commit(session, layer)

    assert later.graph == removed.graph
    restored = mvt.restore(repo, "a", factory=lambda: nn.Linear(4, 3))
    assert list(restored._parameters) == ["bias", "weight"]
    assert pruning_hooks(restored) == {}


def test_repeated_pruning_comes_back_as_a_container_of_both_steps(
    repo: Repo,
) -> None:
    torch.manual_seed(4)
    model = TwoLinear()
    prune.l1_unstructured(model.first, "weight", amount=0.25)
    prune.ln_structured(model.first, "weight", amount=1, n=2, dim=0)
    rng_before = torch.get_rng_state()

    mvt.commit(repo.session("a"), model)
    restored = mvt.restore(repo, "a")

    assert torch.equal(torch.get_rng_state(), rng_before)
    hook = pruning_hooks(restored.first)["weight"]
    assert isinstance(hook, prune.PruningContainer)
    assert [type(step).__name__ for step in hook] == ["L1Unstructured", "LnStructured"]
    assert torch.equal(restored.first.weight_mask, model.first.weight_mask)
    assert torch.equal(restored(ROWS), model(ROWS))


# -- structural pruning --------------------------------------------------------


def test_channel_pruned_epoch_restores_with_the_unpruned_factory(repo: Repo) -> None:
    model, _ = trained_pool_net()
    session = repo.session("a")
    mvt.commit(session, model)
    before = eval_output(model)
    remove_channels(model, KEEP)
    mvt.commit(session, model)
    after = eval_output(model)

    pruned = mvt.restore(repo, "a#2", factory=PoolNet)
    whole = mvt.restore(repo, "a#1", factory=PoolNet)

    assert pruned.conv1.weight.shape == (5, 3, 3, 3)
    assert pruned.bn1.running_var.shape == (5,)
    assert pruned.conv2.weight.shape == (4, 5, 3, 3)
    assert torch.equal(eval_output(pruned), after)
    assert whole.conv1.out_channels == 8
    assert torch.equal(eval_output(whole), before)


# -- optimizer state that no longer fits ---------------------------------------


def test_commit_refuses_momentum_of_channels_pruned_in_place(repo: Repo) -> None:
    model, optimizer = trained_pool_net()
    remove_channels_in_place(model, KEEP)
    session = repo.session("a")

    with pytest.raises(InvalidInputError) as caught:
        mvt.commit(session, model, optimizer=optimizer)

    message = caught.value.message
    assert "conv1.weight/momentum_buffer [8, 3, 3, 3] vs parameter [5, 3, 3, 3]" in (
        message
    )
    assert "conv2.weight/momentum_buffer [4, 8, 3, 3] vs parameter [4, 5, 3, 3]" in (
        message
    )
    assert "mvcstore.torch.commit" in (caught.value.hint or "")
    assert repo.session_head("a") is None


def test_commit_refuses_an_optimizer_over_replaced_layers_naming_them(
    repo: Repo,
) -> None:
    model, optimizer = trained_pool_net()
    remove_channels(model, KEEP)

    with pytest.raises(InvalidInputError) as caught:
        mvt.commit(repo.session("a"), model, optimizer=optimizer)

    assert "conv1.weight (optimizer [8, 3, 3, 3], model [5, 3, 3, 3])" in (
        caught.value.message
    )
    assert "fc.weight" not in caught.value.message
    assert repo.session_head("a") is None


def test_after_rebuilding_the_optimizer_the_resumed_one_steps(repo: Repo) -> None:
    model, optimizer = trained_pool_net()
    remove_channels_in_place(model, KEEP)
    session = repo.session("a")
    with pytest.raises(InvalidInputError):
        mvt.commit(session, model, optimizer=optimizer)

    def new_optimizer(net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    optimizer = new_optimizer(model)
    target = torch.tensor([0, 1])
    optimizer.zero_grad()
    F.cross_entropy(model(IMAGES), target).backward()
    optimizer.step()
    mvt.commit(session, model, optimizer=optimizer)
    resumed = mvt.resume(repo, "a", PoolNet, new_optimizer)
    before = resumed.model.conv1.weight.detach().clone()

    resumed.optimizer.zero_grad()
    F.cross_entropy(resumed.model(IMAGES), target).backward()
    resumed.optimizer.step()

    assert resumed.model.conv1.weight.shape == (5, 3, 3, 3)
    assert not torch.equal(resumed.model.conv1.weight, before)
    momentum = resumed.optimizer.state[resumed.model.conv1.weight]["momentum_buffer"]
    assert momentum.shape == (5, 3, 3, 3)
