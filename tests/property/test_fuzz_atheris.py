"""A bounded atheris run over every decoder (skipped when atheris is absent)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUNS = 3000
TARGET = Path(__file__).with_name("fuzz_atheris.py")


def test_atheris_finds_no_crash_in_a_bounded_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris")

    result = subprocess.run(
        [sys.executable, str(TARGET), f"-runs={RUNS}", "-seed=1", "-max_len=4096"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Done {RUNS} runs" in result.stderr
