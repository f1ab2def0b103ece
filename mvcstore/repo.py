"""The repository: sessions, commits, forks, revisions, checkout, log, fsck.

``Repo`` ties one object store, one ref store, one epoch index and one metrics
index together and keeps the write order that makes crashes harmless: objects
first (then their folders fsynced), then metric documents (then made durable),
then the epoch index, then, last and alone, the compare-and-set of the
session's ref. It reads the environment only to find a
repository (``MVC_DIR``); it never prints.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, cast

from mvcstore import lineage
from mvcstore.arrays import RawTensor, adapter_for, to_raw
from mvcstore.codec import ObjectId, Value, canonical, frame, hash_object, unframe
from mvcstore.errors import (
    AmbiguousRevisionError,
    CorruptObjectError,
    InvalidInputError,
    MvcError,
    ObjectNotFoundError,
    RepositoryFormatError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from mvcstore.metrics.base import (
    MetricDoc,
    MetricsIndex,
    MetricStats,
    check_metric_name,
    check_value,
)
from mvcstore.metrics.sqlite import SqliteMetricsIndex
from mvcstore.objects import (
    Blob,
    Epoch,
    Graph,
    State,
    StoredObject,
    Tensor,
    children_of,
    decode_object,
)
from mvcstore.refs import (
    SESSION_PREFIX,
    TAG_PREFIX,
    check_name,
    is_hex_prefix,
    parse_revision,
    session_ref,
    short_name,
    tag_ref,
)
from mvcstore.stores.base import (
    EpochEntry,
    EpochIndex,
    ObjectStore,
    OpenEpoch,
    RefStore,
    get_object,
    put_object,
)
from mvcstore.stores.local import (
    LocalObjectStore,
    SqliteDatabase,
    SqliteEpochIndex,
    SqliteRefStore,
)

__all__ = [
    "FORMAT_VERSION",
    "REPO_DIR",
    "Repo",
    "Session",
    "Checkout",
    "FsckProblem",
    "FsckReport",
    "find_repository",
    "epoch_to_json",
    "json_safe",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1
"""The repository format this code reads and writes."""

REPO_DIR: Final = ".mvc"
CONFIG_FILE: Final = "config.json"
FORMAT_NAME: Final = "mvcstore"
_DATA_LEVEL: Final = 1
"""zstandard level for tensor data: fast, since weights compress little."""
_META_LEVEL: Final = 3


def find_repository(path: Path | None = None) -> Path:
    """Return the ``.mvc`` folder for ``path`` or the current folder.

    With no path, ``MVC_DIR`` names the ``.mvc`` folder if set; otherwise the
    current folder and its parents are searched, as git does.

    Raises:
        RepositoryNotFoundError: If no repository is found.
    """
    if path is None:
        env = os.environ.get("MVC_DIR")
        if env:
            candidate = Path(env)
            if (candidate / CONFIG_FILE).is_file():
                return candidate
            if (candidate / REPO_DIR / CONFIG_FILE).is_file():
                return candidate / REPO_DIR
            raise RepositoryNotFoundError(
                env, hint="MVC_DIR must name a .mvc folder made by 'mvc init'"
            )
        start = Path.cwd()
    else:
        start = Path(path)
        if (start / CONFIG_FILE).is_file() and start.name == REPO_DIR:
            return start
    for folder in [start.absolute(), *start.absolute().parents]:
        if (folder / REPO_DIR / CONFIG_FILE).is_file():
            return folder / REPO_DIR
    raise RepositoryNotFoundError(str(start))


def json_safe(value: object) -> object:
    """Return ``value`` with bytes as hex and ids as hex, for JSON output."""
    if isinstance(value, ObjectId):
        return value.hex
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and (
        value != value or value in (float("inf"), -float("inf"))
    ):
        return str(value)
    return value


def epoch_to_json(epoch: Epoch) -> dict[str, object]:
    """Return an epoch record as a JSON-ready dict (ids as hex)."""
    return {
        "id": epoch.id.hex if epoch.id else None,
        "session": epoch.session,
        "number": epoch.number,
        "step": epoch.step,
        "parents": [oid.hex for oid in epoch.parents],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch.time_ns / 1e9)),
        "time_ns": epoch.time_ns,
        "message": epoch.message,
        "params": json_safe(epoch.params),
        "summary": json_safe(epoch.summary),
        "uid": epoch.uid,
        "state": epoch.state.hex if epoch.state else None,
        "graph": epoch.graph.hex if epoch.graph else None,
        "extra": {role: oid.hex for role, oid in epoch.extra.items()},
        "meta": json_safe(epoch.meta),
    }


@dataclass(frozen=True, slots=True)
class Checkout:
    """An epoch brought back.

    Attributes:
        epoch: The epoch record.
        state: Tensors by name (NumPy arrays unless another type was asked).
        graph: The model graph, if one was recorded.
        extra: Other states by role (optimizer, scheduler, RNG), as raw tensors
            converted like ``state``.
    """

    epoch: Epoch
    state: dict[str, object]
    graph: Graph | None
    extra: dict[str, dict[str, object]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FsckProblem:
    """One thing ``fsck`` found wrong.

    Attributes:
        kind: ``corrupt``, ``missing`` or ``dangling-ref``.
        object_id: The object involved (hex), if any.
        detail: What is wrong, one line.
        affects: Refs and epochs (hex) that need the object.
    """

    kind: str
    object_id: str | None
    detail: str
    affects: tuple[str, ...] = ()


@dataclass(slots=True)
class FsckReport:
    """What ``fsck`` checked and found.

    Attributes:
        objects: How many stored objects were verified.
        epochs: How many epochs are reachable from refs.
        unreferenced: Stored objects no ref reaches (garbage, not an error).
        problems: Everything wrong.
    """

    objects: int = 0
    epochs: int = 0
    unreferenced: int = 0
    problems: list[FsckProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str) -> bool:
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname():
        # another machine's writer: it cannot be checked from here, so trust it
        return True
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_tensor_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 1000:
        raise InvalidInputError(f"tensor name {name!r} must be 1 to 1000 characters")
    if any(ord(char) < 32 for char in name):
        raise InvalidInputError(f"tensor name {name!r} holds control characters")
    return name


class Repo:
    """A repository: the stores of one training history.

    Open one with ``Repo.init`` or ``Repo.open``; close it with ``close`` or a
    ``with`` block.
    """

    def __init__(
        self,
        path: Path,
        *,
        objects: ObjectStore,
        refs: RefStore,
        index: EpochIndex,
        metrics: MetricsIndex,
        closers: Sequence[object] = (),
    ) -> None:
        self.path = path
        self.objects = objects
        self.refs = refs
        self.index = index
        self.metrics_index = metrics
        self._closers = list(closers)
        self._pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))

    # -- opening ---------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".", *, durable: bool = True) -> Repo:
        """Create a repository in ``path``/.mvc and open it.

        Args:
            path: The folder to hold ``.mvc``; created if missing.
            durable: When False, nothing is fsynced (for throwaway repositories).

        Returns:
            The open repository.

        Raises:
            InvalidInputError: If a repository already exists there.
        """
        root = Path(path) / REPO_DIR
        if (root / CONFIG_FILE).exists():
            raise InvalidInputError(
                f"a repository already exists at {root}",
                hint="use it as it is, or remove the folder first",
            )
        (root / "objects").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)
        config = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "objects": "local",
            "refs": "local",
            "metrics": "local",
        }
        # the config is written last: a folder without it is not a repository yet
        repo = cls._open_local(root, config, durable=durable)
        tmp = root / f"{CONFIG_FILE}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, root / CONFIG_FILE)
        if durable:
            repo.objects.flush()
            _fsync_dir(root)
            _fsync_dir(root.parent)
        logger.info("created repository %s", root)
        return repo

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, *, durable: bool = True
    ) -> Repo:
        """Open the repository at or above ``path`` (or ``MVC_DIR``, or cwd).

        Raises:
            RepositoryNotFoundError: If there is none.
            RepositoryFormatError: If its format is unknown or newer.
        """
        root = find_repository(Path(path) if path is not None else None)
        config = cls._read_config(root)
        return cls._open_local(root, config, durable=durable)

    @staticmethod
    def _read_config(root: Path) -> dict[str, object]:
        config_path = root / CONFIG_FILE
        try:
            config = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RepositoryFormatError(
                f"repository config {config_path} is unreadable ({exc})",
                path=str(config_path),
                hint="restore the file, or re-create it with 'mvc init' elsewhere",
            ) from exc
        if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
            raise RepositoryFormatError(
                f"{config_path} is not an mvcstore repository config",
                path=str(config_path),
            )
        version = config.get("version")
        if (
            not isinstance(version, int)
            or isinstance(version, bool)
            or not 1 <= version <= FORMAT_VERSION
        ):
            raise RepositoryFormatError(
                f"repository format version {version!r} is not supported (this"
                f" mvcstore reads version {FORMAT_VERSION})",
                path=str(config_path),
                hint="upgrade mvcstore to a release that reads this format",
            )
        for part in ("objects", "refs", "metrics"):
            if config.get(part, "local") != "local":
                raise RepositoryFormatError(
                    f"repository {part} backend {config.get(part)!r} is not available"
                    " in this release",
                    path=str(config_path),
                    hint="open the repository with a release that has that backend",
                )
        return config

    @classmethod
    def _open_local(
        cls, root: Path, config: Mapping[str, object], *, durable: bool
    ) -> Repo:
        db = SqliteDatabase(root / "index.sqlite", durable=durable)
        metrics = SqliteMetricsIndex(root / "metrics.sqlite", durable=durable)
        return cls(
            root,
            objects=LocalObjectStore(root / "objects", root / "tmp", durable=durable),
            refs=SqliteRefStore(db),
            index=SqliteEpochIndex(db),
            metrics=metrics,
            closers=[db, metrics],
        )

    def close(self) -> None:
        """Release the repository's files and threads."""
        self._pool.shutdown(wait=True)
        for closer in self._closers:
            close = getattr(closer, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- objects ---------------------------------------------------------

    def get(self, oid: ObjectId) -> StoredObject:
        """Read and verify one object.

        Raises:
            ObjectNotFoundError: If it is not stored.
            CorruptObjectError: If it does not verify.
        """
        return get_object(self.objects, oid)

    def read_epoch(self, oid: ObjectId) -> Epoch:
        """Read one epoch record, with its id filled in.

        Raises:
            ObjectNotFoundError: If it is not stored.
            CorruptObjectError: If it does not verify or is not an epoch.
        """
        obj = self.get(oid)
        if not isinstance(obj, Epoch):
            raise CorruptObjectError(
                oid.hex,
                f"expected an epoch, found a {obj.kind}",
                location=self.objects.describe(oid),
            )
        return replace(obj, id=oid)

    def read_graph(self, oid: ObjectId) -> Graph:
        """Read one graph object."""
        obj = self.get(oid)
        if not isinstance(obj, Graph):
            raise CorruptObjectError(oid.hex, f"expected a graph, found a {obj.kind}")
        return obj

    def read_state(
        self, oid: ObjectId, *, names: Iterable[str] | None = None
    ) -> dict[str, RawTensor]:
        """Read a state's tensors as raw tensors, verifying every object.

        Args:
            oid: The state's id.
            names: Only these tensors (all when None).

        Raises:
            InvalidInputError: If a requested name is not in the state.
        """
        obj = self.get(oid)
        if not isinstance(obj, State):
            raise CorruptObjectError(oid.hex, f"expected a state, found a {obj.kind}")
        wanted = list(obj.tensors) if names is None else list(names)
        missing = [name for name in wanted if name not in obj.tensors]
        if missing:
            raise InvalidInputError(f"state {oid.short()} has no tensor {missing[0]!r}")
        loaded = self._pool.map(
            lambda name: self._read_tensor(obj.tensors[name]), wanted
        )
        return dict(zip(wanted, loaded, strict=True))

    def _read_tensor(self, oid: ObjectId) -> RawTensor:
        tensor = self.get(oid)
        if not isinstance(tensor, Tensor):
            raise CorruptObjectError(
                oid.hex, f"expected a tensor, found a {tensor.kind}"
            )
        blob = self.get(tensor.data)
        if not isinstance(blob, Blob) or len(blob.data) != tensor.nbytes:
            raise CorruptObjectError(
                tensor.data.hex,
                f"tensor {oid.short()} needs {tensor.nbytes} bytes of data",
                location=self.objects.describe(tensor.data),
            )
        return RawTensor(
            dtype=tensor.dtype, shape=tensor.shape, data=memoryview(blob.data)
        )

    def write_state(self, tensors: Mapping[str, object]) -> ObjectId:
        """Store tensors (NumPy arrays, torch tensors or raw) as one state.

        Unchanged tensors cost nothing: their data id is already stored.

        Returns:
            The state's id.

        Raises:
            InvalidInputError: If a name or value cannot be stored.
        """
        if not isinstance(tensors, Mapping):
            raise InvalidInputError(
                f"a state maps names to tensors, got {type(tensors).__name__}"
            )
        items = [
            (_check_tensor_name(name), to_raw(value)) for name, value in tensors.items()
        ]
        ids = list(self._pool.map(self._write_tensor, [raw for _, raw in items]))
        state = State(
            tensors={name: oid for (name, _), oid in zip(items, ids, strict=True)}
        )
        return put_object(self.objects, state, level=_META_LEVEL)

    def _write_tensor(self, raw: RawTensor) -> ObjectId:
        data = raw.data.cast("B") if raw.data.format != "B" else raw.data
        blob_id = hash_object("blob", data)
        if blob_id not in self.objects.has_many([blob_id]):
            self.objects.put_if_absent(blob_id, frame("blob", data, level=_DATA_LEVEL))
        tensor = Tensor(
            dtype=raw.dtype, shape=raw.shape, data=blob_id, nbytes=data.nbytes
        )
        return put_object(self.objects, tensor, level=0)

    def write_graph(self, graph: Graph | Mapping[str, object]) -> ObjectId:
        """Store a graph (a ``Graph`` or its JSON form).

        Raises:
            InvalidInputError: If it is not a valid graph.
        """
        value = graph if isinstance(graph, Graph) else Graph.from_value(graph)
        return put_object(self.objects, value, level=_META_LEVEL)

    # -- refs and revisions ----------------------------------------------

    def head_session(self) -> str | None:
        """Return the name of the current session (HEAD), if any."""
        return self.refs.get_head()

    def set_head(self, name: str) -> None:
        """Make session ``name`` the current one (it may have no epoch yet)."""
        self.refs.set_head(check_name(name))

    def sessions(self) -> list[tuple[str, ObjectId]]:
        """Return every session with its head epoch, by name."""
        return [
            (short_name(ref), oid) for ref, oid in self.refs.iter_refs(SESSION_PREFIX)
        ]

    def tags(self) -> list[tuple[str, ObjectId]]:
        """Return every tag with its epoch, by name."""
        return [(short_name(ref), oid) for ref, oid in self.refs.iter_refs(TAG_PREFIX)]

    def session_head(self, name: str) -> ObjectId | None:
        """Return the head epoch of session ``name``, or None if it has none."""
        return self.refs.get(session_ref(name))

    def resolve_id(self, revision: str) -> ObjectId:
        """Resolve a revision expression to an epoch id.

        Raises:
            InvalidInputError: If the expression is malformed.
            RevisionNotFoundError: If it names no epoch.
            AmbiguousRevisionError: If it names more than one.
        """
        parsed = parse_revision(revision)
        current = self._resolve_base(parsed.base, revision)
        for step in parsed.steps:
            if step.op == "~":
                current = self._walk_back(current, step.count, revision)
            else:
                current = self._numbered(current, step.count, revision)
        return current

    def resolve(self, revision: str) -> Epoch:
        """Resolve a revision expression to its epoch record.

        Raises:
            InvalidInputError: If the expression is malformed.
            RevisionNotFoundError: If it names no epoch.
            AmbiguousRevisionError: If it names more than one.
        """
        return self.read_epoch(self.resolve_id(revision))

    def _resolve_base(self, base: str, revision: str) -> ObjectId:
        if base == "HEAD":
            session = self.head_session()
            if session is None:
                raise RevisionNotFoundError(revision, reason="no current session")
            head = self.session_head(session)
            if head is None:
                raise RevisionNotFoundError(
                    revision, reason=f"session {session!r} has no epoch yet"
                )
            return head
        candidates: list[tuple[str, ObjectId]] = []
        if not is_hex_prefix(base) or len(base) < 64:
            for ref in (SESSION_PREFIX + base, TAG_PREFIX + base):
                target = self.refs.get(ref) if _valid_name(base) else None
                if target is not None:
                    candidates.append((ref, target))
        if len(candidates) > 1:
            raise AmbiguousRevisionError(revision, [ref for ref, _ in candidates])
        if candidates:
            return candidates[0][1]
        if is_hex_prefix(base):
            return self._resolve_prefix(base, revision)
        raise RevisionNotFoundError(
            revision, reason="no session, tag or epoch by that name"
        )

    def _resolve_prefix(self, prefix: str, revision: str) -> ObjectId:
        found = self.index.find_prefix(prefix, limit=11)
        if len(found) > 1:
            listed = [oid.short(16) for oid in found[:10]]
            if len(found) > 10:
                listed.append("...")
            raise AmbiguousRevisionError(revision, listed)
        if found:
            return found[0]
        if len(prefix) == 64:
            # an epoch stored but not indexed (copied in by hand): index it now
            oid = ObjectId.from_hex(prefix)
            try:
                found_obj = self.get(oid)
            except ObjectNotFoundError:
                pass
            else:
                if not isinstance(found_obj, Epoch):
                    # the id of a tensor or state is not a revision, and not corrupt
                    raise RevisionNotFoundError(
                        revision, reason=f"object {oid.short()} is a {found_obj.kind}"
                    )
                self.index.add(oid, replace(found_obj, id=oid))
                return oid
        raise RevisionNotFoundError(revision, reason="no epoch id starts with it")

    def _walk_back(self, start: ObjectId, count: int, revision: str) -> ObjectId:
        current = start
        for done in range(count):
            entry = lineage.entry(self.index, current)
            if not entry.parents:
                raise RevisionNotFoundError(
                    revision,
                    reason=f"only {done} epochs before {start.short()} on its line",
                )
            current = entry.parents[0]
        return current

    def _numbered(self, start: ObjectId, number: int, revision: str) -> ObjectId:
        for entry in lineage.first_parent_line(self.index, start):
            if entry.number == number:
                return entry.id
            if entry.number < number:
                break
        raise RevisionNotFoundError(
            revision, reason=f"no epoch numbered {number} on that line"
        )

    # -- sessions --------------------------------------------------------

    def session(self, name: str) -> Session:
        """Create or continue session ``name`` and make it current.

        Raises:
            InvalidNameError: If the name breaks the naming rules.
        """
        session_ref(name)
        self.refs.set_head(name)
        return Session(self, name)

    def fork(self, name: str, *, at: str) -> Session:
        """Create session ``name`` at revision ``at`` and make it current.

        Nothing is copied: the new session's ref points at an existing epoch.

        Raises:
            InvalidInputError: If a session of that name exists.
            RevisionNotFoundError: If ``at`` names no epoch.
        """
        self.create_session(name, at=at)
        return self.session(name)

    def create_session(
        self, name: str, *, at: str, message: str | None = None
    ) -> ObjectId:
        """Create session ``name`` pointing at revision ``at``.

        Returns:
            The epoch the session starts at.

        Raises:
            InvalidInputError: If a session of that name exists.
        """
        ref = session_ref(name)
        target = self.resolve_id(at)
        if self.refs.get(ref) is not None:
            raise InvalidInputError(
                f"session {name!r} already exists",
                hint="choose another name, or delete it with 'mvc branch -d'",
            )
        self.refs.compare_and_set(
            ref, old=None, new=target, message=message or f"fork from {at}"
        )
        logger.info("created session %s at %s", name, target.short())
        return target

    def delete_session(self, name: str) -> ObjectId:
        """Delete session ``name``'s ref; its epochs stay until gc.

        Returns:
            The epoch the session pointed at.

        Raises:
            RevisionNotFoundError: If no such session exists.
        """
        ref = session_ref(name)
        target = self.refs.get(ref)
        if target is None:
            raise RevisionNotFoundError(name, reason="no session by that name")
        self.refs.compare_and_set(ref, old=target, new=None, message="deleted")
        return target

    def tag(self, name: str, revision: str, *, force: bool = False) -> ObjectId:
        """Point tag ``name`` at ``revision``.

        Raises:
            InvalidInputError: If the tag exists and ``force`` is False.
        """
        ref = tag_ref(name)
        target = self.resolve_id(revision)
        current = self.refs.get(ref)
        if current is not None and not force:
            raise InvalidInputError(
                f"tag {name!r} already points at {current.short()}",
                hint="pass --force to move it",
            )
        self.refs.compare_and_set(
            ref, old=current, new=target, message=f"tag {revision}"
        )
        return target

    def delete_tag(self, name: str) -> ObjectId:
        """Delete tag ``name``.

        Raises:
            RevisionNotFoundError: If no such tag exists.
        """
        ref = tag_ref(name)
        target = self.refs.get(ref)
        if target is None:
            raise RevisionNotFoundError(name, reason="no tag by that name")
        self.refs.compare_and_set(ref, old=target, new=None, message="deleted")
        return target

    # -- history ---------------------------------------------------------

    def log(
        self,
        revision: str | None = None,
        *,
        all_refs: bool = False,
        limit: int | None = None,
    ) -> Iterator[Epoch]:
        """Yield the epochs reachable from ``revision`` (or HEAD), newest first.

        Args:
            revision: Where to start; HEAD when None.
            all_refs: Start from every session and tag instead.
            limit: Stop after this many epochs.
        """
        heads = self.heads() if all_refs else [self.resolve_id(revision or "HEAD")]
        for entry in lineage.log_order(self.index, heads, limit=limit):
            yield self.read_epoch(entry.id)

    def heads(self) -> list[ObjectId]:
        """Return the distinct epochs that sessions and tags point at."""
        return list(dict.fromkeys(oid for _, oid in self.refs.iter_refs("")))

    def entries(
        self, heads: Sequence[ObjectId], *, limit: int | None = None
    ) -> list[EpochEntry]:
        """Return index entries reachable from ``heads``, newest first."""
        return list(lineage.log_order(self.index, heads, limit=limit))

    def checkout(self, revision: str, *, as_: str = "numpy") -> Checkout:
        """Bring back an epoch's tensors, graph and record, verifying each byte.

        Args:
            revision: The epoch.
            as_: ``numpy`` (default), ``torch`` or ``raw``.

        Returns:
            The epoch, its state, graph and extra states.
        """
        epoch = self.resolve(revision)
        convert = (lambda raw: raw) if as_ == "raw" else adapter_for(as_).from_raw
        state: dict[str, object] = {}
        if epoch.state is not None:
            state = {
                name: convert(raw) for name, raw in self.read_state(epoch.state).items()
            }
        extra = {
            role: {name: convert(raw) for name, raw in self.read_state(oid).items()}
            for role, oid in epoch.extra.items()
        }
        graph = self.read_graph(epoch.graph) if epoch.graph is not None else None
        return Checkout(epoch=epoch, state=state, graph=graph, extra=extra)

    # -- metric documents ------------------------------------------------

    def view_uids(self, revision: str | None = None) -> set[str]:
        """Return the epoch uids whose metric documents form a view.

        The view of a revision is every epoch reachable from it; when the
        revision is a session name (or HEAD), the session's live open epochs
        are part of it too.
        """
        rev = revision or "HEAD"
        session = self._session_of(rev)
        uids: set[str] = set()
        try:
            head: ObjectId | None = self.resolve_id(rev)
        except RevisionNotFoundError:
            if session is None or self.session_head(session) is not None:
                raise
            head = None
        if head is not None:
            reach = lineage.reachable(self.index, [head])
            uids = {entry.uid for entry in self.index.get_many(reach).values()}
        if session is not None:
            uids.update(
                open_epoch.uid
                for open_epoch in self.refs.iter_open_epochs()
                if open_epoch.session == session
                and open_epoch.base == head
                and _owner_alive(open_epoch.owner)
            )
        return uids

    def _session_of(self, revision: str) -> str | None:
        if revision == "HEAD":
            return self.head_session()
        if _valid_name(revision) and (
            self.refs.get(SESSION_PREFIX + revision) is not None
            or self.head_session() == revision
        ):
            return revision
        return None

    def metrics(
        self,
        revision: str | None = None,
        *,
        names: Sequence[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> list[MetricDoc]:
        """Return the metric documents of a revision's view, by step then name."""
        uids = self.view_uids(revision)
        return list(
            self.metrics_index.query(
                uids, names=names, min_step=min_step, max_step=max_step
            )
        )

    def metric_stats(
        self, revision: str | None = None, *, names: Sequence[str] | None = None
    ) -> dict[str, MetricStats]:
        """Return count, latest, min and max of each metric in a view."""
        return self.metrics_index.stats(self.view_uids(revision), names=names)

    # -- integrity -------------------------------------------------------

    def fsck(self) -> FsckReport:
        """Verify every stored object and that every ref reaches whole epochs.

        Returns:
            The report; ``report.ok`` is False if anything is wrong.
        """
        report = FsckReport()
        valid: dict[ObjectId, StoredObject] = {}
        bad: dict[ObjectId, FsckProblem] = {}
        for oid in self.objects.iter_ids():
            report.objects += 1
            try:
                framed = self.objects.get_framed(oid)
                decoded = unframe(
                    framed, object_id=oid, location=self.objects.describe(oid)
                )
                valid[oid] = decode_object(decoded.kind, decoded.payload, oid=oid)
            except (CorruptObjectError, ObjectNotFoundError) as exc:
                bad[oid] = FsckProblem("corrupt", oid.hex, exc.message)

        reached: dict[ObjectId, set[str]] = {}
        for ref, head in self.refs.iter_refs(""):
            self._fsck_walk(ref, head, valid, bad, reached, report)
        report.epochs = sum(1 for oid in reached if isinstance(valid.get(oid), Epoch))
        for oid, problem in bad.items():
            report.problems.append(
                replace(problem, affects=tuple(sorted(reached.get(oid, set()))))
            )
        report.unreferenced = sum(1 for oid in valid if oid not in reached)
        report.problems.sort(key=lambda p: (p.kind, p.object_id or ""))
        return report

    def _fsck_walk(
        self,
        ref: str,
        head: ObjectId,
        valid: dict[ObjectId, StoredObject],
        bad: dict[ObjectId, FsckProblem],
        reached: dict[ObjectId, set[str]],
        report: FsckReport,
    ) -> None:
        # each object records the epoch that needs it and the ref that reaches
        # it, so a damaged blob names its session as well as its epochs
        name = short_name(ref)
        stack: list[tuple[ObjectId, str]] = [(head, name)]
        while stack:
            oid, owner = stack.pop()
            owners = reached.setdefault(oid, set())
            if owner in owners and name in owners:
                continue
            owners.update((owner, name))
            obj = valid.get(oid)
            if obj is None:
                if oid not in bad:
                    bad[oid] = FsckProblem(
                        "missing", oid.hex, f"object {oid.hex} is missing"
                    )
                continue
            label = f"epoch {oid.short()}" if isinstance(obj, Epoch) else owner
            for child in children_of(obj):
                stack.append((child, label))


def _valid_name(name: str) -> bool:
    try:
        check_name(name)
    except MvcError:
        return False
    return True


class Session:
    """A training session: a named line of epochs that a trainer extends.

    Get one from ``Repo.session`` or ``Repo.fork``. A session remembers the head
    it continues from; ``commit`` moves the session's ref from that head to the
    new epoch with a compare-and-set, so a concurrent writer is detected.
    """

    def __init__(self, repo: Repo, name: str) -> None:
        self.repo = repo
        self.name = name
        self.ref = session_ref(name)
        self._base: ObjectId | None = repo.refs.get(self.ref)
        self._open: OpenEpoch | None = None
        self._last_step: int | None = None
        self._drop_dead_open_epochs()

    def _drop_dead_open_epochs(self) -> None:
        for open_epoch in list(self.repo.refs.iter_open_epochs()):
            if open_epoch.session == self.name and not _owner_alive(open_epoch.owner):
                self.repo.refs.clear_open_epoch(self.name, open_epoch.uid)

    @property
    def head(self) -> Epoch | None:
        """The epoch this session continues from, or None before the first."""
        return self.repo.read_epoch(self._base) if self._base is not None else None

    @property
    def head_id(self) -> ObjectId | None:
        """The id of the epoch this session continues from."""
        return self._base

    @property
    def open_uid(self) -> str | None:
        """The uid of the epoch in progress, if metrics were logged to it."""
        return self._open.uid if self._open else None

    def _ensure_open(self) -> OpenEpoch:
        if self._open is None:
            self._open = OpenEpoch(
                session=self.name,
                uid=uuid.uuid4().hex,
                base=self._base,
                owner=_owner(),
                started_ns=time.time_ns(),
            )
            self.repo.refs.set_open_epoch(self._open)
        return self._open

    def log_metrics(self, step: int, **values: object) -> None:
        """Log metric values at ``step`` in the epoch in progress.

        They are in this session's view at once, and in no view if the epoch is
        never committed.

        Raises:
            InvalidInputError: If ``step`` is not a non-negative int or a value
                is not a number.
            MetricConflictError: If a metric was logged at this step with
                another value.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InvalidInputError(f"step must be an integer >= 0, got {step!r}")
        if not values:
            return
        docs = self._docs(step, values)
        uid = self._ensure_open().uid
        now = time.time_ns()
        self.repo.metrics_index.add(
            [
                MetricDoc(uid=uid, step=step, name=n, value=v, time_ns=now)
                for n, v in docs
            ]
        )
        self._last_step = (
            step if self._last_step is None else max(self._last_step, step)
        )

    @staticmethod
    def _docs(step: int, values: Mapping[str, object]) -> list[tuple[str, float]]:
        return [
            (check_metric_name(name), check_value(name, value))
            for name, value in values.items()
        ]

    def commit(
        self,
        state: Mapping[str, object],
        *,
        graph: Graph | Mapping[str, object] | None = None,
        params: Mapping[str, object] | None = None,
        metrics: Mapping[str, object] | None = None,
        message: str | None = None,
        step: int | None = None,
        extra: Mapping[str, Mapping[str, object]] | None = None,
        meta: Mapping[str, object] | None = None,
    ) -> Epoch:
        """Commit one epoch: its weights, graph, hyper-parameters and metrics.

        Objects are written first, then the epoch index and metric documents,
        and last the session's ref moves by compare-and-set: a crash at any
        point leaves the session on its previous epoch.

        Args:
            state: Tensor name to NumPy array or torch tensor.
            graph: The model graph; the parent's graph when None.
            params: Hyper-parameters; the parent's when None.
            metrics: Summary metrics, also logged as documents at ``step``.
            message: Free text.
            step: The epoch's last step; the last logged step (or the parent's)
                when None.
            extra: Other states by role (optimizer, scheduler, RNG).
            meta: Other facts about the epoch.

        Returns:
            The committed epoch, with its id.

        Raises:
            InvalidInputError: If an input cannot be stored; nothing is changed.
            RefConflictError: If another writer moved the session meanwhile; the
                epoch is stored and can be kept with ``mvc branch``.
        """
        repo = self.repo
        parent = repo.read_epoch(self._base) if self._base is not None else None

        # check every input before writing anything
        summary = dict(self._docs(0, metrics or {}))
        if step is not None and (
            isinstance(step, bool) or not isinstance(step, int) or step < 0
        ):
            raise InvalidInputError(f"step must be an integer >= 0, got {step!r}")
        if params is None:
            param_value: Mapping[str, Value] = parent.params if parent else {}
        else:
            param_value = cast(Mapping[str, Value], canonical(dict(params)))
        meta_value = cast(Mapping[str, Value], canonical(dict(meta or {})))
        if message is not None and not isinstance(message, str):
            raise InvalidInputError("message must be a string")
        if extra is not None:
            for role in extra:
                check_name(role, what="state role")

        # objects first: a crash from here on leaves only unreferenced objects
        state_id = repo.write_state(state)
        graph_id = (
            repo.write_graph(graph)
            if graph is not None
            else (parent.graph if parent else None)
        )
        extra_ids = {
            role: repo.write_state(tensors) for role, tensors in (extra or {}).items()
        }
        if step is None:
            step = (
                self._last_step
                if self._last_step is not None
                else (parent.step if parent else 0)
            )
        open_epoch = self._ensure_open() if summary else self._open
        uid = open_epoch.uid if open_epoch else uuid.uuid4().hex
        epoch = Epoch(
            parents=(self._base,) if self._base is not None else (),
            state=state_id,
            graph=graph_id,
            extra=extra_ids,
            params=param_value,
            number=parent.number + 1 if parent else 1,
            step=step,
            time_ns=time.time_ns(),
            message=message or "",
            summary=summary,
            uid=uid,
            session=self.name,
            meta=meta_value,
        )
        epoch_id = put_object(repo.objects, epoch, level=_META_LEVEL)
        if summary:
            now = time.time_ns()
            repo.metrics_index.add(
                [
                    MetricDoc(uid=uid, step=step, name=n, value=v, time_ns=now)
                    for n, v in summary.items()
                ]
            )
        repo.objects.flush()
        repo.metrics_index.flush()
        repo.index.add(epoch_id, epoch)

        # the ref last, and alone: it is what makes the epoch part of the session
        try:
            repo.refs.compare_and_set(
                self.ref,
                old=self._base,
                new=epoch_id,
                message=f"commit epoch {epoch.number}"
                + (f": {message}" if message else ""),
            )
        finally:
            # the uid now belongs to the stored epoch, won or lost: never reuse it
            if self._open is not None:
                repo.refs.clear_open_epoch(self.name, self._open.uid)
            self._open = None
        self._last_step = None
        self._base = epoch_id
        logger.info(
            "committed %s epoch %d as %s", self.name, epoch.number, epoch_id.short()
        )
        return replace(epoch, id=epoch_id)

    def refresh(self) -> None:
        """Continue from the session's current head (after another writer won)."""
        self._base = self.repo.refs.get(self.ref)
        if self._open is not None:
            self.repo.refs.clear_open_epoch(self.name, self._open.uid)
            self._open = None
