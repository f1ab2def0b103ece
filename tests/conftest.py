"""Shared fixtures: an empty repository, a forked two-session history.

Every fixture builds its own repository under the test's ``tmp_path``, so tests
share no state. A repository handed out by a fixture is checked with ``fsck``
when the test ends, unless the test is marked ``damaged`` (it breaks the
repository on purpose and checks ``fsck`` itself).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from support import Forked, _commit_epochs, assert_clean

from mvcstore import Repo

# derandomised and bounded, so CI runs the same examples every time; "dev"
# searches harder when HYPOTHESIS_PROFILE=dev
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=120,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "damaged: the test damages its repository on purpose, so the fixture"
        " skips the closing fsck",
    )


@pytest.fixture
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    """An empty repository, not durable (nothing is fsynced), closed after."""
    opened = Repo.init(tmp_path, durable=False)
    try:
        yield opened
        if request.node.get_closest_marker("damaged") is None:
            assert_clean(opened)
    finally:
        opened.close()


@pytest.fixture
def forked(repo: Repo) -> Forked:
    """Session ``a`` with six epochs and ``b`` forked at ``a#4`` with two more."""
    history = Forked(repo)
    _commit_epochs(history, "a", range(1, 7), history.a)
    repo.fork("b", at="a#4")
    _commit_epochs(history, "b", range(5, 7), history.b)
    return history
