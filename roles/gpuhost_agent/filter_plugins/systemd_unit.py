r"""Values for systemd unit files, written so that systemd reads back exactly the value given: one value,
in the setting it was written in. Every role that writes a unit renders its variables through these
filters (the role loads gpuhost_agent, and with it this plugin, before it writes a unit).

systemd's rules (systemd.syntax(7), systemd.unit(5) SPECIFIERS, systemd.service(5) COMMAND LINES,
systemd.exec(5) EnvironmentFile=), and what each filter does about them:

- A unit file is read line by line (a newline, a carriage return or NUL ends a line); a line that ends
  in a backslash goes on on the next line; a value's leading and trailing white space is dropped.
  Every filter refuses control characters, and those that write a value as it is refuse white space
  around it and a trailing backslash.
- `%` starts a specifier (`%h`, `%n`, ...) in almost every setting: `%%` is one `%`.
- ExecStart= and its kin split the value into words. A word in double quotes keeps its spaces; inside,
  `\\` and `\"` are one backslash and one quote. `$` starts a variable reference (`$$` is one `$`),
  a lone `;` separates two commands, and `-@:+!` before the first word are prefixes: the program
  must be an absolute path without quotes, backslashes or `$` (systemd refuses the first two there and
  does not expand the last), every other word is quoted unless it is plainly safe.
- EnvironmentFile= files hold `NAME="value"` lines, with `\\`, `\"`, `\$` and \\` inside the quotes;
  no specifiers. Names are letters, digits and `_`, not starting with a digit.

A value that cannot be written is an AnsibleFilterError naming it: nothing is written.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from ansible.errors import AnsibleFilterError

# words that need no quotes in a command line or a list of paths
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# systemd's unit name characters (unit-name.c: VALID_CHARS, and `@` between a template and its instance)
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.[a-z]+")
UNIT_NAME_MAX = 255
# what systemd strips around a value (WHITESPACE in its string-util.h)
WHITESPACE = " \t\n\r"
UNIT_TYPES = ("service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "slice", "scope")


class _Refused(Exception):
    """Why a value cannot be written; the public filters turn it into an AnsibleFilterError."""


def _fail(value: object, why: str) -> AnsibleFilterError:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return AnsibleFilterError(f"cannot write {shown} into a systemd unit: {why}")


def _refusing(check: Callable[..., str]) -> Callable[..., str]:
    def filter_(value: Any, *args: Any) -> str:
        try:
            return check(value, *args)
        except _Refused as refused:
            raise _fail(value, str(refused)) from None

    filter_.__name__ = check.__name__
    filter_.__doc__ = check.__doc__
    return filter_


def _text(value: object) -> str:
    """The value as text: strings, and numbers as Ansible prints them; anything else is refused."""
    if isinstance(value, bool) or value is None:
        raise _Refused("expected text, got " + ("a boolean" if isinstance(value, bool) else "nothing (null)"))
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise _Refused(f"expected text, got {type(value).__name__}")
    text = str(value)
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc":
            raise _Refused(f"it holds the control character {char!r} (a newline, tab, NUL, ...)")
        if category == "Cs":
            raise _Refused("it is not valid UTF-8 text")
    return text


def _specifiers(text: str) -> str:
    return text.replace("%", "%%")


def _as_is(text: str) -> str:
    if text != text.strip(WHITESPACE):
        raise _Refused("systemd drops the white space around a value")
    if text.endswith("\\"):
        raise _Refused("a trailing backslash joins the next line of the unit to this one")
    return text


@_refusing
def systemd_value(value: object) -> str:
    """A setting's value as it is (Description=, What=, TimeoutStartSec=): `%` doubled."""
    return _specifiers(_as_is(_text(value)))


def _normal_path(value: object) -> str:
    text = _text(value)
    if not text.startswith("/"):
        raise _Refused("expected an absolute path")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _Refused("a path through '..' is refused")
    return _as_is("/" + "/".join(parts))


@_refusing
def systemd_path(value: object) -> str:
    """An absolute path setting (Where=, ConditionPathExists=, EnvironmentFile=): normalised as systemd
    normalises it (`//`, `/./` and a trailing `/` go), `..` refused, `%` doubled."""
    return _specifiers(_normal_path(value))


def _quote_word(text: str) -> str:
    if _PLAIN_WORD.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _word(value: object) -> str:
    try:
        return _text(value)
    except _Refused as refused:
        shown = repr(value)
        raise _Refused(f"the word {shown[:200]}{'...' if len(shown) > 200 else ''}: {refused}") from None


def _sequence(value: object, what: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) or len(value) == 0:
        raise _Refused(f"expected {what} as a non-empty list")
    return value


# what ReadWritePaths= and its kin take before a path: `-` (ignore a missing path), `+` (the host's root)
PATH_PREFIXES = ("", "-", "+", "-+", "+-")


@_refusing
def systemd_paths(values: object, prefix: str = "") -> str:
    """A space-separated list of absolute paths (RequiresMountsFor=, ReadWritePaths=), each one word,
    with `prefix` inside its quotes (`-`: a missing path is ignored)."""
    if prefix not in PATH_PREFIXES:
        raise _Refused(f"the prefix {prefix!r} is none of {', '.join(repr(p) for p in PATH_PREFIXES)}")
    return " ".join(_specifiers(_quote_word(prefix + _normal_path(_word(value))))
                    for value in _sequence(values, "the paths"))


@_refusing
def systemd_exec(argv: object) -> str:
    """A command line (ExecStart=, ExecStartPre=, ...) from its argument list: the program an absolute
    path, every argument one word, nothing read as a specifier, a variable or a separator."""
    words = [_word(arg) for arg in _sequence(argv, "the command [program, argument, ...]")]
    if _normal_path(words[0]) != words[0]:
        raise _Refused("the program must be a normalised absolute path (systemd reads -@:+! before it as prefixes)")
    if any(char in words[0] for char in "\"'\\$"):
        # systemd refuses quotes and backslashes in a program's path, and does not read `$` there as a variable
        raise _Refused("systemd refuses a program path holding a quote, a backslash or `$`")
    return " ".join(_specifiers(_quote_word(word)).replace("$", "$$") for word in words)


@_refusing
def systemd_unit_name(value: object) -> str:
    """A unit's name (Requires=, Before=, ...), checked as systemd checks it."""
    text = _text(value)
    if len(text) > UNIT_NAME_MAX or not _UNIT_NAME.fullmatch(text) or text.rsplit(".", 1)[1] not in UNIT_TYPES:
        raise _Refused(
            "not a unit name (letters, digits, ':', '_', '.', '\\', '-', a unit type suffix, "
            f"at most {UNIT_NAME_MAX} characters)"
        )
    return text


def _env_value(text: str) -> str:
    return '"' + re.sub(r'(["\\`$])', r"\\\1", text) + '"'


def systemd_environment_file(variables: object) -> str:
    """The text of an EnvironmentFile= file: one NAME="value" line per variable, in the given order.
    A refused value is never shown (it may be a secret): the error names the variable."""
    if not isinstance(variables, Mapping):
        raise AnsibleFilterError("a systemd environment file is written from a mapping of names to values")
    lines = []
    for name, value in variables.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise _fail(name, "an environment variable's name is letters, digits and '_', not starting with a digit")
        try:
            text = _text(value)
        except _Refused as refused:
            raise AnsibleFilterError(f"cannot write the environment variable {name}: {refused}") from None
        lines.append(f"{name}={_env_value(text)}\n")
    return "".join(lines)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "systemd_value": systemd_value,
            "systemd_path": systemd_path,
            "systemd_paths": systemd_paths,
            "systemd_exec": systemd_exec,
            "systemd_unit_name": systemd_unit_name,
            "systemd_environment_file": systemd_environment_file,
        }
