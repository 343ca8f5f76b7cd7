"""Image references as Docker reads them: the grammar of distribution/reference, in one place.

    reference := name [":" tag] ["@" digest]
    name      := [domain "/"] path-component ["/" path-component]*     (255 characters at most)
    domain    := host [":" port]; host: DNS labels, or an IPv6 address in brackets
    path-component := [a-z0-9]+ ([._] | "__" | "-"+ [a-z0-9]+)*
    tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest    := algorithm ":" hex (32 hex digits or more)

A reference that passes cannot name another Engine API path once URL-encoded and decoded again
(no `..`, `/` at the ends, spaces, `%`, `?` or `#`).
"""

from __future__ import annotations

import re

from gpuhost.model import UsageError

MAX_NAME_LENGTH = 255
# a name, a 128-character tag and a sha512 digest fit; longer text is refused before the pattern runs
MAX_REFERENCE_LENGTH = 600

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?", re.ASCII)

REFERENCE_EXAMPLE = "Write it as Docker does: comfyui:0.3.64, ghcr.io/org/image:tag or image@sha256:<64 hex digits>."


def check_image_reference(reference: str, what: str = "image") -> str:
    """The reference unchanged when Docker's grammar accepts it; UsageError naming `what` otherwise."""
    if not isinstance(reference, str) or not reference:
        raise UsageError(f"{what}: an image reference cannot be empty", REFERENCE_EXAMPLE)
    if len(reference) > MAX_REFERENCE_LENGTH:
        raise UsageError(f"{what}: {len(reference)} characters is too long for an image reference", REFERENCE_EXAMPLE)
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        raise UsageError(f"{what}: {reference[:300]!r} is not an image reference", REFERENCE_EXAMPLE)
    if len(match.group("name")) > MAX_NAME_LENGTH:
        raise UsageError(f"{what}: the image name is longer than {MAX_NAME_LENGTH} characters", REFERENCE_EXAMPLE)
    return reference
