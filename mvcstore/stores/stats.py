"""Storage figures of a set of epochs: logical, unique and stored bytes.

For the epochs given, this layer adds up the tensor data they hold as if each
epoch were stored whole (logical), the data of their distinct blobs (what
deduplication leaves), and the bytes their objects take in the store, frames
of every kind included, with the blobs split by how they are stored: as
deltas, or whole (raw, zstandard, byte planes, packed bits). It reads objects
and frame headers only through the store protocol; it decides nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from mvcstore.codec import (
    DELTA_ENCODINGS,
    DEPENDENCY_PREFIX,
    ENCODING_CHUNKED,
    ENCODINGS,
    FRAME_HEADER_SIZE,
    ObjectId,
    frame_dependencies,
)
from mvcstore.errors import CorruptObjectError
from mvcstore.objects import Epoch, State, Tensor
from mvcstore.stores.base import ObjectStore, get_object, read_frame_prefix

__all__ = ["UsageStats", "RepoStats", "UsageReader"]


@dataclass(frozen=True, slots=True)
class UsageStats:
    """What a set of epochs holds and what it costs in the store.

    Attributes:
        epochs: How many epochs.
        tensors: Tensors summed over the epochs (weights and extra states).
        logical_bytes: Their data, as if every epoch were stored whole.
        unique_bytes: The data of their distinct blobs (after deduplication).
        stored_bytes: The stored frames of every distinct object they need:
            epochs, states, tensors, graphs, blobs, chunks and delta bases.
        data_stored_bytes: The part of ``stored_bytes`` that is tensor data.
        delta_bytes: Data (of distinct blobs or chunks) stored as deltas.
        delta_stored_bytes: What those deltas take.
        whole_bytes: Data stored whole (raw, zstandard, planes or bits).
        whole_stored_bytes: What those take.
        encodings: Distinct blobs and chunks by encoding name.
    """

    epochs: int = 0
    tensors: int = 0
    logical_bytes: int = 0
    unique_bytes: int = 0
    stored_bytes: int = 0
    data_stored_bytes: int = 0
    delta_bytes: int = 0
    delta_stored_bytes: int = 0
    whole_bytes: int = 0
    whole_stored_bytes: int = 0
    encodings: tuple[tuple[str, int], ...] = ()

    @property
    def dedup_ratio(self) -> float:
        """Logical over unique bytes: what sharing equal data saves."""
        return _ratio(self.logical_bytes, self.unique_bytes)

    @property
    def delta_ratio(self) -> float:
        """Data over stored bytes of the blobs stored as deltas."""
        return _ratio(self.delta_bytes, self.delta_stored_bytes)

    @property
    def compression_ratio(self) -> float:
        """Data over stored bytes of the blobs stored whole."""
        return _ratio(self.whole_bytes, self.whole_stored_bytes)

    @property
    def ratio(self) -> float:
        """Logical bytes over every stored byte: all savings together."""
        return _ratio(self.logical_bytes, self.stored_bytes)

    def to_json(self) -> dict[str, object]:
        """Return the figures and ratios as a JSON-ready dict."""
        return {
            "epochs": self.epochs,
            "tensors": self.tensors,
            "logical_bytes": self.logical_bytes,
            "unique_bytes": self.unique_bytes,
            "stored_bytes": self.stored_bytes,
            "data_stored_bytes": self.data_stored_bytes,
            "delta_bytes": self.delta_bytes,
            "delta_stored_bytes": self.delta_stored_bytes,
            "whole_bytes": self.whole_bytes,
            "whole_stored_bytes": self.whole_stored_bytes,
            "encodings": dict(self.encodings),
            "ratios": {
                "total": self.ratio,
                "dedup": self.dedup_ratio,
                "delta": self.delta_ratio,
                "compression": self.compression_ratio,
            },
        }


@dataclass(frozen=True, slots=True)
class RepoStats:
    """Storage figures per session and in total.

    Attributes:
        total: Every epoch in scope; a shared object counts once.
        sessions: The epochs committed on each session, by name; an object
            two sessions need counts in both.
    """

    total: UsageStats
    sessions: dict[str, UsageStats]

    def to_json(self) -> dict[str, object]:
        """Return the figures as a JSON-ready dict."""
        return {
            "total": self.total.to_json(),
            "sessions": {
                name: usage.to_json() for name, usage in self.sessions.items()
            },
        }


def _ratio(top: int, bottom: int) -> float:
    return top / bottom if bottom else 0.0


@dataclass(frozen=True, slots=True)
class _Frame:
    size: int
    stored: int
    encoding: int
    needs: tuple[ObjectId, ...]


class UsageReader:
    """Computes ``UsageStats``, reading each object once across calls.

    Args:
        store: The store holding the epochs.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._epochs: dict[ObjectId, Epoch] = {}
        self._states: dict[ObjectId, State] = {}
        self._tensors: dict[ObjectId, Tensor] = {}
        self._frames: dict[ObjectId, _Frame] = {}

    def usage(
        self, epoch_ids: Iterable[ObjectId], *, dropped: Collection[ObjectId] = ()
    ) -> UsageStats:
        """Return the figures of the given epochs.

        Args:
            epoch_ids: The epochs.
            dropped: Epochs whose weights a retention policy dropped: only
                their records and graphs count.

        Raises:
            ObjectNotFoundError: If an object they need is missing.
            CorruptObjectError: If one does not verify.
        """
        epochs = list(dict.fromkeys(epoch_ids))
        logical = tensors = 0
        needed: dict[ObjectId, None] = {}
        blobs: dict[ObjectId, int] = {}
        for epoch_id in epochs:
            epoch = self._epoch(epoch_id)
            needed[epoch_id] = None
            if epoch.graph is not None:
                needed[epoch.graph] = None
            states = [] if epoch_id in dropped else [epoch.state, *epoch.extra.values()]
            for state_id in states:
                if state_id is None:
                    continue
                needed[state_id] = None
                for tensor_id in self._state(state_id).tensors.values():
                    tensor = self._tensor(tensor_id)
                    needed[tensor_id] = None
                    blobs[tensor.data] = tensor.nbytes
                    logical += tensor.nbytes
                    tensors += 1

        # blobs with what their frames need: chunks and delta bases
        data: dict[ObjectId, None] = {}
        pending = list(blobs)
        while pending:
            oid = pending.pop()
            if oid in data:
                continue
            data[oid] = None
            pending.extend(self._frame(oid).needs)

        counts: dict[str, int] = {}
        delta = delta_stored = whole = whole_stored = data_stored = 0
        for oid in data:
            frame = self._frame(oid)
            data_stored += frame.stored
            if frame.encoding == ENCODING_CHUNKED:
                continue
            name = ENCODINGS[frame.encoding]
            counts[name] = counts.get(name, 0) + 1
            if frame.encoding in DELTA_ENCODINGS:
                delta += frame.size
                delta_stored += frame.stored
            else:
                whole += frame.size
                whole_stored += frame.stored
        other = sum(self._frame(oid).stored for oid in needed)
        return UsageStats(
            epochs=len(epochs),
            tensors=tensors,
            logical_bytes=logical,
            unique_bytes=sum(blobs.values()),
            stored_bytes=other + data_stored,
            data_stored_bytes=data_stored,
            delta_bytes=delta,
            delta_stored_bytes=delta_stored,
            whole_bytes=whole,
            whole_stored_bytes=whole_stored,
            encodings=tuple(sorted(counts.items())),
        )

    def _epoch(self, oid: ObjectId) -> Epoch:
        found = self._epochs.get(oid)
        if found is None:
            obj = get_object(self.store, oid)
            found = obj if isinstance(obj, Epoch) else Epoch()
            self._epochs[oid] = found
        return found

    def _state(self, oid: ObjectId) -> State:
        found = self._states.get(oid)
        if found is None:
            obj = get_object(self.store, oid)
            found = obj if isinstance(obj, State) else State()
            self._states[oid] = found
        return found

    def _tensor(self, oid: ObjectId) -> Tensor:
        found = self._tensors.get(oid)
        if found is None:
            obj = get_object(self.store, oid)
            found = obj if isinstance(obj, Tensor) else Tensor()
            self._tensors[oid] = found
        return found

    def _frame(self, oid: ObjectId) -> _Frame:
        found = self._frames.get(oid)
        if found is not None:
            return found
        head = read_frame_prefix(self.store, oid, DEPENDENCY_PREFIX)
        if len(head) > FRAME_HEADER_SIZE and head[6] == ENCODING_CHUNKED:
            head = self.store.get_framed(oid)
        try:
            needs = tuple(frame_dependencies(head))
        except CorruptObjectError as exc:
            raise CorruptObjectError(
                oid.hex, exc.reason, location=self.store.describe(oid)
            ) from exc
        stat = getattr(self.store, "stat_object", None)
        if callable(stat):
            stored = int(stat(oid)[0])
        else:
            stored = len(self.store.get_framed(oid))
        size = int.from_bytes(head[8:16], "little")
        found = _Frame(size=size, stored=stored, encoding=head[6], needs=needs)
        self._frames[oid] = found
        return found
