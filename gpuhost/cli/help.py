"""Command help laid out like the AWS CLI reference: NAME, DESCRIPTION, SYNOPSIS, OPTIONS, EXAMPLES.

Conventions the formatter reads from the command's own text:
- an option's help starts with its type in parentheses, `(string) ...`, and may end with
  `Example: ...`, printed on a line of its own;
- the docstring's first paragraph is the one-line summary; a line `Examples:` starts the
  examples and a line `Output:` the output fields, both printed as written;
- the epilog lists exit codes as `Exit codes: 0 ...; 1 ...`, one per line in the output.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from typer.core import TyperCommand

INDENT = 7
_TYPE = re.compile(r"^\((\w+)\)\s*")


def _paragraphs(text: str) -> list[str]:
    blocks = [b.replace("\b\n", "").replace("\b", "").strip() for b in re.split(r"\n\s*\n", text)]
    return [" ".join(b.split()) for b in blocks if b]


def _split_option_help(text: str) -> tuple[str, str, str]:
    match = _TYPE.match(text)
    kind = match.group(1) if match else ""
    body = text[match.end() :] if match else text
    description, _, example = body.partition("Example: ")
    return kind, description.strip(), example.strip()


class ReferenceCommand(TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        doc = inspect.cleandoc(self.help or "")
        prose, _, rest = doc.partition("\nExamples:\n")
        examples, _, output = rest.partition("\nOutput:\n")
        paragraphs = _paragraphs(prose)
        summary = paragraphs[0] if paragraphs else ""

        def section(title: str) -> None:
            formatter.write("\n" if formatter.buffer else "")
            formatter.write(f"{title}\n")

        def text(value: str, indent: int = INDENT) -> None:
            formatter.current_indent = indent
            formatter.write_text(value)
            formatter.current_indent = 0

        section("NAME")
        text(f"{ctx.command_path} - {summary}")
        section("DESCRIPTION")
        for i, paragraph in enumerate(paragraphs[1:]):
            if i:
                formatter.write("\n")
            text(paragraph)

        options = [p for p in self.get_params(ctx) if getattr(p, "opts", None) and p.opts[0].startswith("--")]
        section("SYNOPSIS")
        arguments = [p.make_metavar(ctx) for p in self.get_params(ctx) if p.param_type_name == "argument"]
        formatter.write(" " * (INDENT + 2) + " ".join([ctx.command_path, *arguments]) + "\n")
        for param in options:
            name = param.opts[0]
            shown = f"[{name}]" if getattr(param, "is_flag", False) else f"[{name} <value>]"
            formatter.write(" " * INDENT + shown + "\n")

        section("OPTIONS")
        positionals = [p for p in self.get_params(ctx) if p.param_type_name == "argument"]
        for n, param in enumerate([*positionals, *options]):
            name = param.make_metavar(ctx) if param.param_type_name == "argument" else param.opts[0]
            if name == "--help":
                continue
            kind, description, example = _split_option_help(getattr(param, "help", None) or "")
            if n:
                formatter.write("\n")
            label = f"{name} ({kind})" if kind else name
            formatter.write(" " * INDENT + label + "\n")
            default = param.default
            if not getattr(param, "is_flag", False) and default not in (None, "", False):
                description += f" Default: {default}."
            text(description, INDENT + 3)
            if example:
                formatter.write("\n" + " " * (INDENT + 3) + f"Example: {example}\n")

        if examples.strip():
            section("EXAMPLES")
            for line in examples.splitlines():
                formatter.write((" " * INDENT + line.rstrip() if line.strip() else "") + "\n")

        if output.strip():
            section("OUTPUT")
            for line in output.splitlines():
                formatter.write((" " * INDENT + line.rstrip() if line.strip() else "") + "\n")

        epilog = " ".join((self.epilog or "").split())
        if epilog:
            title, _, codes = epilog.partition(": ")
            section(title.upper())
            for item in re.split(r";\s+(?=\d\s)", codes):
                text(item.rstrip("."), INDENT)
