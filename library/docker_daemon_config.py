#!/usr/bin/python
"""Ansible module: the single writer of Docker's daemon.json."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_config
short_description: Merge settings into Docker's daemon.json without losing anything else
description:
  - Deep-merges O(settings) into the existing C(daemon.json) and keeps every key it was not asked to change.
  - Nested objects (C(features), C(runtimes), C(log-opts)) are merged key by key; lists and scalars are replaced.
  - A key whose value in O(settings) is C(null) is removed.
  - An existing file that is not valid JSON (or not a JSON object) is never replaced; the task fails with the path
    and the parse error and leaves the file as it was. So does a file dockerd could not read or this module could not
    rewrite faithfully (a number that is not finite, C(NaN), a key given twice, text that is not UTF-8, nesting deeper
    than 100 levels) and a path that is not a regular file (a directory, a FIFO).
  - A number in O(settings) that is not finite (C(.nan), C(.inf)), or a key that is not a string, fails the task before
    anything is written.
  - A symlinked daemon.json is followed; its target is rewritten, and the link is kept.
  - Writes atomically (a temporary file in the target's directory, then rename) with the previous file's owner, group
    and mode (setuid and setgid bits included), keeps a timestamped backup of the previous content when O(backup=true),
    and reports C(changed) only when the content changes. Nothing is left behind when it fails.
  - Supports check mode and diff mode.
version_added: "0.1.0"
author: gpuhost maintainers
options:
  path:
    description: The daemon.json to edit.
    type: path
    default: /etc/docker/daemon.json
  settings:
    description:
      - Keys to merge into the file. Nested mappings are merged recursively; C(null) removes a key.
    type: dict
    required: true
  backup:
    description: Keep a timestamped copy of the previous file next to it when the content changes.
    type: bool
    default: true
  mode:
    description:
      - Permissions of the file when it is created, in octal (C("0640")) or symbolic (C(u=rw,g=r,o=)) form, as with
        M(ansible.builtin.file). An existing file keeps its own.
    type: raw
    default: "0644"
notes:
  - Owned by the gpuhost roles docker, docker_storage and nvidia_container_toolkit; nothing else should write the file.
  - C(nvidia-ctk runtime configure --cdi.enabled) replaces the whole C(features) object; this module does not.
"""

EXAMPLES = r"""
- name: Register the nvidia runtime and enable CDI, keeping other features
  docker_daemon_config:
    settings:
      runtimes:
        nvidia:
          path: /usr/bin/nvidia-container-runtime
          args: []
      features:
        cdi: true

- name: Drop a default-runtime set earlier
  docker_daemon_config:
    settings:
      default-runtime: null
"""

RETURN = r"""
config:
  description: The resulting daemon.json content.
  returned: always
  type: dict
backup_file:
  description: The backup of the previous content, when one was written.
  returned: changed and backup
  type: str
changed_keys:
  description: Dotted paths of the keys that were added, changed or removed.
  returned: always
  type: list
  elements: str
"""

import errno
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
import types
from collections.abc import Callable
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule

MAX_BYTES = 16 * 1024 * 1024  # a daemon.json is a few kB
MAX_DEPTH = 100  # dockerd's own options nest three levels deep
_OCTAL_MODE = re.compile(r"[0-7]{1,5}")


class Refusal(Exception):
    """Why the module fails; nothing was written. `details` go into the task result."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def parse_mode(mode: Any) -> int:
    """The mode for a new file: an int, an octal string (C(0644)) or a symbolic one (C(u=rw,g=r,o=r))."""
    if isinstance(mode, int) and not isinstance(mode, bool):
        value = mode
    elif isinstance(mode, str) and _OCTAL_MODE.fullmatch(mode):
        value = int(mode, 8)
    elif isinstance(mode, str) and mode and mode == mode.strip():
        umask = os.umask(0)
        os.umask(umask)
        new_file = types.SimpleNamespace(st_mode=stat.S_IFREG | (0o666 & ~umask))
        try:
            value = AnsibleModule._symbolic_mode_to_octal(new_file, mode)
        except ValueError:
            value = -1
    else:
        value = -1
    if not 0 <= value <= 0o7777:
        raise Refusal(
            f"mode {mode!r} is not a file mode: write it in octal (\"0644\") or symbolic form (\"u=rw,g=r,o=r\")"
        )
    return value


def check_settings(value: Any, where: str = "settings", depth: int = 0) -> None:
    """`settings` must be something dockerd can read back: JSON types, string keys, finite numbers."""
    if depth > MAX_DEPTH:
        raise Refusal(f"{where} nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Refusal(f"{where} has the key {key!r}, which is not a string: daemon.json keys are strings")
            check_settings(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_settings(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise Refusal(f"{where} is {value}: only finite numbers can be written to daemon.json (dockerd reads no other)")
    elif not (value is None or isinstance(value, (str, int, float))):
        raise Refusal(f"{where} is a {type(value).__name__}: daemon.json holds only JSON values")


def merge(current: dict[str, Any], settings: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """Deep-merge `settings` into a copy of `current`; return it and the dotted keys that changed."""
    result = dict(current)
    changed: list[str] = []
    for key, value in settings.items():
        dotted = f"{prefix}{key}"
        if value is None:
            if key in result:
                del result[key]
                changed.append(dotted)
            continue
        existing = result.get(key)
        if isinstance(value, dict):
            # a null inside removes a key: it never reaches the file, even where nothing was there to remove
            merged, nested = merge(existing if isinstance(existing, dict) else {}, value, dotted + ".")
            if not isinstance(existing, dict):
                result[key] = merged
                changed.append(dotted)
            else:
                result[key] = merged
                changed.extend(nested)
        elif key not in result or existing != value or type(existing) is not type(value):
            result[key] = value
            changed.append(dotted)
    return result, changed


def render(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, allow_nan=False) + "\n"


def _refuse_constant(path: str) -> Callable[[str], NoReturn]:
    def refuse(name: str) -> NoReturn:
        raise Refusal(
            f"{path} holds {name}, which is not a finite number and dockerd cannot read it; it was left untouched. "
            "Fix it by hand, then run again.",
            path=path,
        )

    return refuse


def parse(path: str, text: str) -> dict[str, Any]:
    """The file's JSON object, or a Refusal saying why it cannot be rewritten faithfully."""

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            _refuse_constant(path)(number)
        return value

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for key, item in pairs:
            if key in value:
                raise Refusal(
                    f"{path} gives the key {key!r} twice; it was left untouched. Keep one of them, then run again.",
                    path=path,
                )
            value[key] = item
        return value

    depth = nesting(text)
    if depth > MAX_DEPTH:
        raise Refusal(f"{path} nests {depth} levels deep (more than {MAX_DEPTH}); it was left untouched.", path=path)
    try:
        value = json.loads(
            text, parse_float=finite, parse_constant=_refuse_constant(path), object_pairs_hook=no_duplicates
        )
    except ValueError as exc:
        raise Refusal(
            f"{path} is not valid JSON ({exc}); it was left untouched. Fix it by hand, then run again.",
            path=path,
            parse_error=str(exc),
        ) from None
    if not isinstance(value, dict):
        raise Refusal(f"{path} holds a JSON {type(value).__name__}, not an object; it was left untouched.", path=path)
    return value


def nesting(text: str) -> int:
    """How deep the brackets of a JSON text go (outside strings): checked before parsing, which recurses."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def real_path(path: str) -> str:
    """The file to edit: `path`, or where its symlinks lead."""
    if not os.path.islink(path):
        return path
    real = os.path.realpath(path)
    if os.path.islink(real) or not os.path.isdir(os.path.dirname(real)):
        raise Refusal(f"{path} is a symlink that leads nowhere usable ({real}); it was left untouched.", path=path)
    return real


def kind_of(mode: int) -> str:
    """What a path that is not a regular file is (gpuhost.userfile.kind_of: modules cannot import gpuhost)."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "something other than a file"


def read_current(path: str) -> tuple[dict[str, Any], str | None]:
    """The current object and text at `path` ({} and None when there is no file)."""
    try:
        # O_NONBLOCK: a FIFO must not block the open; it is refused below like any other non-file
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket cannot be opened: say what it is
            raise Refusal(f"{path} is {kind_of(os.stat(path).st_mode)}, not a regular file; it was left untouched.",
                          path=path) from None
        raise Refusal(f"cannot read {path}: {exc.strerror}", path=path) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refusal(f"{path} is {kind_of(info.st_mode)}, not a regular file; it was left untouched.", path=path)
        if info.st_size > MAX_BYTES:
            raise Refusal(f"{path} is {info.st_size} bytes: too large for a daemon.json; left untouched.", path=path)
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise Refusal(f"cannot read {path}: {exc.strerror}", path=path) from None
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refusal(
            f"{path} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); it was left untouched.",
            path=path,
        ) from None
    if not text.strip():
        return {}, text
    return parse(path, text), text


def backup_name(path: str) -> str:
    """Where the previous content goes: Ansible's backup naming (file.PID.DATE@TIME~)."""
    return f"{path}.{os.getpid()}.{time.strftime('%Y-%m-%d@%H:%M:%S~', time.localtime())}"


def write_atomically(path: str, content: str, mode: int, backup: bool) -> str | None:
    """Replace `path` with `content` in one rename; return the backup's path when one was made.
    An existing file's owner, group and mode are kept (chown first: chown clears setuid and setgid)."""
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".daemon.json.", dir=directory)
    except OSError as exc:
        raise Refusal(f"cannot write {path}: cannot create a file in {directory} ({exc.strerror})", path=path) from None
    backup_file = None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            previous: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            previous = None
        if previous is not None:
            created = os.stat(tmp)
            if (previous.st_uid, previous.st_gid) != (created.st_uid, created.st_gid):
                os.chown(tmp, previous.st_uid, previous.st_gid)
            os.chmod(tmp, stat.S_IMODE(previous.st_mode))
            if backup:
                backup_file = backup_name(path)
                shutil.copy2(path, backup_file)
        else:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        for leftover in (tmp, backup_file):
            if leftover and os.path.lexists(leftover):
                os.unlink(leftover)
        raise Refusal(f"cannot write {path}: {exc.strerror or exc}", path=path) from None
    return backup_file


def update(
    path: str,
    settings: dict[str, Any],
    mode: Any = "0644",
    backup: bool = True,
    check_mode: bool = False,
    diff: bool = False,
) -> dict[str, Any]:
    """Everything the module does; a Refusal leaves every file as it was."""
    new_file_mode = parse_mode(mode)
    if not isinstance(settings, dict):
        raise Refusal(f"settings is a {type(settings).__name__}, not a mapping")
    check_settings(settings)
    real = real_path(path)
    current, before_text = read_current(real)
    desired, changed_keys = merge(current, settings)
    try:
        after_text = render(desired)
    except (ValueError, RecursionError) as exc:
        raise Refusal(f"cannot write {path}: {exc}", path=path) from None
    # an unchanged file keeps its own formatting: it is rewritten only when a key changes
    changed = before_text is None or bool(changed_keys)
    result: dict[str, Any] = {"changed": changed, "config": desired, "changed_keys": changed_keys, "path": path}
    if changed and diff:
        result["diff"] = {
            "before": before_text if before_text is not None else "",
            "after": after_text,
            "before_header": path,
            "after_header": path,
        }
    if changed and not check_mode:
        backup_file = write_atomically(real, after_text, new_file_mode, backup and before_text is not None)
        if backup_file:
            result["backup_file"] = backup_file
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/docker/daemon.json"},
            "settings": {"type": "dict", "required": True},
            "backup": {"type": "bool", "default": True},
            "mode": {"type": "raw", "default": "0644"},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = update(
            params["path"], params["settings"], params["mode"], params["backup"], module.check_mode, module._diff
        )
    except Refusal as refusal:
        module.fail_json(msg=refusal.message, **refusal.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
