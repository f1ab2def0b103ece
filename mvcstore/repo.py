"""The repository: sessions, commits, forks, revisions, checkout, log, fsck.

``Repo`` ties one object store, one ref store, one epoch index and one metrics
index together and keeps the write order that makes crashes harmless: objects
first (then their folders fsynced), then metric documents (then made durable),
then the epoch index, then, last and alone, the compare-and-set of the
session's ref. It reads the environment only to find a
repository (``MVC_DIR``); it never prints.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, cast

from mvcstore import lineage
from mvcstore.arrays import (
    AllocatingAdapter,
    RawTensor,
    adapter_for,
    allocate_numpy,
    to_raw,
)
from mvcstore.codec import KINDS, ObjectId, Value, canonical, unframe, verify_blob
from mvcstore.diff import EpochDiff, diff_epochs
from mvcstore.encodings import Bytes, as_bytes
from mvcstore.errors import (
    AmbiguousRevisionError,
    BackendUnavailableError,
    CorruptObjectError,
    EpochIncompleteError,
    InvalidInputError,
    MetricConflictError,
    MvcError,
    ObjectNotFoundError,
    RepositoryFormatError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    WeightsDroppedError,
)
from mvcstore.metrics.base import (
    MetricDoc,
    MetricsIndex,
    MetricStats,
    check_metric_name,
    check_value,
)
from mvcstore.metrics.registry import open_metrics_index
from mvcstore.objects import (
    Blob,
    Epoch,
    Graph,
    State,
    StoredObject,
    Tensor,
    decode_object,
)
from mvcstore.refs import (
    REMOTE_PREFIX,
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
    ObjectBatch,
    ObjectStore,
    OpenEpoch,
    RefStore,
    get_object,
    open_batch,
    put_object,
)
from mvcstore.stores.blobs import (
    DeltaCache,
    StorageOptions,
    read_blobs,
    write_tensors,
)
from mvcstore.stores.liveness import (
    DropLog,
    DroppedEpoch,
    ObjectStats,
    frame_dependencies,
    references,
)
from mvcstore.stores.local import LocalObjectStore
from mvcstore.stores.packs import fsync_dir
from mvcstore.stores.registry import LOCAL, check_uri, open_stores
from mvcstore.stores.registry import PARTS as BACKEND_PARTS
from mvcstore.stores.sqlite_file import look as look_at_database
from mvcstore.stores.stats import RepoStats, UsageReader

__all__ = [
    "FORMAT_VERSION",
    "REPO_DIR",
    "Repo",
    "Session",
    "Checkout",
    "FsckProblem",
    "FsckReport",
    "find_repository",
    "current_folder",
    "check_database",
    "epoch_to_json",
    "json_safe",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION: Final = 3
"""The repository format this code writes; it also reads and writes formats 1, 2."""

REPO_DIR: Final = ".mvc"
CONFIG_FILE: Final = "config.json"
LOCK_FILE: Final = "gc.lock"
"""Orders gc's deletions against the last step of commits (``deletion_lock``)."""
METRICS_FILE: Final = "metrics.sqlite"
DATABASE_FILES: Final = ("index.sqlite", METRICS_FILE)
FORMAT_NAME: Final = "mvcstore"
_META_LEVEL: Final = 3
_BLOB_CODE: Final = bytes((KINDS["blob"],))


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
            for root in (candidate, candidate / REPO_DIR):
                if _holds_history(root):
                    raise _lost_config(root)
            raise RepositoryNotFoundError(
                env, hint="MVC_DIR must name a .mvc folder made by 'mvc init'"
            )
        start = current_folder()
    else:
        start = Path(path)
        if (start / CONFIG_FILE).is_file() and start.name == REPO_DIR:
            return start
    for folder in [start.absolute(), *start.absolute().parents]:
        if (folder / REPO_DIR / CONFIG_FILE).is_file():
            return folder / REPO_DIR
        if _holds_history(folder / REPO_DIR):
            raise _lost_config(folder / REPO_DIR)
    raise RepositoryNotFoundError(str(start))


def current_folder() -> Path:
    """Return the working folder.

    Raises:
        InvalidInputError: If it was deleted under the process.
    """
    try:
        return Path.cwd()
    except FileNotFoundError as exc:
        raise InvalidInputError(
            "the working folder no longer exists",
            hint="cd into an existing folder, then run the command again",
        ) from exc


def _lost_config(root: Path) -> RepositoryFormatError:
    return RepositoryFormatError(
        f"{root} holds a repository's objects or sessions but no {CONFIG_FILE}",
        path=str(root / CONFIG_FILE),
        hint=f"restore {CONFIG_FILE} from a backup of the repository (it names"
        " the format version and where each part lives); the rest is untouched",
    )


def _holds_history(root: Path) -> bool:
    """Return whether a ``.mvc`` folder holds objects, refs or epochs.

    Such a folder without its config lost the config; one that holds none is
    what an interrupted ``mvc init`` leaves, to be made again.
    """
    objects = root / "objects"
    if any((objects / "packs").glob("*.pack")) or any(
        len(entry.name) == 2 and any(entry.iterdir())
        for entry in (objects.iterdir() if objects.is_dir() else [])
        if entry.is_dir()
    ):
        return True  # stored objects: an interrupted init stores none
    index = root / "index.sqlite"
    if not index.is_file():
        return False
    try:
        conn = look_at_database(index)
    except sqlite3.Error:
        return True  # something is there: never build over it
    try:
        return bool(
            conn.execute(
                "SELECT EXISTS (SELECT 1 FROM refs) OR EXISTS (SELECT 1 FROM epochs)"
            ).fetchone()[0]
        )
    except sqlite3.Error:
        return index.stat().st_size > 0
    finally:
        conn.close()


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
    if not isinstance(name, str):
        raise InvalidInputError(
            f"tensor name {name!r} is not a string ({type(name).__name__})",
            hint="name each tensor by a string, as a state dict does",
        )
    if not name or len(name) > 1000:
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
        self.format_version = FORMAT_VERSION
        """The format of the repository, which is the format written."""
        self.storage = StorageOptions()
        """How tensor data is stored (encodings, chunks, deltas); never an id."""

    # -- opening ---------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str] = ".",
        *,
        durable: bool = True,
        objects: str = LOCAL,
        refs: str = LOCAL,
        metrics: str = LOCAL,
    ) -> Repo:
        """Create a repository in ``path``/.mvc and open it.

        Args:
            path: The folder to hold ``.mvc``; created if missing.
            durable: When False, nothing is fsynced (for throwaway repositories).
            objects: Where objects live: ``local``, ``gs://BUCKET/PREFIX`` or
                ``mongodb://HOST:PORT/DATABASE``.
            refs: Where refs and the epoch index live: ``local`` or
                ``mongodb://HOST:PORT/DATABASE``.
            metrics: Where metric documents live: ``local``,
                ``es+http://HOST:PORT/INDEX`` or ``os+http://HOST:PORT/INDEX``.

        Returns:
            The open repository.

        Raises:
            InvalidInputError: If a repository already exists there, or a URI
                is malformed or holds credentials.
        """
        root = Path(path) / REPO_DIR
        if (root / CONFIG_FILE).exists():
            raise InvalidInputError(
                f"a repository already exists at {root}",
                hint="use it as it is, or remove the folder first",
            )
        if _holds_history(root):
            raise InvalidInputError(
                f"{root} holds a repository's objects or sessions but no {CONFIG_FILE}",
                hint=f"restore {CONFIG_FILE} from a backup of the repository"
                " rather than creating a new one over it",
            )
        # URIs are checked before anything is created; none holds a secret
        backends = {
            "objects": check_uri("objects", objects),
            "refs": check_uri("refs", refs),
            "metrics": check_uri("metrics", metrics),
        }
        try:
            (root / "objects").mkdir(parents=True, exist_ok=True)
            (root / "tmp").mkdir(exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot create a repository at {root}: {exc.strerror or exc}",
                hint="choose a folder you can write to",
            ) from exc
        config = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            # ties the embedded index to this config (see SqliteDatabase)
            "id": uuid.uuid4().hex,
            **backends,
        }
        # the config is written last: a folder without it is not a repository yet
        repo = cls._open_local(root, config, durable=durable, create=True)
        tmp = root / f"{CONFIG_FILE}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, root / CONFIG_FILE)
        if durable:
            repo.objects.flush()
            fsync_dir(root)
            fsync_dir(root.parent)
        logger.info("created repository %s", root)
        return repo

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, *, durable: bool = True
    ) -> Repo:
        """Open the repository at or above ``path`` (or ``MVC_DIR``, or cwd).

        An older repository is read, and written in its own format (format 1:
        whole frames in loose files; format 2: XOR deltas) so that the
        mvcstore that wrote it still reads it, until ``upgrade_format`` moves
        it to the current format.

        Raises:
            RepositoryNotFoundError: If there is none.
            RepositoryFormatError: If its format is unknown or newer.
        """
        root = find_repository(Path(path) if path is not None else None)
        return cls.open_folder(root, durable=durable)

    @classmethod
    def open_folder(
        cls, folder: str | os.PathLike[str], *, durable: bool = True
    ) -> Repo:
        """Open the repository whose ``.mvc`` folder is exactly ``folder``.

        Unlike ``open``, nothing is searched: the folder may have any name (a
        backup copy of a ``.mvc`` folder, say) and must hold its config.

        Raises:
            RepositoryNotFoundError: If ``folder`` holds no repository config.
            RepositoryFormatError: If its format is unknown or newer.
        """
        root = Path(folder)
        if not (root / CONFIG_FILE).is_file():
            raise RepositoryNotFoundError(
                str(root), hint="give a .mvc folder made by 'mvc init'", searched=False
            )
        config = cls._read_config(root)
        repo = cls._open_local(root, config, durable=durable)
        version = config.get("version")
        if isinstance(version, int) and version < FORMAT_VERSION:
            repo._use_format(version)
        return repo

    def _use_format(self, version: int) -> None:
        # format 1 knows raw and zstandard frames in loose files only
        self.format_version = version
        if version < 2 and isinstance(self.objects, LocalObjectStore):
            self.objects.use_packs = False

    def storage_options(self) -> StorageOptions:
        """Return ``storage`` as this repository's format allows it written.

        Format 2 knows XOR deltas but not differences or packed sections;
        format 1 knows raw and zstandard frames only. Whatever ``storage`` is
        set to, an older repository stays readable by the mvcstore that
        wrote it.
        """
        options = self.storage
        if self.format_version < 3:
            options = replace(options, difference=False)
        if self.format_version < 2:
            options = replace(options, encodings=False, max_delta_depth=0)
        return options

    def upgrade_format(self) -> None:
        """Move a repository to the current format; nothing stored is rewritten.

        Every frame of an older format is a valid frame of the current one, so
        only the version in ``config.json`` changes; from then on commits use
        packs and the current encodings, and the older mvcstore refuses the
        repository.

        Raises:
            RepositoryFormatError: If the config cannot be read or written.
        """
        config_path = self.path / CONFIG_FILE
        config = self._read_config(self.path)
        if config.get("version") == FORMAT_VERSION:
            return
        config["version"] = FORMAT_VERSION
        tmp = self.path / f"{CONFIG_FILE}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, config_path)
            fsync_dir(self.path)
        except OSError as exc:
            raise RepositoryFormatError(
                f"cannot write {config_path}: {exc.strerror or exc}",
                path=str(config_path),
                hint="check the permissions of the repository folder",
            ) from exc
        self.format_version = FORMAT_VERSION
        if isinstance(self.objects, LocalObjectStore):
            self.objects.use_packs = True
        logger.info("upgraded repository %s to format %d", self.path, FORMAT_VERSION)

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
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RepositoryFormatError(
                f"repository format version {version!r} in {config_path} is not a"
                " format version (versions are whole numbers from 1)",
                path=str(config_path),
                hint="the config is damaged: restore it from a copy of the"
                " repository, or set the version the repository was written in",
            )
        if version > FORMAT_VERSION:
            raise RepositoryFormatError(
                f"repository format version {version!r} is not supported (this"
                f" mvcstore reads versions 1 to {FORMAT_VERSION})",
                path=str(config_path),
                hint="upgrade mvcstore to a release that reads this format",
            )
        if not isinstance(config.get("id", ""), str):
            raise RepositoryFormatError(
                f"repository id in {config_path} is not a string",
                path=str(config_path),
                hint="restore the config from a backup of the repository",
            )
        for part in BACKEND_PARTS:
            value = config.get(part, LOCAL)
            try:
                check_uri(part, value if isinstance(value, str) else "")
            except InvalidInputError as exc:
                raise RepositoryFormatError(
                    f"repository {part} backend in {config_path} is not usable:"
                    f" {exc.message}",
                    path=str(config_path),
                    hint="fix the URI in the config, or open the repository with a"
                    " release that has that backend",
                ) from exc
        return config

    @classmethod
    def _open_local(
        cls,
        root: Path,
        config: Mapping[str, object],
        *,
        durable: bool,
        create: bool = False,
    ) -> Repo:
        # each part from its config entry: embedded ("local") or a backend URI;
        # an embedded database is made only with the repository (a missing one
        # is an error later), but for the metrics file of a repository with no
        # epoch yet: earlier releases made that file on first use
        stores = open_stores(
            config,
            root=root,
            durable=durable,
            session_prefix=SESSION_PREFIX,
            create=create,
        )
        metrics_uri = str(config.get("metrics", LOCAL))
        try:
            # the index is read only in the rare case of a missing metrics file
            create_metrics = create or (
                metrics_uri == LOCAL
                and not (root / METRICS_FILE).exists()
                and next(iter(stores.index.iter_entries()), None) is None
            )
            metrics, metric_closers = open_metrics_index(
                metrics_uri, root=root, durable=durable, create=create_metrics
            )
        except MvcError:
            for closer in stores.closers:
                close = getattr(closer, "close", None)
                if callable(close):
                    close()
            raise
        return cls(
            root,
            objects=stores.objects,
            refs=stores.refs,
            index=stores.index,
            metrics=metrics,
            closers=[*stores.closers, *metric_closers],
        )

    @property
    def read_only(self) -> bool:
        """Whether refs cannot be written here (an index on a read-only mount)."""
        return bool(getattr(self.refs, "read_only", False))

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

        The data is decoded in parallel straight into new NumPy buffers (the
        raw tensors' ``data`` views them, writable).

        Args:
            oid: The state's id.
            names: Only these tensors (all when None).

        Raises:
            InvalidInputError: If a requested name is not in the state.
        """
        loaded = self._read_state(oid, names, allocate_numpy)
        return {name: raw for name, (_, raw) in loaded.items()}

    def _read_state(
        self,
        oid: ObjectId,
        names: Iterable[str] | None,
        allocate: Callable[[str, tuple[int, ...]], tuple[object, memoryview]],
    ) -> dict[str, tuple[object, RawTensor]]:
        obj = self.get(oid)
        if not isinstance(obj, State):
            raise CorruptObjectError(oid.hex, f"expected a state, found a {obj.kind}")
        wanted = list(obj.tensors) if names is None else list(names)
        missing = [name for name in wanted if name not in obj.tensors]
        if missing:
            raise InvalidInputError(f"state {oid.short()} has no tensor {missing[0]!r}")
        tensors = [self._read_tensor(obj.tensors[name]) for name in wanted]

        # every buffer first, then all blobs decoded into them in parallel
        out: dict[str, tuple[object, RawTensor]] = {}
        jobs: list[tuple[ObjectId, Bytes]] = []
        for name, tensor in zip(wanted, tensors, strict=True):
            array, view = allocate(tensor.dtype, tensor.shape)
            out[name] = (array, RawTensor(tensor.dtype, tensor.shape, view))
            jobs.append((tensor.data, as_bytes(view)))
        read_blobs(jobs, store=self.objects, pool=self._pool)

        # a bool array holding another byte would break the arrays built on it
        for (blob, data), tensor in zip(jobs, tensors, strict=True):
            if tensor.dtype == "BOOL" and data.size and int(data.max()) > 1:
                raise CorruptObjectError(
                    blob.hex,
                    "bool tensor data holds a byte other than 0 or 1",
                    location=self.objects.describe(blob),
                )
        return out

    def _read_tensor(self, oid: ObjectId) -> Tensor:
        tensor = self.get(oid)
        if not isinstance(tensor, Tensor):
            raise CorruptObjectError(
                oid.hex, f"expected a tensor, found a {tensor.kind}"
            )
        return tensor

    def write_state(
        self, tensors: Mapping[str, object], *, batch: ObjectBatch | None = None
    ) -> ObjectId:
        """Store tensors (NumPy arrays, torch tensors or raw) as one state.

        Unchanged tensors cost nothing: their data id is already stored.

        Args:
            tensors: Tensor name to array.
            batch: Write into this batch (committed by the caller); when None
                the state is written and made durable on its own.

        Returns:
            The state's id.

        Raises:
            InvalidInputError: If a name or value cannot be stored.
        """
        own = open_batch(self.objects) if batch is None else None
        try:
            oid = self._write_state(tensors, batch=own or batch)
            if own is not None:
                own.commit()
        except BaseException:
            if own is not None:
                own.abort()
            raise
        return oid

    def _write_state(
        self,
        tensors: Mapping[str, object],
        *,
        batch: ObjectBatch | None,
        role: str = "",
        parent: ObjectId | None = None,
        cache: DeltaCache | None = None,
        number: int = 1,
    ) -> ObjectId:
        if not isinstance(tensors, Mapping):
            raise InvalidInputError(
                f"a state maps names to tensors, got {type(tensors).__name__}"
            )
        items = [
            (_check_tensor_name(name), to_raw(value)) for name, value in tensors.items()
        ]
        target = batch if batch is not None else open_batch(self.objects)
        options = self.storage_options()
        records = write_tensors(
            items,
            role=role,
            parent=self._parent_tensors(parent) if parent is not None else None,
            cache=cache,
            batch=target,
            store=self.objects,
            options=options,
            pool=self._pool,
            whole=options.full_every > 0 and (number - 1) % options.full_every == 0,
        )
        # small objects, mostly Python work: threads would only take turns
        ids = [put_object(target, record, level=0) for record in records]
        state = State(
            tensors={name: oid for (name, _), oid in zip(items, ids, strict=True)}
        )
        return put_object(target, state, level=_META_LEVEL)

    def _parent_tensors(self, state_id: ObjectId) -> Callable[[str], Tensor | None]:
        # the parent's tensors are read only when a delta base is looked for
        found: dict[str, ObjectId] = {}
        loaded = False

        def lookup(name: str) -> Tensor | None:
            nonlocal loaded
            if not loaded:
                state = self.get(state_id)
                if isinstance(state, State):
                    found.update(state.tensors)
                loaded = True
            oid = found.get(name)
            if oid is None:
                return None
            tensor = self.get(oid)
            return tensor if isinstance(tensor, Tensor) else None

        return lookup

    def write_graph(
        self, graph: Graph | Mapping[str, object], *, batch: ObjectBatch | None = None
    ) -> ObjectId:
        """Store a graph (a ``Graph`` or its JSON form).

        Args:
            graph: The graph.
            batch: Write into this batch (committed by the caller), if given.

        Raises:
            InvalidInputError: If it is not a valid graph.
        """
        value = graph if isinstance(graph, Graph) else Graph.from_value(graph)
        return put_object(batch or self.objects, value, level=_META_LEVEL)

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

    def resolve_id(self, revision: str | ObjectId) -> ObjectId:
        """Resolve a revision expression (or an epoch's id) to an epoch id.

        Raises:
            InvalidInputError: If the expression is malformed.
            RevisionNotFoundError: If it names no epoch.
            AmbiguousRevisionError: If it names more than one.
        """
        if isinstance(revision, ObjectId):
            revision = revision.hex
        parsed = parse_revision(revision)
        current = self._resolve_base(parsed.base, revision)
        for step in parsed.steps:
            if step.op == "~":
                current = self._walk_back(current, step.count, revision)
            else:
                current = self._numbered(current, step.count, revision)
        return current

    def resolve(self, revision: str | ObjectId) -> Epoch:
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
            names = [SESSION_PREFIX + base, TAG_PREFIX + base]
            if base.startswith(REMOTE_PREFIX):
                # a tracking ref is named in full: remotes/NAME/SESSION
                names.append(base)
            for ref in names:
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
        self._refuse_name_of_other_kind(name, TAG_PREFIX)
        self.refs.set_head(name)
        return Session(self, name)

    def _refuse_name_of_other_kind(self, name: str, other_prefix: str) -> None:
        # a session and a tag of one name would make that name ambiguous forever
        if self.refs.get(other_prefix + name) is not None:
            kind = "tag" if other_prefix == TAG_PREFIX else "session"
            remove = "mvc tag -d" if kind == "tag" else "mvc branch -d"
            raise InvalidInputError(
                f"a {kind} named {name!r} already exists",
                hint=f"choose another name, or remove the {kind}: '{remove} {name}'",
            )

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
        self._refuse_name_of_other_kind(name, TAG_PREFIX)
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
        self._refuse_name_of_other_kind(name, SESSION_PREFIX)
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

    def checkout(self, revision: str | ObjectId, *, as_: str = "numpy") -> Checkout:
        """Bring back an epoch's tensors, graph and record, verifying each byte.

        Args:
            revision: The epoch.
            as_: ``numpy`` (default), ``torch`` or ``raw``.

        Returns:
            The epoch, its state, graph and extra states.
        """
        epoch = self.resolve(revision)
        self.check_weights_kept(epoch)
        adapter = None if as_ == "raw" else adapter_for(as_)
        # decode straight into the framework's arrays when its adapter can make
        # them; otherwise into NumPy buffers that ``from_raw`` converts
        allocate: Callable[[str, tuple[int, ...]], tuple[object, memoryview]]
        allocate = allocate_numpy
        direct = adapter is not None and isinstance(adapter, AllocatingAdapter)
        if direct and isinstance(adapter, AllocatingAdapter):
            allocate = adapter.allocate

        def convert(array: object, raw: RawTensor) -> object:
            if adapter is None:
                return raw
            return array if direct else adapter.from_raw(raw)

        def read(oid: ObjectId) -> dict[str, object]:
            loaded = self._read_state(oid, None, allocate)
            return {name: convert(array, raw) for name, (array, raw) in loaded.items()}

        state = read(epoch.state) if epoch.state is not None else {}
        extra = {role: read(oid) for role, oid in epoch.extra.items()}
        graph = self.read_graph(epoch.graph) if epoch.graph is not None else None
        return Checkout(epoch=epoch, state=state, graph=graph, extra=extra)

    def stats(
        self, revision: str | None = None, *, all_refs: bool = False
    ) -> RepoStats:
        """Return what the epochs of a revision hold and what they cost.

        Logical bytes (every epoch's tensors as if stored whole), unique bytes
        (after deduplication) and stored bytes (every frame the epochs need),
        with the ratios from deduplication, deltas and compression; in total
        and per session (the epochs committed on it; with ``all_refs`` every
        session is listed, one with no epochs of its own as zero).

        Args:
            revision: The epochs reachable from it; HEAD when None.
            all_refs: Every epoch reachable from any session or tag instead.

        Raises:
            RevisionNotFoundError: If the revision names no epoch.
            ObjectNotFoundError: If an object the epochs need is missing.
            CorruptObjectError: If one does not verify.
        """
        heads = self.heads() if all_refs else [self.resolve_id(revision or "HEAD")]
        entries = self.index.get_many(lineage.reachable(self.index, heads))
        dropped = set(self.dropped_epochs(entries))
        by_session: dict[str, list[ObjectId]] = {}
        if all_refs:
            # a session forked but not yet committed on is listed too
            by_session.update((name, []) for name, _ in self.sessions())
        for entry in sorted(entries.values(), key=lambda e: (e.time_ns, e.id)):
            by_session.setdefault(entry.session, []).append(entry.id)
        reader = UsageReader(self.objects)
        return RepoStats(
            total=reader.usage(entries, dropped=dropped),
            sessions={
                name: reader.usage(ids, dropped=dropped)
                for name, ids in sorted(by_session.items())
            },
        )

    def diff(self, rev1: str, rev2: str) -> EpochDiff:
        """Compare two epochs' graphs and weights (see ``mvcstore.diff``).

        Raises:
            RevisionNotFoundError: If a revision names no epoch.
            CorruptObjectError: If an object read does not verify.
        """
        return diff_epochs(self, rev1, rev2)

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
        if isinstance(names, str):
            names = [names]
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
        report.problems.extend(self._database_problems())

        # packs as files: indexes, headers, records; a pack without an index
        # is what a crash between the two leaves, garbage and not damage
        garbage = 0
        check_packs = getattr(self.objects, "check_packs", None)
        if callable(check_packs):
            faults, garbage = check_packs()
            for faulty, detail in faults:
                if faulty is None:
                    report.problems.append(FsckProblem("corrupt", None, detail))
                else:
                    bad.setdefault(faulty, FsckProblem("corrupt", faulty.hex, detail))

        for oid in self.objects.iter_ids():
            report.objects += 1
            try:
                framed = self.objects.get_framed(oid)
                location = self.objects.describe(oid)
                if framed[5:6] == _BLOB_CODE:
                    # a blob's bytes are not kept (a chunked one is checked a
                    # chunk at a time): the walk needs only its frame's links
                    verify_blob(
                        framed, object_id=oid, location=location, source=self.objects
                    )
                    valid[oid] = Blob()
                else:
                    decoded = unframe(
                        framed, object_id=oid, location=location, source=self.objects
                    )
                    valid[oid] = decode_object(decoded.kind, decoded.payload, oid=oid)
            except (CorruptObjectError, ObjectNotFoundError) as exc:
                if exc.object_id not in (None, oid.hex):
                    # its delta base or a chunk is damaged or missing: that
                    # object is reported, and the walk names who needs it
                    valid[oid] = Blob()
                    continue
                bad.setdefault(oid, FsckProblem("corrupt", oid.hex, exc.message))

        reached: dict[ObjectId, set[str]] = {}
        try:
            # a dropped epoch's state is garbage, not a missing object
            dropped = set(self.dropped_epochs(valid))
            for ref, head in self.refs.iter_refs(""):
                self._fsck_walk(ref, head, valid, bad, reached, dropped)
        except RepositoryFormatError as exc:
            if not any(p.kind == "database" for p in report.problems):
                report.problems.append(FsckProblem("database", None, exc.message))
        report.epochs = sum(1 for oid in reached if isinstance(valid.get(oid), Epoch))
        if not any(p.kind == "database" for p in report.problems):
            # a damaged database is reported as such, not as lost documents
            report.problems.extend(self._lost_metric_documents(valid, reached))
        for oid, problem in bad.items():
            report.problems.append(
                replace(problem, affects=tuple(sorted(reached.get(oid, set()))))
            )
        report.unreferenced = garbage + sum(1 for oid in valid if oid not in reached)
        report.problems.sort(key=lambda p: (p.kind, p.object_id or ""))
        return report

    def _fsck_walk(
        self,
        ref: str,
        head: ObjectId,
        valid: dict[ObjectId, StoredObject],
        bad: dict[ObjectId, FsckProblem],
        reached: dict[ObjectId, set[str]],
        dropped: set[ObjectId],
    ) -> None:
        # each object records the epoch that needs it and the ref that reaches
        # it, so a damaged blob names its session as well as its epochs
        name = short_name(ref)
        stack: list[tuple[ObjectId, str, ObjectId | None]] = [(head, name, None)]
        while stack:
            oid, owner, parent = stack.pop()
            owners = reached.setdefault(oid, set())
            if owner in owners and name in owners:
                continue
            owners.update((owner, name))
            obj = valid.get(oid)
            if obj is None:
                if oid not in bad:
                    detail = f"object {oid.hex} is missing"
                    if parent is not None and isinstance(valid.get(parent), Blob):
                        # a delta base or chunk: the id may be a damaged one
                        detail += (
                            f", named by the frame of blob {parent.hex} (if no"
                            " copy holds it, that frame may be damaged)"
                        )
                    bad[oid] = FsckProblem("missing", oid.hex, detail)
                continue
            label = f"epoch {oid.short()}" if isinstance(obj, Epoch) else owner
            try:
                children = references(self.objects, oid, obj, dropped=oid in dropped)
            except (CorruptObjectError, ObjectNotFoundError) as exc:
                bad.setdefault(oid, FsckProblem("corrupt", oid.hex, exc.message))
                continue
            for child in children:
                stack.append((child, label, oid))

    def _lost_metric_documents(
        self, valid: Mapping[ObjectId, StoredObject], reached: Iterable[ObjectId]
    ) -> list[FsckProblem]:
        # an epoch whose summary names metrics logged them as documents under
        # its uid when it was committed: a uid with none lost them
        wanted: dict[str, ObjectId] = {}
        for oid in reached:
            obj = valid.get(oid)
            if isinstance(obj, Epoch) and obj.summary:
                wanted[obj.uid] = oid
        if not wanted:
            return []
        try:
            held = set(self.metrics_index.iter_uids())
        except MvcError as exc:
            return [
                FsckProblem(
                    "database", None, f"metric documents cannot be read: {exc.message}"
                )
            ]
        lost = sorted(oid.hex for uid, oid in wanted.items() if uid not in held)
        if not lost:
            return []
        shown = ", ".join(hex_id[:12] for hex_id in lost[:5])
        more = f" and {len(lost) - 5} more" if len(lost) > 5 else ""
        return [
            FsckProblem(
                "database",
                None,
                f"the metrics index holds no documents of {len(lost)} epoch(s) whose"
                f" summary names metrics ({shown}{more}): restore the metrics"
                " database from a backup of the repository",
            )
        ]

    def _database_problems(self) -> list[FsckProblem]:
        problems = []
        for name in DATABASE_FILES:
            path = self.path / name
            if not path.exists():
                continue
            for detail in check_database(path):
                problems.append(
                    FsckProblem(
                        "database", None, f"database {path} is damaged: {detail}"
                    )
                )
        return problems

    # -- garbage collection and retention support ------------------------

    @contextmanager
    def deletion_lock(self, *, exclusive: bool = False) -> Iterator[None]:
        """Hold the lock that orders gc's deletions against commits.

        A commit holds it shared while it checks that every object of its epoch
        is stored and moves its ref; gc holds it exclusive while it re-reads
        the refs and deletes. Either the ref moves first and gc sees it, or gc
        deletes first and the commit finds the object missing and fails: a ref
        never reaches an object that gc removed. The lock is ``gc.lock`` in
        the repository folder, taken with ``flock``.

        Args:
            exclusive: Take it exclusive (gc) rather than shared (commits).

        Raises:
            BackendUnavailableError: If the lock file cannot be opened.
        """
        path = self.path / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BackendUnavailableError(
                str(path),
                f"cannot open the gc lock: {exc.strerror or exc}",
                hint="check the permissions of the repository folder",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            # closing the descriptor releases the lock
            os.close(fd)

    def deletion_token(self) -> bytes:
        """Return the token gc changes before it deletes objects (``gc.lock``).

        A commit that sees the same token before writing its objects and when
        moving its ref knows no object was deleted meanwhile.
        """
        try:
            with open(self.path / LOCK_FILE, "rb") as handle:
                return handle.read(64)
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise BackendUnavailableError(
                str(self.path / LOCK_FILE),
                f"cannot read the gc lock: {exc.strerror or exc}",
                hint="check the permissions of the repository folder",
            ) from exc

    def note_deletion(self) -> None:
        """Change the deletion token; gc calls it, holding the lock exclusive.

        Raises:
            BackendUnavailableError: If the lock file cannot be written.
        """
        path = self.path / LOCK_FILE
        try:
            with open(path, "r+b") as handle:
                handle.write(os.urandom(16))
                handle.truncate()
        except OSError as exc:
            raise BackendUnavailableError(
                str(path),
                f"cannot write the gc lock: {exc.strerror or exc}",
                hint="check the permissions of the repository folder",
            ) from exc

    def check_stored(self, epoch_id: ObjectId, epoch: Epoch) -> None:
        """Check that an epoch and every object it reaches are stored.

        Its parents are not followed: they are reachable from the head the
        commit continues from. Only ``has_many`` and the small state and
        tensor objects are read, never tensor data.

        Raises:
            EpochIncompleteError: Naming the first object found missing.
            CorruptObjectError: If a state or tensor object is damaged.
        """
        # what other processes' gc removed since this store last looked
        refresh = getattr(self.objects, "refresh", None)
        if callable(refresh):
            refresh()
        states = [o for o in (epoch.state, *epoch.extra.values()) if o is not None]
        top = [epoch_id, *states, *([epoch.graph] if epoch.graph else [])]
        try:
            self._require(epoch_id, top)
            tensor_ids: list[ObjectId] = []
            for state_id in dict.fromkeys(states):
                state = self.get(state_id)
                if isinstance(state, State):
                    tensor_ids.extend(state.tensors.values())
            tensor_ids = list(dict.fromkeys(tensor_ids))
            self._require(epoch_id, tensor_ids)
            blobs = [
                tensor.data
                for tensor in self._pool.map(self.get, tensor_ids)
                if isinstance(tensor, Tensor)
            ]
            # a blob's frame may need a delta base or chunks, which may too
            pending = list(dict.fromkeys(blobs))
            seen: set[ObjectId] = set()
            while pending:
                self._require(epoch_id, pending)
                seen.update(pending)
                pending = list(
                    dict.fromkeys(
                        dep
                        for oid in pending
                        for dep in frame_dependencies(self.objects, oid)
                        if dep not in seen
                    )
                )
        except EpochIncompleteError:
            raise
        except ObjectNotFoundError as exc:
            raise EpochIncompleteError(
                exc.object_id, epoch=epoch_id.short(), location=exc.location
            ) from exc

    def _require(self, epoch_id: ObjectId, oids: Sequence[ObjectId]) -> None:
        present = self.objects.has_many(oids)
        if isinstance(self.objects, ObjectStats):
            # an index may outlive its pack file: the bytes must be there too
            for oid in list(present):
                try:
                    self.objects.stat_object(oid)
                except ObjectNotFoundError:
                    present.discard(oid)
        for oid in oids:
            if oid not in present:
                raise EpochIncompleteError(
                    oid.hex,
                    epoch=epoch_id.short(),
                    location=self.objects.describe(oid),
                )

    def dropped_epochs(
        self, oids: Iterable[ObjectId] | None = None
    ) -> dict[ObjectId, DroppedEpoch]:
        """Return the drop records of epochs whose weights were dropped.

        Args:
            oids: Only these epochs (every recorded drop when None).

        Returns:
            Epoch id to its drop record; empty when the index keeps no drops.
        """
        if not isinstance(self.index, DropLog):
            return {}
        if oids is None:
            return {record.id: record for record in self.index.iter_dropped()}
        return self.index.get_dropped(oids)

    def check_weights_kept(self, epoch: Epoch) -> None:
        """Refuse an epoch whose weights a retention policy dropped.

        Raises:
            WeightsDroppedError: Saying when and by which policy.
        """
        if epoch.id is None:
            return
        record = self.dropped_epochs([epoch.id]).get(epoch.id)
        if record is not None:
            raise WeightsDroppedError(
                epoch.id.short(),
                dropped_at=time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.time_ns / 1e9)
                ),
                policy=record.policy,
            )


def check_database(path: Path) -> list[str]:
    """Run SQLite's integrity check on a database file, read-only.

    Returns:
        What SQLite found wrong, one line each; empty when the file is whole.
    """
    try:
        conn = look_at_database(path)
    except sqlite3.Error as exc:
        return [f"cannot be opened ({exc})"]
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as exc:
        return [str(exc)]
    finally:
        conn.close()
    found = [str(row[0]) for row in rows]
    return [] if found == ["ok"] else found


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
        self._params: dict[str, Value] = {}
        storage = repo.storage_options()
        limit = storage.delta_cache_bytes
        deltas = storage.encodings and storage.max_delta_depth > 0
        self._cache: DeltaCache | None = (
            DeltaCache(limit) if limit > 0 and deltas else None
        )
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

    @property
    def next_step(self) -> int:
        """The first step this session may log: one past its head's last step.

        A session forked at an epoch that ended at step 30 continues at 31, so
        its view runs on from the inherited steps without a gap or an overlap.
        A session with no epoch yet may start anywhere; this is 0 then.
        """
        if self._base is None:
            return 0
        return lineage.entry(self.repo.index, self._base).step + 1

    def set_params(self, params: Mapping[str, object]) -> None:
        """Declare hyper-parameters of the epoch in progress.

        A declared value is fixed until the epoch is committed: declaring it
        again with the same value does nothing, with another value is refused.
        ``commit`` records them (over the parent's, or with its ``params``,
        which must agree with them).

        Raises:
            InvalidInputError: If a name was declared with another value, or a
                value cannot be stored.
        """
        fresh = cast(Mapping[str, Value], canonical(dict(params)))
        self._check_params(fresh)
        self._params.update(fresh)

    def _check_params(self, params: Mapping[str, Value]) -> None:
        for key, value in params.items():
            if key in self._params and canonical(self._params[key]) != canonical(value):
                raise InvalidInputError(
                    f"hyper-parameter {key!r} of the epoch in progress on session"
                    f" {self.name!r} is already {self._params[key]!r}, refusing"
                    f" {value!r}",
                    hint="commit the epoch first; the next epoch may change it",
                )

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
            InvalidInputError: If ``step`` is not a non-negative int, is not
                after the head's last step (see ``next_step``), or a value is
                not a number.
            MetricConflictError: If a metric was logged at this step with
                another value.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InvalidInputError(f"step must be an integer >= 0, got {step!r}")
        if not values:
            return
        if self._base is not None and step < self.next_step:
            # an earlier step would overlap the history the view inherits
            raise InvalidInputError(
                f"step {step} of session {self.name!r} is not after step"
                f" {self.next_step - 1}, where its head epoch ended",
                hint=f"log from step {self.next_step} on (Session.next_step)",
            )
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
            MetricConflictError: If a summary value differs from the value
                logged for it at the epoch's step; nothing is stored.
            RefConflictError: If another writer moved the session meanwhile; the
                epoch is stored and can be kept with ``mvc branch``.
        """
        repo = self.repo
        parent = repo.read_epoch(self._base) if self._base is not None else None

        # check every input before writing anything
        summary = dict(self._docs(0, metrics or {}))
        if step is not None:
            self._check_commit_step(step, parent, summary=bool(summary))
        if params is None:
            param_value: Mapping[str, Value] = {
                **(parent.params if parent else {}),
                **self._params,
            }
        else:
            param_value = cast(Mapping[str, Value], canonical(dict(params)))
            self._check_params(param_value)
            param_value = {**self._params, **param_value}
        meta_value = cast(Mapping[str, Value], canonical(dict(meta or {})))
        if message is not None and not isinstance(message, str):
            raise InvalidInputError("message must be a string")
        if extra is not None:
            for role in extra:
                check_name(role, what="state role")

        if step is None:
            step = (
                self._last_step
                if self._last_step is not None
                else (parent.step if parent else 0)
            )
            if summary and self._last_step is None:
                # summary documents need a step of their own, after the parent's
                step = (parent.step + 1) if parent else 1
        open_epoch = self._ensure_open() if summary else self._open
        uid = open_epoch.uid if open_epoch else uuid.uuid4().hex
        if summary:
            # a summary value that differs from one logged at that step would
            # fail after the objects are stored: refuse it before (this also
            # reads the metrics database, which must be there)
            self._check_summary(uid, step, summary)

        # objects first: a crash from here on leaves only unreferenced objects;
        # the token read before them tells whether gc deleted any meanwhile
        token = repo.deletion_token()
        batch = open_batch(repo.objects)
        cache = self._cache
        if cache is not None:
            # invalid until the ref has moved: its buffers change in place
            cache.begin(self._base)
        try:
            state_id = repo._write_state(
                state,
                batch=batch,
                parent=parent.state if parent else None,
                cache=cache,
                number=parent.number + 1 if parent else 1,
            )
            graph_id = (
                repo.write_graph(graph, batch=batch)
                if graph is not None
                else (parent.graph if parent else None)
            )
            extra_ids = {
                role: repo._write_state(
                    tensors,
                    batch=batch,
                    role=role,
                    parent=parent.extra.get(role) if parent else None,
                    cache=cache,
                    number=parent.number + 1 if parent else 1,
                )
                for role, tensors in (extra or {}).items()
            }
        except BaseException:
            batch.abort()
            raise
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
        try:
            epoch_id = put_object(batch, epoch, level=_META_LEVEL)
            # one pack, fsynced with its index: the objects are durable from here
            batch.commit()
        except BaseException:
            batch.abort()
            raise
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

        # gc deletes only under the exclusive lock: checking the objects and
        # moving the ref under the shared one, a ref never reaches a removed one
        with repo.deletion_lock():
            if repo.deletion_token() != token:
                repo.check_stored(epoch_id, epoch)
            repo.index.add(epoch_id, epoch)

            # the ref last, and alone: it makes the epoch part of the session
            try:
                repo.refs.compare_and_set(
                    self.ref,
                    old=self._base,
                    new=epoch_id,
                    message=f"commit epoch {epoch.number}"
                    + (f": {message}" if message else ""),
                )
            finally:
                # the uid now belongs to the stored epoch, won or lost: never
                # reuse it
                if self._open is not None:
                    self._forget_open_epoch(self._open.uid)
                self._open = None
        self._last_step = None
        self._params = {}
        self._base = epoch_id
        if cache is not None:
            cache.publish(epoch_id)
        logger.info(
            "committed %s epoch %d as %s", self.name, epoch.number, epoch_id.short()
        )
        return replace(epoch, id=epoch_id)

    def _check_summary(self, uid: str, step: int, summary: Mapping[str, float]) -> None:
        """Refuse summary values that differ from documents logged at ``step``."""
        logged = self.repo.metrics_index.query(
            [uid], names=list(summary), min_step=step, max_step=step
        )
        for doc in logged:
            if not doc.same_value(summary[doc.name]):
                raise MetricConflictError(
                    epoch_uid=uid,
                    step=step,
                    name=doc.name,
                    stored=doc.value,
                    new=summary[doc.name],
                )

    def _check_commit_step(
        self, step: object, parent: Epoch | None, *, summary: bool
    ) -> None:
        """Refuse a step that would make the view's steps overlap or go back."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InvalidInputError(f"step must be an integer >= 0, got {step!r}")
        if self._last_step is not None and step < self._last_step:
            raise InvalidInputError(
                f"step {step} is before step {self._last_step}, where this epoch"
                " logged metrics",
                hint=f"commit with step >= {self._last_step}, or leave it out",
            )
        if parent is None:
            return
        # summary documents are logged at the epoch's step, after the parent's
        first = parent.step + 1 if summary else parent.step
        if step < first:
            raise InvalidInputError(
                f"step {step} of session {self.name!r} is not after step"
                f" {parent.step}, where its head epoch ended"
                if summary
                else f"step {step} of session {self.name!r} is before step"
                f" {parent.step}, where its head epoch ended",
                hint=f"commit with step >= {first}, or leave it out",
            )

    def _forget_open_epoch(self, uid: str) -> None:
        try:
            self.repo.refs.clear_open_epoch(self.name, uid)
        except MvcError as exc:
            # the commit's outcome stands: a row left behind has a base that is
            # no longer the head once the ref moved, and gc removes it
            logger.warning(
                "could not forget open epoch %s of session %s: %s",
                uid,
                self.name,
                exc.message,
            )

    def refresh(self) -> None:
        """Continue from the session's current head (after another writer won)."""
        self._base = self.repo.refs.get(self.ref)
        if self._open is not None:
            self.repo.refs.clear_open_epoch(self.name, self._open.uid)
            self._open = None
