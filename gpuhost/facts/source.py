"""How a collector tells a missing source from an unreadable one."""

from __future__ import annotations

import enum


class SourceStatus(str, enum.Enum):
    OK = "ok"
    # Not there at all (no driver, no Docker): a finding, exit code 1 at worst.
    ABSENT = "absent"
    # There, but it could not be read (permission, broken library): exit code 3.
    UNREADABLE = "unreadable"
