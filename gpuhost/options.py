"""Each command's options, declared once.

A command's table (`Command`) sits beside the feature's own `X.parse`: a row (`Option`) per option with its
name, kind, default, help, example, bounds or choices, metavar and the front ends that have it. gpuhost.cli
builds the typer command from it and gpuhost.agent the argparse subcommand; both hand what was typed to
`Command.values`, so a value is refused here, in the same words on both, before the command runs. What a
kind refuses: white space around a value or a NUL in it; for a number, anything that is not one, NaN,
infinities and values outside the row's bounds; for a place (a directory gpuhost mounts or writes into),
`..`; for a choice, anything not listed. The feature's `X.parse` then checks what the values mean.

Standard library only: the agent runs this on the host's own python3 (3.9 or newer).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from gpuhost.model import UsageError

CLI = "cli"
AGENT = "agent"
BOTH = (CLI, AGENT)

# kind -> the type word help shows (gpuhost.cli.help reads "(integer) ..." and so on)
KINDS = {
    "string": "string",  # text, refused with white space around it
    "path": "path",  # a file or directory gpuhost reads
    "place": "path",  # a directory gpuhost mounts, moves data into or writes files into: no `..` either
    "name": "string",  # passed on as typed: the feature's own grammar judges it (an image, a container, a URL)
    "int": "integer",
    "number": "number",
    "flag": "boolean",
}
METAVARS = {"int": "INTEGER", "number": "NUMBER", "path": "PATH", "place": "PATH"}
_INTEGER = re.compile(r"[-+]?[0-9]+")
MAX_DIGITS = 40  # more digits than any bound a row may have: refused without building the number


def _quoted(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _bound(number: Optional[float]) -> str:
    return str(int(number)) if number is not None and float(number).is_integer() else f"{number:g}"


def _either(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]


@dataclass(frozen=True)
class Option:
    """One option (or positional argument) of a command, as both front ends offer it."""

    name: str  # "--min-free-gb"; a positional argument is its metavar, "CONTAINER"
    help: str  # what it does, for --help (without its type, default or example: those are added)
    kind: str = "string"  # a key of KINDS
    default: Any = None
    short: str = ""  # "-H"
    metavar: str = ""
    example: str = ""  # "--timeout 15m": --help shows it, a refusal's remedy repeats it
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: tuple[str, ...] = ()
    repeat: bool = False  # an option given once per value (a list); a positional taking one or more
    required: bool = False
    fronts: tuple[str, ...] = BOTH  # which front ends have it
    dest: str = ""  # the keyword it is handed on as, when not the name's own

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if not set(self.fronts) <= set(BOTH) or not self.fronts:
            raise ValueError(f"{self.name}: fronts must be among {BOTH}")
        if self.kind in ("int", "number") and (self.minimum is None or self.maximum is None):
            raise ValueError(f"{self.name}: a number needs its bounds")

    @property
    def positional(self) -> bool:
        return not self.name.startswith("-")

    @property
    def key(self) -> str:
        return self.dest or self.name.lstrip("-").replace("-", "_").lower()

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.name, self.short) if self.short else (self.name,)

    @property
    def type_name(self) -> str:
        return KINDS[self.kind]

    @property
    def shown_metavar(self) -> str:
        if self.metavar:
            return self.metavar
        if self.positional:
            return self.name
        if self.choices:
            return "|".join(self.choices)
        return METAVARS.get(self.kind, "TEXT")

    def has(self, front: str) -> bool:
        return front in self.fronts

    # --- from what was typed to a value --------------------------------------------------------------

    def value(self, raw: Any) -> Any:
        """The value of what was typed (a string, a list of them, or the default as declared)."""
        if self.kind == "flag":
            return bool(raw)
        if self.repeat:
            if not raw:
                return [] if self.positional else None
            return [self._one(item) for item in raw]
        return None if raw is None else self._one(raw)

    def _one(self, raw: Any) -> Any:
        if self.kind in ("int", "number") and isinstance(raw, (int, float)) and not isinstance(raw, bool):
            text = str(raw)  # a declared default, as argparse hands it on
        elif isinstance(raw, str):
            text = raw
        else:
            raise self._refused(f"{self.name}: expected text, got {type(raw).__name__}")
        if self.kind == "name":
            return text
        if text != text.strip():
            raise self._refused(f"{self.name}: {_quoted(text)} has white space around it")
        if "\0" in text:
            raise self._refused(f"{self.name}: {_quoted(text)} contains a NUL character")
        if self.kind == "int":
            return self._bounded(self._integer(text), text)
        if self.kind == "number":
            return self._bounded(self._number(text), text)
        if self.kind == "place" and ".." in text.split("/"):
            raise self._refused(f"{self.name}: {_quoted(text)} goes through '..': give the absolute path without '..'")
        if self.choices and text not in self.choices:
            raise self._refused(f"unknown {self.name} {_quoted(text)}: choose {_either(self.choices)}")
        return text

    def _integer(self, text: str) -> int:
        if not _INTEGER.fullmatch(text):
            raise self._refused(f"{self.name}: {_quoted(text)} is not a valid integer")
        if len(text) > MAX_DIGITS:
            raise self._outside(text)
        return int(text)

    def _number(self, text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            raise self._refused(f"{self.name}: {_quoted(text)} is not a number") from None
        if not math.isfinite(number):
            raise self._refused(f"{self.name}: {_quoted(text)} is not a finite number")
        return number

    def _bounded(self, number: Any, text: str) -> Any:
        assert self.minimum is not None and self.maximum is not None
        if not self.minimum <= number <= self.maximum:
            raise self._outside(text)
        return number

    def _outside(self, text: str) -> UsageError:
        what = "a whole number" if self.kind == "int" else "a number"
        return self._refused(f"{self.name} must be {what} from {_bound(self.minimum)} to {_bound(self.maximum)}, "
                             f"got {_quoted(text)}")

    def _refused(self, message: str) -> UsageError:
        example = f", e.g. {self.example}" if self.example else ""
        return UsageError(message, f"See --help for {self.name}{example}.")


class Values:
    """One run's option values by key: `values.min_free_gb`, `values["min_free_gb"]`."""

    def __init__(self, items: Mapping[str, Any]) -> None:
        self._items = dict(items)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_items"][key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def as_dict(self) -> dict[str, Any]:
        return dict(self._items)

    def for_call(self, function: Callable[..., Any], **extra: Any) -> dict[str, Any]:
        """The values `function` takes by keyword (a feature's X.parse), and `extra`."""
        accepted = inspect.signature(function).parameters
        picked = {key: value for key, value in self._items.items() if key in accepted}
        picked.update(extra)
        return picked


@dataclass(frozen=True)
class Command:
    """A command's table: its name on each front end, and its options in the order --help lists them."""

    cli: str  # "storage plan"; "" when only the agent has it
    agent: str  # "storage-plan"; "" when only the CLI has it
    summary: str  # one line: what the agent's command list says of it
    options: tuple[Option, ...]
    parsers: tuple[Callable[..., Any], ...] = ()  # the X.parse its values feed (their defaults agree: a test)

    def __post_init__(self) -> None:
        for front in self.fronts:
            seen: set[str] = set()
            for row in self.rows(front):
                for name in (*row.flags, f"key:{row.key}"):
                    if name in seen:
                        raise ValueError(f"{self.cli or self.agent}: {name} twice on the {front} front end")
                    seen.add(name)
        for row in self.options:
            if not set(row.fronts) & set(self.fronts):
                raise ValueError(f"{self.cli or self.agent}: {row.name} is on no front end of the command")

    @property
    def fronts(self) -> tuple[str, ...]:
        return tuple(front for front, name in ((CLI, self.cli), (AGENT, self.agent)) if name)

    def name_on(self, front: str) -> str:
        return self.cli if front == CLI else self.agent

    def rows(self, front: str) -> tuple[Option, ...]:
        return tuple(row for row in self.options if row.has(front))

    def values(self, raw: Mapping[str, Any], front: str) -> Values:
        """What was typed on `front`, row by row in the table's order: the first refusal is a UsageError."""
        return Values({row.key: row.value(raw.get(row.key)) for row in self.rows(front)})


def json_flag(what: str) -> Option:
    """--json: the CLI prints `what` as JSON; the agent, which prints JSON always, takes it too."""
    return Option("--json", f"Print {what} as JSON.", kind="flag", default=False, example="--json")
