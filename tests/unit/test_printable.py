"""gpuhost.printable: untrusted text reaches a terminal with visible escapes instead of controls."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuhost.model import Finding, Severity
from gpuhost.printable import printable, printable_lines

# what a hostile log line, HTTP body or error message can carry to a terminal
HOSTILE = [
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC: window title, then BEL
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # CSI: clear screen, cursor home
    ("\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\", "\\x1b]8;;http://evil/\\x1b\\link\\x1b]8;;\\x1b\\"),  # hyperlink
    ("\x9b31m", "\\x9b31m"),  # C1 CSI
    ("\x85next", "\\x85next"),  # C1 NEL
    ("ok\rFAIL", "ok\\rFAIL"),  # a carriage return that overwrites the line
    ("a\bb", "a\\x08b"),
    ("tab\there", "tab\\there"),
    ("del\x7f", "del\\x7f"),
    ("nul\x00", "nul\\x00"),
    ("\u202eevil", "\\u202eevil"),  # right-to-left override
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("line\u2028sep", "line\\u2028sep"),
    ("bad\udcffbyte", "bad\\udcffbyte"),  # a lone surrogate (surrogateescape): would stop print()
    ("two\nlines", "two\\nlines"),
]
HARMLESS = ["plain ASCII", "Loading: 100%|██████████| 3/3", "ComfyUI version: 0.3.64", "naïve café ✓ 日本",
            "path C:\\x1b\\file", "emoji 🎉"]


@pytest.mark.parametrize(("raw", "escaped"), HOSTILE)
def test_hostile_text_is_escaped(raw: str, escaped: str) -> None:
    assert printable(raw) == escaped
    assert printable(printable(raw)) == printable(raw)


@pytest.mark.parametrize("text", HARMLESS)
def test_harmless_text_is_unchanged(text: str) -> None:
    assert printable(text) == text


def test_lines_keep_their_newlines_only() -> None:
    assert printable_lines("first\x1b[2J\nsecond\r") == "first\\x1b[2J\nsecond\\r"


def test_finding_messages_are_made_printable() -> None:
    finding = Finding("comfyui.ready", "comfyui", Severity.FAIL, "last line: \x1b]0;x\x07", "do \x1b[2J this")
    assert "\x1b" not in finding.message + finding.remedy and "\\x1b" in finding.message


@given(st.text(max_size=200))
def test_nothing_a_terminal_acts_on_survives(text: str) -> None:
    out = printable(text)
    out.encode("utf-8")  # no lone surrogate left
    for char in out:
        assert unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Zl", "Zp"), repr(char)
    lines = printable_lines(text)
    assert lines.count("\n") == text.count("\n")
    for char in lines.replace("\n", ""):
        assert unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Zl", "Zp"), repr(char)
