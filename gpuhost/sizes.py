"""Sizes as people write them: `140GB`, `70 GiB`, `512mib`, `4.27g`, a bare number of bytes."""

from __future__ import annotations

import re
from typing import Optional

# GB and friends are decimal (as registries and EBS pricing count), GiB and friends binary.
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
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def size_in_bytes(text: str) -> Optional[float]:
    """The size `text` names, in bytes, or None when it is not a number with a known unit."""
    match = _SIZE.fullmatch(text)
    if not match or match.group(2).lower() not in SIZE_UNITS:
        return None
    return float(match.group(1)) * SIZE_UNITS[match.group(2).lower()]
