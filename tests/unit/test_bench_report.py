"""The recipe benchmark's report: ratios to both baselines, masks, memory.

No timing is asserted: the figures below are made up, and only the arithmetic
and the presence of each part of the report are checked.
"""

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_recipe

        yield bench_recipe
    finally:
        sys.path.remove(str(BENCH))


def _run(save: float, stored: int, back: float, rss: int = 0) -> dict:
    return {
        "save_s": save,
        "epoch_s": [save / 10] * 10,
        "stored_bytes": stored,
        "checkout_s": {"4": back, "9": back},
        "checkout_evicted_s": {"4": back * 2, "9": back * 2},
        "save_rss_bytes": rss,
        "checkout_rss_bytes": rss,
        "files": 10,
    }


def test_every_ratio_is_to_torch_save_and_to_dvc(bench) -> None:
    runs = {
        "torch.save": [_run(1.0, 100, 0.1), _run(2.0, 100, 0.2), _run(1.0, 100, 0.1)],
        "mvcstore": [_run(1.5, 60, 0.2), _run(2.0, 60, 0.2), _run(3.0, 60, 0.2)],
        "DVC": [_run(8.0, 100, 0.5), _run(8.0, 100, 0.5), _run(6.0, 100, 0.4)],
    }

    summary = bench.summarise(runs)

    mvc = summary["mvcstore"]
    # the median of the per-run ratios, not the ratio of the medians
    assert mvc["ratio"]["save_s"] == pytest.approx(1.5)
    assert mvc["ratio_dvc"]["save_s"] == pytest.approx(0.25)
    assert mvc["ratio"]["stored_bytes"] == pytest.approx(0.6)
    assert mvc["ratio_dvc"]["checkout_s.9"] == pytest.approx(0.4)
    assert summary["DVC"]["ratio_dvc"]["save_s"] == pytest.approx(1.0)


def test_without_dvc_there_is_no_second_ratio(bench) -> None:
    runs = {"torch.save": [_run(1.0, 100, 0.1)], "mvcstore": [_run(2.0, 50, 0.1)]}

    summary = bench.summarise(runs)

    assert summary["mvcstore"]["ratio_dvc"] == {}
    assert summary["mvcstore"]["ratio"]["save_s"] == pytest.approx(2.0)


def test_masked_states_hold_the_weights_and_a_mask_per_convolution(bench) -> None:
    model = bench.recipe_model.build_model()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    masked = bench.masked_states([state])[0]

    convs = [k for k in state if k.endswith(".weight") and state[k].dim() == 4]
    assert len(convs) == 53
    for name in convs:
        stem = name[: -len(".weight")]
        assert name not in masked
        assert torch.equal(masked[stem + ".weight_orig"], state[name])
        mask = masked[stem + ".weight_mask"]
        zeros = (mask == 0).sum().item()
        assert zeros == round(0.3 * mask.numel())
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masked["fc.weight"], state["fc.weight"])


def test_the_report_shows_both_ratios_masks_and_commit_memory(bench) -> None:
    runs = {
        "torch.save": [_run(1.0, 1000, 0.1)],
        "mvcstore": [_run(1.5, 600, 0.2, rss=150)],
        "DVC": [_run(8.0, 1000, 0.5)],
    }
    result = {
        "machine": {
            "date": "today",
            "nproc": 2,
            "cpu": "cpu",
            "ram_bytes": 1 << 30,
            "filesystem": "fs",
            "python": "3",
            "torch": "2",
            "safetensors": "0",
            "mvcstore": "0",
            "mvcstore_commit": "abc",
            "mvcstore_modified": False,
            "load_average": (0.0, 0.0, 0.0),
        },
        "load_average_end": (0.0, 0.0, 0.0),
        "runs": 1,
        "mvcstore_arrays": "torch",
        "mvcstore_delta_depth": 1,
        "scenarios": {
            "full": {
                "raw_bytes": 1000,
                "state_bytes": 100,
                "runs": runs,
                "summary": bench.summarise(runs),
            }
        },
        "masks": {
            "amount": 0.3,
            "epochs": [{"epoch": 0, "plain": 100, "masked": 103}],
            "plain": 100,
            "masked": 103,
        },
        "raw_limits": {
            "median": {
                "write_fsync_gbps": 1.0,
                "memcpy_gbps": 1.0,
                "blake3_1t_gbps": 1.0,
                "blake3_all_gbps": 2.0,
                "zstd1_compress_gbps": 1.0,
                "zstd1_decompress_gbps": 1.0,
            },
            "compression": {
                "zstd1_ratio": 1.1,
                "zstd1_planes_ratio": 1.2,
                "zstd1_xor_planes_ratio": 1.8,
                "zstd1_diff_planes_ratio": 2.0,
            },
        },
    }

    report = bench.render(result)

    assert "1.50 s (1.50x; 0.19x)" in report  # save: torch.save, then DVC
    assert "0.60x (0 MB; 0.60x)" in report
    assert "1.50x the state of epoch 0" in report
    assert "## Pruning masks" in report and "+3.0%" in report
    assert "as the zigzag of their difference: 2.000x" in report
