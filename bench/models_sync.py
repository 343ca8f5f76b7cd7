#!/usr/bin/env python3
"""Model files from one local S3 server (moto on 127.0.0.1), fetched three ways in one run:
`gpuhost models sync`, `aws s3 sync` (awscli; AWSCLI=/path/to/aws, default `aws` on PATH) and a
sequential boto3 `download_file` loop; then a sync killed half-way and resumed. One JSON line:
MB/s of each, the ratios, and the bytes the resume did not fetch again.

    .venv/bin/python bench/models_sync.py [--mib 256] [--files 4]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.s3 import BUCKET, model_bytes, s3_client, s3_server  # noqa: E402

PREFIX = "bench"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256, help="total MiB of model files")
    parser.add_argument("--files", type=int, default=4)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    aws = os.environ.get("AWSCLI") or shutil.which("aws") or "/tmp/awscli-venv/bin/aws"
    size = args.mib * 1024 * 1024 // args.files
    work = Path(tempfile.mkdtemp(prefix="models-bench-"))
    figures: dict[str, object] = {"bench": "models_sync", "files": args.files, "bytes": size * args.files}
    try:
        with s3_server() as endpoint:
            client = s3_client(endpoint)
            client.create_bucket(Bucket=BUCKET)
            entries = []
            for number in range(args.files):
                data = model_bytes(size, number)
                key = f"checkpoints/m{number}.safetensors"
                client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=data)
                entries.append({"path": key, "size": size, "sha256": hashlib.sha256(data).hexdigest()})
            manifest = work / "models.manifest.json"
            manifest.write_text(json.dumps({"models": entries}))
            total = size * args.files

            def gpuhost(to: Path) -> list[str]:
                return [sys.executable, "-m", "gpuhost", "models", "sync", f"s3://{BUCKET}/{PREFIX}", "--manifest",
                        str(manifest), "--to", str(to), "--endpoint-url", endpoint, "--region", "us-east-1", "--json"]

            def timed(command: list[str]) -> float:
                start = time.perf_counter()
                subprocess.run(command, cwd=REPO, check=True, capture_output=True)
                return time.perf_counter() - start

            seconds = {"gpuhost": timed(gpuhost(work / "gpuhost"))}
            if os.path.exists(aws):
                seconds["aws_s3_sync"] = timed([aws, "s3", "sync", f"s3://{BUCKET}/{PREFIX}", str(work / "aws"),
                                                "--endpoint-url", endpoint, "--only-show-errors"])
            start = time.perf_counter()
            for entry in entries:
                target = work / "boto3" / str(entry["path"])
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(BUCKET, f"{PREFIX}/{entry['path']}", str(target))
            seconds["boto3_download_file_loop"] = time.perf_counter() - start
            for name, value in seconds.items():
                figures[f"{name}_mb_s"] = round(total / 1e6 / value, 1)
            if "aws_s3_sync" in seconds:
                figures["gpuhost_vs_aws_s3_sync"] = round(seconds["aws_s3_sync"] / seconds["gpuhost"], 2)
            figures["gpuhost_vs_boto3_loop"] = round(seconds["boto3_download_file_loop"] / seconds["gpuhost"], 2)

            # kill a sync once half the bytes are on disk, then resume it
            resume_dir = work / "resume"
            process = subprocess.Popen([*gpuhost(resume_dir), "--part-size", "4MiB"], cwd=REPO,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and process.poll() is None:
                held = sum(len(json.loads(p.read_text() or "{}").get("done", [])) * 4 * 1024 * 1024
                           for p in resume_dir.rglob("*.part.json") if p.stat().st_size)
                done = sum(p.stat().st_size for p in resume_dir.rglob("*.safetensors"))
                if held + done >= total // 2:
                    break
                time.sleep(0.01)
            process.kill()
            process.wait()
            answer = subprocess.run([*gpuhost(resume_dir), "--part-size", "4MiB"], cwd=REPO, capture_output=True,
                                    text=True, check=True)
            result = json.loads(answer.stdout)
            figures["resume_bytes_fetched"] = result["totals"]["bytes_fetched"]
            figures["resume_bytes_saved"] = total - result["totals"]["bytes_fetched"]
            figures["resume_exit_code"] = result["exit_code"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
