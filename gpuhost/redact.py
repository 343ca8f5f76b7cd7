"""Credentials inside URLs are never shown: the one place a URL, or text holding URLs, is made safe to
print, to put in a message, in JSON, in evidence or in a progress line.

What is hidden, for every scheme (http, https, s3, tcp, ...), and what stays:
- the user information, whatever it holds: `https://user:pw@host`, `https://TOKEN@host`,
  `https://:pw@host`, `https://@host` all show as `https://***@host`. An unencoded `/`, `?` or `#`
  in a password moves the host, for a URL parser, into the path; when a `:` comes before the last `@`
  and before the first `/`, everything up to that `@` is hidden too (a `host:port/path@x` URL then
  shows shortened: more hidden, never less). Inside free text a URL ends at white space: a password
  with a space in it is hidden only where the URL is redacted whole (redact_url on an option's value).
- every query value and every fragment value: presigned URLs (`X-Amz-Signature`,
  `X-Amz-Security-Token`, `X-Amz-Credential`, Azure's `sig`), `token=`, `key=`, `#access_token=`
  show as `?X-Amz-Signature=***`; a parameter without `=` shows as `***`.
- the scheme, host, port and path stay: they say where, which is what a message needs.

Standard library only: the agent imports it on the host's python3 (>= 3.9).
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# A URL inside free text: a scheme, `://`, then everything up to white space or the next URL. What
# ends a URL in prose or in Python's repr (a quote, a bracket, a comma) is put back after it: a quote
# inside a password does not end the URL early.
URL_IN_TEXT_RE = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]{0,31}://)(?P<rest>(?:(?![A-Za-z][A-Za-z0-9+.-]{0,31}://)\S)*)"
)
QUOTE_RE = re.compile(r"[\'\"`<>]")
TRAILING_RE = re.compile(r"['\"`<>()\[\]{},.;:!?]+$")


def _in_text(match: re.Match[str]) -> str:
    rest = match.group("rest")
    trailing = TRAILING_RE.search(rest)
    tail = trailing.group() if trailing else ""
    return match.group("scheme") + _redact_rest(rest[: len(rest) - len(tail)], in_text=True) + tail


def _mask_params(params: str) -> str:
    masked: list[str] = []
    for param in params.split("&"):
        if not param:
            masked.append(param)
            continue
        name, equals, _value = param.partition("=")
        masked.append(f"{name}={MASK}" if equals else MASK)
    return "&".join(masked)


def _redact_rest(rest: str, in_text: bool = False) -> str:
    """What follows `scheme://`: authority, path, query, fragment. `in_text`: the query or fragment ends
    at a quote or an angle bracket (a URL inside JSON or HTML text); what follows is kept as it is."""
    end = len(rest)
    for mark in "/?#":
        index = rest.find(mark)
        if index != -1:
            end = min(end, index)
    authority = rest[:end]
    if "@" in authority:
        rest = MASK + rest[authority.rindex("@"):]
    else:
        last_at = rest.rfind("@")
        colon = rest.find(":", rest.find("]") + 1 if rest.startswith("[") else 0)
        slash = rest.find("/")
        if last_at != -1 and colon != -1 and colon < last_at and (slash == -1 or colon < slash):
            rest = MASK + rest[last_at:]
    after = ""
    if in_text:
        start = min((i for i in (rest.find("?"), rest.find("#")) if i != -1), default=-1)
        stop = QUOTE_RE.search(rest, start) if start != -1 else None
        if stop is not None:
            rest, after = rest[: stop.start()], rest[stop.start():]
    head, hash_mark, fragment = rest.partition("#")
    path, question, query = head.partition("?")
    shown = path
    if question:
        shown += "?" + _mask_params(query)
    if hash_mark:
        shown += "#" + _mask_params(fragment)
    return shown + after


def redact_url(url: str) -> str:
    """`url` as it may be shown: no user information, no query or fragment values."""
    if not isinstance(url, str):
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        return redact_urls(url)
    return scheme + sep + _redact_rest(rest)


def redact_urls(text: str) -> str:
    """`text` with every URL in it redacted as redact_url does; other text unchanged."""
    if not isinstance(text, str) or "://" not in text:
        return text
    return URL_IN_TEXT_RE.sub(_in_text, text)


def redact_all(value: Any) -> Any:
    """A JSON value (dicts, lists, strings, numbers) with every string through redact_urls: what every
    JSON document gpuhost prints passes through on its way out."""
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, dict):
        return {redact_urls(k) if isinstance(k, str) else k: redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_all(v) for v in value]
    return value
