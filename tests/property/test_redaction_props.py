"""Credentials in backend URIs never survive redaction, whatever the URI."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

registry = pytest.importorskip("mvcstore.stores.registry")

# secrets use upper-case letters only, so they can never be part of a scheme,
# host, path or parameter name drawn from lower-case ones
secrets = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=6, max_size=20)
words = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
schemes = st.sampled_from(["mongodb", "mongodb+srv", "gs", "es+http", "os+https"])


@given(schemes, words, secrets, words, st.integers(1, 65535), words)
def test_a_password_in_the_user_info_is_removed(
    scheme: str, user: str, password: str, host: str, port: int, path: str
) -> None:
    uri = f"{scheme}://{user}:{password}@{host}:{port}/{path}"

    for redacted in (registry.redact_uri(uri), registry.redact_text(f"failed: {uri}")):
        assert password not in redacted
        assert "@" not in redacted
        assert host in redacted


@given(
    schemes,
    words,
    st.sampled_from(["password", "pwd", "secret", "token", "apiKey", "api_key"]),
    secrets,
)
def test_a_secret_query_parameter_is_removed(
    scheme: str, host: str, name: str, secret: str
) -> None:
    uri = f"{scheme}://{host}:1/db?tls=true&{name}={secret}"

    assert secret not in registry.redact_uri(uri)
    assert secret not in registry.redact_text(f"cannot connect to {uri} (timeout)")
