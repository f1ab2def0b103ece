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
    with pytest.raises(ValueError, match="bogus"):
        recipe_model.next_epoch(epoch0, 0, "bogus")


def test_prune_shrinks_3x3_convs_their_batchnorm_and_the_next_conv(
    recipe_model, epoch0
):
    # epoch 1 is noise only; epoch 2 comes out of the first pruning step
    epoch1 = recipe_model.next_epoch(epoch0, 0, "prune")
    epoch2 = recipe_model.next_epoch(epoch1, 1, "prune")

    assert {k: t.shape for k, t in epoch1.items()} == {
        k: t.shape for k, t in epoch0.items()
    }
    assert list(epoch2) == list(epoch0)
    assert epoch2["layer1.0.conv2.weight"].shape == (58, 64, 3, 3)
    assert epoch2["layer1.0.bn2.running_var"].shape == (58,)
    assert epoch2["layer1.0.conv3.weight"].shape == (256, 58, 1, 1)
    assert epoch2["layer2.0.conv2.weight"].shape == (116, 128, 3, 3)
    assert epoch2["layer4.2.conv2.weight"].shape == (461, 512, 3, 3)
    assert epoch2["layer4.2.conv3.weight"].shape == (2048, 461, 1, 1)
    # 1x1 convs, the stem and the head keep their shapes
    for name in ("conv1.weight", "layer1.0.conv1.weight", "fc.weight"):
        assert epoch2[name].shape == epoch0[name].shape
    # noise as in full, then the channels with the lowest L1 norm go
    noised = recipe_model.next_epoch(epoch1, 1, "full")
    pruned = recipe_model.prune_state(noised)
    assert all(torch.equal(pruned[k], epoch2[k]) for k in epoch2)
    norms = noised["layer1.0.conv2.weight"].abs().sum(dim=(1, 2, 3))
    kept = epoch2["layer1.0.conv2.weight"].abs().sum(dim=(1, 2, 3))
    assert float(kept.min()) >= float(norms.sort().values[6])


def test_prune_scenario_keeps_shrinking(recipe_model):
    states = recipe_model.epoch_states("prune")

    widths = [s["layer1.0.conv2.weight"].shape[0] for s in states]
    assert widths == [64, 64, 58, 58, 53, 53, 48, 48, 44, 44]
