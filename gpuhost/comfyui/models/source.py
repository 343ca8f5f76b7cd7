"""What a models source offers: each object's size and version tag, and byte ranges of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional, Protocol


@dataclass(frozen=True)
class RemoteObject:
    key: str
    size: int
    # the source's version of the object (S3 ETag, HTTP ETag or Last-Modified): a .part is resumed
    # only while it is unchanged
    version: str


class MissingObject(Exception):
    """The source answers but has no such object (a per-file failure, not the source's)."""


class ChangedObject(Exception):
    """The object changed since its size and version were read (the .part starts over)."""


class TransientError(Exception):
    """A failure worth retrying: throttling, a 5xx answer, a dropped connection, a stalled read."""


class Interrupted(Exception):
    """A signal (SIGINT, SIGTERM) asked the sync to stop: what is written stays for the next run."""


class Source(Protocol):
    url: str

    def stat(self, key: str) -> RemoteObject:
        """Size and version of one object; MissingObject, TransientError, or SourceError/UsageError."""
        ...

    def read_range(self, obj: RemoteObject, start: int, end: int) -> Iterator[bytes]:
        """The bytes [start, end) of the object as it was when stat read it, in chunks, within the
        source's deadline; exactly end - start bytes or an exception."""
        ...

    def explain_missing(self, keys: list[str]) -> Optional[Exception]:
        """When every object asked for is missing: the source-wide reason (no such bucket, nothing
        under the prefix, a base URL that answers 404 for everything), or None for per-file misses."""
        ...

    def abort(self) -> None:
        """Make every request in flight fail now, and every later one (called from another thread)."""
        ...

    def close(self) -> None: ...
