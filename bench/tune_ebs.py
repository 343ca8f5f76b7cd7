#!/usr/bin/env python3
"""What EBS speed costs and buys, and how long a `gpuhost tune-ebs --dry-run` takes; one JSON line.

For images of 20, 70 and 140 GB on a gp3 volume (us-east-1 list prices): the predicted unpack time
and the volume's monthly cost at the baseline, at the `pull` preset, and at the cheapest setting
that unpacks the image within 5 minutes (gpuhost.unpack's model, gpuhost.ebs's price table).

Then the wall time of `gpuhost tune-ebs --dry-run` against a moto EC2 server on 127.0.0.1, as a
fresh process and in-process, next to the naive path: a fresh python process that imports boto3
and makes the same two describe calls a person would script (no validation, no plan).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gpuhost.ebs import limits  # noqa: E402
from gpuhost.ebs.plan import cheapest_gp3_for  # noqa: E402
from gpuhost.units import GB  # noqa: E402
from gpuhost.unpack import predict_unpack_seconds  # noqa: E402

IMAGE_GB = (20, 70, 140)
WITHIN_S = 300.0
REGION = "us-east-1"

NAIVE = """
import boto3
c = boto3.client("ec2", region_name="us-east-1", endpoint_url={endpoint!r})
c.describe_volumes(VolumeIds=[{volume!r}])
c.describe_volumes_modifications(VolumeIds=[{volume!r}])
"""


def setting(size_gib: int, image_bytes: int, iops: int, mibs: int) -> dict[str, float]:
    return {
        "iops": iops,
        "throughput_mibs": mibs,
        "unpack_s": round(predict_unpack_seconds(image_bytes, mibs), 1),
        "cost_month_usd": round(limits.monthly_cost(REGION, "gp3", size_gib, iops, mibs), 2),
    }


def predictions(size_gib: int) -> dict[str, dict[str, dict[str, float]]]:
    result = {}
    for gb in IMAGE_GB:
        image = gb * GB
        iops, mibs = cheapest_gp3_for(image, WITHIN_S, size_gib)
        result[f"{gb}GB"] = {
            "baseline": setting(size_gib, image, *limits.PRESETS.baseline),
            "pull": setting(size_gib, image, *limits.PRESETS.pull),
            "cheapest_within_5m": setting(size_gib, image, iops, mibs),
        }
    return result


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{command[:4]} failed: {proc.stdout}{proc.stderr}")
    return elapsed


def dry_run_timings(runs: int) -> dict[str, float]:
    from tests.support.aws import Ec2Server, make_volume

    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_EC2"):
        os.environ.pop(name, None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    server = Ec2Server()
    server.start()
    try:
        volume = make_volume(server.client(), size_gib=200)
        env = dict(os.environ)
        cli = [
            sys.executable, "-m", "gpuhost", "tune-ebs", "--volume-id", volume, "--region", REGION,
            "--endpoint-url", server.endpoint, "--preset", "pull", "--dry-run", "--json",
        ]  # fmt: skip
        naive = [sys.executable, "-c", NAIVE.format(endpoint=server.endpoint, volume=volume)]
        timed(cli, env)  # warm the page cache for both paths
        cli_s = [timed(cli, env) for _ in range(runs)]
        naive_s = [timed(naive, env) for _ in range(runs)]

        from gpuhost.ebs.aws import AwsOptions
        from gpuhost.ebs.plan import Settings
        from gpuhost.ebs.tune import TuneOptions, run

        options = TuneOptions(
            settings=Settings(preset="pull"),
            volume_id=volume,
            aws=AwsOptions(region=REGION, endpoint_url=server.endpoint),
            dry_run=True,
        )
        run(options)
        in_process = []
        for _ in range(runs):
            start = time.perf_counter()
            result = run(options)
            in_process.append(time.perf_counter() - start)
            assert result.action == "planned"
        modifies = server.calls("ModifyVolume")
    finally:
        server.stop()
    return {
        "dry_run_cli_s": round(statistics.median(cli_s), 3),
        "dry_run_in_process_s": round(statistics.median(in_process), 4),
        "naive_boto3_describe_cli_s": round(statistics.median(naive_s), 3),
        "modify_calls_during_dry_runs": len(modifies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--volume-gib", type=int, default=200, help="the gp3 volume priced (default 200 GiB)")
    args = parser.parse_args()
    figures = {
        "bench": "tune_ebs",
        "region": REGION,
        "volume_gib": args.volume_gib,
        "within_s": WITHIN_S,
        "prices": {"source": limits.PRICES_SOURCE, "as_of": limits.PRICES_AS_OF},
        "images": predictions(args.volume_gib),
        **dry_run_timings(args.runs),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
