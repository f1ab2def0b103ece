"""Open the metrics index a repository config names.

``local`` is the embedded SQLite index; ``es+http://HOST:PORT/INDEX`` is
Elasticsearch 8 and ``os+http://HOST:PORT/INDEX`` OpenSearch (``+https`` for
TLS). The client is chosen by the scheme, never by asking the server what it
is. Backend modules are imported only when a URI asks for them. Credentials
come from the environment at open time, never from the config:
``MVC_ELASTIC_API_KEY`` or ``MVC_ELASTIC_USERNAME`` and ``MVC_ELASTIC_PASSWORD``
for Elasticsearch, ``MVC_OPENSEARCH_USERNAME`` and ``MVC_OPENSEARCH_PASSWORD``
for OpenSearch.
"""

from __future__ import annotations

import os
from pathlib import Path

from mvcstore.metrics.base import MetricsIndex
from mvcstore.stores.registry import LOCAL, parse_uri

__all__ = ["open_metrics_index"]


def open_metrics_index(
    uri: str, *, root: Path, durable: bool, create: bool = False
) -> tuple[MetricsIndex, list[object]]:
    """Open the metrics index ``uri`` names.

    Args:
        uri: ``local`` or a metrics URI.
        root: The ``.mvc`` folder, home of the embedded index.
        durable: Whether the embedded index fsyncs.
        create: Make the embedded index's file if it is missing (a new
            repository, or one with no epoch yet); otherwise a missing file is
            an error when first used.

    Returns:
        The index, and what to close with the repository.

    Raises:
        InvalidInputError: If the URI is malformed.
    """
    if uri == LOCAL:
        from mvcstore.metrics.sqlite import SqliteMetricsIndex

        local = SqliteMetricsIndex(
            root / "metrics.sqlite", durable=durable, create=create
        )
        return local, [local]
    parsed = parse_uri("metrics", uri)
    url = f"{parsed.scheme.split('+', 1)[1]}://{parsed.host}"
    if parsed.scheme.startswith("es+"):
        from mvcstore.metrics.elastic import ElasticMetricsIndex

        elastic = ElasticMetricsIndex(
            url,
            parsed.path,
            api_key=os.environ.get("MVC_ELASTIC_API_KEY"),
            username=os.environ.get("MVC_ELASTIC_USERNAME"),
            password=os.environ.get("MVC_ELASTIC_PASSWORD"),
        )
        return elastic, [elastic]
    from mvcstore.metrics.elastic import OpenSearchMetricsIndex

    search = OpenSearchMetricsIndex(
        url,
        parsed.path,
        username=os.environ.get("MVC_OPENSEARCH_USERNAME"),
        password=os.environ.get("MVC_OPENSEARCH_PASSWORD"),
    )
    return search, [search]
