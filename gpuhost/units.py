"""Sizes and durations as people write them: one grammar for every command and file.

Sizes: a number (`140`, `4.27`, `1.5e3`) and an optional unit, with or without a space between:
`140GB` = `140 GB` = `140g` = 140 * 10^9 bytes (decimal units, as registries and EBS pricing count);
`140GiB` = 140 * 2^30 (binary units). A bare number is bytes.

Durations: `90` (seconds), `300s`, `5m`, `1h`, `2m30s`.

Refused everywhere, with one message each: NaN, infinities, negatives, values that do not fit
(more than MAX_BYTES or MAX_SECONDS), and spaces or newlines around the value.
"""

from __future__ import annotations

import math
import re
from typing import Any

from gpuhost.model import UsageError

MIB = 1024 * 1024
GB = 1000**3

SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}

# 1 EiB: far above any disk, image or model; anything larger is a typo or an attack on float().
MAX_BYTES = 2**60
# Ten years: far above any timeout or interval a command takes.
MAX_SECONDS = 10 * 365 * 86400.0

_NUMBER = r"\d{1,30}(?:\.\d{1,30})?(?:[eE][+-]?\d{1,4})?"
_SIZE = re.compile(rf"({_NUMBER}) ?([a-zA-Z]{{0,3}})")
_DURATION_PART = re.compile(r"(\d{1,30}(?:\.\d{1,30})?)([smh])")
_BARE_SECONDS = re.compile(_NUMBER)

SIZE_EXAMPLE = "Write it like 140GB, 70GiB, 512MiB, 1.5e3MB or a number of bytes."
DURATION_EXAMPLE = "Write it like 90 (seconds), 300s, 5m, 1h or 2m30s."


def _no_surrounding_space(text: str, what: str, example: str) -> None:
    if text != text.strip():
        raise UsageError(f"{what}: {text!r} has spaces or a newline around it", example)


def parse_size(value: Any, what: str = "size", *, allow_zero: bool = False) -> int:
    """Bytes from `140GB`, `140 GiB`, `70g`, `1.5e3MB`, `20000000000`, or a number read from a file.

    Raises UsageError naming `what` for anything else: junk, NaN, infinities, negatives, sizes
    above MAX_BYTES, and zero unless `allow_zero`.
    """
    if isinstance(value, bool) or value is None:
        raise UsageError(f"{what}: expected a size, got {value!r}", SIZE_EXAMPLE)
    if isinstance(value, int):
        amount = float(value) if abs(value) <= MAX_BYTES else math.inf
    elif isinstance(value, float):
        amount = value
    elif isinstance(value, str):
        _no_surrounding_space(value, what, SIZE_EXAMPLE)
        match = _SIZE.fullmatch(value)
        if not match or match.group(2).lower() not in SIZE_UNITS:
            raise UsageError(f"{what}: cannot read the size {value!r}", SIZE_EXAMPLE)
        amount = float(match.group(1)) * SIZE_UNITS[match.group(2).lower()]
    else:
        raise UsageError(f"{what}: expected a size, got {type(value).__name__}", SIZE_EXAMPLE)
    if math.isnan(amount):
        raise UsageError(f"{what}: {value!r} is not a number", SIZE_EXAMPLE)
    if amount < 0:
        raise UsageError(f"{what}: a size cannot be negative, got {value!r}", SIZE_EXAMPLE)
    if amount > MAX_BYTES:
        raise UsageError(f"{what}: {str(value)[:40]!r} is larger than 1 EiB", SIZE_EXAMPLE)
    result = round(amount)
    if result == 0 and not allow_zero:
        raise UsageError(f"{what}: a size must be positive, got {value!r}", SIZE_EXAMPLE)
    return result


def parse_duration(text: Any, what: str = "duration") -> float:
    """Seconds from `90`, `300s`, `5m`, `1h`, `2m30s`; positive, finite, at most MAX_SECONDS."""
    if not isinstance(text, str):
        raise UsageError(f"{what}: expected a duration, got {text!r}", DURATION_EXAMPLE)
    _no_surrounding_space(text, what, DURATION_EXAMPLE)
    raw = text.lower()
    if _BARE_SECONDS.fullmatch(raw):
        seconds = float(raw)
    else:
        parts = _DURATION_PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise UsageError(f"{what}: cannot read the duration {text!r}", DURATION_EXAMPLE)
        seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    if not seconds > 0:
        raise UsageError(f"{what}: a duration must be positive, got {text!r}", DURATION_EXAMPLE)
    if seconds > MAX_SECONDS:
        raise UsageError(f"{what}: {text[:40]!r} is longer than ten years", DURATION_EXAMPLE)
    return seconds


def positive_number(value: float, what: str, *, maximum: float = MAX_SECONDS) -> float:
    """A finite number above zero and at most `maximum`, for options typed as plain numbers."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)) or not math.isfinite(value):
        raise UsageError(f"{what}: {value!r} is not a finite number", f"Example: {what} 5")
    if value <= 0 or value > maximum:
        raise UsageError(f"{what}: {value:g} is outside 0 (exclusive) to {maximum:g}", f"Example: {what} 5")
    return float(value)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.1f} min"
    return f"{minutes / 60:.1f} h"


def human_bytes(value: int) -> str:
    """4270000000 -> `4.3 GB` (decimal units, as Docker prints image sizes)."""
    amount = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if amount < 1000.0 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000.0
    return f"{value} B"  # pragma: no cover
