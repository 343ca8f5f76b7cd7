"""Where a path really leads: every symlink on it followed, as the kernel (and systemd, for a mount's
Where=) follows them, before anyone judges whether the place is a system directory."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

# the kernel's limit on symlinks followed in one lookup (ELOOP past it)
MAX_SYMLINKS = 40


class PathLoop(ValueError):
    """The path goes through more symlinks than the kernel follows: a link loop."""


@dataclass(frozen=True)
class Resolved:
    path: str  # absolute and normal: no symlink in the part that exists, `.`/`..`/`//` gone
    links: tuple[tuple[str, str], ...]  # (link, its target) for each symlink followed, in order


def resolve(path: str) -> Resolved:
    """`path` (absolute) with each symlink in its existing part followed and `..` applied after it, as a
    lookup does; the part that does not exist yet is appended as it is. PathLoop for a link loop."""
    pending = [part for part in path.split("/") if part]
    pending.reverse()
    current = "/"
    links: list[tuple[str, str]] = []
    missing = False  # past the first component that does not exist, nothing is looked up
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        if not missing:
            try:
                is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
            except OSError:  # absent, or not a directory on the way, or unreadable: nothing more to follow
                missing, is_link = True, False
            if is_link:
                if len(links) >= MAX_SYMLINKS:
                    raise PathLoop(f"goes through more than {MAX_SYMLINKS} symlinks (a link loop at {candidate!r})")
                target = os.readlink(candidate)
                links.append((candidate, target))
                if target.startswith("/"):
                    current = "/"
                pending.extend(reversed([p for p in target.split("/") if p]))
                continue
        current = candidate
    return Resolved(current, tuple(links))
