"""Shared helpers for the end-to-end CLI tests: `mvc` runs in a subprocess.

Every test works in its own tmp_path. The forked two-session history is built
once through the CLI into a template folder; each test that needs it gets a
fresh copy, so tests share no state. Helpers reach the tests as fixtures
(`mvc`, `history`, `kit`), never by importing this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import save_file

from mvcstore import Repo

_SCRIPT = Path(sys.executable).with_name("mvc")
MVC_COMMAND: list[str] = (
    [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "mvcstore.cli.main"]
)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


class Mvc:
    """Runs `mvc` in a folder, with MVC_DIR unset unless given."""

    def __init__(self, cwd: Path, *, mvc_dir: Path | None = None) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if k != "MVC_DIR"}
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        if mvc_dir is not None:
            self.env["MVC_DIR"] = str(mvc_dir)

    def __call__(self, *args: str, expect: int | None = 0) -> Result:
        proc = subprocess.run(
            [*MVC_COMMAND, *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            errors="surrogateescape",
            timeout=300,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if expect is not None:
            assert proc.returncode == expect, (
                f"mvc {' '.join(args)} exited {proc.returncode}, expected {expect}\n"
                f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
            )
        return result

    def fails(self, *args: str) -> Result:
        """Run a command that must fail with exit 1, an error and a hint line."""
        result = self(*args, expect=1)
        lines = result.err.splitlines()
        assert any(line.startswith("error: ") for line in lines), result.err
        assert any(line.startswith("hint: ") for line in lines), result.err
        assert "Traceback" not in result.err
        return result


def make_weights(seed: int) -> dict[str, np.ndarray]:
    """Deterministic tensors of several dtypes, with bit patterns that matter."""
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((4, 3)).astype(np.float32)
    matrix[0, 0] = -0.0
    matrix[0, 1] = np.nan
    return {
        "layer.weight": matrix,
        "layer.bias": rng.standard_normal(3).astype(np.float64),
        "embed": rng.standard_normal((2, 5)).astype(np.float16),
        "counts": rng.integers(-(2**40), 2**40, size=6, dtype=np.int64),
        "mask": rng.integers(0, 2, size=(3, 2)).astype(np.bool_),
        "scalar": np.array(float(seed), dtype=np.float32),
    }


def write_weights(path: Path, seed: int) -> dict[str, np.ndarray]:
    """Write make_weights(seed) with safetensors' own writer; return the arrays."""
    tensors = make_weights(seed)
    save_file(tensors, str(path))
    return tensors


def assert_same_tensors(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray]
) -> None:
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        assert got[name].tobytes() == array.tobytes(), name


GRAPH = {
    "nodes": {
        "fc1": {"id": "fc1", "name": "fc1", "data": {"cls": "Linear", "out": 3}},
        "act": {"id": "act", "name": "act", "data": {"cls": "ReLU"}},
    },
    "meta": {"framework": "numpy"},
}


def object_files(repo_root: Path) -> dict[str, str]:
    """Every file under .mvc/objects with the hash of its bytes."""
    objects = repo_root / ".mvc" / "objects"
    return {
        str(path.relative_to(objects)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(objects.rglob("*"))
        if path.is_file()
    }


@dataclass
class History:
    """A copy of the forked history and what went into it.

    main: epochs 1, 2, 3 (seeds 1, 2, 3; the graph on epoch 1).
    fork: made with `checkout -b fork main~1`, then epochs 3 and 4 (seeds 11,
    12). HEAD is fork.
    """

    root: Path
    mvc: Mvc
    ids: dict[str, str]
    log_json: str
    weights: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    damaged: bool = False
    """Set by tests that damage objects on purpose: no fsck after them."""

    def snapshot(self) -> tuple[dict[str, str], object]:
        """The object files and `mvc log --all --json`, to prove nothing changed."""
        return object_files(self.root), self.mvc("log", "--all", "--json").json()


_SEEDS = {"main#1": 1, "main#2": 2, "main#3": 3, "fork#3": 11, "fork#4": 12}
_METRICS = {
    "main#1": ("1.0", "10"),
    "main#2": ("0.5", "20"),
    "main#3": ("0.25", "30"),
    "fork#3": ("0.4", "30"),
    "fork#4": ("0.2", "40"),
}


def _commit(mvc: Mvc, root: Path, label: str, *extra: str) -> str:
    loss, step = _METRICS[label]
    write_weights(root / f"{label.replace('#', '')}.safetensors", _SEEDS[label])
    result = mvc(
        "commit",
        "--weights",
        f"{label.replace('#', '')}.safetensors",
        "--metric",
        f"loss={loss}",
        "--step",
        step,
        "-m",
        f"epoch {label}",
        *extra,
    )
    return result.out.strip()


@pytest.fixture(scope="session")
def history_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("history-template")
    mvc = Mvc(root)
    mvc("init")
    mvc("branch", "main")
    (root / "graph.json").write_text(json.dumps(GRAPH))
    _commit(mvc, root, "main#1", "--graph", "graph.json", "--param", "lr=0.1")
    _commit(mvc, root, "main#2")
    _commit(mvc, root, "main#3")
    mvc("checkout", "-b", "fork", "main~1", "-o", "setup-checkout")
    _commit(mvc, root, "fork#3", "--param", "lr=0.01")
    _commit(mvc, root, "fork#4")
    shutil.rmtree(root / "setup-checkout")
    (root / "log.json").write_text(mvc("log", "--all", "--json").out)
    return root


@pytest.fixture
def history(history_template: Path, tmp_path: Path) -> History:
    root = tmp_path / "repo"
    shutil.copytree(history_template, root)
    log_json = (root / "log.json").read_text()
    ids = {
        f"{entry['session']}#{entry['number']}": entry["id"]
        for entry in json.loads(log_json)
    }
    assert sorted(ids) == sorted(_SEEDS)
    weights = {label: make_weights(seed) for label, seed in _SEEDS.items()}
    return History(
        root=root, mvc=Mvc(root), ids=ids, log_json=log_json, weights=weights
    )


@pytest.fixture(autouse=True)
def _fsck_every_repository_after_the_test(request, tmp_path):
    """A test that writes a repository ends with fsck (in process: no subprocess)."""
    yield
    history = request.node.funcargs.get("history")
    skip = {history.root / ".mvc"} if history is not None and history.damaged else set()
    for config in sorted(tmp_path.rglob(".mvc/config.json")):
        if config.parent in skip:
            continue
        with Repo.open(config.parent) as repo:
            report = repo.fsck()
        assert report.ok, f"fsck of {config.parent} after the test: {report.problems}"


@pytest.fixture
def mvc(tmp_path: Path) -> Mvc:
    """`mvc` in an empty tmp_path (no repository yet)."""
    return Mvc(tmp_path)


def star_column(line: str) -> int:
    """The column (0-based) of the '*' on a `log --graph` line."""
    return line.index("*") // 2


def lines_with(text: str, needle: str) -> Sequence[str]:
    return [line for line in text.splitlines() if needle in line]


@pytest.fixture
def kit() -> SimpleNamespace:
    """The shared helpers: weights, tensor comparison, object files, graph."""
    return SimpleNamespace(
        make_weights=make_weights,
        write_weights=write_weights,
        assert_same_tensors=assert_same_tensors,
        object_files=object_files,
        graph=json.loads(json.dumps(GRAPH)),
        star_column=star_column,
        lines_with=lines_with,
        Mvc=Mvc,
    )
