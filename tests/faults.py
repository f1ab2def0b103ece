"""Fault injection: wrappers that make the Nth write of any store fail.

``FaultPlan.install(repo)`` wraps the repository's object store, ref store,
epoch index and metrics index. Every call that changes stored state (or makes
it durable) counts as one write, across all four; the plan's ``fail_at``-th
write raises ``BackendUnavailableError`` (or the error ``make_error`` builds)
instead of running. With ``fail_at=None`` the plan only counts, so a test first
learns how many writes an operation makes, then fails each one in turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mvcstore import Repo
from mvcstore.errors import BackendUnavailableError

WRITES: dict[str, tuple[str, ...]] = {
    "objects": ("put_if_absent", "delete", "delete_many", "flush"),
    "refs": ("compare_and_set", "set_head", "set_open_epoch", "clear_open_epoch"),
    "index": ("add", "delete", "add_dropped"),
    "metrics_index": ("add", "delete_uids", "flush"),
}
"""The methods of each part of a ``Repo`` that write."""


@dataclass
class FaultPlan:
    """Counts writes and fails one of them.

    Attributes:
        fail_at: Which write fails (1-based), or None to only count.
        make_error: Builds the error raised, from the write's description.
        writes: Every write seen, as ``part.method``, in order.
        failed: The write that failed, if any.
    """

    fail_at: int | None = None
    make_error: Callable[[str], BaseException] | None = None
    writes: list[str] = field(default_factory=list)
    failed: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, repo: Repo) -> None:
        """Wrap every part of ``repo`` so that its writes go through the plan."""
        for part, methods in WRITES.items():
            setattr(repo, part, _Faulty(getattr(repo, part), self, part, methods))

    def check(self, what: str) -> None:
        """Count one write; raise if it is the one to fail."""
        with self._lock:
            self.writes.append(what)
            failing = len(self.writes) == self.fail_at
            if failing:
                self.failed = what
        if failing:
            if self.make_error is not None:
                raise self.make_error(what)
            raise BackendUnavailableError(
                "fault-injection", f"injected failure of write {self.fail_at} ({what})"
            )


class _Faulty:
    """Forwards everything to ``inner``; its write methods check the plan first."""

    def __init__(
        self, inner: object, plan: FaultPlan, part: str, methods: tuple[str, ...]
    ) -> None:
        self._inner = inner
        self._plan = plan
        self._part = part
        self._methods = methods

    def __getattr__(self, name: str) -> object:
        value = getattr(self._inner, name)
        if name not in self._methods or not callable(value):
            return value
        plan, what = self._plan, f"{self._part}.{name}"

        def write(*args: object, **kwargs: object) -> object:
            plan.check(what)
            return value(*args, **kwargs)

        return write
