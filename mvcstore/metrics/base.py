"""The metrics index protocol: metric documents keyed by epoch uid.

A metric document is one value of one metric at one step of one epoch. The
index stores each document once; a view is chosen by the caller as a set of
epoch uids (the lineage layer computes it), so forks never copy a document.
This layer must not compute reachability itself.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mvcstore.errors import InvalidInputError

__all__ = [
    "MetricDoc",
    "MetricStats",
    "MetricsIndex",
    "check_metric_name",
    "check_value",
]


@dataclass(frozen=True, slots=True)
class MetricDoc:
    """One metric value.

    Attributes:
        uid: The uid of the epoch that logged it.
        step: The training step.
        name: The metric name.
        value: The value (NaN and infinities allowed).
        time_ns: When it was logged; not part of its identity.
    """

    uid: str
    step: int
    name: str
    value: float
    time_ns: int = 0

    def same_value(self, other: float) -> bool:
        """Return whether ``other`` is the same value (NaN equals NaN)."""
        if math.isnan(self.value) and math.isnan(other):
            return True
        return self.value == other


@dataclass(frozen=True, slots=True)
class MetricStats:
    """Aggregates of one metric over a view.

    Attributes:
        name: The metric name.
        count: How many documents.
        first_step: The smallest step.
        last_step: The largest step.
        last: The value at the largest step.
        min: The smallest value (NaN ignored), or NaN if none.
        min_step: The step of the smallest value.
        max: The largest value (NaN ignored), or NaN if none.
        max_step: The step of the largest value.
    """

    name: str
    count: int
    first_step: int
    last_step: int
    last: float
    min: float
    min_step: int
    max: float
    max_step: int


def check_metric_name(name: object) -> str:
    """Return ``name`` if it is a usable metric name.

    Raises:
        InvalidInputError: If it is empty, too long or holds control characters.
    """
    if not isinstance(name, str):
        raise InvalidInputError(
            f"metric name {name!r} is not a string ({type(name).__name__})"
        )
    if not name or len(name) > 200:
        raise InvalidInputError(f"metric name {name!r} must be 1 to 200 characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise InvalidInputError(f"metric name {name!r} holds control characters")
    return name


def check_value(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a number.

    Raises:
        InvalidInputError: If it is not a real number (bools are refused).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        item = getattr(value, "item", None)
        if callable(item) and getattr(value, "shape", None) == ():
            return check_value(name, item())
        raise InvalidInputError(
            f"metric {name!r} must be a number, got {type(value).__name__} {value!r}"
        )
    return float(value)


@runtime_checkable
class MetricsIndex(Protocol):
    """Metric documents by epoch uid, queried by sets of uids."""

    def add(self, docs: Sequence[MetricDoc]) -> int:
        """Store documents; one already stored with the same value is skipped.

        Returns:
            How many documents were new.

        Raises:
            MetricConflictError: If a document exists with another value; no
                document of the batch is stored then.
        """
        ...

    def query(
        self,
        uids: Collection[str],
        *,
        names: Collection[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> Iterator[MetricDoc]:
        """Yield the documents of ``uids``, ordered by step then name.

        Implementations stream: a view of millions of documents is never
        held in memory at once.
        """
        ...

    def count(self, uids: Collection[str]) -> int:
        """Return how many documents ``uids`` hold."""
        ...

    def stats(
        self,
        uids: Collection[str],
        *,
        names: Collection[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> dict[str, MetricStats]:
        """Return latest, min and max of each metric over ``uids``.

        Of several documents holding the min (or max), the earliest step is
        reported; ``min_step`` and ``max_step`` bound the steps considered.
        """
        ...

    def values_at(self, points: Mapping[str, int], name: str) -> dict[str, float]:
        """Return the value of metric ``name`` each epoch uid logged at one step.

        Args:
            points: Epoch uid to the step to read (usually the epoch's last).
            name: The metric.

        Returns:
            Epoch uid to value, for the epochs that logged ``name`` there.
        """
        ...

    def delete_uids(self, uids: Collection[str]) -> int:
        """Remove every document of ``uids`` (garbage collection only)."""
        ...

    def iter_uids(self) -> Iterator[str]:
        """Yield every uid that holds documents."""
        ...

    def flush(self) -> None:
        """Make every document added so far durable."""
        ...
