"""`gpuhost-agent tune-ebs`: `gpuhost tune-ebs` on the host (instance profile credentials, the distribution's boto3)."""

from __future__ import annotations

from typing import Any

from gpuhost.agent.common import Handlers, add_command, print_json
from gpuhost.ebs.tune import TUNE_EBS, TuneOptions, run
from gpuhost.options import Values


def cmd_tune_ebs(values: Values) -> int:
    result = run(TuneOptions.parse(**values.for_call(TuneOptions.parse)))
    print_json(result.to_dict())
    return int(result.exit_code)


def add_commands(sub: Any, handlers: Handlers) -> None:
    add_command(sub, TUNE_EBS, cmd_tune_ebs, handlers)
