"""Repairing damaged or missing objects from another copy of the repository.

``repair`` runs fsck, fetches every object it names as corrupt or missing from
a source repository (another local repository holding the same objects, such
as a backup or a clone), verifies each frame against its id before storing it,
and runs fsck again until nothing more can be fetched: a repaired state may
reveal tensors that are missing too. Sources are local paths for now; remote
URIs will follow with push and pull. Damaged SQLite files are reported, not
repaired: they are restored from a backup.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mvcstore.codec import (
    DEPENDENCY_PREFIX,
    ENCODING_CHUNKED,
    ObjectId,
    chain_readable_in,
    frame,
    frame_dependencies,
    unframe,
)
from mvcstore.errors import (
    CorruptObjectError,
    InvalidInputError,
    ObjectNotFoundError,
    RepositoryNotFoundError,
)
from mvcstore.repo import CONFIG_FILE, REPO_DIR, FsckReport, Repo
from mvcstore.stores.base import read_frame_prefix
from mvcstore.stores.local import LocalObjectStore

__all__ = ["RepairReport", "repair", "find_source"]

logger = logging.getLogger(__name__)

_MAX_ROUNDS: Final = 64
"""Rounds of fsck and fetch; each round goes one level deeper into objects."""


@dataclass(slots=True)
class RepairReport:
    """What ``repair`` fetched and what it could not.

    Attributes:
        source: The source repository's folder.
        repaired: Objects replaced or restored from the source.
        unrepaired: Objects still damaged or missing, with why.
        fsck: The fsck report after the repair.
    """

    source: Path
    repaired: list[ObjectId] = field(default_factory=list)
    unrepaired: dict[ObjectId, str] = field(default_factory=dict)
    fsck: FsckReport = field(default_factory=FsckReport)


def find_source(source: str | Path) -> Path:
    """Return the ``.mvc`` folder of a source repository named by a path.

    Unlike finding the working repository, no parent folder is searched: the
    path names the source exactly (the ``.mvc`` folder or the one holding it).

    Raises:
        InvalidInputError: If ``source`` is a URI (remote sources will follow).
        RepositoryNotFoundError: If no repository is there.
    """
    text = str(source)
    if "://" in text:
        raise InvalidInputError(
            f"repair source {text.split('://', 1)[0]}://... is a URI; only local"
            " repositories can be repair sources in this release",
            hint="copy the remote repository to a local folder and repair from it",
        )
    path = Path(source)
    for candidate in (path, path / REPO_DIR):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise RepositoryNotFoundError(
        text,
        hint="give the folder of another copy of this repository",
        searched=False,
    )


def repair(repo: Repo, source: str | Path) -> RepairReport:
    """Restore every corrupt or missing object that ``source`` holds intact.

    Args:
        repo: The damaged repository.
        source: Another local repository holding the same objects.

    Returns:
        What was restored, what was not and why, and the final fsck report.

    Raises:
        InvalidInputError: If ``source`` is a URI or the repository itself.
        RepositoryNotFoundError: If no repository is at ``source``.
        RepositoryFormatError: If the source cannot be opened.
    """
    root = find_source(source)
    if root.resolve() == repo.path.resolve():
        raise InvalidInputError(
            f"{root} is the repository being repaired",
            hint="repair from another copy, such as a backup or a clone",
        )
    report = RepairReport(source=root)
    tried: set[ObjectId] = set()
    with Repo.open_folder(root, durable=False) as other:
        for _ in range(_MAX_ROUNDS):
            found = repo.fsck()
            wanted = [
                ObjectId.from_hex(problem.object_id)
                for problem in found.problems
                if problem.object_id is not None
                and problem.kind in ("corrupt", "missing")
            ]
            fresh = [oid for oid in dict.fromkeys(wanted) if oid not in tried]
            if not fresh:
                break
            tried.update(fresh)
            lacking = {oid for oid in fresh if not _restore(repo, other, oid, report)}
            # an id no copy holds may be a damaged reference: a delta frame
            # whose base id lost a bit names an object that never existed;
            # the frames naming it are then fetched whole from the source
            for oid in _frames_naming(repo, lacking) - tried:
                tried.add(oid)
                _restore(repo, other, oid, report)
            repo.objects.flush()
    report.fsck = repo.fsck()
    if isinstance(repo.objects, LocalObjectStore):
        # an index that does not load hides its pack; once every object of
        # the pack is restored and checks out, the index goes and the pack is
        # garbage (see ``drop_damaged_indexes`` for every condition)
        troubled = {p.object_id for p in report.fsck.problems if p.object_id}
        dropped = repo.objects.drop_damaged_indexes(troubled=troubled)
        # a pack whose header or length is wrong while every object in it
        # verifies is written anew (see ``rewrite_faulty_packs``)
        with repo.deletion_lock(exclusive=True):
            rewritten = repo.objects.rewrite_faulty_packs(troubled=troubled)
        if dropped or rewritten:
            report.fsck = repo.fsck()
    still = {p.object_id for p in report.fsck.problems if p.object_id is not None}
    report.unrepaired = {
        oid: why for oid, why in report.unrepaired.items() if oid.hex in still
    }
    logger.info(
        "repair from %s: %d objects restored, %d not",
        root,
        len(report.repaired),
        len(report.unrepaired),
    )
    return report


def _restore(repo: Repo, other: Repo, oid: ObjectId, report: RepairReport) -> bool:
    """Fetch one object into ``repo`` and record the outcome; True if restored."""
    reason = _fetch(repo, other, oid)
    if reason is None:
        report.repaired.append(oid)
        return True
    report.unrepaired[oid] = reason
    return False


def _frames_naming(repo: Repo, wanted: set[ObjectId]) -> set[ObjectId]:
    """Return the stored objects whose frames name any of ``wanted``."""
    found: set[ObjectId] = set()
    if not wanted:
        return found
    for oid in repo.objects.iter_ids():
        try:
            head = read_frame_prefix(repo.objects, oid, DEPENDENCY_PREFIX)
            if len(head) > 6 and head[6] == ENCODING_CHUNKED:
                head = repo.objects.get_framed(oid)
            needed = frame_dependencies(head)
        except (CorruptObjectError, ObjectNotFoundError):
            continue  # fsck reports it on its own
        if wanted.intersection(needed):
            found.add(oid)
    return found


def _fetch(repo: Repo, other: Repo, oid: ObjectId) -> str | None:
    """Copy one verified frame from ``other``; return why not, or None."""
    try:
        framed = other.objects.get_framed(oid)
        # a delta's base or a chunked frame's chunks come from the source too;
        # fsck asks for them in the next round if this repository lacks them
        decoded = unframe(
            framed,
            object_id=oid,
            location=other.objects.describe(oid),
            source=other.objects,
        )
        if not chain_readable_in(framed, repo.format_version, other.objects):
            # an older repository gets a frame it reads; the id is the same
            framed = frame(decoded.kind, decoded.payload)
    except ObjectNotFoundError as exc:
        if exc.object_id != oid.hex:
            # the frame is there, but not the delta base or chunk it names
            return (
                f"the source {other.path} holds it but not object"
                f" {exc.object_id}, which its frame needs"
            )
        return f"the source {other.path} does not hold it"
    except CorruptObjectError as exc:
        return f"the source's copy is damaged too ({exc.reason})"
    # the damaged copy goes first: a store never overwrites an object
    repo.objects.delete(oid)
    repo.objects.put_if_absent(oid, framed)
    logger.warning("repair: restored %s from %s", oid.hex, other.path)
    return None
