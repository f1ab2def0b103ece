"""A small sample of the scale benchmark: the views it builds are exact.

Correctness only; speed lives in benchmarks/bench_scale.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from support import assert_clean

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scale", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up by name while the module runs
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_scale_sample_views_series_and_best_are_exact(bench, tmp_path: Path) -> None:
    plan = bench.Plan(epochs=2000, docs=50_000)

    repo = bench.build(plan, tmp_path / "repo", say=lambda line: None)
    try:
        bench.verify(repo, plan)
        assert_clean(repo)
    finally:
        repo.close()


def test_scale_baseline_holds_the_copied_documents(bench, tmp_path: Path) -> None:
    plan = bench.Plan(epochs=200, docs=5_000)

    conn = bench.build_baseline(plan, tmp_path / "baseline.sqlite")
    try:
        rows = conn.execute("SELECT count(*) FROM docs").fetchone()[0]
    finally:
        conn.close()

    stored = (plan.epochs + plan.side_epochs) * plan.docs_per_epoch
    assert rows == stored + plan.fork_at * plan.docs_per_epoch
