"""The options of `gpuhost check` across hosts (`--host`, `--inventory`, `--forks`, ...), FleetOptions'
defaults, and the check command's whole table: this host's options (gpuhost.check), the fleet's, the
workflow's (gpuhost.comfyui.workflow). Both front ends build `check` from `CHECK`; nothing here loads SSH
or Ansible, so the agent (which has no fleet options) can read it on the host's own python3."""

from __future__ import annotations

from gpuhost.check import COLLECT_OPTIONS, OUTPUT_OPTIONS, RULE_OPTIONS, CheckOptions
from gpuhost.comfyui.workflow import WORKFLOW_OPTIONS
from gpuhost.options import CLI, Command, Option

DEFAULT_FORKS = 5  # Ansible's default
MAX_FORKS = 1000
DEFAULT_CONNECT_TIMEOUT = 10.0
MAX_CONNECT_TIMEOUT = 3600.0
DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 86400.0

FLEET_OPTIONS = (
    Option("--host", "Check this host over SSH instead of this machine (repeat for a fleet).", short="-H",
           metavar="[USER@]HOST[:PORT]", repeat=True, fronts=(CLI,)),
    Option("--inventory", "Check every host of this Ansible inventory (file, directory, aws_ec2).", kind="path",
           short="-i", fronts=(CLI,)),
    Option("--limit", "Only the inventory hosts matching this Ansible pattern.", short="-l", metavar="PATTERN",
           fronts=(CLI,)),
    Option("--forks", "Hosts checked at the same time.", kind="int", default=DEFAULT_FORKS, short="-f", minimum=1,
           maximum=MAX_FORKS, example="--forks 20", fronts=(CLI,)),
    Option("--connect-timeout", "Seconds to wait for a host's SSH connection.", kind="number",
           default=DEFAULT_CONNECT_TIMEOUT, minimum=0, maximum=MAX_CONNECT_TIMEOUT, fronts=(CLI,)),
    Option("--timeout", "Seconds one host may take in all.", kind="number", default=DEFAULT_TIMEOUT, minimum=0,
           maximum=MAX_TIMEOUT, fronts=(CLI,)),
    Option("--ssh-config", "Read this ssh config instead of ~/.ssh/config and /etc/ssh/ssh_config.", kind="path",
           short="-F", fronts=(CLI,)),
    Option("--accept-new-host-keys", "Trust and record the key of a host not yet in known_hosts (a changed key is "
           "always refused).", kind="flag", default=False, fronts=(CLI,)),
    Option("--become", "With --host/--inventory: run the agent as root with `sudo -n`.", kind="flag", default=False,
           short="-b", fronts=(CLI,)),
)

CHECK = Command(
    cli="check",
    agent="check",
    summary="facts + rules: the gpuhost.check/v1 report (JSON), or Prometheus metrics (--format prometheus)",
    options=(*OUTPUT_OPTIONS, *RULE_OPTIONS, *COLLECT_OPTIONS, *FLEET_OPTIONS, *WORKFLOW_OPTIONS),
    parsers=(CheckOptions.parse,),
)
