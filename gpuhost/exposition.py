"""Prometheus' text exposition format (version 0.0.4), standard library only: what node_exporter's
textfile collector and Prometheus itself read.

A family is a name, a type, a help text and its samples (labels and a value). Rendering escapes
every label value as the format asks (backslash, double quote, newline) and every help text
(backslash, newline); text that is not valid UTF-8 (a lone surrogate from undecodable bytes) is
replaced, never passed on. Names are checked against the format's grammar, and two samples of one
family with the same labels are refused: a scrape would reject the whole file.

The agent imports this on the host's python3 (>= 3.9).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Union

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = ("counter", "gauge", "untyped")
_SURROGATE = re.compile("[\ud800-\udfff]")

Number = Union[int, float]


@dataclass
class Sample:
    labels: dict[str, str]
    value: Number


@dataclass
class Family:
    name: str
    type: str
    help: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not METRIC_NAME.match(self.name):
            raise ValueError(f"not a Prometheus metric name: {self.name!r}")
        if self.type not in TYPES:
            raise ValueError(f"{self.name}: type {self.type!r} is not one of {', '.join(TYPES)}")

    def add(self, value: Number, labels: Mapping[str, str] | None = None) -> Family:
        names = dict(labels or {})
        for name in names:
            if not LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(f"{self.name}: not a label name: {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{self.name}: the value must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{self.name}: the value must be finite, got {value!r}")
        self.samples.append(Sample({k: str(v) for k, v in names.items()}, value))
        return self


def valid_utf8(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate (an undecodable byte kept by surrogateescape)
    becomes U+FFFD."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def escape_label_value(value: str) -> str:
    return valid_utf8(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return valid_utf8(text).replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items())
    return "{" + inner + "}"


def render(families: Iterable[Family]) -> str:
    """The families as one exposition document (each family once, its samples in the order added)."""
    lines: list[str] = []
    seen_names: set[str] = set()
    for family in families:
        if family.name in seen_names:
            raise ValueError(f"metric family {family.name} is given twice")
        seen_names.add(family.name)
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        seen_labels: set[tuple[tuple[str, str], ...]] = set()
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            if key in seen_labels:
                raise ValueError(f"{family.name}{_labels(sample.labels)} is given twice")
            seen_labels.add(key)
            lines.append(f"{family.name}{_labels(sample.labels)} {format_value(sample.value)}")
    return "\n".join(lines) + "\n" if lines else ""
