"""Helpers shared by the test suites (imported as ``support``).

They live here rather than in a conftest so that every test module can import
them by one unambiguous name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from mvcstore import Epoch, Graph, Repo
from mvcstore.codec import ObjectId
from mvcstore.stores.local import LocalObjectStore
from mvcstore.stores.packs import decode_index, encode_index


def assert_clean(repo: Repo) -> None:
    """Fail unless fsck finds no problem (unreferenced objects are allowed)."""
    report = repo.fsck()
    assert report.problems == [], report.problems


def make_state(session: str, number: int) -> dict[str, np.ndarray]:
    """Return the weights committed as epoch ``number`` of ``session``.

    ``frozen`` never changes, so every epoch shares its data; ``weight`` and
    ``bias`` differ for every (session, number).
    """
    seed = sum(session.encode()) * 1000 + number
    rng = np.random.default_rng(seed)
    return {
        "frozen": np.arange(64, dtype=np.float32).reshape(8, 8),
        "weight": rng.standard_normal((4, 8)).astype(np.float32),
        "bias": rng.standard_normal(4).astype(np.float64),
    }


def make_graph(width: int) -> Graph:
    """Return a two-layer graph whose hidden layer has ``width`` units."""
    return Graph.from_value(
        {
            "nodes": [
                {
                    "id": "fc1",
                    "data": {"class": "Linear", "in": 8, "out": width},
                    "outputs": {"fc2": 0},
                },
                {
                    "id": "fc2",
                    "data": {"class": "Linear", "in": width, "out": 2},
                    "inputs": {"fc1": 0},
                },
            ],
            "meta": {"framework": "test"},
        }
    )


@dataclass
class Forked:
    """A two-session history.

    Session ``a`` has six epochs; session ``b`` was forked at ``a#4`` and has two
    epochs of its own (numbers 5 and 6). Every epoch logged ``loss`` at two
    steps and committed a summary ``acc``, so each holds three metric documents.
    HEAD is ``b``.

    Attributes:
        repo: The repository.
        a: The epochs of ``a``, oldest first (``a[0]`` is ``a#1``).
        b: The epochs committed on ``b``, oldest first (``b[0]`` is ``b#5``).
        states: The arrays committed, by epoch id.
        graphs: The graph committed with ``a#1``, and the one from ``a#3`` on.
    """

    repo: Repo
    a: list[Epoch] = field(default_factory=list)
    b: list[Epoch] = field(default_factory=list)
    states: dict[ObjectId, dict[str, np.ndarray]] = field(default_factory=dict)
    graphs: tuple[Graph, Graph] = field(
        default_factory=lambda: (make_graph(16), make_graph(12))
    )

    DOCS_PER_EPOCH: ClassVar[int] = 3


def _commit_epochs(
    forked: Forked, session_name: str, numbers: range, out: list[Epoch]
) -> None:
    session = forked.repo.session(session_name)
    offset = 0.0 if session_name == "a" else 0.5
    for number in numbers:
        session.log_metrics(10 * number - 10, loss=1.0 / number + offset)
        session.log_metrics(10 * number - 5, loss=0.9 / number + offset)
        state = make_state(session_name, number)
        graph = {1: forked.graphs[0], 3: forked.graphs[1]}.get(number)
        params = {"lr": 0.1} if number < 3 else None
        if session_name == "b" and number == 5:
            params = {"lr": 0.01}
        epoch = session.commit(
            state,
            graph=graph,
            params=params,
            metrics={"acc": number / 10 + offset},
            message=f"{session_name} epoch {number}",
        )
        assert epoch.id is not None
        forked.states[epoch.id] = state
        out.append(epoch)


@dataclass(frozen=True)
class StoredRegion:
    """Where an object's frame lies: a whole loose file, or a range of a pack.

    Attributes:
        path: The loose file or the pack file.
        offset: The first byte of the frame in that file.
        length: The frame's length.
        packed: Whether the frame is in a pack.
    """

    path: Path
    offset: int
    length: int
    packed: bool


def stored_region(repo: Repo, oid: ObjectId) -> StoredRegion:
    """Return where ``oid`` is stored in a local repository."""
    assert isinstance(repo.objects, LocalObjectStore)
    found = repo.objects.locate(oid)
    if found is not None:
        return StoredRegion(found.pack, found.offset, found.length, packed=True)
    path = repo.objects.path_of(oid)
    assert path.is_file(), f"{oid.hex} is neither packed nor loose"
    return StoredRegion(path, 0, path.stat().st_size, packed=False)


def overwrite_region(region: StoredRegion, change: Callable[[bytearray], None]) -> None:
    """Change an object's stored bytes in place (same length when packed)."""
    data = bytearray(region.path.read_bytes())
    frame = bytearray(data[region.offset : region.offset + region.length])
    change(frame)
    if region.packed:
        assert len(frame) == region.length, "a packed frame cannot change length"
    data[region.offset : region.offset + region.length] = frame
    region.path.chmod(0o644)
    region.path.write_bytes(bytes(data))


def drop_object(repo: Repo, oid: ObjectId) -> None:
    """Make ``oid`` missing: unlink its file, or leave it out of its pack's index.

    A packed object's pack gets a new name and an index without its entry, so
    the repository object, once refreshed, no longer finds it.
    """
    region = stored_region(repo, oid)
    if not region.packed:
        region.path.unlink()
        return
    assert isinstance(repo.objects, LocalObjectStore)
    old_index = region.path.with_suffix(".idx")
    entries, size = decode_index(old_index.read_bytes(), where=str(old_index))
    del entries[oid.raw]
    moved = region.path.with_name(f"pack-{os.urandom(16).hex()}.pack")
    region.path.rename(moved)
    moved.with_suffix(".idx").write_bytes(encode_index(entries, size))
    old_index.unlink()
    repo.objects.packs.refresh()


def can_mount_privately() -> bool:
    """Return whether a private mount namespace can be made (``unshare``)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0
