"""Ansible inventories (static files, directories, `amazon.aws.aws_ec2` and any other inventory plugin)
read through Ansible's own inventory API, so groups, `--limit` patterns and variables mean what they
mean to ansible-playbook."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from gpuhost import userfile
from gpuhost.fleet.targets import DEFAULT_PYTHON, Target, parse_port, parse_ssh_args
from gpuhost.model import UsageError

# Connection variables and their older aliases, first match wins (as in Ansible).
_HOST_VARS = ("ansible_host", "ansible_ssh_host")
_PORT_VARS = ("ansible_port", "ansible_ssh_port")
_USER_VARS = ("ansible_user", "ansible_ssh_user")
_KEY_VARS = ("ansible_ssh_private_key_file", "ansible_private_key_file")
_ARGS_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")


def load_inventory(path: str, limit: str | None = None) -> list[Target]:
    """Hosts of the inventory at `path` (file or directory), restricted by an Ansible `--limit` pattern."""
    if not os.path.lexists(path):
        raise UsageError(f"inventory {path} does not exist", "Pass a file or directory: --inventory inventories/prod")
    check_inventory_files(path)
    try:
        from ansible.errors import AnsibleError
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.vars.manager import VariableManager
    except ImportError as exc:  # pragma: no cover - ansible-core is a dependency
        raise UsageError(f"reading an inventory needs ansible-core: {exc}", "pip install ansible-core") from None

    _init_plugins()
    loader = DataLoader()
    try:
        inventory = InventoryManager(loader=loader, sources=[os.path.abspath(path)])
    except AnsibleError as exc:
        raise UsageError(f"inventory {path}: {exc}") from None
    if not inventory.get_hosts("all"):
        raise UsageError(
            f"inventory {path} has no hosts (if Ansible could not read it, its messages are above)",
            "Check it with `ansible-inventory -i PATH --graph`; an aws_ec2 inventory also needs AWS credentials.",
        )
    try:
        if limit:
            inventory.subset(limit)
        hosts = inventory.get_hosts("all")
    except Exception as exc:  # AnsibleError for a missing @file, re.error for a bad ~regex, ...
        raise UsageError(
            f"--limit {limit!r}: {exc}",
            "Patterns are Ansible's: 'gpu_hosts', 'gpu-0*', 'gpu_hosts:!gpu-07', '@file' (one pattern a line).",
        ) from None
    if not hosts:
        raise UsageError(
            f"--limit {limit!r} matches no host of {path}",
            f"Groups there: {', '.join(sorted(inventory.groups))}. "
            "Patterns are Ansible's: 'gpu_hosts', 'gpu-0*', 'gpu_hosts:!gpu-07', 'gpu_hosts:&type_p5_48xlarge'.",
        )
    variables = VariableManager(loader=loader, inventory=inventory)
    targets = []
    for host in hosts:
        host_vars = variables.get_vars(host=host, include_hostvars=False)
        targets.append(target_from_vars(host.name, host_vars, _templar(loader, host_vars)))
    return targets


MAX_INVENTORY_ENTRIES = 10_000


def check_inventory_files(path: str) -> None:
    """Refuse, before Ansible opens them, the files of an inventory it could not read safely: a FIFO
    (Ansible's open would wait forever), a device such as /dev/zero (it would read without end), a
    file larger than INVENTORY_MAX. Ansible reads a directory's files and the group_vars/ and
    host_vars/ beside a file, so those are checked too."""
    if os.path.isdir(path):
        trees = [path]
    else:
        userfile.check_regular(path, "inventory", userfile.INVENTORY_MAX)
        base = os.path.dirname(os.path.abspath(path))
        trees = [os.path.join(base, name) for name in ("group_vars", "host_vars")]
    seen = 0
    for tree in trees:
        for directory, subdirectories, files in os.walk(tree, followlinks=True):
            # Ansible skips names starting with a dot (.git, editor files): so does this
            subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
            names = sorted(f for f in files if not f.startswith("."))
            seen += len(subdirectories) + len(names)  # a loop of directory links ends here too
            if seen > MAX_INVENTORY_ENTRIES:
                raise UsageError(f"inventory {path} holds more than {MAX_INVENTORY_ENTRIES} files and directories",
                                 "Name the inventory directory itself, not a tree above it.")
            for name in names:
                candidate = os.path.join(directory, name)
                if os.path.lexists(candidate) and not os.path.exists(candidate):
                    continue  # a dangling link: Ansible skips it too
                userfile.check_regular(candidate, "inventory file", userfile.INVENTORY_MAX)


@functools.cache
def _init_plugins() -> None:
    """Once per process: Ansible's collection loader (amazon.aws.aws_ec2 lives in a collection)."""
    from ansible.plugins.loader import init_plugin_loader

    init_plugin_loader()


def _templar(loader: Any, host_vars: Mapping[str, Any]) -> Any:
    from ansible.template import Templar

    return Templar(loader=loader, variables=dict(host_vars))


def _first(host_vars: Mapping[str, Any], names: tuple[str, ...], templar: Any, host: str) -> str | None:
    for name in names:
        value = host_vars.get(name)
        if value is None or value == "":
            continue
        if isinstance(value, str) and "{{" in value:
            try:
                value = templar.template(value)
            except Exception as exc:
                raise UsageError(f"inventory host {host}: cannot template {name}: {exc}") from None
        return str(value)
    return None


def target_from_vars(name: str, host_vars: Mapping[str, Any], templar: Any = None) -> Target:
    """Map a host's Ansible connection variables onto a fleet target."""
    connection = _first(host_vars, ("ansible_connection",), templar, name) or "ssh"
    target = Target(name=name, hostname=_first(host_vars, _HOST_VARS, templar, name) or name, connection=connection)
    if target.is_local:
        return target
    if not target.is_ssh:
        target.unsupported = f"ansible_connection {connection!r} (fleet checks connect over SSH, or run locally)"
        return target
    port = _first(host_vars, _PORT_VARS, templar, name)
    target.port = parse_port(port, f"inventory host {name}") if port else None
    target.user = _first(host_vars, _USER_VARS, templar, name)
    key = _first(host_vars, _KEY_VARS, templar, name)
    if key:
        target.identity_files.append(os.path.expanduser(key))
    for var in _ARGS_VARS:
        text = _first(host_vars, (var,), templar, name)
        if text:
            config_file, options = parse_ssh_args(text, f"inventory host {name}: {var}")
            target.ssh_config_file = config_file or target.ssh_config_file
            if "identityfile" in options:
                target.identity_files.append(os.path.expanduser(options.pop("identityfile")))
            target.ssh_options.update(options)
    interpreter = _first(host_vars, ("ansible_python_interpreter",), templar, name)
    if interpreter and not interpreter.startswith("auto"):
        target.python = interpreter
    else:
        target.python = DEFAULT_PYTHON
    become = host_vars.get("ansible_become", False)
    target.become = become if isinstance(become, bool) else str(become).strip().lower() in ("true", "yes", "1")
    method = _first(host_vars, ("ansible_become_method",), templar, name) or "sudo"
    become_user = _first(host_vars, ("ansible_become_user",), templar, name) or "root"
    if target.become and (method != "sudo" or become_user != "root"):
        target.unsupported = f"become with {method} to {become_user} (fleet checks become root with `sudo -n` only)"
    return target
