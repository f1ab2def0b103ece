"""`mvc upgrade`: an older repository moves to the current format, in place."""

from __future__ import annotations

import json

import numpy as np

from mvcstore import Repo
from mvcstore.codec import ENCODING_DELTA, ENCODING_DIFF, parse_frame
from mvcstore.repo import FORMAT_VERSION


def _blob_encoding(repo: Repo, revision: str) -> int:
    state = repo.checkout(revision)
    assert state.epoch.state is not None
    tensors = repo.get(state.epoch.state).tensors  # type: ignore[union-attr]
    blob = repo.get(tensors["w"]).data  # type: ignore[union-attr]
    return parse_frame(repo.objects.get_framed(blob)).encoding


def test_upgrade_moves_a_format_2_repository_and_later_commits_use_format_3(
    mvc, tmp_path
):
    rng = np.random.default_rng(1)
    w = rng.standard_normal(4096).astype(np.float32)
    with Repo.init(tmp_path, durable=False) as repo:
        repo._use_format(2)
        line = repo.session("main")
        line.commit({"w": w})
        line.commit({"w": w * np.float32(1.001)})
    config = tmp_path / ".mvc" / "config.json"
    values = json.loads(config.read_text())
    values["version"] = 2
    config.write_text(json.dumps(values))

    assert mvc("upgrade").out.strip() == f"repository format 2 -> {FORMAT_VERSION}"
    assert json.loads(config.read_text())["version"] == FORMAT_VERSION
    assert "nothing to do" in mvc("upgrade").out

    with Repo.open(tmp_path, durable=False) as repo:
        assert _blob_encoding(repo, "main") == ENCODING_DELTA
        repo.session("main").commit({"w": w * np.float32(1.002)})
        assert _blob_encoding(repo, "main") == ENCODING_DIFF
        assert repo.checkout("main#2").state["w"].tobytes() == (
            (w * np.float32(1.001)).tobytes()
        )
    mvc("fsck")


def test_upgrade_outside_a_repository_fails_clearly(mvc):
    result = mvc.fails("upgrade")

    assert "error:" in result.err
