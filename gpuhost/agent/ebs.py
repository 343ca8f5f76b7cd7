"""`gpuhost-agent tune-ebs`: `gpuhost tune-ebs` on the host (instance profile credentials, the distribution's boto3)."""

from __future__ import annotations

import argparse
from typing import Any

from gpuhost.agent.common import Handlers, add_json_flag, print_json
from gpuhost.ebs.tune import TuneOptions, run


def cmd_tune_ebs(args: argparse.Namespace) -> int:
    options = TuneOptions.parse(
        volume_id=args.volume_id,
        target=args.target,
        instance_id=args.instance_id,
        data_root=args.data_root,
        region=args.region,
        profile=args.profile,
        endpoint_url=args.endpoint_url,
        throughput=args.throughput,
        iops=args.iops,
        preset=args.preset,
        for_image_size=args.for_image_size,
        within=args.within,
        to_gp3=args.to_gp3,
        dry_run=args.dry_run,
        wait=args.wait,
        wait_until=args.wait_until,
        timeout=args.timeout,
        poll_interval=args.poll_interval,
        when_image_present=args.when_image_present,
    )
    result = run(options)
    print_json(result.to_dict())
    return int(result.exit_code)


def add_commands(sub: Any, handlers: Handlers) -> None:
    parser = sub.add_parser("tune-ebs", help="tune an EBS gp3 volume (needs boto3 on the host; see gpuhost tune-ebs)")
    parser.add_argument("--volume-id", default=None)
    parser.add_argument("--target", default="root", help="root or data-root")
    parser.add_argument("--instance-id", default=None)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--region", default=None)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--throughput", type=int, default=None, help="MiB/s")
    parser.add_argument("--iops", type=int, default=None)
    parser.add_argument("--preset", default=None, help="baseline, pull or max")
    parser.add_argument("--for-image-size", default=None, help="e.g. 140GB")
    parser.add_argument("--within", default=None, help="e.g. 5m")
    parser.add_argument("--to-gp3", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--wait-until", default=None, help="optimizing or completed")
    parser.add_argument("--timeout", default="30m")
    parser.add_argument("--poll-interval", type=float, default=15.0)
    parser.add_argument("--when-image-present", default=None)
    add_json_flag(parser)
    handlers["tune-ebs"] = cmd_tune_ebs
