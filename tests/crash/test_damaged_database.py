"""A damaged SQLite page: reads name the database file, fsck reports it.

The root page of the main table of ``index.sqlite`` (epochs) or
``metrics.sqlite`` (documents) is overwritten with noise after the repository
was closed (so the write-ahead log has been
folded into the file). Every read either works or fails with an MvcError that
names the damaged file; ``fsck`` reports the file as damaged (SQLite's
integrity check) and still checks every object; ``mvc fsck`` exits 1 naming it.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mvcstore import Repo
from mvcstore.errors import MvcError

PAGE = 4096
MVC = [str(Path(sys.executable).with_name("mvc"))]


@pytest.fixture
def closed_repo(tmp_path: Path) -> Path:
    """A closed repository whose two databases span a few dozen pages."""
    repo = Repo.init(tmp_path, durable=False)
    session = repo.session("a")
    step = 0
    for number in range(30):
        for _ in range(20):
            step += 1
            session.log_metrics(step, **{f"m{j}": float(step + j) for j in range(5)})
        session.commit(
            {"w": np.full(8, number, dtype=np.float32)},
            metrics={"acc": number / 30},
            step=step,
            message=f"epoch {number}",
        )
    repo.fork("b", at="a#10").commit({"w": np.zeros(8, dtype=np.float32)})
    repo.close()
    return tmp_path / ".mvc"


# the table every read of the file goes through: its root page is damaged
_MAIN_TABLE = {"index.sqlite": "epochs", "metrics.sqlite": "docs"}


def _damage_main_table(path: Path, seed: int) -> None:
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?",
            (_MAIN_TABLE[path.name],),
        ).fetchone()
    conn.close()
    data = bytearray(path.read_bytes())
    pages = len(data) // PAGE
    assert pages >= 8, pages
    page = int(root) - 1  # page numbers start at 1
    noise = random.Random(seed)
    data[page * PAGE : (page + 1) * PAGE] = bytes(
        noise.randrange(256) for _ in range(PAGE)
    )
    path.write_bytes(bytes(data))


def _reads(repo: Repo) -> dict[str, Callable[[], object]]:
    return {
        "log": lambda: list(repo.log(all_refs=True)),
        "sessions": repo.sessions,
        "reflog": repo.refs.reflog,
        "metrics": lambda: repo.metrics("a"),
        "stats": lambda: repo.metric_stats("b"),
        "checkout": lambda: [repo.checkout(e.id.hex) for e in repo.log("a") if e.id],
    }


@pytest.mark.parametrize("name", ["index.sqlite", "metrics.sqlite"])
@pytest.mark.parametrize("seed", [1, 2])
def test_a_damaged_page_is_named_by_reads_and_fsck(
    closed_repo: Path, name: str, seed: int
) -> None:
    database = closed_repo / name
    _damage_main_table(database, seed)

    with Repo.open(closed_repo, durable=False) as repo:
        failed = []
        for what, read in _reads(repo).items():
            try:
                read()
            except MvcError as exc:
                assert name in exc.message, (what, exc.message)
                assert exc.hint, what
                failed.append(what)
        report = repo.fsck()

    assert failed, "no read noticed the damage"
    databases = [p for p in report.problems if p.kind == "database"]
    assert databases and all(name in p.detail for p in databases)
    assert str(database) in databases[0].detail
    assert [p for p in report.problems if p.kind != "database"] == []
    assert report.objects > 0


def test_mvc_fsck_reports_a_damaged_database_and_exits_1(closed_repo: Path) -> None:
    _damage_main_table(closed_repo / "metrics.sqlite", 3)
    env = {**os.environ, "MVC_DIR": str(closed_repo)}

    result = subprocess.run(
        [*MVC, "fsck"], capture_output=True, text=True, env=env, timeout=120
    )
    as_json = subprocess.run(
        [*MVC, "fsck", "--json"], capture_output=True, text=True, env=env, timeout=120
    )

    assert result.returncode == 1, result.stderr
    assert "database: database" in result.stdout
    assert "metrics.sqlite is damaged" in result.stdout
    assert result.stderr.startswith("error: fsck found 1 problem")
    assert "Traceback" not in result.stderr
    assert '"kind": "database"' in as_json.stdout


def test_a_whole_database_passes_the_integrity_check(closed_repo: Path) -> None:
    with Repo.open(closed_repo, durable=False) as repo:
        assert repo.fsck().problems == []


def test_a_database_file_that_is_not_sqlite_is_named(closed_repo: Path) -> None:
    (closed_repo / "index.sqlite").write_bytes(b"not a database" * 100)

    with pytest.raises(MvcError) as caught:
        Repo.open(closed_repo, durable=False)

    assert "index.sqlite" in caught.value.message
    assert caught.value.hint
