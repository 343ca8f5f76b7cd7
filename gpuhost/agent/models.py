"""`gpuhost-agent models-sync` and `models-verify`: `gpuhost models sync|verify` on the host, JSON only.

An s3:// source needs boto3 on the host (the distribution's python3-boto3); https:// and verify need
nothing beyond the standard library. A YAML manifest needs PyYAML: the comfyui role writes JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from gpuhost.agent.common import Handlers, add_json_flag, print_json
from gpuhost.comfyui.models import sync as models_sync
from gpuhost.comfyui.models import verify as models_verify


def cmd_models_sync(args: argparse.Namespace) -> int:
    with models_sync.Stopper() as stopper:
        options = models_sync.SyncOptions.parse(
            source=args.source, manifest=args.manifest, to=args.to, concurrency=args.concurrency,
            part_size=args.part_size, region=args.region, profile=args.profile, endpoint_url=args.endpoint_url,
            ca_bundle=args.ca_bundle, timeout=args.timeout, attempts=args.attempts, dry_run=args.dry_run,
            network_gbps=args.network_gbps, record=args.record, lock_wait=args.lock_wait,
        )
        result = models_sync.run(options, stopper=stopper)
    print_json(result.to_dict())
    if result.interrupted_by and models_sync.stragglers():
        # a worker blocked in a read no abort could cut: exit now rather than wait out its timeout
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(result.exit_code)
    return result.exit_code


def cmd_models_verify(args: argparse.Namespace) -> int:
    options = models_verify.ModelsOptions.parse(directory=args.directory, manifest=args.manifest,
                                                hash_files=not args.no_hash, url=args.url, timeout=args.timeout)
    result = models_verify.run(options)
    print_json(result.to_dict())
    return int(result.exit_code)


def add_commands(sub: Any, handlers: Handlers) -> None:
    parser = sub.add_parser("models-sync", help="copy model files from S3 or https (see gpuhost models sync)")
    parser.add_argument("source", help="s3://BUCKET/PREFIX or an https:// base URL")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--to", default=None, help="default: models/ on Docker's data-root disk")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--part-size", default="16MiB")
    parser.add_argument("--region", default=None)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--ca-bundle", default=None)
    parser.add_argument("--timeout", default="60s")
    parser.add_argument("--attempts", type=int, default=5)
    parser.add_argument("--network-gbps", type=float, default=models_sync.DEFAULT_NETWORK_GBPS)
    parser.add_argument("--record", default=None, help="record the result for gpuhost check")
    parser.add_argument("--lock-wait", default=models_sync.DEFAULT_LOCK_WAIT,
                        help="how long to wait while another sync holds the directory (0 to 24h)")
    parser.add_argument("--dry-run", action="store_true")
    add_json_flag(parser)
    handlers["models-sync"] = cmd_models_sync

    check = sub.add_parser("models-verify", help="verify model files against a manifest (see gpuhost models verify)")
    check.add_argument("directory")
    check.add_argument("--manifest", required=True)
    check.add_argument("--url", default=None)
    check.add_argument("--no-hash", action="store_true")
    check.add_argument("--timeout", default="10s")
    add_json_flag(check)
    handlers["models-verify"] = cmd_models_verify
