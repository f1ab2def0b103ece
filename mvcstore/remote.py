"""Remotes: other repositories that sessions are pushed to and pulled from.

A remote is a name, kept in the ``remotes`` section of this repository's
``config.json``, for another repository: the folder of one (``path``), or the
backend URIs of its three parts (``objects``, ``refs``, ``metrics``), checked
like a repository's own so that no credential is ever stored.

``transfer`` copies what some head epochs need from one open repository to
another: the epochs the destination lacks, their states, tensors, blobs,
graphs and extra states, and the objects their blobs' frames name (delta
bases, chunks). It asks the destination which objects it holds in batches, so
only missing ones move; it unframes every frame it reads against its id
before writing it; it writes an object only after every object it names, then
the metric documents of the epochs sent, then their epoch index entries.
``push``, ``pull`` and ``clone`` move refs after that, by compare-and-set,
and keep the tracking refs ``remotes/NAME/SESSION``. Nothing here deletes an
object, a metric document or an epoch, and nothing here prints.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mvcstore.codec import (
    ObjectId,
    chain_readable_in,
    frame,
    frame_dependencies,
    unframe,
)
from mvcstore.errors import (
    CorruptObjectError,
    InvalidInputError,
    InvalidNameError,
    NonFastForwardError,
    ObjectNotFoundError,
    RepositoryFormatError,
    RevisionNotFoundError,
)
from mvcstore.metrics.base import MetricDoc
from mvcstore.metrics.registry import open_metrics_index
from mvcstore.objects import Epoch, State, StoredObject, Tensor, decode_object
from mvcstore.refs import (
    REMOTE_PREFIX,
    SESSION_PREFIX,
    TAG_PREFIX,
    check_name,
    session_ref,
    tag_ref,
)
from mvcstore.repo import CONFIG_FILE, REPO_DIR, Repo
from mvcstore.stores.base import BatchingObjectStore, ObjectBatch, ObjectStore
from mvcstore.stores.liveness import DropLog
from mvcstore.stores.registry import (
    LOCAL,
    PARTS,
    check_uri,
    open_stores,
    redact_uri,
)

__all__ = [
    "REMOTES_KEY",
    "CREATED",
    "FAST_FORWARD",
    "FORCED",
    "UP_TO_DATE",
    "AHEAD",
    "DIVERGED",
    "RemoteSpec",
    "RefUpdate",
    "SyncReport",
    "TransferProgress",
    "TransferReport",
    "check_remote_name",
    "remote_spec",
    "list_remotes",
    "get_remote",
    "add_remote",
    "remove_remote",
    "open_remote",
    "tracking_ref",
    "transfer",
    "push",
    "pull",
    "clone",
]

logger = logging.getLogger(__name__)

REMOTES_KEY: Final = "remotes"
"""The section of ``config.json`` that names remotes."""

CREATED: Final = "created"
FAST_FORWARD: Final = "fast-forward"
FORCED: Final = "forced"
UP_TO_DATE: Final = "up-to-date"
AHEAD: Final = "ahead"
DIVERGED: Final = "diverged"

DEFAULT_BATCH_BYTES: Final = 256 << 20
"""Bytes written into one batch (one pack) before it is committed."""

_DOC_BATCH: Final = 5000
_BLOB_ROUND: Final = 64
_WORKERS: Final = 8

_SCHEME_PARTS: Final[dict[str, str]] = {
    "gs": "objects",
    "mongodb": "refs",
    "mongodb+srv": "refs",
    "es+http": "metrics",
    "es+https": "metrics",
    "os+http": "metrics",
    "os+https": "metrics",
}
"""The part a bare URI serves, by scheme (objects in MongoDB need --objects)."""


# -- remotes in the config ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    """Where a remote repository is.

    Attributes:
        name: The remote's name.
        path: The ``.mvc`` folder of a repository, or None.
        uris: Part (``objects``, ``refs``, ``metrics``) to backend URI, when
            the remote is a set of backends; empty for a folder.
    """

    name: str
    path: Path | None = None
    uris: Mapping[str, str] = field(default_factory=dict)

    @property
    def location(self) -> str:
        """The folder, or the backend URIs, as one line for messages."""
        if self.path is not None:
            return str(self.path)
        return " ".join(f"{part}={self.uris[part]}" for part in PARTS)

    def to_config(self) -> dict[str, str]:
        """Return the entry of this remote in the ``remotes`` section."""
        if self.path is not None:
            return {"path": str(self.path)}
        return {part: self.uris[part] for part in PARTS}


def check_remote_name(name: str) -> str:
    """Return ``name`` if it is a valid remote name.

    A remote name follows the session name rules and holds no ``/``: the
    tracking ref ``remotes/NAME/SESSION`` must say where NAME ends.

    Raises:
        InvalidNameError: If a rule is broken.
    """
    check_name(name, what="remote")
    if "/" in name:
        error = InvalidNameError(name, "a remote name cannot contain '/'")
        error.hint = "use letters, digits, '.', '_' and '-'"
        raise error
    return name


def remote_spec(
    name: str,
    locations: Sequence[str] = (),
    *,
    objects: str | None = None,
    refs: str | None = None,
    metrics: str | None = None,
) -> RemoteSpec:
    """Build and check a remote from what a user gave.

    A remote is either one path (a repository's folder or its ``.mvc``), or
    three backend URIs. A bare URI in ``locations`` serves the part its scheme
    serves: ``gs://`` objects, ``mongodb://`` refs, ``es+``/``os+`` metrics.

    Args:
        name: The remote's name.
        locations: A path, or URIs.
        objects: The objects URI.
        refs: The refs URI.
        metrics: The metrics URI.

    Returns:
        The remote.

    Raises:
        InvalidNameError: If the name breaks the rules.
        InvalidInputError: If the locations are missing, mixed, malformed, hold
            credentials, or no repository is at the path.
    """
    check_remote_name(name)
    given = {
        part: uri
        for part, uri in (("objects", objects), ("refs", refs), ("metrics", metrics))
        if uri is not None
    }
    paths: list[str] = []
    for location in locations:
        if "://" not in location:
            paths.append(location)
            continue
        part = _part_of(location)
        if part in given:
            raise InvalidInputError(
                f"remote {name!r} was given two {part} URIs",
                hint="give one URI for each of objects, refs and metrics",
            )
        given[part] = location
    if paths and given:
        raise InvalidInputError(
            f"remote {name!r} was given both a path and backend URIs",
            hint="give the folder of a repository, or --objects, --refs and"
            " --metrics URIs",
        )
    if len(paths) > 1:
        raise InvalidInputError(
            f"remote {name!r} was given {len(paths)} paths",
            hint="give the folder of one repository",
        )
    if paths:
        return RemoteSpec(name=name, path=find_repository_folder(Path(paths[0])))
    if not given:
        raise InvalidInputError(
            f"remote {name!r} has no location",
            hint="give the folder of a repository, or --objects, --refs and"
            " --metrics URIs",
        )
    uris = {part: check_uri(part, uri) for part, uri in given.items()}
    if LOCAL in uris.values():
        raise InvalidInputError(
            f"remote {name!r} names 'local' for a part; a remote's parts live on"
            " servers",
            hint="give the folder of a repository, or a URI for each part",
        )
    missing = [part for part in PARTS if part not in uris]
    if missing:
        raise InvalidInputError(
            f"remote {name!r} has no {' or '.join(missing)} URI",
            hint="a remote of backends needs --objects, --refs and --metrics URIs",
        )
    return RemoteSpec(name=name, uris=uris)


def _part_of(uri: str) -> str:
    scheme = uri.split("://", 1)[0].lower()
    part = _SCHEME_PARTS.get(scheme)
    if part is None:
        raise InvalidInputError(
            f"URI {redact_uri(uri)!r} names no backend a remote can use",
            hint="use gs:// for objects, mongodb:// for refs, es+http:// or"
            " os+http:// for metrics, or a repository's folder",
        )
    return part


def find_repository_folder(path: Path) -> Path:
    """Return the ``.mvc`` folder of the repository at ``path`` exactly.

    No parent folder is searched: ``path`` is the ``.mvc`` folder or the
    folder holding it. The result is absolute.

    Raises:
        InvalidInputError: If no repository is there.
    """
    candidates = [path] if path.name == REPO_DIR else []
    candidates.append(path / REPO_DIR)
    for candidate in candidates:
        if (candidate / CONFIG_FILE).is_file():
            return candidate.resolve()
    raise InvalidInputError(
        f"no mvcstore repository at {path}",
        hint="give the folder of a repository made by 'mvc init', or its .mvc folder",
    )


def _read_config(repo: Repo) -> dict[str, object]:
    path = repo.path / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RepositoryFormatError(
            f"repository config {path} is unreadable ({exc})", path=str(path)
        ) from exc
    if not isinstance(config, dict):
        raise RepositoryFormatError(f"{path} is not a JSON object", path=str(path))
    return config


def _write_config(repo: Repo, config: Mapping[str, object]) -> None:
    path = repo.path / CONFIG_FILE
    tmp = repo.path / f"{CONFIG_FILE}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        # the whole config or the old one: rename is atomic
        os.replace(tmp, path)
        folder = os.open(repo.path, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        raise RepositoryFormatError(
            f"cannot write {path}: {exc.strerror or exc}",
            path=str(path),
            hint="check the permissions of the repository folder",
        ) from exc


def _remotes_section(repo: Repo, config: Mapping[str, object]) -> dict[str, object]:
    section = config.get(REMOTES_KEY, {})
    if not isinstance(section, dict):
        raise RepositoryFormatError(
            f"the remotes section of {repo.path / CONFIG_FILE} is not a JSON object",
            path=str(repo.path / CONFIG_FILE),
            hint="fix or remove the 'remotes' section of config.json",
        )
    return dict(section)


def _spec_from_config(repo: Repo, name: str, value: object) -> RemoteSpec:
    where = str(repo.path / CONFIG_FILE)
    try:
        check_remote_name(name)
        if not isinstance(value, dict) or not all(
            isinstance(item, str) for item in value.values()
        ):
            raise InvalidInputError("its entry is not a JSON object of strings")
        if set(value) == {"path"}:
            return RemoteSpec(name=name, path=Path(value["path"]))
        if set(value) != set(PARTS):
            raise InvalidInputError(
                "its entry needs 'path', or 'objects', 'refs' and 'metrics'"
            )
        return RemoteSpec(
            name=name, uris={part: check_uri(part, value[part]) for part in PARTS}
        )
    except InvalidInputError as exc:
        raise RepositoryFormatError(
            f"remote {name!r} in {where} is not usable: {exc.message}",
            path=where,
            hint=f"remove it with 'mvc remote remove {name}' and add it again",
        ) from exc


def list_remotes(repo: Repo) -> list[RemoteSpec]:
    """Return the remotes of ``repo``, by name.

    Raises:
        RepositoryFormatError: If the config or a remote's entry is malformed.
    """
    section = _remotes_section(repo, _read_config(repo))
    return [
        _spec_from_config(repo, name, value) for name, value in sorted(section.items())
    ]


def get_remote(repo: Repo, name: str) -> RemoteSpec:
    """Return the remote called ``name``.

    Raises:
        InvalidNameError: If ``name`` is not a valid remote name.
        InvalidInputError: If ``repo`` has no such remote.
    """
    check_remote_name(name)
    section = _remotes_section(repo, _read_config(repo))
    if name not in section:
        raise InvalidInputError(
            f"no remote named {name!r}",
            hint="run 'mvc remote -v' to list the remotes, or add one with 'mvc"
            " remote add NAME LOCATION'",
        )
    return _spec_from_config(repo, name, section[name])


def add_remote(repo: Repo, spec: RemoteSpec) -> None:
    """Record ``spec`` in the repository's config.

    Raises:
        InvalidInputError: If a remote of that name exists, or ``spec`` names
            the repository itself.
        RepositoryFormatError: If the config cannot be read or written.
    """
    check_remote_name(spec.name)
    if spec.path is not None and spec.path.resolve() == repo.path.resolve():
        raise InvalidInputError(
            f"{spec.path} is this repository; a remote is another one",
            hint="give the folder of another repository",
        )
    config = _read_config(repo)
    section = _remotes_section(repo, config)
    if spec.name in section:
        raise InvalidInputError(
            f"remote {spec.name!r} already exists",
            hint=f"remove it first with 'mvc remote remove {spec.name}', or"
            " choose another name",
        )
    section[spec.name] = spec.to_config()
    _write_config(repo, {**config, REMOTES_KEY: section})
    logger.info("added remote %s at %s", spec.name, spec.location)


def remove_remote(repo: Repo, name: str) -> RemoteSpec:
    """Forget a remote and delete its tracking refs; nothing else changes.

    Returns:
        The remote removed.

    Raises:
        InvalidInputError: If there is no such remote.
        RefConflictError: If a tracking ref moved meanwhile.
    """
    spec = get_remote(repo, name)

    # the refs first: a failure leaves the remote, so removing it again works
    for ref, target in list(repo.refs.iter_refs(f"{REMOTE_PREFIX}{name}/")):
        repo.refs.compare_and_set(
            ref, old=target, new=None, message=f"remote {name} removed"
        )
    config = _read_config(repo)
    section = _remotes_section(repo, config)
    section.pop(name, None)
    _write_config(repo, {**config, REMOTES_KEY: section})
    logger.info("removed remote %s", name)
    return spec


class _TemporaryFolder:
    """A folder removed when the repository using it closes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def open_remote(spec: RemoteSpec, *, durable: bool = True) -> Repo:
    """Open the repository a remote names.

    A folder is opened like any repository. A set of backends is opened with
    a private temporary folder as its ``path``, removed on close: all three
    parts live on servers, so the folder holds only the gc lock of this
    process.

    Raises:
        InvalidInputError: If the folder no longer holds a repository.
        RepositoryFormatError: If its format cannot be read.
        BackendUnavailableError: If a backend cannot be reached.
    """
    if spec.path is not None:
        if not (spec.path / CONFIG_FILE).is_file():
            raise InvalidInputError(
                f"remote {spec.name!r} names {spec.path}, which holds no repository",
                hint=f"run 'mvc remote remove {spec.name}', then add it again with"
                " the repository's folder",
            )
        return Repo.open(spec.path, durable=durable)
    folder = _TemporaryFolder(Path(tempfile.mkdtemp(prefix="mvc-remote-")))
    closers: list[object] = []
    try:
        stores = open_stores(
            spec.uris, root=folder.path, durable=durable, session_prefix=SESSION_PREFIX
        )
        closers.extend(stores.closers)
        metrics, metric_closers = open_metrics_index(
            spec.uris["metrics"], root=folder.path, durable=durable
        )
        closers.extend(metric_closers)
    except BaseException:
        for closer in closers:
            close = getattr(closer, "close", None)
            if callable(close):
                close()
        folder.close()
        raise
    return Repo(
        folder.path,
        objects=stores.objects,
        refs=stores.refs,
        index=stores.index,
        metrics=metrics,
        closers=[*closers, folder],
    )


def tracking_ref(remote: str, session: str) -> str:
    """Return the tracking ref of ``session`` of ``remote``: remotes/NAME/SESSION.

    Raises:
        InvalidNameError: If either name breaks the rules.
    """
    return f"{REMOTE_PREFIX}{check_remote_name(remote)}/{check_name(session)}"


# -- copying objects ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """How far a transfer is.

    Attributes:
        objects: Objects handled so far.
        total: Objects known to need sending so far; it grows while blob
            frames reveal delta bases and chunks.
        bytes: Frame bytes written so far.
    """

    objects: int
    total: int
    bytes: int


ProgressCallback = Callable[[TransferProgress], None]
"""Called from any thread, serialised, after each object is handled."""


@dataclass(slots=True)
class TransferReport:
    """What a transfer sent.

    Attributes:
        epochs: The epochs the destination lacked, parents first.
        objects: Objects written on the destination (epochs included).
        bytes: Frame bytes written on the destination.
        docs: Metric documents new on the destination.
    """

    epochs: list[ObjectId] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    docs: int = 0


class _Progress:
    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self.objects = 0
        self.total = 0
        self.bytes = 0

    def grow(self, count: int) -> None:
        with self._lock:
            self.total += count

    def advance(self, written: int) -> None:
        with self._lock:
            self.objects += 1
            self.bytes += written
            if self._callback is not None:
                self._callback(TransferProgress(self.objects, self.total, self.bytes))


class _Writer:
    """Writes frames into the destination: in batches where the store has them."""

    def __init__(
        self, store: ObjectStore, progress: _Progress, *, batch_bytes: int
    ) -> None:
        self._store = store
        self._progress = progress
        self._batch_bytes = batch_bytes
        self._lock = threading.Lock()
        self._batching = store if isinstance(store, BatchingObjectStore) else None
        self._batch: ObjectBatch | None = (
            self._batching.open_batch() if self._batching is not None else None
        )
        self._pending = 0
        self.objects = 0
        self.bytes = 0

    def put(self, oid: ObjectId, framed: bytes) -> None:
        if self._batch is not None:
            wrote = self._batch.put(oid, [framed])
        else:
            # create-only, and checked missing already: no second has-check
            wrote = self._store.put_if_absent(oid, framed)
        size = len(framed) if wrote else 0
        with self._lock:
            self.objects += int(wrote)
            self.bytes += size
            self._pending += size
        self._progress.advance(size)

    def checkpoint(self) -> None:
        """Commit the batch once it holds ``batch_bytes``: a long copy keeps it."""
        if self._batch is None or self._batching is None:
            return
        if self._pending >= self._batch_bytes:
            self._batch.commit()
            self._batch = self._batching.open_batch()
            self._pending = 0

    def commit(self) -> None:
        if self._batch is not None:
            self._batch.commit()
            self._batch = None
        self._store.flush()

    def abort(self) -> None:
        if self._batch is not None:
            self._batch.abort()
            self._batch = None


def _read_object(
    store: ObjectStore, oid: ObjectId, kind: str
) -> tuple[bytes, StoredObject]:
    framed = store.get_framed(oid)
    location = store.describe(oid)
    decoded = unframe(framed, object_id=oid, location=location, source=store)
    if decoded.kind != kind:
        raise CorruptObjectError(
            oid.hex, f"expected a {kind}, found a {decoded.kind}", location=location
        )
    try:
        return framed, decode_object(decoded.kind, decoded.payload, oid=oid)
    except CorruptObjectError as exc:
        raise CorruptObjectError(oid.hex, exc.reason, location=location) from exc


class _BlobCopier:
    """Copies blobs with the objects their frames need, those first.

    Safe from several threads: two threads may copy one shared base at once,
    which writes it once (writes are create-only) and is correct either way.
    """

    def __init__(
        self,
        source: ObjectStore,
        target: ObjectStore,
        writer: _Writer,
        progress: _Progress,
        *,
        target_format: int,
    ) -> None:
        self._source = source
        self._target = target
        self._writer = writer
        self._progress = progress
        # what the destination's format cannot read is stored whole there
        self._format = target_format
        self._lock = threading.Lock()
        self._done: set[ObjectId] = set()

    def _is_done(self, oid: ObjectId) -> bool:
        with self._lock:
            return oid in self._done

    def _mark(self, oids: set[ObjectId] | list[ObjectId]) -> None:
        with self._lock:
            self._done.update(oids)

    def copy(self, root: ObjectId) -> None:
        if self._is_done(root):
            self._progress.advance(0)
            return
        stack = [self._load(root)]
        while stack:
            oid, framed, deps = stack[-1]
            waiting = [dep for dep in deps if not self._is_done(dep)]
            if waiting:
                if any(waiting[0] == item[0] for item in stack):
                    raise CorruptObjectError(
                        oid.hex,
                        "its frame needs itself, through delta bases or chunks",
                        location=self._source.describe(oid),
                    )
                stack.append(self._load(waiting[0]))
                continue
            # the frame's dependencies are written: now the frame itself
            stack.pop()
            self._writer.put(oid, framed)
            self._mark([oid])

    def _load(self, oid: ObjectId) -> tuple[ObjectId, bytes, list[ObjectId]]:
        framed = self._source.get_framed(oid)
        location = self._source.describe(oid)
        decoded = unframe(framed, object_id=oid, location=location, source=self._source)
        if decoded.kind != "blob":
            raise CorruptObjectError(
                oid.hex, f"expected a blob, found a {decoded.kind}", location=location
            )
        if not chain_readable_in(framed, self._format, self._source):
            # an older destination gets a frame it reads; ids do not change
            return oid, frame("blob", decoded.payload), []
        deps = [dep for dep in frame_dependencies(framed) if not self._is_done(dep)]
        if deps:
            present = self._target.has_many(deps)
            self._mark(present)
            self._progress.grow(len(deps) - len(present))
        return oid, framed, deps


def _parents_first(
    parents: Mapping[ObjectId, Sequence[ObjectId]], times: Mapping[ObjectId, int]
) -> list[ObjectId]:
    waiting: dict[ObjectId, int] = {}
    children: dict[ObjectId, list[ObjectId]] = {}
    for oid, links in parents.items():
        inside = [parent for parent in dict.fromkeys(links) if parent in parents]
        waiting[oid] = len(inside)
        for parent in inside:
            children.setdefault(parent, []).append(oid)
    ready = [(times[oid], oid.raw, oid) for oid, count in waiting.items() if not count]
    heapq.heapify(ready)
    out: list[ObjectId] = []
    while ready:
        *_, oid = heapq.heappop(ready)
        out.append(oid)
        for child in children.get(oid, []):
            waiting[child] -= 1
            if not waiting[child]:
                heapq.heappush(ready, (times[child], child.raw, child))
    if len(out) != len(parents):
        raise CorruptObjectError(None, "the epoch index holds a cycle of parents")
    return out


def transfer(
    src: Repo,
    dst: Repo,
    heads: Sequence[ObjectId],
    *,
    progress: ProgressCallback | None = None,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> TransferReport:
    """Copy the epochs reachable from ``heads`` that ``dst`` lacks, and their objects.

    Objects first (each after those it names), then the metric documents of
    the epochs sent, then their drop records (``mvc retain``) and epoch index
    entries. No ref moves: the caller moves refs after this returns. An epoch
    counts as held by ``dst`` when ``dst`` indexed it, since an epoch is
    indexed only after its objects and documents are stored; below an epoch,
    an object ``dst`` holds is taken with everything it names.

    Args:
        src: The repository to read.
        dst: The repository to write.
        heads: Epochs of ``src``.
        progress: Called as objects are handled.
        batch_bytes: Bytes written into one batch before it is committed.

    Returns:
        What was sent.

    Raises:
        ObjectNotFoundError: If ``src`` lacks an object an epoch needs.
        CorruptObjectError: If a frame read from ``src`` does not verify.
        MetricConflictError: If ``dst`` holds a metric document of a sent epoch
            with another value.
        BackendUnavailableError: If a backend fails.
    """
    report = TransferReport()
    heads = list(dict.fromkeys(heads))
    if not heads:
        return report
    refresh = getattr(dst.objects, "refresh", None)
    if callable(refresh):
        # packs other processes published since the store was opened
        refresh()

    # the epochs dst lacks, parents first
    reach = src.index.ancestors(heads)
    entries = src.index.get_many(reach)
    for oid in reach:
        if oid not in entries:
            raise ObjectNotFoundError(oid.hex, location="the source's epoch index")
    known = set(dst.index.get_many(reach))
    indexed_heads = [head for head in heads if head in known]
    known -= set(indexed_heads) - dst.objects.has_many(indexed_heads)
    todo = _parents_first(
        {oid: entries[oid].parents for oid in reach if oid not in known},
        {oid: entry.time_ns for oid, entry in entries.items()},
    )
    if not todo:
        return report
    dropped = src.dropped_epochs(todo)
    if dropped and not isinstance(dst.index, DropLog):
        raise InvalidInputError(
            "the destination cannot record epochs whose weights were dropped",
            hint="push only sessions whose epochs kept their weights",
        )

    counter = _Progress(progress)
    writer = _Writer(dst.objects, counter, batch_bytes=batch_bytes)
    try:
        epochs = _copy_objects(src, dst, todo, set(dropped), writer, counter)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    report.epochs = todo
    report.objects = writer.objects
    report.bytes = writer.bytes

    # the metric documents travel with their epochs, before the index knows them
    report.docs = _copy_docs(src, dst, [epochs[oid][1].uid for oid in todo])
    by_policy: dict[tuple[int, str], list[ObjectId]] = {}
    for record in dropped.values():
        by_policy.setdefault((record.time_ns, record.policy), []).append(record.id)
    for (time_ns, policy), ids in by_policy.items():
        if isinstance(dst.index, DropLog):
            dst.index.add_dropped(ids, time_ns=time_ns, policy=policy)
    for oid in todo:
        dst.index.add(oid, epochs[oid][1])
    logger.info(
        "transferred %d epochs: %d objects (%d bytes), %d metric documents",
        len(todo),
        report.objects,
        report.bytes,
        report.docs,
    )
    return report


def _copy_objects(
    src: Repo,
    dst: Repo,
    todo: Sequence[ObjectId],
    dropped: set[ObjectId],
    writer: _Writer,
    counter: _Progress,
) -> dict[ObjectId, tuple[bytes, Epoch]]:
    """Write the objects of the epochs ``todo`` that ``dst`` lacks, in order.

    Returns the verified frames and records of the epochs, by id.
    """
    pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="mvc-transfer")
    try:
        epochs, meta, blobs = _plan(src, dst, todo, dropped, pool)
        counter.grow(len(epochs) + len(meta) + len(blobs))

        # blobs first, each after the bases and chunks its frame names
        copier = _BlobCopier(
            src.objects,
            dst.objects,
            writer,
            counter,
            target_format=dst.format_version,
        )
        for start in range(0, len(blobs), _BLOB_ROUND):
            list(pool.map(copier.copy, blobs[start : start + _BLOB_ROUND]))
            writer.checkpoint()

        # then tensors, then states and graphs, then epochs, parents first
        tensors = [oid for oid, (_, obj) in meta.items() if isinstance(obj, Tensor)]
        others = [oid for oid, (_, obj) in meta.items() if not isinstance(obj, Tensor)]
        for group in (tensors, others):
            list(pool.map(lambda oid: writer.put(oid, meta[oid][0]), group))
        for oid in todo:
            writer.put(oid, epochs[oid][0])
    finally:
        # no worker may write once the caller commits or aborts the batch
        pool.shutdown(wait=True, cancel_futures=True)
    return epochs


def _plan(
    src: Repo,
    dst: Repo,
    todo: Sequence[ObjectId],
    dropped: set[ObjectId],
    pool: ThreadPoolExecutor,
) -> tuple[
    dict[ObjectId, tuple[bytes, Epoch]],
    dict[ObjectId, tuple[bytes, StoredObject]],
    list[ObjectId],
]:
    """Read the epochs and the objects below them that ``dst`` lacks.

    Returns the verified frames of the epochs and of the tensors, states and
    graphs to send, and the ids of the blobs to send. Blobs are read later,
    one at a time, since they hold the bulk of the bytes.
    """
    epochs: dict[ObjectId, tuple[bytes, Epoch]] = {}
    level: list[tuple[ObjectId, str]] = []
    for oid, (framed, obj) in zip(
        todo,
        pool.map(lambda oid: _read_object(src.objects, oid, "epoch"), todo),
        strict=True,
    ):
        if not isinstance(obj, Epoch):
            raise CorruptObjectError(oid.hex, f"expected an epoch, found a {obj.kind}")
        epochs[oid] = (framed, obj)
        if oid not in dropped:
            level.extend(
                (state, "state")
                for state in (obj.state, *obj.extra.values())
                if state is not None
            )
        if obj.graph is not None:
            level.append((obj.graph, "graph"))

    # one has-check per level of the object tree: epochs, states, tensors
    meta: dict[ObjectId, tuple[bytes, StoredObject]] = {}
    seen: set[ObjectId] = set()
    blob_ids: list[ObjectId] = []
    while level:
        fresh = {oid: kind for oid, kind in level if oid not in seen}
        seen.update(fresh)
        present = dst.objects.has_many(list(fresh))
        wanted = [(oid, kind) for oid, kind in fresh.items() if oid not in present]
        level = []
        for (oid, _), (framed, obj) in zip(
            wanted,
            pool.map(lambda item: _read_object(src.objects, *item), wanted),
            strict=True,
        ):
            meta[oid] = (framed, obj)
            if isinstance(obj, State):
                level.extend((tensor, "tensor") for tensor in obj.tensors.values())
            elif isinstance(obj, Tensor):
                blob_ids.append(obj.data)
    blob_ids = list(dict.fromkeys(blob_ids))
    present = dst.objects.has_many(blob_ids)
    return epochs, meta, [oid for oid in blob_ids if oid not in present]


def _copy_docs(src: Repo, dst: Repo, uids: Sequence[str]) -> int:
    if not uids:
        return 0
    added = 0
    chunk: list[MetricDoc] = []
    for doc in src.metrics_index.query(uids):
        chunk.append(doc)
        if len(chunk) >= _DOC_BATCH:
            added += dst.metrics_index.add(chunk)
            chunk = []
    if chunk:
        added += dst.metrics_index.add(chunk)
    dst.metrics_index.flush()
    return added


# -- moving refs ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefUpdate:
    """What a push or pull did with one session or tag.

    Attributes:
        name: The session or tag name (the same on both sides).
        kind: ``session`` or ``tag``.
        status: ``created``, ``fast-forward``, ``forced``, ``up-to-date``,
            ``ahead`` (the side written to is ahead: not moved) or
            ``diverged`` (both sides have epochs of their own: not moved).
        old: The epoch the written side's ref pointed at, or None.
        new: The epoch offered by the other side.
        tracking: The tracking ref written, if any (``remotes/NAME/SESSION``).
    """

    name: str
    kind: str
    status: str
    old: ObjectId | None
    new: ObjectId
    tracking: str | None = None

    @property
    def moved(self) -> bool:
        """Whether the ref now points at ``new`` because of this update."""
        return self.status in (CREATED, FAST_FORWARD, FORCED)


@dataclass(slots=True)
class SyncReport:
    """What a push, pull or clone did.

    Attributes:
        transfer: What was copied.
        updates: Each session and tag considered, by kind then name.
    """

    transfer: TransferReport = field(default_factory=TransferReport)
    updates: list[RefUpdate] = field(default_factory=list)


def _check_head(repo: Repo, head: ObjectId) -> None:
    # the last check before a ref reaches the epoch: everything it needs is
    # stored (a dropped epoch needs its record and graph only)
    try:
        epoch = repo.read_epoch(head)
        if head not in repo.dropped_epochs([head]):
            repo.check_stored(head, epoch)
        elif epoch.graph is not None and not repo.objects.has_many([epoch.graph]):
            raise ObjectNotFoundError(
                epoch.graph.hex, location=repo.objects.describe(epoch.graph)
            )
    except ObjectNotFoundError as exc:
        # gc may have removed what the copy took as stored: a rerun sends it
        exc.hint = "run the push or pull again: what is missing is sent anew"
        raise


def _move(repo: Repo, ref: str, old: ObjectId | None, new: ObjectId, why: str) -> None:
    if old != new:
        repo.refs.compare_and_set(ref, old=old, new=new, message=why)


def _descends(repo: Repo, head: ObjectId, ancestor: ObjectId) -> bool:
    return ancestor in repo.index.ancestors([head])


def push(
    local: Repo,
    remote: Repo,
    *,
    name: str,
    session: str | None = None,
    force: bool = False,
    tags: bool = False,
    progress: ProgressCallback | None = None,
) -> SyncReport:
    """Send a session (and with ``tags`` every tag) to a remote repository.

    The remote's session moves only forward: if its head is not an ancestor of
    the local head, the push is refused before anything is sent, unless
    ``force``. The tracking ref ``remotes/NAME/SESSION`` follows.

    Args:
        local: This repository.
        remote: The remote repository, open.
        name: The remote's name, for tracking refs and messages.
        session: The session to push; the current one when None.
        force: Move the remote's session (and tags) even if epochs only the
            remote has would be left unreferenced.
        tags: Push every tag too.
        progress: Called as objects are sent.

    Returns:
        What was sent and how each ref moved.

    Raises:
        InvalidInputError: If there is no current session, or a tag differs on
            the remote and ``force`` is False.
        RevisionNotFoundError: If the session has no epoch.
        NonFastForwardError: If the remote's session has epochs the local one
            lacks and ``force`` is False.
        RefConflictError: If another writer moved a remote ref meanwhile.
    """
    check_remote_name(name)
    if session is None:
        session = local.head_session()
        if session is None:
            raise InvalidInputError(
                "there is no current session to push",
                hint=f"name the session: 'mvc push {name} SESSION'",
            )
    ref = session_ref(session)
    head = local.refs.get(ref)
    if head is None:
        raise RevisionNotFoundError(
            session, reason="no session with an epoch by that name"
        )
    offered = [("session", session, ref, head)]
    if tags:
        offered.extend(("tag", tag, tag_ref(tag), oid) for tag, oid in local.tags())

    # decide every ref before sending anything: a refusal sends nothing
    report = SyncReport()
    for kind, short, full, ours in offered:
        theirs = remote.refs.get(full)
        if theirs == ours:
            status = UP_TO_DATE
        elif theirs is None:
            other = (TAG_PREFIX if kind == "session" else SESSION_PREFIX) + short
            if remote.refs.get(other) is not None:
                # one name for a session and a tag would be ambiguous there
                raise InvalidInputError(
                    f"remote {name!r} has a {'tag' if kind == 'session' else 'session'}"
                    f" named {short!r}; refusing to push a {kind} of that name",
                    hint=f"rename the {kind} here ('mvc branch' or 'mvc tag'), then"
                    " push again",
                )
            status = CREATED
        elif kind == "session" and _descends(local, ours, theirs):
            status = FAST_FORWARD
        elif force:
            status = FORCED
        elif kind == "session":
            raise NonFastForwardError(
                remote=name, session=short, theirs=theirs.short(), ours=ours.short()
            )
        else:
            raise InvalidInputError(
                f"tag {short!r} points at epoch {theirs.short()} on remote {name!r},"
                f" not at {ours.short()}",
                hint="move the local tag back, or --force to move the remote's tag",
            )
        tracking = tracking_ref(name, short) if kind == "session" else None
        report.updates.append(RefUpdate(short, kind, status, theirs, ours, tracking))

    moving = [update for update in report.updates if update.moved]
    report.transfer = transfer(
        local, remote, [update.new for update in moving], progress=progress
    )

    # objects, documents and index entries are stored: now the remote's refs
    with remote.deletion_lock():
        for update in moving:
            _check_head(remote, update.new)
            full = (
                session_ref(update.name)
                if update.kind == "session"
                else tag_ref(update.name)
            )
            _move(remote, full, update.old, update.new, f"push ({update.status})")
    if remote.head_session() is None:
        remote.set_head(session)
    with local.deletion_lock():
        for update in report.updates:
            if update.tracking is not None:
                _move(
                    local,
                    update.tracking,
                    local.refs.get(update.tracking),
                    update.new,
                    f"push to {name}",
                )
    logger.info("pushed %s to %s", session, name)
    return report


def pull(
    local: Repo,
    remote: Repo,
    *,
    name: str,
    session: str | None = None,
    progress: ProgressCallback | None = None,
) -> SyncReport:
    """Fetch a remote's session (or every session and tag) into this repository.

    Each session pulled sets its tracking ref ``remotes/NAME/SESSION`` to the
    remote's head. A local session that does not exist is created there; one
    that the remote's head descends from fast-forwards; one that is ahead
    stays; one that diverged stays too, and the tracking ref keeps the
    remote's head. A remote tag is created locally when the local repository
    has no tag of that name; one that differs is left alone (and its epochs
    are not fetched).

    Args:
        local: This repository.
        remote: The remote repository, open.
        name: The remote's name, for tracking refs and messages.
        session: The session to pull; every session and tag when None.
        progress: Called as objects are received.

    Returns:
        What was received and what each ref did.

    Raises:
        InvalidInputError: If the remote has no such session.
        RefConflictError: If another writer moved a local ref meanwhile.
    """
    check_remote_name(name)
    offered: list[tuple[str, str, ObjectId]]
    if session is not None:
        theirs = remote.refs.get(session_ref(session))
        if theirs is None:
            raise InvalidInputError(
                f"remote {name!r} has no session {session!r} with an epoch",
                hint=f"run 'mvc pull {name}' to fetch every session it has",
            )
        offered = [("session", session, theirs)]
    else:
        offered = [("session", short, oid) for short, oid in remote.sessions()]
        offered.extend(("tag", short, oid) for short, oid in remote.tags())

    # a differing tag is not taken, so its epochs are not fetched either
    wanted: list[ObjectId] = []
    for kind, short, theirs in offered:
        if kind == "tag":
            ours = local.refs.get(tag_ref(short))
            if ours is not None and ours != theirs:
                continue
        wanted.append(theirs)
    report = SyncReport()
    report.transfer = transfer(remote, local, wanted, progress=progress)

    with local.deletion_lock():
        for kind, short, theirs in offered:
            report.updates.append(_take(local, name, kind, short, theirs))
    if local.head_session() is None:
        created = [u.name for u in report.updates if u.kind == "session" and u.moved]
        remote_head = remote.head_session()
        if remote_head in created:
            local.set_head(remote_head)
        elif created:
            local.set_head(created[0])
    logger.info("pulled %d refs from %s", len(report.updates), name)
    return report


def _take(local: Repo, name: str, kind: str, short: str, theirs: ObjectId) -> RefUpdate:
    # called under the deletion lock, after the transfer
    if kind == "tag":
        full = tag_ref(short)
        ours = local.refs.get(full)
        if ours == theirs:
            return RefUpdate(short, kind, UP_TO_DATE, ours, theirs)
        if ours is not None or local.refs.get(SESSION_PREFIX + short) is not None:
            return RefUpdate(short, kind, DIVERGED, ours, theirs)
        _check_head(local, theirs)
        _move(local, full, None, theirs, f"pull from {name}")
        return RefUpdate(short, kind, CREATED, None, theirs)

    full = session_ref(short)
    tracking = tracking_ref(name, short)
    _check_head(local, theirs)
    _move(local, tracking, local.refs.get(tracking), theirs, f"pull from {name}")
    ours = local.refs.get(full)
    if ours == theirs:
        status = UP_TO_DATE
    elif ours is None:
        # a tag of that name would make the name ambiguous: keep tracking only
        status = DIVERGED if local.refs.get(TAG_PREFIX + short) is not None else CREATED
    elif _descends(local, theirs, ours):
        status = FAST_FORWARD
    elif _descends(local, ours, theirs):
        status = AHEAD
    else:
        status = DIVERGED
    if status in (CREATED, FAST_FORWARD):
        _move(local, full, ours, theirs, f"pull from {name} ({status})")
    return RefUpdate(short, kind, status, ours, theirs, tracking)


def clone(
    spec: RemoteSpec,
    target: str | os.PathLike[str],
    *,
    durable: bool = True,
    progress: ProgressCallback | None = None,
) -> tuple[Repo, SyncReport]:
    """Create an embedded repository in ``target``/.mvc holding a copy of ``spec``.

    Every session and tag is pulled; ``spec`` becomes the new repository's
    remote of that name, and the current session is the remote's. If the
    clone fails, what it created is removed.

    Args:
        spec: The repository to copy (usually named ``origin``).
        target: The folder to hold ``.mvc``; created if missing.
        durable: When False, nothing is fsynced.
        progress: Called as objects are received.

    Returns:
        The new repository, open, and what the pull did.

    Raises:
        InvalidInputError: If a repository exists at ``target``.
        BackendUnavailableError: If the remote cannot be reached.
    """
    folder = Path(target)
    created_folder = not folder.exists()
    # a .mvc already there (even one Repo.init would build over) is not the
    # clone's to remove if the clone fails
    if (folder / REPO_DIR).exists():
        raise InvalidInputError(
            f"{folder / REPO_DIR} already exists",
            hint="clone into a new folder, or remove that one first",
        )
    local = Repo.init(folder, durable=durable)
    try:
        add_remote(local, spec)
        with open_remote(spec, durable=durable) as remote:
            report = pull(local, remote, name=spec.name, progress=progress)
    except BaseException:
        # nothing of the clone is kept: the folder did not hold a repository
        local.close()
        shutil.rmtree(folder if created_folder else local.path, ignore_errors=True)
        raise
    logger.info("cloned %s into %s", spec.location, local.path)
    return local, report
