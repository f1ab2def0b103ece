"""A ten-kill sample of the crash harness (``make crash-test`` runs 200)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HARNESS = Path(__file__).with_name("harness.py")


def test_ten_sigkills_during_commits_leave_a_readable_history(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("crash_harness", HARNESS)
    assert spec is not None and spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = harness  # dataclasses look their module up
    spec.loader.exec_module(harness)

    summary = harness.run(10, seed=20240611, folder=tmp_path, gc_every=5)

    assert summary.kills == 10
    assert summary.epochs >= 2
    assert summary.left_garbage >= 1  # at least one kill landed inside a commit
