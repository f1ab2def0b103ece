"""Backend URIs in the repository config: parsing, secrets, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvcstore import Repo
from mvcstore.errors import InvalidInputError, RepositoryFormatError
from mvcstore.stores.registry import check_uri, parse_uri, redact_text, redact_uri


@pytest.mark.parametrize(
    ("part", "uri", "scheme", "path", "rest"),
    [
        ("objects", "gs://bucket-1/repo/objects", "gs", "bucket-1", "repo/objects"),
        ("objects", "gs://bucket-1", "gs", "bucket-1", ""),
        ("objects", "mongodb://127.0.0.1:27017/runs", "mongodb", "runs", ""),
        ("refs", "mongodb://h1:1,h2:2/runs?replicaSet=rs", "mongodb", "runs", ""),
        ("metrics", "es+http://127.0.0.1:9200/metrics", "es+http", "metrics", ""),
        (
            "metrics",
            "os+https://search:9200/team.metrics",
            "os+https",
            "team.metrics",
            "",
        ),
    ],
)
def test_backend_uris_parse(
    part: str, uri: str, scheme: str, path: str, rest: str
) -> None:
    parsed = parse_uri(part, uri)

    assert (parsed.scheme, parsed.path, parsed.rest) == (scheme, path, rest)
    assert check_uri(part, uri) == uri


@pytest.mark.parametrize(
    ("part", "uri"),
    [
        ("refs", "gs://bucket/refs"),
        ("objects", "es+http://h:1/index"),
        ("metrics", "mongodb://h:1/db"),
        ("objects", "s3://bucket/x"),
        ("refs", "mongodb://h:1/"),
        ("refs", "mongodb://h:1/a/b"),
        ("metrics", "os+http://h:1/Upper"),
        ("metrics", "os+http://h:1/_hidden"),
        ("objects", "gs://B/x"),
        ("objects", ""),
    ],
)
def test_unusable_uris_are_refused(part: str, uri: str) -> None:
    with pytest.raises(InvalidInputError):
        check_uri(part, uri)


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://alice:s3cret@db:27017/runs",
        "es+https://elastic:s3cret@search:9200/metrics",
        "mongodb://db:27017/runs?password=s3cret",
        "es+http://search:9200/metrics?api_key=s3cret",
    ],
)
def test_uris_with_credentials_are_refused_without_showing_them(uri: str) -> None:
    part = "metrics" if uri.startswith("es") else "refs"

    with pytest.raises(InvalidInputError) as caught:
        check_uri(part, uri)

    assert "s3cret" not in str(caught.value)
    assert "environment" in (caught.value.hint or "")


def test_redaction_strips_users_passwords_and_secret_parameters() -> None:
    uri = "mongodb://alice:s3cret@db:27017/runs?authSource=admin&password=x1"

    assert redact_uri(uri) == "mongodb://db:27017/runs?authSource=admin"
    assert "s3cret" not in redact_text(f"failed to reach {uri}: refused")
    assert "x1" not in redact_text("token=x1 and password=x1")


def test_init_writes_the_backend_uris_into_the_config(tmp_path: Path) -> None:
    with Repo.init(tmp_path, durable=False) as repo:
        assert repo.path == tmp_path / ".mvc"

    config = json.loads((tmp_path / ".mvc" / "config.json").read_text())

    assert (config["objects"], config["refs"], config["metrics"]) == ("local",) * 3


def test_init_refuses_a_secret_before_creating_anything(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        Repo.init(tmp_path, refs="mongodb://u:s3cret@127.0.0.1:1/db")

    assert not (tmp_path / ".mvc").exists()


def test_open_refuses_a_config_naming_an_unknown_backend(tmp_path: Path) -> None:
    Repo.init(tmp_path, durable=False).close()
    config_path = tmp_path / ".mvc" / "config.json"
    config = json.loads(config_path.read_text())
    config["objects"] = "s3://bucket/objects"
    config_path.write_text(json.dumps(config))

    with pytest.raises(RepositoryFormatError, match="objects backend"):
        Repo.open(tmp_path)


def test_the_embedded_default_imports_no_backend_client(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, mvcstore\n"
        f"repo = mvcstore.Repo.init({str(tmp_path)!r}, durable=False)\n"
        "repo.close()\n"
        "loaded = [m for m in ('pymongo', 'google.cloud.storage', 'elasticsearch',"
        " 'opensearchpy') if m in sys.modules]\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert out.stdout.strip() == "[]"
