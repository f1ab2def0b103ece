"""Every error mvcstore raises on purpose.

This module owns the error hierarchy and nothing else: it imports nothing from
mvcstore. Each error keeps the ids, names, paths or URIs involved as attributes
and may carry a ``hint``, one imperative sentence naming the command that helps.
Messages start lower-case, name the thing exactly and end without a full stop.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "MvcError",
    "RepositoryNotFoundError",
    "RepositoryFormatError",
    "InvalidInputError",
    "InvalidNameError",
    "RevisionNotFoundError",
    "AmbiguousRevisionError",
    "ObjectNotFoundError",
    "EpochIncompleteError",
    "CorruptObjectError",
    "RefConflictError",
    "NonFastForwardError",
    "MetricConflictError",
    "BackendUnavailableError",
    "WeightsDroppedError",
]


class MvcError(Exception):
    """Base of every error mvcstore raises deliberately.

    Attributes:
        message: What is wrong, lower-case, without a full stop.
        hint: One imperative sentence naming what helps, or None.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class RepositoryNotFoundError(MvcError):
    """No repository exists where one was looked for."""

    def __init__(
        self, path: str, *, hint: str | None = None, searched: bool = True
    ) -> None:
        where = f"{path} or any parent folder" if searched else path
        super().__init__(
            f"no mvcstore repository found at {where}",
            hint=hint or "run 'mvc init' to create one, or set MVC_DIR",
        )
        self.path = path


class RepositoryFormatError(MvcError):
    """The repository's format is unknown, newer, or its files are damaged."""

    def __init__(self, message: str, *, path: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class InvalidInputError(MvcError):
    """A value given by the caller cannot be used."""


class InvalidNameError(InvalidInputError):
    """A session, tag or remote name breaks the naming rules."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(
            f"invalid name {name!r}: {reason}",
            hint="use letters, digits, '.', '_', '-' and '/' between non-empty parts",
        )
        self.name = name
        self.reason = reason


class RevisionNotFoundError(MvcError):
    """A revision names no epoch."""

    def __init__(self, revision: str, *, reason: str | None = None) -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"unknown revision {revision!r}{detail}",
            hint="run 'mvc log --all' or 'mvc branch' to see what exists",
        )
        self.revision = revision


class AmbiguousRevisionError(MvcError):
    """A revision matches more than one epoch or ref."""

    def __init__(self, revision: str, candidates: Sequence[str]) -> None:
        listed = ", ".join(candidates)
        super().__init__(
            f"ambiguous revision {revision!r} matches {len(candidates)} candidates:"
            f" {listed}",
            hint="give more characters of the id, or a session or tag name",
        )
        self.revision = revision
        self.candidates = list(candidates)


class ObjectNotFoundError(MvcError):
    """An object is absent from the store that should hold it."""

    def __init__(self, object_id: str, *, location: str | None = None) -> None:
        where = f" (looked in {location})" if location else ""
        super().__init__(
            f"object {object_id} is missing{where}",
            hint="run 'mvc fsck' to list every missing or damaged object",
        )
        self.object_id = object_id
        self.location = location


class EpochIncompleteError(ObjectNotFoundError):
    """A commit found an object of its epoch gone just before moving its ref.

    Garbage collection may remove an old unreferenced object that a commit in
    progress reused; the commit then refuses to move its ref rather than leave
    it pointing at an epoch with a missing object.
    """

    def __init__(
        self, object_id: str, *, epoch: str, location: str | None = None
    ) -> None:
        where = f" (looked in {location})" if location else ""
        MvcError.__init__(
            self,
            f"epoch {epoch} was not committed: object {object_id} it needs is"
            f" missing{where}",
            hint="commit again: the missing objects are written anew",
        )
        self.object_id = object_id
        self.location = location
        self.epoch = epoch


class CorruptObjectError(MvcError):
    """Stored or received bytes do not decode, or do not hash back to their id."""

    def __init__(
        self, object_id: str | None, reason: str, *, location: str | None = None
    ) -> None:
        name = f"object {object_id}" if object_id else "object data"
        where = f" (stored in {location})" if location else ""
        super().__init__(
            f"{name} is corrupt: {reason}{where}",
            hint="run 'mvc fsck' to list every damaged object",
        )
        self.object_id = object_id
        self.reason = reason
        self.location = location


class RefConflictError(MvcError):
    """A compare-and-set on a ref lost: the ref moved since it was read."""

    def __init__(
        self,
        ref: str,
        *,
        expected: str | None,
        actual: str | None,
        proposed: str | None,
    ) -> None:
        super().__init__(
            f"{ref} moved to {actual or 'nothing'} while epoch {proposed or 'nothing'}"
            f" was committed on {expected or 'an empty session'}",
            hint=(
                f"run 'mvc branch NEW_NAME --from {proposed}' to keep your epoch"
                " as a new session"
                if proposed
                else "read the ref again and retry"
            ),
        )
        self.ref = ref
        self.expected = expected
        self.actual = actual
        self.proposed = proposed


class NonFastForwardError(MvcError):
    """A push would move a remote's session off epochs only the remote has.

    The remote's head is not an ancestor of the epoch pushed, so moving the
    remote's session there would leave the remote's own epochs behind.
    """

    def __init__(self, *, remote: str, session: str, theirs: str, ours: str) -> None:
        super().__init__(
            f"push of session {session!r} to remote {remote!r} refused: its head"
            f" there, epoch {theirs}, is not an ancestor of epoch {ours}"
            " (non-fast-forward)",
            hint=f"pull first ('mvc pull {remote} {session}'), or --force to"
            " replace the remote's head and leave its epochs unreferenced",
        )
        self.remote = remote
        self.session = session
        self.theirs = theirs
        self.ours = ours


class MetricConflictError(MvcError):
    """A metric value was logged again with a different value."""

    def __init__(
        self, *, epoch_uid: str, step: int, name: str, stored: float, new: float
    ) -> None:
        super().__init__(
            f"metric {name!r} at step {step} of epoch {epoch_uid} is already"
            f" {stored!r}, refusing {new!r}",
            hint="log the new value at another step, or in a new epoch",
        )
        self.epoch_uid = epoch_uid
        self.step = step
        self.name = name
        self.stored = stored
        self.new = new


class BackendUnavailableError(MvcError):
    """A storage backend cannot be reached or refused the request."""

    def __init__(self, uri: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"backend {uri} is unavailable: {reason}",
            hint=hint or "check that the server is running and retry",
        )
        self.uri = uri
        self.reason = reason


class WeightsDroppedError(InvalidInputError):
    """An epoch's weights were dropped by a retention policy (``mvc retain``).

    The epoch record, its graph and its metric documents remain; its weights
    and training state do not.
    """

    def __init__(self, epoch: str, *, dropped_at: str, policy: str) -> None:
        super().__init__(
            f"the weights of epoch {epoch} were dropped at {dropped_at} by retain"
            f" policy '{policy}'",
            hint="check out an epoch that kept its weights; 'mvc show' still"
            " shows this one's record and metrics",
        )
        self.epoch = epoch
        self.dropped_at = dropped_at
        self.policy = policy
