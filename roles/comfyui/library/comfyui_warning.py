#!/usr/bin/python
"""Emit an Ansible warning (shown in the play's output and recap) and change nothing."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: comfyui_warning
short_description: Show a warning in the play output
description:
  - Returns the message as an Ansible warning. Changes nothing; supports check mode.
options:
  msg:
    description: The warning.
    type: str
    required: true
author: gpuhost maintainers
"""

EXAMPLES = r"""
- name: Warn
  comfyui_warning:
    msg: the host is exposed to the BPF device-filter bug
"""

RETURN = r""""""

def main() -> None:
    module = AnsibleModule(argument_spec={"msg": {"type": "str", "required": True}}, supports_check_mode=True)
    module.warn(module.params["msg"])
    module.exit_json(changed=False)


if __name__ == "__main__":
    main()
