"""No name, revision or id can make mvcstore touch a file outside the repository.

An audit hook records every path the interpreter opens, lists, creates,
renames or removes while hostile names and ids go through the repository API
(sessions, tags, forks, revisions, checkout, views, gc, retain); every path
recorded must lie inside the repository folder. Imports are the exception:
the interpreter's own files and the installed packages are allowed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mvcstore
from mvcstore import Repo
from mvcstore.codec import ObjectId
from mvcstore.errors import MvcError
from mvcstore.gc import RetainPolicy, collect, retain

_EVENTS = {"open", "os.listdir", "os.scandir", "os.remove", "os.rename", "os.mkdir"}
_RECORDING: list[list[str]] = []
_LOCK = threading.Lock()


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event not in _EVENTS or not _RECORDING or not args:
        return
    path = args[0]
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, str | os.PathLike):
        with _LOCK:
            if _RECORDING:
                _RECORDING[-1].append(os.fspath(path))


sys.addaudithook(_hook)

_ALLOWED_ROOTS = [
    Path(sys.prefix).resolve(),
    Path(sys.base_prefix).resolve(),
    Path(mvcstore.__file__).resolve().parent,
]


@contextmanager
def recorded() -> Iterator[list[str]]:
    """Record the paths touched inside the block."""
    paths: list[str] = []
    _RECORDING.append(paths)
    try:
        yield paths
    finally:
        _RECORDING.pop()


def _outside(paths: list[str], root: Path) -> list[str]:
    out = []
    for text in paths:
        path = Path(text)
        resolved = (
            path.resolve() if path.is_absolute() else (Path.cwd() / path).resolve()
        )
        if resolved == root or root in resolved.parents:
            continue
        if any(base in resolved.parents for base in _ALLOWED_ROOTS):
            continue
        if str(resolved).startswith("/dev/") or str(resolved).startswith("/proc/"):
            continue
        out.append(text)
    return out


HOSTILE = [
    "../outside",
    "../../etc/passwd",
    "/etc/passwd",
    "a/../../x",
    "sessions/../../x",
    "..",
    ".",
    "./x",
    "x/./y",
    "-rf",
    "--all",
    "a\x00b",
    "a\nb",
    "a\\..\\..\\x",
    "C:\\Windows",
    "~root",
    "HEAD/../x",
    "x" * 300,
    "a//b",
    "a/",
    "é",
    "a b",
    "x.lock",
    "$(touch pwned)",
    "`id`",
    "a:b",
    "a#1/../x",
    "0" * 64 + "/../x",
    "../" + "0" * 64,
    "objects/00/" + "0" * 62,
    "%2e%2e/x",
]


@pytest.fixture
def history(repo: Repo) -> Repo:
    session = repo.session("a")
    for number in range(3):
        session.commit({"w": np.full(4, number, dtype=np.float32)})
    repo.tag("t", "a~1")
    return repo


def _attempts(repo: Repo, text: str) -> list[Callable[[], object]]:
    return [
        lambda: repo.resolve(text),
        lambda: repo.checkout(text),
        lambda: list(repo.log(text)),
        lambda: repo.metrics(text),
        lambda: repo.view_uids(text),
        lambda: repo.session(text),
        lambda: repo.create_session(text, at="a"),
        lambda: repo.create_session("ok", at=text),
        lambda: repo.tag(text, "a"),
        lambda: repo.tag("ok", text),
        lambda: repo.delete_session(text),
        lambda: repo.delete_tag(text),
        lambda: repo.set_head(text),
        lambda: retain(repo, text, RetainPolicy(keep_last=1), dry_run=True),
    ]


def _run_all(repo: Repo, text: str) -> list[str]:
    paths: list[str] = []
    for attempt in _attempts(repo, text):
        with recorded() as seen:
            try:
                attempt()
            except MvcError:
                pass
        paths.extend(seen)
    return paths


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_names_and_revisions_touch_only_the_repository(
    history: Repo, text: str
) -> None:
    root = history.path.resolve()
    before = sorted(p.name for p in root.parent.iterdir())

    paths = _run_all(history, text)

    assert _outside(paths, root) == []
    assert sorted(p.name for p in root.parent.iterdir()) == before
    for name, _ in history.sessions():
        assert ".." not in name and not name.startswith(("/", "-"))


@given(st.text(max_size=80))
def test_arbitrary_revisions_raise_only_mvc_errors_inside_the_repository(
    text: str,
) -> None:
    repo = _SHARED.get()
    root = repo.path.resolve()
    with recorded() as seen:
        for read in (repo.resolve, repo.view_uids):
            try:
                read(text)
            except MvcError:
                pass
    assert _outside(seen, root) == []


class _Shared:
    """One repository for the hypothesis test (fixtures are per test)."""

    def __init__(self) -> None:
        self.repo: Repo | None = None

    def get(self) -> Repo:
        if self.repo is None:
            import atexit
            import shutil
            import tempfile

            folder = Path(tempfile.mkdtemp(prefix="mvc-paths-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            self.repo = Repo.init(folder, durable=False)
            session = self.repo.session("a")
            session.commit({"w": np.zeros(2, dtype=np.float32)})
        return self.repo


_SHARED = _Shared()


@given(st.binary(min_size=32, max_size=32))
def test_every_object_id_names_a_file_inside_objects(raw: bytes) -> None:
    repo = _SHARED.get()
    path = repo.objects.path_of(ObjectId(raw))  # type: ignore[attr-defined]
    assert path.resolve().parent.parent == (repo.path / "objects").resolve()
    assert len(path.name) == 62 and set(path.name) <= set("0123456789abcdef")


def test_gc_and_checkout_touch_only_the_repository(history: Repo) -> None:
    root = history.path.resolve()
    history.delete_session("a")
    with recorded() as seen:
        collect(history, grace_s=0, reflog_s=0)
        history.checkout("t")
    assert _outside(seen, root) == []


def test_mvc_dir_outside_any_repository_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "repo"
    Repo.init(target, durable=False).close()
    env = {**os.environ, "MVC_DIR": str(target / ".mvc" / ".." / ".." / "elsewhere")}
    mvc = [str(Path(sys.executable).with_name("mvc"))]

    result = subprocess.run(
        [*mvc, "log"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )

    assert result.returncode == 1
    assert result.stderr.startswith("error: no mvcstore repository found")
    assert not (tmp_path / "elsewhere").exists()
