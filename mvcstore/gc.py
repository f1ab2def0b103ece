"""Garbage collection and retention: what a repository keeps, and for how long.

``collect`` (``mvc gc``) removes what no view can reach any more: objects, the
epoch index rows and metric documents of epochs gone, abandoned open epochs
and stale temporary files, each only once older than a grace period. It marks
from every ref, every reflog entry within the reflog retention, and every live
open epoch; it also keeps whatever a young unreferenced object needs, so an
epoch still being committed, or one that lost a race and may be kept as a new
session, stays whole. It never deletes by age or count alone.

``retain`` (``mvc retain``) drops the weights and training state of epochs a
policy does not keep, while every epoch record, graph and metric document
stays: log, views and comparisons work as before. Drops are recorded beside
the immutable epoch objects (``DropLog``); gc then removes those states.

This module works through the store protocols only. It orders its deletions
against commits with ``Repo.deletion_lock``: a commit checks its objects and
moves its ref under the shared lock, gc re-reads the refs and deletes under
the exclusive one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mvcstore import lineage
from mvcstore.codec import ObjectId
from mvcstore.errors import (
    CorruptObjectError,
    InvalidInputError,
    MvcError,
    ObjectNotFoundError,
    RepositoryFormatError,
    RevisionNotFoundError,
)
from mvcstore.objects import Epoch, StoredObject, Tensor
from mvcstore.refs import SESSION_PREFIX, TAG_PREFIX, session_ref
from mvcstore.repo import Repo, _owner_alive
from mvcstore.stores.base import EpochEntry, OpenEpoch
from mvcstore.stores.liveness import (
    DropLog,
    FrameKinds,
    ObjectStats,
    frame_dependencies,
    object_links,
)

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_REFLOG_S",
    "GcReport",
    "RetainPolicy",
    "RetainReport",
    "collect",
    "retain",
]

logger = logging.getLogger(__name__)

DEFAULT_GRACE_S: Final = 3600.0
"""Unreferenced objects, documents and temporary files younger than this stay."""

DEFAULT_REFLOG_S: Final = 30 * 86400.0
"""Epochs a ref pointed at within this many seconds stay (reflog retention)."""


@dataclass(slots=True)
class GcReport:
    """What ``collect`` removed (or, with ``dry_run``, would remove).

    Attributes:
        dry_run: Whether nothing was actually removed.
        reachable: Objects reachable from refs, reflog and open epochs.
        kept_young: Unreferenced objects kept because younger than the grace
            period, or needed by such an object.
        objects: Objects removed.
        bytes: Bytes those objects took.
        epochs: Epoch index rows removed.
        docs: Metric documents removed.
        uids: Epoch uids whose documents were removed.
        open_epochs: Abandoned open epochs forgotten.
        temporaries: Stale temporary files removed.
        temporary_bytes: Bytes those files took.
    """

    dry_run: bool = False
    reachable: int = 0
    kept_young: int = 0
    objects: int = 0
    bytes: int = 0
    epochs: int = 0
    docs: int = 0
    uids: int = 0
    open_epochs: int = 0
    temporaries: int = 0
    temporary_bytes: int = 0


@dataclass(slots=True)
class _Roots:
    """Where marking starts, read in an order that loses no racing commit."""

    strict: set[ObjectId] = field(default_factory=set)
    lenient: set[ObjectId] = field(default_factory=set)
    live_uids: set[str] = field(default_factory=set)
    dead_open: list[OpenEpoch] = field(default_factory=list)


@dataclass(slots=True)
class _Plan:
    """What one gc run will remove."""

    objects: dict[ObjectId, int] = field(default_factory=dict)
    epochs: list[ObjectId] = field(default_factory=list)
    uids: dict[str, int] = field(default_factory=dict)
    open_epochs: list[OpenEpoch] = field(default_factory=list)
    temporaries: dict[Path, int] = field(default_factory=dict)
    seen: set[ObjectId] = field(default_factory=set)


class _Marker:
    """Marks objects reachable from epochs, reading each non-blob object once.

    Blobs are never read: only their frame dependencies are asked for.
    """

    def __init__(self, repo: Repo, dropped: Collection[ObjectId]) -> None:
        self.repo = repo
        self.dropped = dropped
        self.marked: set[ObjectId] = set()
        self.uids: set[str] = set()

    def mark(self, roots: Iterable[ObjectId], *, strict: bool) -> list[ObjectId]:
        """Mark everything reachable from ``roots`` (epochs, or any object).

        Args:
            roots: Where to start.
            strict: Whether a missing or damaged object stops gc (refs and
                open epochs) or is skipped (reflog entries, young garbage).

        Returns:
            The objects newly marked.

        Raises:
            MvcError: In strict mode, when a reachable object cannot be read.
        """
        fresh: list[ObjectId] = []
        stack: list[tuple[ObjectId, bool]] = [(oid, False) for oid in roots]
        while stack:
            oid, is_data = stack.pop()
            if oid in self.marked:
                continue
            try:
                links, data = self._links(oid, is_data)
            except (ObjectNotFoundError, CorruptObjectError) as exc:
                if strict:
                    raise MvcError(
                        f"gc removed nothing: a reachable object cannot be read:"
                        f" {exc.message}",
                        hint="run 'mvc fsck', repair the repository (for example"
                        " with 'mvc fsck --repair --from PATH'), then run gc again",
                    ) from exc
                logger.warning("gc: skipping %s: %s", oid.hex, exc.message)
                continue
            self.marked.add(oid)
            fresh.append(oid)
            stack.extend((link, False) for link in links)
            stack.extend((dep, True) for dep in data)
        return fresh

    def _links(
        self, oid: ObjectId, is_data: bool
    ) -> tuple[list[ObjectId], list[ObjectId]]:
        """Return (object links, data links) of ``oid``; data is never decoded."""
        store = self.repo.objects
        deps = frame_dependencies(store, oid)
        if is_data:
            if oid not in store.has_many([oid]):
                raise ObjectNotFoundError(oid.hex, location=store.describe(oid))
            return [], deps
        obj: StoredObject = self.repo.get(oid)
        if isinstance(obj, Epoch):
            self.uids.add(obj.uid)
        links = object_links(obj, dropped=oid in self.dropped)
        if isinstance(obj, Tensor):
            # a tensor's data is a blob: marked by id and frame, never read
            return [], [*links, *deps]
        return links, deps

    def mark_young(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        """Mark what young unreferenced objects need, reading blobs not at all."""
        store = self.repo.objects
        fresh: list[ObjectId] = []
        for oid in oids:
            if oid in self.marked:
                continue
            kind: str | None = None
            if isinstance(store, FrameKinds):
                try:
                    kind = store.object_kind(oid)
                except ObjectNotFoundError:
                    continue
            fresh.extend(self.mark([oid], strict=False) if kind != "blob" else [])
            if kind == "blob":
                fresh.extend(self._mark_data(oid))
        return fresh

    def _mark_data(self, oid: ObjectId) -> list[ObjectId]:
        stack = [oid]
        fresh = []
        while stack:
            current = stack.pop()
            if current in self.marked:
                continue
            try:
                deps = frame_dependencies(self.repo.objects, current)
            except (ObjectNotFoundError, CorruptObjectError):
                continue
            self.marked.add(current)
            fresh.append(current)
            stack.extend(deps)
        return fresh


def _read_roots(repo: Repo, *, now_ns: int, reflog_s: float) -> _Roots:
    roots = _Roots()

    # open epochs before refs: a commit moves its ref before it forgets its
    # open epoch, so a uid seen in neither place has a ref read below
    for open_epoch in repo.refs.iter_open_epochs():
        if _owner_alive(open_epoch.owner):
            roots.live_uids.add(open_epoch.uid)
            if open_epoch.base is not None:
                roots.strict.add(open_epoch.base)
        else:
            roots.dead_open.append(open_epoch)
    roots.strict.update(oid for _, oid in repo.refs.iter_refs(""))

    # a reflog entry keeps both epochs of its move alive for reflog_s; an epoch
    # a shorter retention already removed is skipped, not an error
    since = now_ns - int(reflog_s * 1e9)
    for entry in repo.refs.reflog():
        if entry.time_ns >= since:
            roots.lenient.update(e for e in (entry.old, entry.new) if e is not None)
    roots.lenient -= roots.strict
    return roots


def collect(
    repo: Repo,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    reflog_s: float = DEFAULT_REFLOG_S,
    dry_run: bool = False,
) -> GcReport:
    """Remove what no view can reach and that is older than ``grace_s``.

    Kept: everything reachable from every session and tag, from both epochs of
    every reflog entry younger than ``reflog_s``, and from the base of every
    live open epoch (whose documents stay too); the state and extra states of
    epochs whose weights ``retain`` dropped are not kept. Also kept: every
    unreferenced object younger than ``grace_s`` and everything such an object
    needs, so commits in progress and epochs that lost a race stay whole.
    Removed: the other objects, their epochs' index rows, the metric documents
    of uids that belong to no kept epoch and to no live open epoch (once all
    of a uid's documents are older than ``grace_s``), open epochs of dead
    writers, and temporary files older than ``grace_s``.

    Args:
        repo: The repository.
        grace_s: Seconds an unreferenced object, document or temporary file is
            kept after it was written. 0 is safe only when nothing writes.
        reflog_s: Seconds a reflog entry keeps its epochs alive.
        dry_run: Report what would be removed, remove nothing.

    Returns:
        What was (or would be) removed.

    Raises:
        InvalidInputError: If ``grace_s`` or ``reflog_s`` is negative.
        MvcError: If a reachable object cannot be read; nothing is removed.
    """
    if not grace_s >= 0 or not reflog_s >= 0:
        raise InvalidInputError(
            f"grace and reflog retention must be >= 0 seconds, got {grace_s!r}"
            f" and {reflog_s!r}"
        )
    now = time.time()
    now_ns = int(now * 1e9)
    report = GcReport(dry_run=dry_run)
    dropped = set(repo.dropped_epochs())

    # mark: refs and open epochs strictly, reflog entries leniently
    roots = _read_roots(repo, now_ns=now_ns, reflog_s=reflog_s)
    marker = _Marker(repo, dropped)
    marker.mark(roots.strict, strict=True)
    marker.mark(roots.lenient, strict=False)
    report.reachable = len(marker.marked)
    plan = _plan(repo, marker, roots, now=now, grace_s=grace_s, report=report)
    _refuse_unindexed_lines(repo, plan)

    if not dry_run:
        with repo.deletion_lock(exclusive=True):
            # refs may have moved since the mark: what they reach now stays
            again = _read_roots(repo, now_ns=now_ns, reflog_s=reflog_s)
            newly = marker.mark(again.strict - marker.marked, strict=True)
            newly += marker.mark(again.lenient - marker.marked, strict=False)
            # objects written since the plan are young: keep what they need
            written = [o for o in repo.objects.iter_ids() if o not in plan.seen]
            newly += marker.mark_young(written)
            _spare(plan, marker, again, newly)
            _execute(repo, plan, now=now, grace_s=grace_s)

    report.objects = len(plan.objects)
    report.bytes = sum(plan.objects.values())
    report.epochs = len(plan.epochs)
    report.uids = len(plan.uids)
    report.docs = sum(plan.uids.values())
    report.open_epochs = len(plan.open_epochs)
    report.temporaries = len(plan.temporaries)
    report.temporary_bytes = sum(plan.temporaries.values())
    logger.info(
        "gc%s: %d objects (%d bytes), %d epochs, %d documents, %d temporary files",
        " (dry run)" if dry_run else "",
        report.objects,
        report.bytes,
        report.epochs,
        report.docs,
        report.temporaries,
    )
    return report


def _plan(
    repo: Repo,
    marker: _Marker,
    roots: _Roots,
    *,
    now: float,
    grace_s: float,
    report: GcReport,
) -> _Plan:
    plan = _Plan()
    cutoff = now - grace_s
    store = repo.objects

    # objects: unreachable and old; young ones keep what they need
    young: list[ObjectId] = []
    if isinstance(store, ObjectStats):
        for oid in store.iter_ids():
            plan.seen.add(oid)
            if oid in marker.marked:
                continue
            try:
                size, mtime = store.stat_object(oid)
            except ObjectNotFoundError:
                continue
            if mtime <= cutoff:
                plan.objects[oid] = size
            else:
                young.append(oid)
    else:
        logger.warning("gc: %s cannot tell object ages; no object removed", store)
    reachable = set(marker.marked)
    for oid in marker.mark_young(young):
        plan.objects.pop(oid, None)
    report.kept_young = len(marker.marked) - len(reachable)

    # epoch index rows: of epochs removed now, or long gone
    kept_uids = set(marker.uids) | roots.live_uids
    entries = [e for e in repo.index.iter_entries() if e.id not in marker.marked]
    stored = store.has_many(e.id for e in entries)
    for entry in entries:
        gone = entry.id not in stored and entry.time_ns <= cutoff * 1e9
        if entry.id in plan.objects or gone:
            plan.epochs.append(entry.id)
        else:
            kept_uids.add(entry.uid)

    # documents: of uids no kept epoch and no live writer carries, once old
    candidates = [uid for uid in repo.metrics_index.iter_uids() if uid not in kept_uids]
    newest: dict[str, int] = {}
    counts: dict[str, int] = {}
    for doc in repo.metrics_index.query(candidates):
        newest[doc.uid] = max(newest.get(doc.uid, 0), doc.time_ns)
        counts[doc.uid] = counts.get(doc.uid, 0) + 1
    for uid, when in newest.items():
        if when <= cutoff * 1e9:
            plan.uids[uid] = counts[uid]

    plan.open_epochs = [o for o in roots.dead_open if o.started_ns <= cutoff * 1e9]

    stale = getattr(store, "stale_temporaries", None)
    if callable(stale):
        for path in stale(older_than_s=grace_s):
            try:
                plan.temporaries[path] = path.stat().st_size
            except FileNotFoundError:
                continue
    return plan


def _refuse_unindexed_lines(repo: Repo, plan: _Plan) -> None:
    """Stop before removing epochs that look lost from the index, not abandoned.

    A commit indexes its epoch before moving its ref, so one that stopped
    halfway leaves at most a single unindexed epoch whose parent is indexed:
    no commit builds on it. Unindexed epochs one of which is another's parent
    mean the index lost them (deleted, replaced by an older copy, or rolled
    back with its write-ahead log) or a push, pull or clone stopped halfway;
    removing them would lose that history for good.

    Raises:
        RepositoryFormatError: Naming such epochs; nothing is removed.
    """
    kinds = repo.objects
    if not isinstance(kinds, FrameKinds):
        return  # a store that cannot tell kinds cheaply (servers): not checked
    candidates = []
    for oid in plan.objects:
        try:
            if kinds.object_kind(oid) == "epoch":
                candidates.append(oid)
        except ObjectNotFoundError:
            continue
    indexed = repo.index.get_many(candidates)
    # rows an earlier gc removed before it stopped are no loss
    removed_by_gc = getattr(repo.index, "unindexed", None)
    known: set[ObjectId] = (
        set(removed_by_gc(candidates)) if callable(removed_by_gc) else set()
    )
    unindexed: dict[ObjectId, Epoch] = {}
    for oid in candidates:
        if oid in indexed or oid in known:
            continue
        try:
            obj = repo.get(oid)
        except MvcError:
            continue  # damaged: fsck reports it
        if isinstance(obj, Epoch):
            unindexed[oid] = obj
    lines = sorted(
        oid.hex
        for oid, epoch in unindexed.items()
        if any(parent in unindexed for parent in epoch.parents)
    )
    if lines:
        shown = ", ".join(hex_id[:12] for hex_id in lines[:5])
        raise RepositoryFormatError(
            f"gc stopped, nothing removed: {len(lines)} stored epoch(s) ({shown})"
            " continue epochs that the epoch index does not know either, which no"
            " interrupted commit leaves: the index looks lost, replaced by an"
            " older copy, or rolled back",
            path=str(repo.path / "index.sqlite"),
            hint="restore index.sqlite (with its -wal file) from a backup; after"
            " an interrupted push, pull or clone, run it again to completion",
        )


def _spare(plan: _Plan, marker: _Marker, roots: _Roots, newly: list[ObjectId]) -> None:
    """Take out of ``plan`` what became reachable since it was made."""
    for oid in newly:
        plan.objects.pop(oid, None)
    fresh = set(newly)
    plan.epochs = [oid for oid in plan.epochs if oid not in fresh]
    for uid in marker.uids | roots.live_uids:
        plan.uids.pop(uid, None)
    still_dead = {o.uid for o in roots.dead_open}
    plan.open_epochs = [o for o in plan.open_epochs if o.uid in still_dead]


def _execute(repo: Repo, plan: _Plan, *, now: float, grace_s: float) -> None:
    # index rows first: an epoch no longer indexed is no longer resolvable,
    # so a crash part way leaves garbage and never a listed epoch half removed
    if plan.epochs:
        repo.index.delete(plan.epochs)
    if plan.uids:
        repo.metrics_index.delete_uids(list(plan.uids))
    store = repo.objects
    cutoff = now - grace_s
    for oid in list(plan.objects):
        # an object rewritten since the plan is young again, and stays
        if isinstance(store, ObjectStats):
            try:
                _, mtime = store.stat_object(oid)
            except ObjectNotFoundError:
                mtime = math.inf  # gone already: not this gc's to count
            if mtime > cutoff:
                del plan.objects[oid]
    # a commit that saw the old token checks its objects before its ref moves
    if plan.objects:
        repo.note_deletion()
    # a store that packs objects removes them a pack at a time
    delete_many = getattr(store, "delete_many", None)
    if callable(delete_many):
        delete_many(list(plan.objects))
    else:
        for oid in plan.objects:
            store.delete(oid)
    forget = getattr(repo.index, "forget_unindexed", None)
    if callable(forget) and plan.epochs:
        # the memory of a removed row goes with the epoch's object
        still = store.has_many(plan.epochs)
        forget([oid for oid in plan.epochs if oid not in still])
    for open_epoch in plan.open_epochs:
        repo.refs.clear_open_epoch(open_epoch.session, open_epoch.uid)
    for path in plan.temporaries:
        path.unlink(missing_ok=True)
        logger.warning("gc: removed stale temporary file %s", path)


# -- retention ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetainPolicy:
    """Which epochs of a session's first-parent line keep their weights.

    Attributes:
        keep_last: The newest N epochs of the line.
        keep_best: The best N epochs by ``metric`` (ties at the N-th value
            are all kept).
        metric: The metric ranking epochs; an epoch's value is its last
            document of that metric. The best epoch is always kept when set.
        mode: ``max`` or ``min``: which values are best.
        keep_every: Epochs whose number is a multiple of K.
        keep_tagged: Epochs a tag points at.
    """

    keep_last: int | None = None
    keep_best: int | None = None
    metric: str | None = None
    mode: str | None = None
    keep_every: int | None = None
    keep_tagged: bool = False

    def check(self) -> None:
        """Refuse a policy that keeps nothing on purpose, or is malformed.

        Raises:
            InvalidInputError: Saying what is wrong.
        """
        for name, value in (
            ("--keep-last", self.keep_last),
            ("--keep-best", self.keep_best),
            ("--keep-every", self.keep_every),
        ):
            low = 0 if name == "--keep-last" else 1
            if value is not None and (isinstance(value, bool) or value < low):
                raise InvalidInputError(f"{name} must be at least {low}, got {value}")
        if (self.keep_best is not None) != (self.metric is not None):
            raise InvalidInputError(
                "--keep-best and --metric go together",
                hint="rank by a metric: '--keep-best 1 --metric acc --mode max'",
            )
        if self.metric is not None and self.mode not in ("max", "min"):
            got = "none was given" if self.mode is None else f"got {self.mode!r}"
            raise InvalidInputError(
                f"--keep-best needs --mode max or --mode min; {got}",
                hint="say which values are best: '--mode max' for accuracy,"
                " '--mode min' for a loss",
            )
        if (
            self.keep_last is None
            and self.keep_best is None
            and not self.keep_every
            and not self.keep_tagged
        ):
            raise InvalidInputError(
                "a retention policy needs at least one of --keep-last, --keep-best,"
                " --keep-every and --keep-tagged",
                hint="say what to keep, such as 'mvc retain SESSION --keep-last 3'",
            )

    def describe(self) -> str:
        """Return the policy as the ``mvc retain`` options that state it."""
        parts = []
        if self.keep_last is not None:
            parts.append(f"--keep-last {self.keep_last}")
        if self.keep_best is not None:
            parts.append(
                f"--keep-best {self.keep_best} --metric {self.metric}"
                f" --mode {self.mode}"
            )
        if self.keep_every is not None:
            parts.append(f"--keep-every {self.keep_every}")
        if self.keep_tagged:
            parts.append("--keep-tagged")
        return " ".join(parts)


@dataclass(slots=True)
class RetainReport:
    """What ``retain`` kept and dropped.

    Attributes:
        sessions: The sessions retained.
        policy: The policy, as options.
        dry_run: Whether nothing was recorded.
        kept: Epoch id to why it keeps its weights, newest first.
        dropped: Epochs whose weights this call dropped, newest first.
        already_dropped: Epochs on the lines dropped by an earlier policy.
        entries: Index entries of every epoch on the lines.
    """

    sessions: list[str]
    policy: str
    dry_run: bool
    kept: dict[ObjectId, list[str]] = field(default_factory=dict)
    dropped: list[ObjectId] = field(default_factory=list)
    already_dropped: list[ObjectId] = field(default_factory=list)
    entries: dict[ObjectId, EpochEntry] = field(default_factory=dict)


def retain(
    repo: Repo,
    sessions: str | Sequence[str],
    policy: RetainPolicy,
    *,
    dry_run: bool = False,
) -> RetainReport:
    """Drop the weights of the epochs ``policy`` does not keep.

    The epochs considered are those of each session's first-parent line. Some
    always keep their weights: each session's head (training resumes from
    it), the base of a live open epoch, the best epoch by the policy's metric,
    every epoch reachable from a session not being retained (a fork still needs
    it), and every fork point (an epoch with a child off the retained lines).
    An epoch shared by several retained sessions keeps its weights if any of
    their policies keeps it. Epoch records, graphs and metric documents always
    stay; the drop is recorded with its time and policy, and ``collect`` then
    removes the weights. A drop is final: an epoch dropped earlier stays
    dropped whatever this policy says.

    Args:
        repo: The repository.
        sessions: The session name(s).
        policy: What to keep.
        dry_run: Report without recording anything.

    Returns:
        What was kept, and why, and what was dropped.

    Raises:
        InvalidInputError: If the policy is malformed, names a metric no epoch
            of a line has, or the index cannot record drops.
        RevisionNotFoundError: If a session does not exist or has no epoch.
    """
    names = [sessions] if isinstance(sessions, str) else list(dict.fromkeys(sessions))
    policy.check()
    if not names:
        raise InvalidInputError("name at least one session to retain")
    if not isinstance(repo.index, DropLog) and not dry_run:
        raise InvalidInputError(
            f"the epoch index of {repo.path} cannot record dropped weights",
            hint="run 'mvc retain' on a repository whose refs are local",
        )
    report = RetainReport(sessions=names, policy=policy.describe(), dry_run=dry_run)

    # each session's line, newest first
    lines: dict[str, list[EpochEntry]] = {}
    for name in names:
        head = repo.refs.get(session_ref(name))
        if head is None:
            raise RevisionNotFoundError(name, reason="no session by that name")
        lines[name] = list(lineage.first_parent_line(repo.index, head))
    on_lines = {entry.id: entry for line in lines.values() for entry in line}
    report.entries = dict(on_lines)

    # protected whatever the policy says
    kept: dict[ObjectId, list[str]] = {}

    def keep(oid: ObjectId, why: str) -> None:
        if oid in on_lines and why not in kept.setdefault(oid, []):
            kept[oid].append(why)

    retained_refs = {session_ref(name) for name in names}
    others = [
        oid
        for ref, oid in repo.refs.iter_refs(SESSION_PREFIX)
        if ref not in retained_refs
    ]
    for oid in repo.index.ancestors(others) if others else set():
        keep(oid, "shared with another session")
    for child in repo.index.iter_entries():
        if child.id in on_lines:
            continue
        for parent in child.parents:
            keep(parent, "fork point")
    for open_epoch in repo.refs.iter_open_epochs():
        if open_epoch.base is not None and _owner_alive(open_epoch.owner):
            keep(open_epoch.base, "base of an open epoch")
    tagged = {oid for _, oid in repo.refs.iter_refs(TAG_PREFIX)}

    # each session's own policy
    for name, line in lines.items():
        keep(line[0].id, "head")
        if policy.keep_last:
            for entry in line[: policy.keep_last]:
                keep(entry.id, f"last {policy.keep_last}")
        if policy.keep_every:
            for entry in line:
                if entry.number % policy.keep_every == 0:
                    keep(entry.id, f"every {policy.keep_every}")
        if policy.keep_tagged:
            for entry in line:
                if entry.id in tagged:
                    keep(entry.id, "tagged")
        if policy.metric is not None:
            for oid in _best(repo, name, line, policy):
                keep(oid, f"best {policy.keep_best} by {policy.metric}")

    # a drop is final: the weights may be gone already
    already = repo.dropped_epochs(on_lines)
    for oid in on_lines:
        if oid in already:
            report.already_dropped.append(oid)
            kept.pop(oid, None)
        elif oid not in kept:
            report.dropped.append(oid)
    report.kept = kept
    order = {oid: (-e.number, -e.time_ns) for oid, e in on_lines.items()}
    report.dropped.sort(key=order.__getitem__)
    report.already_dropped.sort(key=order.__getitem__)

    if not dry_run and report.dropped and isinstance(repo.index, DropLog):
        repo.index.add_dropped(
            report.dropped, time_ns=time.time_ns(), policy=report.policy
        )
    logger.info(
        "retain %s: %d epochs keep their weights, %d dropped%s",
        ", ".join(names),
        len(kept),
        len(report.dropped),
        " (dry run)" if dry_run else "",
    )
    return report


def _best(
    repo: Repo, session: str, line: list[EpochEntry], policy: RetainPolicy
) -> list[ObjectId]:
    """Return the epochs of ``line`` with the best values of the metric."""
    metric = policy.metric or ""
    by_uid = {entry.uid: entry for entry in line}
    last: dict[str, tuple[int, float]] = {}
    for doc in repo.metrics_index.query(list(by_uid), names=[metric]):
        if math.isnan(doc.value):
            continue
        if doc.uid not in last or doc.step >= last[doc.uid][0]:
            last[doc.uid] = (doc.step, doc.value)
    if not last:
        raise InvalidInputError(
            f"no epoch of session {session!r} has a value of metric {metric!r}",
            hint=f"run 'mvc metrics {session} --summary' to see its metrics",
        )
    sign = 1.0 if policy.mode == "max" else -1.0
    ranked = sorted({sign * value for _, value in last.values()}, reverse=True)
    threshold = ranked[min(len(ranked), policy.keep_best or 1) - 1]
    return [
        by_uid[uid].id for uid, (_, value) in last.items() if sign * value >= threshold
    ]
