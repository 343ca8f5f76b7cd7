"""Findings, severities and exit codes shared by every gpuhost command, and the JSON form of its dataclasses."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

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


T = TypeVar("T")


def from_jsonable(cls: type[T], data: Any) -> T:
    """Rebuild a dataclass from what to_jsonable made of it (recorded facts, a remote host's); unknown keys
    are ignored."""
    return typing.cast(T, _convert(cls, data))


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        for option in options:
            try:
                return _convert(option, value)
            except (TypeError, ValueError):
                continue
        return value
    if origin in (list, tuple):
        (item_type, *_rest) = typing.get_args(tp) or (Any,)
        return [_convert(item_type, v) for v in value]
    if origin is dict:
        _key, item_type = typing.get_args(tp) or (str, Any)
        return {k: _convert(item_type, v) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"{tp.__name__} expects an object, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        kwargs = {
            f.name: _convert(hints[f.name], value[f.name])
            for f in dataclasses.fields(tp)
            if f.init and f.name in value
        }
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


class GpuhostError(Exception):
    """An error gpuhost reports as one message, a remedy and an exit code, never a traceback. Each kind
    of error is a subclass that says its exit code; `failure_of` turns any exception into what both
    front ends print."""

    exit_code: ExitCode = ExitCode.FAILING
    remedy: str = ""

    def __init__(self, message: str, remedy: str | None = None, exit_code: ExitCode | None = None) -> None:
        super().__init__(redact_urls(message))
        if remedy is not None:
            self.remedy = remedy
        if exit_code is not None:
            self.exit_code = exit_code


class SourceError(GpuhostError):
    """A required source exists but could not be read (exit code 3)."""

    exit_code = ExitCode.SOURCE_UNREADABLE

    def __init__(self, source: str, detail: str, remedy: str = "") -> None:
        # the source is often a URL, the detail an error that repeats it: never with its credentials
        source, detail = redact_url(source), redact_urls(detail)
        super().__init__(f"{source}: {detail}", remedy)
        self.source = source
        self.detail = detail


class UsageError(GpuhostError):
    """Bad usage or bad input (exit code 2). The message says what to change."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, remedy: str = "") -> None:
        super().__init__(message, remedy)


UNEXPECTED_REMEDY = (
    "gpuhost did not expect this: nothing after it ran. Run the command again; if it repeats, report this line."
)
OS_ERROR_REMEDY = "Check that the path or address exists and that this user may read it."


@dataclass(frozen=True)
class Failure:
    """What a command that stopped prints: one message, a remedy and its exit code (the JSON error of
    every command, on either front end)."""

    exit_code: int
    message: str
    remedy: str

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, "remedy": self.remedy, "exit_code": self.exit_code}


def failure_of(exc: BaseException) -> Failure:
    """The one way from an error to an exit code: a GpuhostError says its own (2 usage, 3 a source, AWS's
    as gpuhost.ebs.aws decided, 1 otherwise); an OSError nothing caught is a source that could not be read
    (3); anything else is unexpected (1), said in one line. Messages and remedies come out without URL
    credentials or terminal controls."""
    if isinstance(exc, GpuhostError):
        return Failure(int(exc.exit_code), for_humans(str(exc)), for_humans(exc.remedy))
    if isinstance(exc, OSError):
        code, message, remedy = ExitCode.SOURCE_UNREADABLE, f"{type(exc).__name__}: {exc}", OS_ERROR_REMEDY
    else:
        code, message, remedy = ExitCode.FAILING, f"unexpected {type(exc).__name__}: {exc}", UNEXPECTED_REMEDY
    return Failure(int(code), " ".join(for_humans(message).split()), remedy)


def optional_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None
