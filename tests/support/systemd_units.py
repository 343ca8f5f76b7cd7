"""systemd unit files read the way systemd 252 reads them, for tests that render units from hostile values.

Two readers:

- `parse_unit` and `meaning`: a port of systemd's own rules (src/shared/conf-parser.c for lines,
  continuations, comments and sections; src/basic/extract-word.c for words and quotes;
  src/core/load-fragment.c config_parse_exec for command lines, their prefixes and `;`;
  src/shared/specifier.c for `%`; src/basic/env-util.c for `$` in command lines;
  src/basic/env-file.c for EnvironmentFile= files). Fast enough for property tests.
- `analyze`: systemd's own parser, `systemd-analyze verify` with its debug dump of each loaded unit,
  where systemd-analyze is installed. Tests check the port against it.

What a setting means is a plain value: text for most settings (specifiers resolved, an unresolved one
kept as the marker `<%X>`), a tuple of words for lists, and for a command line a tuple of
(prefixes, argv) per command with `$` references kept as `<$NAME>`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

WHITESPACE = " \t\n\r"
COMMENTS = "#;"
EXEC_SETTINGS = frozenset(
    {"ExecStart", "ExecStartPre", "ExecStartPost", "ExecCondition", "ExecReload", "ExecStop", "ExecStopPost"}
)
UNIT_LIST_SETTINGS = frozenset(
    {"Wants", "Requires", "Requisite", "BindsTo", "PartOf", "Upholds", "Conflicts", "Before", "After", "OnFailure",
     "OnSuccess", "WantedBy", "RequiredBy", "UpheldBy", "Also", "Alias"}
)
# lists of paths, each word unquoted first (a prefix like `-` inside the quotes, as namespace paths take it)
PATH_LIST_SETTINGS = frozenset({"RequiresMountsFor", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths"})
CONDITION_PREFIXES = ("Condition", "Assert")

Meaning = Union[str, tuple[object, ...]]


class SyntaxProblem(ValueError):
    """What systemd refuses outright (an invalid section header, unbalanced quotes): the unit or setting fails."""


@dataclass
class Unit:
    entries: list[tuple[str, str, str]] = field(default_factory=list)  # (section, key, value as read)
    ignored: list[str] = field(default_factory=list)  # lines systemd ignores with a warning

    def values(self, section: str, key: str) -> list[str]:
        return [value for s, k, value in self.entries if (s, k) == (section, key)]


# --- lines --------------------------------------------------------------------------------------------


def _physical_lines(text: str) -> list[str]:
    # read_line(): a newline, a carriage return, "\r\n" or NUL ends a line
    return re.split(r"\r\n|[\n\r\0]", text)


def logical_lines(text: str) -> list[str]:
    """The lines config_parse() hands to parse_line(): comment lines dropped (also inside a continuation),
    a line ending in an odd run of backslashes joined with the next, its last backslash made a space."""
    out: list[str] = []
    continuation: str | None = None
    lines = _physical_lines(text)
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines):
        if number == 0 and line.startswith("\ufeff"):
            line = line[1:]
        stripped = line.lstrip(WHITESPACE)
        if stripped and stripped[0] in COMMENTS:
            continue
        joined = line if continuation is None else continuation + line
        trailing = len(joined) - len(joined.rstrip("\\"))
        if trailing % 2 == 1:
            continuation = joined[:-1] + " "
            continue
        out.append(joined)
        continuation = None
    if continuation is not None:
        out.append(continuation)
    return out


def parse_unit(text: str) -> Unit:
    """Sections and assignments as parse_line() reads them; `.include` and ignored lines noted."""
    unit = Unit()
    section: str | None = None
    for line in logical_lines(text):
        line = line.strip(WHITESPACE)
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise SyntaxProblem(f"invalid section header {line!r}")
            section = line[1:-1]
            continue
        if section is None:
            unit.ignored.append(f"assignment outside of a section: {line!r}")
            continue
        if "=" not in line:
            unit.ignored.append(f"missing '=': {line!r}")
            continue
        key, value = line.split("=", 1)
        unit.entries.append((section, key.strip(WHITESPACE), value.strip(WHITESPACE)))
    return unit


# --- specifiers and variables ------------------------------------------------------------------------


def resolve_specifiers(text: str) -> str:
    """`%%` is `%`; any other `%X` is a specifier systemd expands, kept as the marker `<%X>`."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "%" and i + 1 < len(text):
            out.append("%" if text[i + 1] == "%" else f"<%{text[i + 1]}>")
            i += 2
            continue
        out.append("<%>" if char == "%" else char)  # a lone % at the end is an error in systemd
        i += 1
    return "".join(out)


_VARIABLE = re.compile(r"\$(?:\$|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def resolve_variables(word: str) -> str:
    """A command line word after replace_env_argv(): `$$` is `$`; `${NAME}` and `$NAME` are the
    environment's, kept as the marker `<$NAME>`."""
    return _VARIABLE.sub(lambda m: "$" if m.group(0) == "$$" else f"<${m.group(1) or m.group(2)}>", word)


# --- words --------------------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
                   '"': '"', "'": "'", "s": " "}


def _cunescape_one(text: str, i: int) -> tuple[str, int]:
    """systemd's cunescape_one() for the escape starting after the backslash at text[i]."""
    char = text[i] if i < len(text) else ""
    if char in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[char], i + 1
    for lead, digits, base in (("x", 2, 16), ("u", 4, 16), ("U", 8, 16)):
        if char == lead:
            code = text[i + 1:i + 1 + digits]
            if len(code) == digits and all(c in "0123456789abcdefABCDEF" for c in code):
                value = int(code, base)
                if value == 0:
                    raise SyntaxProblem("\\x00, \\u0000 and kin are refused")
                return chr(value), i + 1 + digits
            raise SyntaxProblem(f"invalid escape \\{lead}{code}")
    if char and char in "01234567":
        code = text[i:i + 3]
        if len(code) == 3 and all(c in "01234567" for c in code) and int(code, 8) != 0:
            return chr(int(code, 8)), i + 3
        raise SyntaxProblem(f"invalid octal escape \\{code}")
    raise SyntaxProblem(f"invalid escape \\{char}")


def extract_word(text: str, i: int, *, unquote: bool, cunescape: bool) -> tuple[str | None, int]:
    """extract_first_word() from text[i]: (the word or None at the end, where the next one starts)."""
    while i < len(text) and text[i] in WHITESPACE:
        i += 1
    if i >= len(text):
        return None, i
    word: list[str] = []
    quote = ""
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 >= len(text):
                raise SyntaxProblem("a backslash at the end of the value")
            if cunescape:
                unescaped, i = _cunescape_one(text, i + 1)
                word.append(unescaped)
            else:
                word.append(text[i + 1])
                i += 2
            continue
        if quote:
            if char == quote:
                quote = ""
            else:
                word.append(char)
        elif unquote and char in "'\"":
            quote = char
        elif char in WHITESPACE:
            break
        else:
            word.append(char)
        i += 1
    if quote:
        raise SyntaxProblem("unbalanced quotes")
    return "".join(word), i


def split_words(text: str, *, unquote: bool = True, cunescape: bool = False) -> list[str]:
    words, i = [], 0
    while True:
        word, i = extract_word(text, i, unquote=unquote, cunescape=cunescape)
        if word is None:
            return words
        words.append(word)


def _retained_words(text: str) -> list[str]:
    # EXTRACT_RETAIN_ESCAPE (unit names): split at white space, quotes and backslashes kept
    return [w for w in re.split(f"[{re.escape(WHITESPACE)}]+", text) if w]


def split_exec(value: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """config_parse_exec(): each command's prefixes and argv, specifiers and `$` resolved per word."""
    commands: list[tuple[str, tuple[str, ...]]] = []
    i = 0
    while True:
        while i < len(value) and value[i] in WHITESPACE:
            i += 1
        if i >= len(value):
            break
        first, i = extract_word(value, i, unquote=True, cunescape=True)
        assert first is not None
        prefixes = ""
        while first and first[0] in "-@:+!|":
            prefixes += first[0]
            first = first[1:]
        argv = [first]
        separated = False
        while True:
            while i < len(value) and value[i] in WHITESPACE:
                i += 1
            rest = value[i:]
            if rest.startswith(";") and (len(rest) == 1 or rest[1] in WHITESPACE):
                i += 1
                separated = True
                break
            if rest.startswith("\\;") and (len(rest) == 2 or rest[2] in WHITESPACE):
                argv.append(";")
                i += 2
                continue
            word, i = extract_word(value, i, unquote=True, cunescape=True)
            if word is None:
                break
            argv.append(word)
        literal = ":" in prefixes  # `:` turns off variable expansion
        commands.append(
            (prefixes, tuple(w if literal else resolve_variables(w) for w in map(resolve_specifiers, argv)))
        )
        if not separated:
            break
    return tuple(commands)


def meaning(key: str, value: str) -> Meaning:
    """What systemd makes of one setting's value."""
    if key in EXEC_SETTINGS:
        return split_exec(value)
    if key in UNIT_LIST_SETTINGS:
        return tuple(resolve_specifiers(w) for w in _retained_words(value))
    if key in PATH_LIST_SETTINGS:
        return tuple(resolve_specifiers(w) for w in split_words(value))
    if key.startswith(CONDITION_PREFIXES):
        flags = value[: len(value) - len(value.lstrip("|!"))]
        return (flags, resolve_specifiers(value[len(flags):].lstrip(WHITESPACE)))
    if key == "EnvironmentFile":
        optional = value.startswith("-")
        return ("-" if optional else "", resolve_specifiers(value[1:] if optional else value))
    return resolve_specifiers(value)


def unit_meanings(text: str) -> tuple[tuple[str, str, Meaning], ...]:
    """Every (section, key, meaning) of a unit, in order, and each ignored line as ("", "", why)."""
    unit = parse_unit(text)
    return tuple((s, k, meaning(k, v)) for s, k, v in unit.entries) + tuple(("", "", why) for why in unit.ignored)


# --- EnvironmentFile= --------------------------------------------------------------------------------

SHELL_NEED_ESCAPE = '"\\`$'
NEWLINE = "\n\r"


def parse_environment_file(text: str) -> list[tuple[str, str]]:
    """parse_env_file_internal() and load_env_file_push(): the (name, value) pairs a service gets;
    assignments systemd would ignore (bad names, control characters) are left out."""
    pairs: list[tuple[str, str]] = []
    state = "PRE_KEY"
    key: list[str] = []
    value: list[str] = []
    last_key_ws: int | None = None
    last_value_ws: int | None = None

    def push() -> None:
        name = "".join(key[:last_key_ws] if last_key_ws is not None else key)
        text_value = "".join(value)
        valid_name = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None
        if valid_name and not any((ord(c) < 32 and c not in "\t\n") or ord(c) == 127 for c in text_value):
            pairs.append((name, text_value))

    for char in text:
        if state == "PRE_KEY":
            if char in COMMENTS:
                state = "COMMENT"
            elif char not in WHITESPACE:
                state, key, value, last_key_ws = "KEY", [char], [], None
        elif state == "KEY":
            if char in NEWLINE:
                state = "PRE_KEY"
            elif char == "=":
                state, last_value_ws = "PRE_VALUE", None
            else:
                if char not in WHITESPACE:
                    last_key_ws = None
                elif last_key_ws is None:
                    last_key_ws = len(key)
                key.append(char)
        elif state == "PRE_VALUE":
            if char in NEWLINE:
                state = "PRE_KEY"
                push()
            elif char == "'":
                state = "SINGLE_QUOTE_VALUE"
            elif char == '"':
                state = "DOUBLE_QUOTE_VALUE"
            elif char == "\\":
                state = "VALUE_ESCAPE"
            elif char not in WHITESPACE:
                state = "VALUE"
                value.append(char)
        elif state == "VALUE":
            if char in NEWLINE:
                state = "PRE_KEY"
                if last_value_ws is not None:
                    del value[last_value_ws:]
                push()
            elif char == "\\":
                state, last_value_ws = "VALUE_ESCAPE", None
            else:
                if char not in WHITESPACE:
                    last_value_ws = None
                elif last_value_ws is None:
                    last_value_ws = len(value)
                value.append(char)
        elif state == "VALUE_ESCAPE":
            state = "VALUE"
            if char not in NEWLINE:
                value.append(char)
        elif state == "SINGLE_QUOTE_VALUE":
            if char == "'":
                state = "PRE_VALUE"
            else:
                value.append(char)
        elif state == "DOUBLE_QUOTE_VALUE":
            if char == '"':
                state = "PRE_VALUE"
            elif char == "\\":
                state = "DOUBLE_QUOTE_VALUE_ESCAPE"
            else:
                value.append(char)
        elif state == "DOUBLE_QUOTE_VALUE_ESCAPE":
            state = "DOUBLE_QUOTE_VALUE"
            if char in SHELL_NEED_ESCAPE:
                value.append(char)
            elif char != "\n":
                value.extend(("\\", char))
        elif state == "COMMENT":
            if char == "\\":
                state = "COMMENT_ESCAPE"
            elif char in NEWLINE:
                state = "PRE_KEY"
        elif state == "COMMENT_ESCAPE":
            state = "COMMENT"
    if state in ("PRE_VALUE", "VALUE", "VALUE_ESCAPE", "SINGLE_QUOTE_VALUE", "DOUBLE_QUOTE_VALUE",
                 "DOUBLE_QUOTE_VALUE_ESCAPE"):
        if state == "VALUE" and last_value_ws is not None:
            del value[last_value_ws:]
        push()
    return pairs


# --- systemd's own parser ----------------------------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
_DUMP_ESCAPES = {"\\": "\\", '"': '"', "$": "$", "`": "`", "n": "\n", "t": "\t"}


def dumped_words(text: str) -> list[str]:
    """The words of a dumped command line (quote_command_line(): a word with a special character in
    double quotes, `"\\$` and \\` backslashed, newline and tab as \\n and \\t)."""
    words: list[str] = []
    i = 0
    while i < len(text):
        while i < len(text) and text[i] == " ":
            i += 1
        if i >= len(text):
            break
        word: list[str] = []
        quoted = False
        while i < len(text) and (quoted or text[i] != " "):
            char = text[i]
            if char == '"':
                quoted = not quoted
            elif char == "\\" and quoted and text[i + 1:i + 2] in _DUMP_ESCAPES:
                word.append(_DUMP_ESCAPES[text[i + 1]])
                i += 1
            else:
                word.append(char)
            i += 1
        words.append("".join(word))
    return words


@dataclass
class Dumped:
    """One unit as `systemd-analyze verify` loaded it: its dump's `Key: value` lines, and its commands."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    commands: dict[str, list[list[str]]] = field(default_factory=dict)  # ExecStart -> [argv, ...]

    def get(self, key: str) -> list[str]:
        return [value for k, value in self.fields if k == key]


@dataclass
class Analysis:
    returncode: int
    units: dict[str, Dumped]
    messages: list[str]  # what systemd-analyze verify says at its default log level: warnings and errors


def analyze(paths: list[Path]) -> Analysis:
    """`systemd-analyze verify` on unit files: its messages, and systemd's debug dump of each unit."""
    assert SYSTEMD_ANALYZE is not None, "systemd-analyze is not installed"

    def verify(level: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, paths)],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "SYSTEMD_LOG_LEVEL": level, "SYSTEMD_LOG_COLOR": "0"},
        )

    plain, debug = verify("info"), verify("debug")
    units: dict[str, Dumped] = {}
    current: Dumped | None = None
    command: str | None = None
    for line in debug.stdout.splitlines():
        depth = len(line) - len(line.lstrip("\t"))
        body = line.strip("\t")
        if depth == 1 and body.startswith("-> Unit ") and body.endswith(":"):
            current = units.setdefault(body[len("-> Unit "):-1], Dumped())
            command = None
        elif current is None:
            continue
        elif depth == 2 and body.startswith("-> ") and body.endswith(":"):
            command = body[3:-1]
        elif depth == 3 and command is not None and body.startswith("Command Line: "):
            current.commands.setdefault(command, []).append(dumped_words(body[len("Command Line: "):]))
        elif depth == 2 and ": " in body:
            command = None
            key, value = body.split(": ", 1)
            current.fields.append((key, value))
    return Analysis(plain.returncode, units, [line for line in plain.stderr.splitlines() if line.strip()])
