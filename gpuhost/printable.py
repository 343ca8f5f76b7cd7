"""Untrusted text made safe to show on a terminal: container log lines, HTTP bodies and headers,
registry and Docker error messages, names from manifests and workflows.

Every character a terminal would act on instead of printing becomes a visible escape: C0 controls
(ESC starts CSI and OSC sequences: colours, clear screen, title changes, hyperlinks; BEL; backspace;
a carriage return that lets a line overwrite itself), DEL, the C1 controls U+0080-U+009F (U+009B is a
one-byte CSI), Unicode format characters (bidirectional overrides that reorder what is shown,
zero-width characters), line and paragraph separators, and lone surrogates (undecodable bytes, which
would stop the output with an encoding error). `\\x1b`, `\\r`, `\\u202e` are what is shown. A backslash
is left as it is, so escaping twice changes nothing.

JSON output keeps data values exact (a log line, a tail, a file name: json.dumps writes every control
character as \\u00XX, so no raw control byte reaches the terminal); the sentences gpuhost writes for
people (`message`, `remedy`, `error`) are passed through `printable_lines` wherever they are built or
printed, and tables and progress lines pass every value through it.

Standard library only: the agent imports it on the host's python3 (>= 3.9).
"""

from __future__ import annotations

import re
import unicodedata

# Everything outside printable ASCII is looked at; most text is ASCII and passes at regex speed.
_SUSPECT_RE = re.compile(r"[^\x20-\x7e]")
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _replace(match: re.Match[str]) -> str:
    char = match.group()
    return _escape(char) if unicodedata.category(char) in _UNSAFE_CATEGORIES else char


def printable(text: str) -> str:
    """One line of untrusted text, safe to show: no character in it acts on the terminal (a newline
    and a tab are escaped too, so it stays one line)."""
    if not isinstance(text, str):
        text = str(text)
    return _SUSPECT_RE.sub(_replace, text)


def printable_lines(text: str) -> str:
    """Like printable, but a newline stays a newline: for gpuhost's own multi-line messages, whose
    untrusted parts may hold anything else."""
    if not isinstance(text, str):
        text = str(text)
    return "\n".join(printable(line) for line in text.split("\n"))
