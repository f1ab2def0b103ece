"""The benchmark recipe's model is the ResNet-50 that recipe.md describes."""

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

MODEL_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "recipe_model.py"


@pytest.fixture(scope="module")
def recipe_model():
    spec = importlib.util.spec_from_file_location("recipe_model", MODEL_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def epoch0(recipe_model):
    return recipe_model.initial_state()


def test_model_has_resnet50_parameter_count(recipe_model):
    model = recipe_model.build_model()

    assert sum(p.numel() for p in model.parameters()) == 25_557_032
    assert recipe_model.PARAMETERS == 25_557_032


def test_state_has_320_tensors_of_102441032_bytes(epoch0):
    assert len(epoch0) == 320
    assert sum(t.numel() * t.element_size() for t in epoch0.values()) == 102_441_032
    assert {t.dtype for t in epoch0.values()} == {torch.float32, torch.int64}
    assert sum(name.endswith("num_batches_tracked") for name in epoch0) == 53


def test_state_keys_follow_resnet50_layout(epoch0):
    names = list(epoch0)

    assert names[:6] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    assert names[-2:] == ["fc.weight", "fc.bias"]
    assert epoch0["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert epoch0["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert epoch0["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert epoch0["fc.weight"].shape == (1000, 2048)
    assert "layer3.5.bn3.running_var" in epoch0
    assert "layer3.6.conv1.weight" not in epoch0


def test_epoch0_batchnorm_is_drawn_not_default(epoch0):
    assert not torch.equal(epoch0["bn1.weight"], torch.ones(64))
    assert bool((epoch0["bn1.running_var"] >= 1).all())
    assert int(epoch0["bn1.num_batches_tracked"]) == 0


def test_head_epoch_changes_only_the_classifier(recipe_model, epoch0):
    after = recipe_model.next_epoch(epoch0, 0, "head")

    changed = [name for name in epoch0 if after[name] is not epoch0[name]]
    assert changed == ["fc.weight", "fc.bias"]
    assert not torch.equal(after["fc.weight"], epoch0["fc.weight"])


def test_next_epoch_refuses_an_unknown_scenario(recipe_model, epoch0):
    with pytest.raises(ValueError, match="prune"):
        recipe_model.next_epoch(epoch0, 0, "prune")
