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
    and the parse error and leaves the file as it was.
  - Writes atomically (a temporary file in the same directory, then rename), keeps a timestamped backup of the
    previous content when O(backup=true), and reports C(changed) only when the content changes.
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
    description: Permissions of the file when it is created.
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

import json
import os
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule


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
        if isinstance(value, dict) and isinstance(existing, dict):
            merged, nested = merge(existing, value, dotted + ".")
            result[key] = merged
            changed.extend(nested)
        elif key not in result or existing != value or type(existing) is not type(value):
            result[key] = value
            changed.append(dotted)
    return result, changed


def render(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"


def read_current(module: AnsibleModule, path: str) -> tuple[dict[str, Any], str | None]:
    if not os.path.exists(path):
        return {}, None
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        module.fail_json(msg=f"cannot read {path}: {exc.strerror}", path=path)
    if not text.strip():
        return {}, text
    try:
        value = json.loads(text)
    except ValueError as exc:
        module.fail_json(
            msg=f"{path} is not valid JSON ({exc}); it was left untouched. Fix it by hand, then run again.",
            path=path,
            parse_error=str(exc),
        )
    if not isinstance(value, dict):
        module.fail_json(
            msg=f"{path} holds a JSON {type(value).__name__}, not an object; it was left untouched.", path=path
        )
    return value, text


def write_atomically(module: AnsibleModule, path: str, content: str, mode: Any, existed: bool) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".daemon.json.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        if existed:
            stat = os.stat(path)
            os.chmod(tmp, stat.st_mode & 0o7777)
            os.chown(tmp, stat.st_uid, stat.st_gid)
        else:
            os.chmod(tmp, int(str(mode), 8) if not isinstance(mode, int) else mode)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        module.fail_json(msg=f"cannot write {path}: {exc.strerror}", path=path)


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
    path = module.params["path"]
    current, before_text = read_current(module, path)
    desired, changed_keys = merge(current, module.params["settings"])
    after_text = render(desired)
    # an unchanged file keeps its own formatting: it is rewritten only when a key changes
    changed = before_text is None or bool(changed_keys)
    result: dict[str, Any] = {
        "changed": changed,
        "config": desired,
        "changed_keys": changed_keys,
        "path": path,
    }
    if changed and module._diff:
        result["diff"] = {
            "before": before_text if before_text is not None else "",
            "after": after_text,
            "before_header": path,
            "after_header": path,
        }
    if changed and not module.check_mode:
        if before_text is not None and module.params["backup"]:
            result["backup_file"] = module.backup_local(path)
        write_atomically(module, path, after_text, module.params["mode"], before_text is not None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
