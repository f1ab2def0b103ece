"""The README's main job: the fork-and-compare demo runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[2]


def test_demo_trains_forks_and_leaves_a_clean_repository(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "demo_digits.py"),
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "best epoch" in run.stdout

    # the repository it leaves is usable with the CLI
    mvc = Path(sys.executable).with_name("mvc")
    env = {**os.environ, "MVC_DIR": str(tmp_path / ".mvc")}
    branches = subprocess.run(
        [str(mvc), "branch", "--json"], capture_output=True, text=True, env=env
    )
    assert branches.returncode == 0, branches.stderr
    names = {entry["name"] for entry in json.loads(branches.stdout)}
    assert {"a", "b"} <= names
    fsck = subprocess.run([str(mvc), "fsck"], capture_output=True, text=True, env=env)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
