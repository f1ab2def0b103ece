"""Backend URIs: parse them, hide their secrets, open the stores they name.

A repository's ``config.json`` names one backend per part (``objects``,
``refs``, ``metrics``) as ``local`` or a URI. This module owns the URI rules
for the object and ref parts, the redaction used in every message, and the
construction of the stores; it imports each backend module only when a URI
asks for it, so the embedded default never imports pymongo or the GCS client.
It must not know what sessions or revisions mean: the caller hands it the ref
prefix that marks sessions.

Credentials never live in a URI that is stored: a URI with a user or password
is refused by ``check_uri``, and the clients get them from their usual
environment at open time (``MVC_MONGO_USERNAME`` and ``MVC_MONGO_PASSWORD`` for
MongoDB, application default credentials for GCS).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mvcstore.errors import InvalidInputError
from mvcstore.stores.base import EpochIndex, ObjectStore, RefStore

if TYPE_CHECKING:
    from mvcstore.stores.mongo import MongoDatabase

__all__ = [
    "LOCAL",
    "PARTS",
    "OpenedStores",
    "BackendUri",
    "parse_uri",
    "check_uri",
    "redact_uri",
    "redact_text",
    "open_stores",
]

LOCAL: Final = "local"
"""The embedded backend of a part: files and SQLite under ``.mvc/``."""

PARTS: Final = ("objects", "refs", "metrics")

_SCHEMES: Final[dict[str, tuple[str, ...]]] = {
    "objects": ("mongodb", "mongodb+srv", "gs"),
    "refs": ("mongodb", "mongodb+srv"),
    "metrics": ("es+http", "es+https", "os+http", "os+https"),
}

_SECRET_PARAMS: Final = frozenset(
    {
        "password",
        "pass",
        "pwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "key",
        "authmechanismproperties",
        "tlscertificatekeyfilepassword",
        "sslclientcertificatekeypassword",
    }
)

_USERINFO: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_SECRET_ASSIGN: Final = re.compile(
    r"(?i)\b(password|pwd|secret|token|api_?key)=([^&\s'\"]+)"
)
_INDEX_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,254}")
_BUCKET_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_DB_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,63}")


def redact_uri(uri: str) -> str:
    """Return ``uri`` without a user, password or secret query parameter.

    Args:
        uri: Any URI (or ``local``).

    Returns:
        The URI safe to show in a message or a log line.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return redact_text(uri)
    if not parts.scheme or not parts.netloc:
        return redact_text(uri)
    netloc = parts.netloc.rpartition("@")[2]
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key.lower() not in _SECRET_PARAMS
    ]
    return urlunsplit(
        (parts.scheme, netloc, parts.path, urlencode(query, safe=",:/"), "")
    )


def redact_text(text: str) -> str:
    """Return ``text`` with any ``user:password@`` and ``password=...`` removed.

    Third-party error messages pass through this before they reach a message.
    """
    text = _USERINFO.sub(lambda match: match.group("scheme"), text)
    return _SECRET_ASSIGN.sub(lambda match: f"{match.group(1)}=***", text)


@dataclass(frozen=True, slots=True)
class BackendUri:
    """A parsed backend URI.

    Attributes:
        part: The repository part it serves (``objects``, ``refs``, ``metrics``).
        scheme: The URI scheme (``mongodb``, ``gs``, ``es+http``...).
        uri: The URI as stored in the config (it holds no secret).
        location: The URI with its query removed, for messages.
        host: ``HOST:PORT`` (several, comma-separated, for MongoDB).
        path: The first path segment: database, bucket or index name.
        rest: The rest of the path: the GCS object prefix.
    """

    part: str
    scheme: str
    uri: str
    location: str
    host: str
    path: str
    rest: str = ""
    query: Mapping[str, str] = field(default_factory=dict)


def parse_uri(part: str, uri: str) -> BackendUri:
    """Parse the URI of a repository part.

    Args:
        part: ``objects``, ``refs`` or ``metrics``.
        uri: The URI.

    Returns:
        The parsed URI.

    Raises:
        InvalidInputError: If the part is unknown, the scheme does not serve
            that part, or a database, bucket or index name is missing or
            malformed.
    """
    if part not in _SCHEMES:
        raise InvalidInputError(
            f"unknown repository part {part!r}", hint="use objects, refs or metrics"
        )
    shown = redact_uri(uri)
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise InvalidInputError(f"{part} URI {shown!r} is malformed ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES[part]:
        allowed = ", ".join(f"{name}://" for name in _SCHEMES[part])
        raise InvalidInputError(
            f"{part} URI {shown!r} has an unsupported scheme",
            hint=f"use 'local' or a URI starting with one of: {allowed}",
        )
    host = parts.netloc.rpartition("@")[2]
    segments = [segment for segment in parts.path.split("/") if segment]
    first = segments[0] if segments else ""
    rest = "/".join(segments[1:])
    if not host:
        raise InvalidInputError(f"{part} URI {shown!r} names no host or bucket")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "gs":
        # gs://BUCKET/PREFIX: the bucket is the "host"
        if not _BUCKET_NAME.fullmatch(host):
            raise InvalidInputError(f"{part} URI {shown!r}: bad bucket name {host!r}")
        return BackendUri(
            part=part,
            scheme=scheme,
            uri=uri,
            location=f"gs://{host}/{parts.path.strip('/')}".rstrip("/"),
            host=host,
            path=host,
            rest=parts.path.strip("/"),
            query=query,
        )
    if scheme.startswith("mongodb"):
        if not _DB_NAME.fullmatch(first) or rest:
            raise InvalidInputError(
                f"{part} URI {shown!r} must name one database, as"
                " mongodb://HOST:PORT/DATABASE",
            )
    elif not _INDEX_NAME.fullmatch(first) or rest or first.startswith((".", "_")):
        raise InvalidInputError(
            f"{part} URI {shown!r} must name one index in lower case, as"
            f" {scheme}://HOST:PORT/INDEX",
        )
    return BackendUri(
        part=part,
        scheme=scheme,
        uri=uri,
        location=f"{scheme}://{host}/{first}",
        host=host,
        path=first,
        rest=rest,
        query=query,
    )


def check_uri(part: str, uri: str) -> str:
    """Return ``uri`` if it may be stored in a repository config for ``part``.

    Args:
        part: ``objects``, ``refs`` or ``metrics``.
        uri: ``local`` or a backend URI.

    Returns:
        The URI to store.

    Raises:
        InvalidInputError: If it is malformed, serves another part, or holds a
            user, password or other secret.
    """
    if uri == LOCAL:
        return uri
    if not isinstance(uri, str) or not uri:
        raise InvalidInputError(f"{part} backend must be 'local' or a URI")
    parsed = parse_uri(part, uri)
    netloc = urlsplit(uri).netloc
    secret_params = [key for key in parsed.query if key.lower() in _SECRET_PARAMS]
    if "@" in netloc or secret_params:
        raise InvalidInputError(
            f"{part} URI {redact_uri(uri)!r} holds credentials, which are never"
            " stored in a repository config",
            hint="remove them from the URI and set them in the environment"
            " (see docs/backends.md)",
        )
    return uri


@dataclass(slots=True)
class OpenedStores:
    """The object store, ref store and epoch index of one repository.

    Attributes:
        objects: Where objects live.
        refs: Where refs, the reflog, HEAD and open epochs live.
        index: The epoch index (it lives beside the refs).
        closers: Things with a ``close()`` to call when the repository closes.
    """

    objects: ObjectStore
    refs: RefStore
    index: EpochIndex
    closers: list[object] = field(default_factory=list)


def open_stores(
    config: Mapping[str, object],
    *,
    root: Path,
    durable: bool,
    session_prefix: str,
    create: bool = False,
) -> OpenedStores:
    """Open the object store, ref store and epoch index a config names.

    Args:
        config: The repository config (``objects`` and ``refs`` entries).
        root: The ``.mvc`` folder, home of the embedded parts.
        durable: Whether embedded parts fsync.
        session_prefix: The ref prefix of sessions, for the MongoDB platform
            collections that mirror each session.
        create: The repository is being created: make its embedded database
            (opened later, a missing one is an error).

    Returns:
        The opened stores.

    Raises:
        InvalidInputError: If a URI is malformed.
        BackendUnavailableError: If a backend client cannot be built.
    """
    objects_uri = str(config.get("objects", LOCAL))
    refs_uri = str(config.get("refs", LOCAL))
    closers: list[object] = []
    mongo: dict[tuple[str, str], object] = {}

    objects: ObjectStore
    if objects_uri == LOCAL:
        from mvcstore.stores.local import LocalObjectStore

        (root / "objects").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(exist_ok=True)
        objects = LocalObjectStore(root / "objects", root / "tmp", durable=durable)
    else:
        parsed = parse_uri("objects", objects_uri)
        if parsed.scheme == "gs":
            from mvcstore.stores.gcs import GcsObjectStore

            gcs = GcsObjectStore(parsed.path, parsed.rest)
            closers.append(gcs)
            objects = gcs
        else:
            from mvcstore.stores.mongo import MongoObjectStore

            objects = MongoObjectStore(_mongo_database(parsed, mongo, closers))

    refs: RefStore
    index: EpochIndex
    if refs_uri == LOCAL:
        from mvcstore.stores.local import (
            SqliteDatabase,
            SqliteEpochIndex,
            SqliteRefStore,
        )

        identity = config.get("id")
        db = SqliteDatabase(
            root / "index.sqlite",
            durable=durable,
            create=create,
            repository=identity if isinstance(identity, str) else None,
        )
        closers.append(db)
        refs = SqliteRefStore(db)
        index = SqliteEpochIndex(db)
    else:
        from mvcstore.stores.mongo import (
            MongoEpochIndex,
            MongoPlatformMirror,
            MongoRefStore,
        )

        database = _mongo_database(parse_uri("refs", refs_uri), mongo, closers)
        mongo_index = MongoEpochIndex(database)
        mirror = MongoPlatformMirror(
            database, objects=objects, index=mongo_index, session_prefix=session_prefix
        )
        refs = MongoRefStore(database, mirror=mirror)
        index = mongo_index
    return OpenedStores(objects=objects, refs=refs, index=index, closers=closers)


def _mongo_database(
    parsed: BackendUri, cache: dict[tuple[str, str], object], closers: list[object]
) -> MongoDatabase:
    from mvcstore.stores.mongo import MongoDatabase

    # objects and refs at one URI share one client (one connection pool)
    key = (parsed.uri, parsed.path)
    found = cache.get(key)
    if isinstance(found, MongoDatabase):
        return found
    database = MongoDatabase(
        parsed.uri,
        username=os.environ.get("MVC_MONGO_USERNAME"),
        password=os.environ.get("MVC_MONGO_PASSWORD"),
    )
    cache[key] = database
    closers.append(database)
    return database
