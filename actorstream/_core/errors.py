"""The exceptions actorstream raises, in one place so every module shares them."""

from __future__ import annotations


class ActorstreamError(Exception):
    """Base class of every error actorstream raises itself."""


class ConfigError(ActorstreamError, ValueError):
    """Bad settings or declarations, rejected before anything runs."""


#: Why an entry could not be decoded (``DecodeError.kind``; dead-letter kind ``decode:<kind>``).
DECODE_KINDS = ("json", "schema", "oversize", "utf8", "format", "compression", "time")


class DecodeError(ActorstreamError):
    """An entry that cannot become an event: bad bytes, bad JSON, wrong schema, oversize.

    ``kind`` is a short machine-readable reason, one of ``DECODE_KINDS``, used by the
    dead-letter actor.
    """

    def __init__(self, message: str, *, kind: str = "schema") -> None:
        super().__init__(message)
        self.kind = kind


class FencedError(ActorstreamError):
    """Redis refused a side effect because a newer owner holds the partition (epoch mismatch)."""


class GroupLostError(ActorstreamError):
    """A consumer group that existed has vanished; it is never silently recreated."""


class SupervisorGaveUp(ActorstreamError):
    """A supervisor exceeded its restart intensity and escalates to its parent.

    The crashes that caused it are chained as ``__cause__`` (an ``ExceptionGroup``).
    """

    def __init__(self, name: str, restarts: int, within: float) -> None:
        super().__init__(
            f"supervisor {name!r} gave up: more than {restarts} restarts within {within:g}s"
        )
        self.name = name
        self.restarts = restarts
        self.within = within


class SelfFenced(FencedError):
    """This worker could not confirm its lease in time and stopped itself before it could lapse."""


class CommitError(ActorstreamError):
    """Redis executed a commit but failed part of it (a key of the wrong type): what it did is
    not known to be whole, so the partition reloads its tables instead of retrying."""


class TableError(ActorstreamError):
    """A table used where it cannot be: outside a handler of an actor that declared it, or with
    a key of another partition. The message says how to fix it."""
