"""NVIDIA Xid events from the kernel log since boot (/dev/kmsg), read under an injectable root."""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass, field

from gpuhost.facts.source import SourceStatus

KMSG = "dev/kmsg"
# The kernel ring buffer is a few MiB at most; stop well before a runaway read costs time.
MAX_BYTES = 8 * 1024 * 1024
MAX_SECONDS = 1.0
MAX_EVENTS = 200

XID_RE = re.compile(r"NVRM: Xid \(PCI:(?P<pci>[0-9A-Fa-f:.]+)\): (?P<code>\d+),\s*(?P<detail>.*)$")


@dataclass
class XidEvent:
    code: int
    pci: str
    detail: str
    # seconds since boot, from the record's timestamp
    at_s: float | None = None


@dataclass
class KmsgFacts:
    status: SourceStatus = SourceStatus.OK
    error: str = ""
    records: int = 0
    truncated: bool = False
    xids: list[XidEvent] = field(default_factory=list)


def parse_record(record: str) -> tuple[float | None, str]:
    """One /dev/kmsg record `PRI,SEQ,USEC,FLAGS;text` -> (seconds since boot, text). Continuation
    lines (` KEY=value`) are dropped; a plain line (a `dmesg` capture) is returned as it is."""
    first = record.split("\n", 1)[0]
    prefix, sep, text = first.partition(";")
    fields = prefix.split(",")
    if not sep or len(fields) < 3 or not all(f.strip().lstrip("-").isdigit() for f in fields[:3]):
        return None, first
    return int(fields[2]) / 1e6, text


def xid_of(at_s: float | None, text: str) -> XidEvent | None:
    match = XID_RE.search(text)
    if match is None:
        return None
    return XidEvent(code=int(match.group("code")), pci=match.group("pci"), detail=match.group("detail").strip(),
                    at_s=at_s)


def _read_records(path: str, facts: KmsgFacts) -> list[str]:
    """Every record in the buffer: /dev/kmsg returns one per read and EAGAIN at the end (non-blocking);
    a captured file returns many per read and then EOF."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    records: list[str] = []
    total = 0
    deadline = time.monotonic() + MAX_SECONDS
    pending = ""
    try:
        while total < MAX_BYTES and time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records were overwritten while reading: go on from the next
                    continue
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            if not chunk:
                break
            total += len(chunk)
            text = pending + chunk.decode("utf-8", errors="replace")
            lines = text.split("\n")
            pending = lines.pop()
            records.extend(line for line in lines if line and not line.startswith(" "))
        else:
            facts.truncated = True
    finally:
        os.close(fd)
    if pending and not pending.startswith(" "):
        records.append(pending)
    return records


def collect_kmsg(root: str = "/") -> KmsgFacts:
    facts = KmsgFacts()
    path = os.path.join(root, KMSG)
    try:
        records = _read_records(path, facts)
    except FileNotFoundError:
        facts.status, facts.error = SourceStatus.ABSENT, f"{path} does not exist"
        return facts
    except OSError as exc:
        facts.status, facts.error = SourceStatus.UNREADABLE, f"{path}: {exc.strerror}"
        return facts
    facts.records = len(records)
    for record in records:
        at_s, text = parse_record(record)
        event = xid_of(at_s, text)
        if event is not None:
            if len(facts.xids) >= MAX_EVENTS:
                facts.truncated = True
                break
            facts.xids.append(event)
    return facts
