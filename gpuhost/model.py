"""Findings, severities and exit codes shared by every gpuhost command."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gpuhost.printable import printable_lines
from gpuhost.redact import redact_url, redact_urls


class Severity(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return {"ok": 0, "warn": 1, "fail": 2}[self.value]


class ExitCode(enum.IntEnum):
    """Exit codes of every gpuhost command: 0 no failing finding, 1 a failing finding (or a refusal),
    2 bad usage or input, 3 a required source could not be read."""

    OK = 0
    FAILING = 1
    USAGE = 2
    SOURCE_UNREADABLE = 3


@dataclass
class Finding:
    """One verdict of one rule: what it found, why it matters and what to do."""

    id: str
    area: str
    severity: Severity
    message: str
    remedy: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.message = for_humans(self.message)
        self.remedy = for_humans(self.remedy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "area": self.area,
            "severity": self.severity.value,
            "message": self.message,
            "remedy": self.remedy,
            "evidence": self.evidence,
        }


def for_humans(text: str) -> str:
    """A sentence for people (a message, a remedy, an error): no credentials of a URL in it, nothing in it
    that acts on a terminal; its own line breaks stay."""
    return printable_lines(redact_urls(text))


def worst(findings: Iterable[Finding]) -> Severity:
    result = Severity.OK
    for finding in findings:
        if finding.severity.rank > result.rank:
            result = finding.severity
    return result


def exit_code_for(findings: Iterable[Finding], strict: bool = False) -> ExitCode:
    verdict = worst(findings)
    if verdict is Severity.FAIL or (strict and verdict is Severity.WARN):
        return ExitCode.FAILING
    return ExitCode.OK


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, enums and containers of them into plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


class SourceError(Exception):
    """A required source exists but could not be read (exit code 3)."""

    def __init__(self, source: str, detail: str, remedy: str = "") -> None:
        # the source is often a URL, the detail an error that repeats it: never with its credentials
        source, detail = redact_url(source), redact_urls(detail)
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.detail = detail
        self.remedy = remedy


class UsageError(Exception):
    """Bad usage or bad input (exit code 2). The message says what to change."""

    def __init__(self, message: str, remedy: str = "") -> None:
        super().__init__(redact_urls(message))
        self.remedy = remedy


def optional_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
