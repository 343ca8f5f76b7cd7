"""scripts/setup-test-host installs every Debian package whose commands the suite runs on the test machine.

The commands are found in the source: the programs tests/, bench/ and gpuhost/ start through
subprocess (directly or through a module's own `run(*command)` helper) or look up with
shutil.which, and the command and shell tasks of the molecule plays that run on the controller
(`hosts: localhost`). Each must be listed in setup-test-host's PACKAGES beside the package that has
it (dpkg says which, where dpkg is), or in its OPTIONAL_COMMANDS with what needs it. Commands run
inside containers and instances are theirs to install, not this machine's.
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO, VENV_BIN

SETUP = REPO / "scripts" / "setup-test-host"
PYTHON_DIRS = ("tests", "bench", "gpuhost")
SUBPROCESS_CALLS = {"run", "check_output", "check_call", "Popen", "call", "create_subprocess_exec"}
# Programs of the .venv scripts/setup-test-host makes (pip install -e .[test]), not Debian packages.
VENV_COMMANDS = {"ansible-playbook"}
SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
SHELL_WORDS = {
    "set", "cd", "echo", "printf", "test", "[", "if", "then", "else", "fi", "for", "do", "done",
    "while", "local", "export", "exit", "return", "true", "false", "read", ":",
}  # fmt: skip


def declared() -> tuple[dict[str, str], dict[str, str]]:
    """setup-test-host's PACKAGES as {command: package} and OPTIONAL_COMMANDS as {command: why}."""
    text = SETUP.read_text()
    arrays: dict[str, list[tuple[str, str]]] = {}
    for name in ("PACKAGES", "OPTIONAL_COMMANDS"):
        match = re.search(rf"^{name}=\(\n(.*?)^\)", text, re.M | re.S)
        assert match, f"{SETUP} has no {name}=( ... ) array"
        entries = []
        for line in match.group(1).splitlines():
            word, _, comment = line.partition("#")
            assert word.split() and len(word.split()) == 1, f"one name per line in {name}: {line!r}"
            assert comment.strip(), f"{name}: {word.strip()} has no comment saying what it is for"
            entries.append((word.strip(), comment.strip()))
        arrays[name] = entries
    commands: dict[str, str] = {}
    for package, comment in arrays["PACKAGES"]:
        if comment.startswith("("):
            assert comment.endswith(")"), f"{package}: {comment!r}"
            continue
        for command in comment.split():
            assert command not in commands, f"{command} is listed under {commands[command]} and {package}"
            commands[command] = package
    optional = dict(arrays["OPTIONAL_COMMANDS"])
    return commands, optional


def _program(node: ast.expr, constants: dict[str, str]) -> str | None:
    """A literal program name (a constant, or a module-level string constant); system paths by their name."""
    value = None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        value = node.value
    elif isinstance(node, ast.Name):
        value = constants.get(node.id)
    if value is None or not value or " " in value:
        return None
    if value.startswith("/"):
        directory, _, name = value.rpartition("/")
        return name if directory in SYSTEM_DIRS else None
    return value


def _first_program(args: list[ast.expr], scope: Scope) -> set[str]:
    """The program a subprocess call starts: a list literal's first element, a name bound to such a list, or
    a call of a module function that returns one."""
    if not args:
        return set()
    first = args[0]
    if isinstance(first, (ast.List, ast.Tuple)):
        program = _program(first.elts[0], scope.constants) if first.elts else None
        return {program} if program else set()
    if isinstance(first, ast.Name) and first.id in scope.lists:
        return scope.lists[first.id]
    if isinstance(first, ast.Call) and isinstance(first.func, ast.Name) and first.func.id in scope.returns:
        return scope.returns[first.func.id]
    program = _program(first, scope.constants)
    return {program} if program else set()


class Scope:
    """What a module binds: string constants, names bound to command lists, functions returning one."""

    def __init__(self, tree: ast.Module) -> None:
        self.constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            if isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        self.lists: dict[str, set[str]] = defaultdict(set)
        self.returns: dict[str, set[str]] = defaultdict(set)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.List):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                program = self._head(node.value)
                for target in targets:
                    if program and isinstance(target, ast.Name):
                        self.lists[target.id].add(program)
            if isinstance(node, ast.FunctionDef):
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.List):
                        program = self._head(ret.value)
                        if program:
                            self.returns[node.name].add(program)

    def _head(self, value: ast.List) -> str | None:
        return _program(value.elts[0], self.constants) if value.elts else None


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _is_subprocess_call(call: ast.Call) -> bool:
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr in SUBPROCESS_CALLS
        and isinstance(func.value, ast.Name)
        and func.value.id in {"subprocess", "asyncio"}
    )


def _wrappers(tree: ast.Module) -> set[str]:
    """Module functions that start their first (or variadic) parameter as a program: `run("mkfs.xfs", ...)`."""
    names = set()
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        params = {arg.arg for arg in node.args.args[:1]} | ({node.args.vararg.arg} if node.args.vararg else set())
        for call in ast.walk(node):
            if not (isinstance(call, ast.Call) and _is_subprocess_call(call) and call.args):
                continue
            first = call.args[0]
            if isinstance(first, ast.Call) and first.args:  # list(command)
                first = first.args[0]
            if isinstance(first, (ast.List, ast.Tuple)) and first.elts and isinstance(first.elts[0], ast.Starred):
                first = first.elts[0].value
            if isinstance(first, ast.Name) and first.id in params:
                names.add(node.name)
    return names


def python_commands() -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for directory in PYTHON_DIRS:
        for path in sorted((REPO / directory).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            scope = Scope(tree)
            wrappers = _wrappers(tree)
            for call in ast.walk(tree):
                if not isinstance(call, ast.Call):
                    continue
                name = _called_name(call)
                programs: set[str] = set()
                if name == "which" and call.args:
                    programs = {p for p in [_program(call.args[0], scope.constants)] if p}
                elif _is_subprocess_call(call) or (isinstance(call.func, ast.Name) and name in wrappers):
                    programs = _first_program(call.args, scope)
                for program in programs:
                    found[program].add(str(path.relative_to(REPO)))
    return found


def _shell_commands(script: str) -> set[str]:
    """The first word of each simple command of a shell task (pipelines, lists, command substitutions)."""
    commands = set()
    for part in re.split(r"\n|\||&&|;|\$\(", script):
        words = [w for w in part.split() if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]
        if words and words[0] not in SHELL_WORDS and re.match(r"^[a-z][a-z0-9._-]*$", words[0]):
            commands.add(words[0])
    return commands


def _tasks(items: list[Any]) -> Any:
    for task in items or []:
        if isinstance(task, dict):
            yield task
            for key in ("block", "rescue", "always"):
                yield from _tasks(task.get(key) or [])


def molecule_controller_commands() -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted((REPO / "molecule").rglob("*.yml")):
        plays = yaml.safe_load(path.read_text())
        if not isinstance(plays, list):
            continue
        for play in plays:
            if not (isinstance(play, dict) and play.get("hosts") == "localhost"):
                continue
            for task in _tasks((play.get("tasks") or []) + (play.get("pre_tasks") or [])):
                for module in ("ansible.builtin.command", "ansible.builtin.shell"):
                    spec = task.get(module)
                    if spec is None:
                        continue
                    if isinstance(spec, dict) and spec.get("argv"):
                        words = {str(spec["argv"][0])}
                    else:
                        text = spec.get("cmd", "") if isinstance(spec, dict) else str(spec)
                        words = _shell_commands(text) if module.endswith("shell") else set(text.split()[:1])
                    for word in words:
                        if "{{" not in word:
                            found[word].add(str(path.relative_to(REPO)))
    return found


@functools.cache
def used_commands() -> dict[str, set[str]]:
    found = python_commands()
    for command, where in molecule_controller_commands().items():
        found[command] |= where
    return found


def test_every_command_the_suite_runs_is_declared() -> None:
    commands, optional = declared()
    undeclared = {
        command: sorted(where)
        for command, where in used_commands().items()
        if command not in commands and command not in optional and command not in VENV_COMMANDS
    }
    assert undeclared == {}, "add each to scripts/setup-test-host's PACKAGES (beside its package) or OPTIONAL_COMMANDS"


def test_the_scanner_sees_each_kind_of_call() -> None:
    """The commands found include one of each way the suite starts a program, so the scan is not blind."""
    found = used_commands()
    assert "tests/integration/test_fleet.py" in found["ssh-agent"]  # subprocess.run([...])
    assert "tests/integration/test_storage_devices.py" in found["mkfs.ext4"]  # a module's run(*command)
    assert "tests/support/registry.py" in found["docker-registry"]  # shutil.which(CONSTANT)
    assert "gpuhost/facts/systemd.py" in found["systemctl"]  # a command list built first, then run
    assert "tests/support/registry.py" in found["nsenter"]  # a function that returns the command
    assert "molecule/ebs_tuning/cleanup.yml" in found["kill"]  # a controller play's argv
    assert "molecule/docker_storage/create.yml" in found["mkfs.xfs"]  # a controller play's shell script
    assert "tests/integration/test_ebs_agent.py" in found["python3.9"]


@functools.cache
def list_heads() -> set[str]:
    """The first element of every list literal in the Python source: commands kept in lists of commands."""
    heads = set()
    for directory in PYTHON_DIRS:
        for path in (REPO / directory).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant):
                    heads.add(str(node.elts[0].value))
    return heads


def test_every_declared_command_is_used() -> None:
    """No stale entries: each declared command is run by the source above, heads a command list there
    (bench/check_latency.py keeps a list of them) or is run by a script in scripts/."""
    commands, optional = declared()
    found = used_commands().keys() | list_heads()
    scripts = "\n".join(path.read_text() for path in sorted((REPO / "scripts").iterdir()) if path != SETUP)
    unused = [
        command
        for command in [*commands, *optional]
        if command not in found and not re.search(rf"(?<![\w.-]){re.escape(command)}(?![\w.-])", scripts)
    ]
    assert unused == []


def test_venv_commands_come_from_the_venv() -> None:
    missing = [command for command in VENV_COMMANDS if not (VENV_BIN / command).exists()]
    assert missing == [], f"not in {VENV_BIN}"


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="no dpkg here: the package names are Debian's")
def test_each_command_is_in_the_package_it_is_listed_under() -> None:
    commands, _ = declared()
    paths = {command: [f"{d}/{command}" for d in SYSTEM_DIRS if Path(d, command).exists()] for command in commands}
    missing = sorted(command for command, found in paths.items() if not found)
    assert missing == [], "not installed here: scripts/setup-test-host installs them"
    query = subprocess.run(
        ["dpkg-query", "-S", *(p for found in paths.values() for p in found)],
        capture_output=True,
        text=True,
        check=False,
    )
    owners: dict[str, set[str]] = defaultdict(set)
    for line in query.stdout.splitlines():
        packages, _, path = line.partition(": ")
        for package in packages.split(", "):
            owners[path.rsplit("/", 1)[-1]].add(package.split(":")[0])
    wrong = {
        command: sorted(owners[command]) for command, package in commands.items() if package not in owners[command]
    }
    assert wrong == {}, "dpkg names another package for these commands"
