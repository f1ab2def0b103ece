"""Rough edges a fresh user found: file metadata, damaged metrics, bad paths."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def test_safetensors_metadata_survives_commit_and_checkout(mvc, tmp_path: Path) -> None:
    save_file(
        {"w": np.arange(4, dtype=np.float32)},
        str(tmp_path / "w.safetensors"),
        metadata={"format": "pt", "note": "kept"},
    )
    mvc("init")
    mvc("commit", "--session", "a", "--weights", "w.safetensors")
    mvc("checkout", "a", "-o", "out")

    with safe_open(str(tmp_path / "out" / "weights.safetensors"), "np") as handle:
        assert handle.metadata() == {"format": "pt", "note": "kept"}


def test_damaged_metrics_database_does_not_block_log_or_checkout(
    mvc, tmp_path: Path
) -> None:
    save_file({"w": np.ones(3, dtype=np.float32)}, str(tmp_path / "w.safetensors"))
    mvc("init")
    mvc("commit", "--session", "a", "--weights", "w.safetensors", "--metric", "acc=1")
    database = tmp_path / ".mvc" / "metrics.sqlite"
    mvc("fsck")  # leaves the database checkpointed into its main file
    kept = database.read_bytes()
    os.truncate(database, 1000)

    assert "a#1" in mvc("log", "--all").out
    mvc("checkout", "a", "-o", "out")
    failed = mvc.fails("metrics", "a")
    assert "metrics.sqlite" in failed.err

    database.write_bytes(kept)
    assert "acc" in mvc("metrics", "a").out


def test_init_where_no_folder_can_be_made_is_a_clear_error(mvc) -> None:
    failed = mvc.fails("init", "/proc/mvcstore-cannot-exist")

    assert "cannot create a repository" in failed.err


def test_commit_refuses_a_weights_path_that_is_not_a_regular_file(
    mvc, tmp_path: Path
) -> None:
    os.mkfifo(tmp_path / "pipe")
    mvc("init")

    failed = mvc.fails("commit", "--session", "a", "--weights", "pipe")

    assert "not a regular file" in failed.err
