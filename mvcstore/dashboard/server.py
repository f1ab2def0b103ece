"""The local web dashboard: one static page and a small JSON API, on loopback only.

``serve`` runs a standard-library ``ThreadingHTTPServer`` on 127.0.0.1. Every
API request opens the repository afresh, so a commit made by a trainer shows
up on the next request without a restart. The page (``page.PAGE``) is served
from memory and needs no network: its drawing is inline SVG and its script is
inline. Requests whose ``Host`` header names another host than the loopback
address are refused, so a web page elsewhere cannot reach the API through a
DNS name that resolves to 127.0.0.1.

API (all ``GET``, JSON):

- ``/api/lineage``: sessions, tags and every epoch they reach.
- ``/api/view?rev=R&metric=M``: the metrics of R's view and the points of M,
  each marked inherited (committed on another session) or own.
- ``/api/compare?rev=A&rev=B...``: ``compare`` of the revisions.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlsplit

from mvcstore import lineage
from mvcstore.dashboard.compare import compare
from mvcstore.dashboard.page import PAGE
from mvcstore.dashboard.views import MetricSummary, Point, open_view, summarize
from mvcstore.errors import InvalidInputError, MvcError, RevisionNotFoundError
from mvcstore.repo import Repo

__all__ = ["LOOPBACK_HOSTS", "make_server", "serve"]

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost")
"""The only hosts the dashboard listens on; both bind 127.0.0.1."""
_MAX_POINTS: Final = 20_000
"""Points sent for one curve; a longer series is thinned evenly."""


def _clean(value: object) -> object:
    """Return ``value`` with NaN and infinities as None, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def lineage_json(repo: Repo) -> dict[str, object]:
    """Return every session and tag with the epochs they reach."""
    sessions = repo.sessions()
    tags = repo.tags()
    heads = [oid for _, oid in sessions] + [oid for _, oid in tags]
    entries = repo.index.get_many(lineage.reachable(repo.index, heads)) if heads else {}
    head_session = repo.head_session()
    return {
        "head": head_session,
        "sessions": [
            {
                "name": name,
                "head": oid.hex,
                "number": entries[oid].number if oid in entries else None,
                "step": entries[oid].step if oid in entries else None,
            }
            for name, oid in sessions
        ],
        "tags": [{"name": name, "epoch": oid.hex} for name, oid in tags],
        "epochs": [
            {
                "id": entry.id.hex,
                "session": entry.session,
                "number": entry.number,
                "step": entry.step,
                "parents": [parent.hex for parent in entry.parents],
                "time_ns": entry.time_ns,
            }
            for entry in sorted(entries.values(), key=lambda e: (e.time_ns, e.number))
        ],
    }


def _thin(points: list[dict[str, object]]) -> list[dict[str, object]]:
    if len(points) <= _MAX_POINTS:
        return points
    stride = math.ceil(len(points) / _MAX_POINTS)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def view_json(repo: Repo, revision: str, metric: str | None) -> dict[str, object]:
    """Return the metric names of a view and the points of one metric."""
    view = open_view(repo, revision)
    stats = summarize(repo, revision, view=view)
    names = sorted(stats)
    if metric is None or metric not in stats:
        metric = "loss" if "loss" in stats else (names[0] if names else None)
    own_session = view.session
    if own_session is None and view.head is not None:
        own_session = lineage.entry(repo.index, view.head).session
    points: list[dict[str, object]] = []
    if metric is not None:
        for doc in repo.metrics_index.query(view.uids(), names=[metric]):
            epoch = view.epoch(doc.uid)
            points.append(
                {
                    "step": doc.step,
                    "value": doc.value,
                    "session": epoch.session if epoch else None,
                    "number": epoch.number if epoch else None,
                    "open": bool(epoch and epoch.is_open),
                    "own": bool(epoch and epoch.session == own_session),
                }
            )
    inherited = sum(1 for point in points if not point["own"])
    return {
        "revision": revision,
        "session": own_session,
        "metric": metric,
        "metrics": [_metric_json(stats[name]) for name in names],
        "points": _thin(points),
        "count": len(points),
        "inherited": inherited,
        "own": len(points) - inherited,
        "epochs": len(view.epochs),
    }


def _point_json(point: Point) -> dict[str, object]:
    return {"step": point.step, "value": point.value, "number": point.number}


def _metric_json(item: MetricSummary) -> dict[str, object]:
    return {
        "name": item.name,
        "count": item.count,
        "latest": _point_json(item.latest),
        "min": _point_json(item.min),
        "max": _point_json(item.max),
    }


def compare_json(repo: Repo, revisions: list[str]) -> dict[str, object]:
    """Return ``compare`` of the revisions as JSON."""
    result = compare(repo, revisions)
    return {
        "models": [
            {
                "revision": model.revision,
                "head": f"{model.head.session}#{model.head.number}",
                "fork_point": (
                    f"{model.fork_point.session}#{model.fork_point.number}"
                    if model.fork_point is not None
                    else None
                ),
                "epochs": model.epochs,
                "own_epochs": model.own_epochs,
                "params": model.size.params,
                "nodes": model.size.nodes,
                "plans": [
                    f"{use.plan} (#{use.first}-#{use.last})" for use in model.plans
                ],
                "graph_changes": model.graph_changes,
                "metrics": {
                    name: _metric_json(item) for name, item in model.metrics.items()
                },
            }
            for model in result.models
        ]
    }


class _Handler(BaseHTTPRequestHandler):
    """Serves the page and the API for the repository at ``server.root``."""

    server: _Server
    server_version = "mvc-ui"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        logger.debug("ui: " + format, *args)

    def _allowed_host(self) -> bool:
        host = self.headers.get("Host", "")
        port = self.server.server_address[1]
        return host in {f"{name}:{port}" for name in LOOPBACK_HOSTS}

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src"
            " 'unsafe-inline'; connect-src 'self'; img-src data:",
        )
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: object) -> None:
        body = json.dumps(_clean(value), allow_nan=False).encode()
        self._send(status, body, "application/json")

    def do_GET(self) -> None:  # noqa: N802
        """Answer one request."""
        if not self._allowed_host():
            self._json(HTTPStatus.FORBIDDEN, {"error": "host not allowed"})
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            return
        routes: dict[str, Callable[[Repo], object]] = {
            "/api/lineage": lineage_json,
            "/api/view": lambda repo: view_json(
                repo, _one(query, "rev"), query.get("metric", [None])[0]
            ),
            "/api/compare": lambda repo: compare_json(repo, query.get("rev", [])),
        }
        route = routes.get(url.path)
        if route is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {url.path}"})
            return
        try:
            # opened per request: what a trainer committed since is seen now
            with Repo.open(self.server.root) as repo:
                answer = route(repo)
        except RevisionNotFoundError as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": exc.message, "hint": exc.hint})
            return
        except MvcError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": exc.message, "hint": exc.hint})
            return
        self._json(HTTPStatus.OK, answer)


def _one(query: dict[str, list[str]], key: str) -> str:
    values = query.get(key)
    if not values:
        raise InvalidInputError(f"parameter {key!r} is missing")
    return values[0]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, address: tuple[str, int]) -> None:
        self.root = root
        super().__init__(address, _Handler)


def make_server(root: Path, *, host: str = "127.0.0.1", port: int = 0) -> _Server:
    """Create (not start) the dashboard server for the repository at ``root``.

    Args:
        root: The ``.mvc`` folder.
        host: ``127.0.0.1`` or ``localhost``; anything else is refused.
        port: The port; 0 picks a free one.

    Raises:
        InvalidInputError: If ``host`` is not a loopback name, or the port
            cannot be bound.
    """
    if host not in LOOPBACK_HOSTS:
        raise InvalidInputError(
            f"refusing to serve the dashboard on host {host!r}: it listens on"
            " 127.0.0.1 only",
            hint="run 'mvc ui' without --host and reach it through an SSH tunnel",
        )
    try:
        return _Server(root, ("127.0.0.1", port))
    except OSError as exc:
        raise InvalidInputError(
            f"cannot listen on 127.0.0.1 port {port} ({exc.strerror})",
            hint="choose another port with 'mvc ui --port P', or --port 0",
        ) from exc


def serve(
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C returns normally).

    Args:
        root: The ``.mvc`` folder.
        host: ``127.0.0.1`` or ``localhost``.
        port: The port; 0 picks a free one.
        ready: Called with the page's URL once the server listens.

    Raises:
        InvalidInputError: If the host is not loopback or the port is taken.
    """
    server = make_server(root, host=host, port=port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    logger.info("dashboard for %s at %s", root, url)
    if ready is not None:
        ready(url)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        logger.info("dashboard stopped")
    finally:
        server.server_close()
