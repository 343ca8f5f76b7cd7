"""`gpuhost-agent models-sync` and `models-verify`: `gpuhost models sync|verify` on the host, JSON only.

An s3:// source needs boto3 on the host (the distribution's python3-boto3); https:// and verify need
nothing beyond the standard library. A YAML manifest needs PyYAML: the comfyui role writes JSON.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gpuhost.agent.common import Handlers, add_command, print_json
from gpuhost.comfyui.models import sync as models_sync
from gpuhost.comfyui.models import verify as models_verify
from gpuhost.options import Values


def cmd_models_sync(values: Values) -> int:
    with models_sync.Stopper() as stopper:
        options = models_sync.SyncOptions.parse(**values.for_call(models_sync.SyncOptions.parse))
        result = models_sync.run(options, stopper=stopper)
    print_json(result.to_dict())
    if result.interrupted_by and models_sync.stragglers():
        # a worker blocked in a read no abort could cut: exit now rather than wait out its timeout
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(result.exit_code)
    return result.exit_code


def cmd_models_verify(values: Values) -> int:
    parse = models_verify.ModelsOptions.parse
    options = parse(**values.for_call(parse, hash_files=not values.no_hash))
    result = models_verify.run(options)
    print_json(result.to_dict())
    return int(result.exit_code)


def add_commands(sub: Any, handlers: Handlers) -> None:
    add_command(sub, models_sync.MODELS_SYNC, cmd_models_sync, handlers)
    add_command(sub, models_verify.MODELS_VERIFY, cmd_models_verify, handlers)
