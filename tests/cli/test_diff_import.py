"""`mvc diff` and `mvc import`, end to end in a subprocess."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from mvcstore import Repo

torch = pytest.importorskip("torch")

from safetensors.numpy import save_file  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import mvcstore.torch as mvt  # noqa: E402

KEEP = [0, 2, 3, 5, 7]


class PoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.fc(self.conv2(x).mean(dim=(2, 3)))


class WritesMarker:
    """Unpickling this creates a file: proof that code from a file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def remove_channels(model: PoolNet, keep: list[int]) -> None:
    conv1 = nn.Conv2d(3, len(keep), 3, padding=1)
    conv1.weight.data = model.conv1.weight.data[keep].clone()
    conv1.bias.data = model.conv1.bias.data[keep].clone()
    bn1 = nn.BatchNorm2d(len(keep))
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn1, name).data = getattr(model.bn1, name).data[keep].clone()
    conv2 = nn.Conv2d(len(keep), 4, 3, padding=1)
    conv2.weight.data = model.conv2.weight.data[:, keep].clone()
    conv2.bias.data = model.conv2.bias.data.clone()
    model.conv1, model.bn1, model.conv2 = conv1, bn1, conv2


@pytest.fixture
def pruned_history(tmp_path: Path) -> Path:
    """Session a: PoolNet as built (#1), then with conv1 channels 1, 4, 6 gone."""
    torch.manual_seed(0)
    model = PoolNet()
    with Repo.init(tmp_path, durable=False) as repo:
        session = repo.session("a")
        mvt.commit(session, model)
        remove_channels(model, KEEP)
        mvt.commit(session, model)
    return tmp_path


def node_changes(result: dict) -> dict[str, dict]:
    return {node["node"]: node for node in result["graph"]["nodes"]}


# -- mvc diff ------------------------------------------------------------------


def test_diff_names_the_pruned_layers_with_old_and_new_shapes(
    pruned_history: Path, kit
) -> None:
    mvc = kit.Mvc(pruned_history)

    text = mvc("diff", "a#1", "a#2").out
    result = mvc("diff", "a#1", "a#2", "--json").json()

    nodes = node_changes(result)
    assert sorted(nodes) == ["bn1", "conv1", "conv2"]
    assert {node["change"] for node in nodes.values()} == {"changed"}
    assert nodes["conv1"]["shapes"] == {
        "bias": [[8], [5]],
        "weight": [[8, 3, 3, 3], [5, 3, 3, 3]],
    }
    assert nodes["bn1"]["shapes"]["running_var"] == [[8], [5]]
    assert nodes["conv2"]["shapes"] == {"weight": [[4, 8, 3, 3], [4, 5, 3, 3]]}
    assert "args" in nodes["conv1"]["fields"]
    assert (
        "conv1  Conv2d       bias [8] -> [5], weight [8, 3, 3, 3] -> [5, 3, 3, 3]"
        in (text)
    )
    assert "conv2  Conv2d       weight [4, 8, 3, 3] -> [4, 5, 3, 3]" in text
    weights = result["weights"]
    assert weights["params_before"] == 8 * 27 + 8 + 8 + 8 + 4 * 72 + 4 + 8 + 2
    assert weights["params_after"] == 5 * 27 + 5 + 5 + 5 + 4 * 45 + 4 + 8 + 2
    reshaped = {t["name"] for t in weights["tensors"] if t["change"] == "reshaped"}
    assert reshaped == {
        "conv1.weight",
        "conv1.bias",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "conv2.weight",
    }
    assert weights["unchanged"] == 4
    assert "parameters 542 -> 344" in text


def test_diff_measures_relative_l2_in_float64_even_for_bfloat16(
    tmp_path: Path, kit
) -> None:
    rng = np.random.default_rng(0)
    old = rng.standard_normal((16, 8)).astype(ml_dtypes.bfloat16)
    new = (old.astype(np.float32) * 1.01).astype(ml_dtypes.bfloat16)
    with Repo.init(tmp_path, durable=False) as repo:
        session = repo.session("main")
        session.commit({"w": old, "gone": np.zeros(3, np.float32)})
        session.commit({"w": new, "fresh": np.ones(2, np.int64)})

    result = kit.Mvc(tmp_path)("diff", "main~1", "main", "--json").json()

    tensors = {t["name"]: t for t in result["weights"]["tensors"]}
    wide_old, wide_new = old.astype(np.float64), new.astype(np.float64)
    expected = np.linalg.norm(wide_new - wide_old) / np.linalg.norm(wide_old)
    assert tensors["w"]["change"] == "changed"
    assert tensors["w"]["new_dtype"] == "BF16"
    assert tensors["w"]["relative_l2"] == pytest.approx(expected, rel=1e-12)
    assert tensors["gone"]["change"] == "removed"
    assert tensors["fresh"]["change"] == "added"
    assert result["graph"] == {"same": True, "nodes": []}


def test_diff_of_an_unknown_revision_fails_with_a_hint(
    pruned_history: Path, kit
) -> None:
    result = kit.Mvc(pruned_history).fails("diff", "a#1", "a#9")

    assert "a#9" in result.err


# -- mvc import ----------------------------------------------------------------


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_import_commits_the_tensors_of_a_pt_file(
    tmp_path: Path, kit, wrap: str | None
) -> None:
    state = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.arange(3.0)}
    saved = state if wrap is None else {wrap: state, "epoch": 7}
    torch.save(saved, tmp_path / "weights.pt")
    mvc = kit.Mvc(tmp_path)
    mvc("init")

    epoch_id = mvc("import", "weights.pt", "--session", "imported", "-m", "w").out

    with Repo.open(tmp_path) as repo:
        checkout = repo.checkout("imported", as_="torch")
        assert checkout.epoch.id.hex == epoch_id.strip()
        assert checkout.epoch.message == "w"
        assert checkout.epoch.meta["import"]["format"] == "torch"
        assert repo.head_session() == "imported"
    assert sorted(checkout.state) == sorted(state)
    for name, tensor in state.items():
        assert torch.equal(checkout.state[name], tensor)


def test_import_of_a_safetensors_file_continues_the_current_session(
    tmp_path: Path, kit
) -> None:
    mvc = kit.Mvc(tmp_path)
    mvc("init")
    mvc("branch", "main")
    weights = kit.make_weights(3)
    save_file(weights, str(tmp_path / "w.safetensors"))

    mvc("import", "w.safetensors")
    mvc("import", "w.safetensors")

    with Repo.open(tmp_path) as repo:
        head = repo.resolve("main")
        assert head.number == 2
        assert head.message == "imported w.safetensors"
        kit.assert_same_tensors(repo.checkout("main").state, weights)


@pytest.mark.parametrize("packaging", ["pickle", "torch.save"])
def test_import_refuses_a_file_that_would_run_code(
    tmp_path: Path, kit, packaging: str
) -> None:
    marker = tmp_path / "code-ran"
    payload = {"fc.weight": torch.zeros(2), "surprise": WritesMarker(marker)}
    path = tmp_path / "weights.pt"
    if packaging == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    mvc = kit.Mvc(tmp_path)
    mvc("init")
    mvc("branch", "main")
    before = kit.object_files(tmp_path)

    result = mvc.fails("import", "weights.pt")

    assert not marker.exists()
    assert "weights.pt is refused by torch.load(weights_only=True)" in result.err
    assert "mvc import" in result.err
    assert kit.object_files(tmp_path) == before
    with Repo.open(tmp_path) as repo:
        assert repo.session_head("main") is None


def test_import_refuses_a_dict_that_holds_no_state_dict(tmp_path: Path, kit) -> None:
    torch.save({"epoch": 3, "weights": [1.0, 2.0]}, tmp_path / "odd.pt")
    mvc = kit.Mvc(tmp_path)
    mvc("init")

    result = mvc.fails("import", "odd.pt", "--session", "s")

    assert "not a state dict of tensors" in result.err
    assert "'epoch' (int)" in result.err


def test_import_refuses_a_file_that_is_not_a_weights_file(tmp_path: Path, kit) -> None:
    (tmp_path / "notes.pt").write_text(json.dumps({"not": "weights"}))
    mvc = kit.Mvc(tmp_path)
    mvc("init")

    result = mvc.fails("import", "notes.pt", "--session", "s")

    assert "notes.pt" in result.err
