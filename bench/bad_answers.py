#!/usr/bin/env python3
"""What each bad answer costs gpuhost: the time to its error, the peak memory and the exit code.

Every case runs one gpuhost command in a fresh process against a server on 127.0.0.1 (or a unix
socket) that answers badly, or on a file that is not one, and measures that process: wall time to
its exit, peak resident memory (ru_maxrss from wait4, so a process that is killed is measured too)
and its exit code, with what it said. Sections:

- registry: `gpuhost layers` on an image (a Docker stand-in) whose registry answers each hostile
  HTTP class (tests/support/bad_servers.py: trickles at 1 byte/s, endless headers and bodies, a bad
  status line, a 100 KB header, bad chunking, ...) or a manifest that is wrong inside (sizes as
  strings, negative, 1e400, NaN, true; JSON nested 100,000 deep; a manifest list that names a list).
  The registry's error is `pull.registry_error` and the exit code stays 0.
- ec2_endpoint: `gpuhost tune-ebs --endpoint-url` against the same HTTP classes, boto3's default
  retries (3 attempts): exit 3 within the call's 60 s.
- special_files: `gpuhost check --workflow` and `gpuhost models verify --manifest` on a FIFO,
  /dev/zero and a sparse 4 GiB file, one at a time with a 15 s timeout (what happens is what is
  recorded: a timeout, a MemoryError, an error).

Every process runs under a 1.5 GiB address-space limit (RLIMIT_AS), so that a reader without a cap
fails there instead of taking a shared machine's memory.
- comfyui, docker: `check --workflow` against a 100 MB /object_info and a trickle; `layers` against an
  SSH banner and a web server at the Docker address.

`baseline` is `gpuhost --version`: the start-up every case pays. Cases run four at a time (the
trickles wait on their deadlines, not on the CPU), special files one at a time. One JSON line:

    .venv/bin/python bench/bad_answers.py [--only registry,ec2_endpoint,...]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.bad_servers import (  # noqa: E402
    SSH_BANNER,
    BadServer,
    Script,
    docker_with_image,
    hostile_answers,
    http_response,
)

MEMORY_LIMIT = 1536 * 1024 * 1024
FILE_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 120.0
GPUHOST = [sys.executable, "-m", "gpuhost"]
WORKFLOW = {"9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}}}
NO_DOCKER = "unix:///nonexistent/gpuhost-bench/docker.sock"


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def measure(args: list[str], env: Optional[dict[str, str]] = None, timeout: float = COMMAND_TIMEOUT_S,
            summary: Callable[[str], str] = lambda out: "") -> dict[str, Any]:
    """Run one command (in `env`, by default this environment); its exit code, seconds, peak RSS (MiB)
    and a summary of what it printed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=REPO, env=dict(os.environ) if env is None else env,
                                preexec_fn=limit_memory, start_new_session=True)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    result: dict[str, Any] = {
        "exit_code": None if timed_out else proc.returncode,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }
    if timed_out:
        result["timed_out"] = True
    said = summary(stdout) or _error_of(stdout) or _last_line(stderr)
    if "Traceback" in stderr:
        said = "traceback: " + _last_line(stderr)
    result["said"] = said[:160]
    return result


def _error_of(stdout: str) -> str:
    try:
        payload = json.loads(stdout)
    except ValueError:
        return ""
    return str(payload.get("error") or "") if isinstance(payload, dict) else ""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _registry_error(stdout: str) -> str:
    """pull.registry_error without the repository digest it starts with (`host:port/name@sha256:...: `)."""
    try:
        error = str(json.loads(stdout)["pull"]["registry_error"])
    except (ValueError, KeyError, TypeError):
        return ""
    return "pull.registry_error: " + error.split(": ", 1)[-1]


# --- the cases ---------------------------------------------------------------------------------

Case = Callable[[Path], dict[str, Any]]


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def manifest_script(body: bytes) -> tuple[Script, str]:
    return Script.body(body, content_type="application/vnd.docker.distribution.manifest.v2+json"), digest_of(body)


def layer_with(size: bytes) -> bytes:
    return b'{"schemaVersion": 2, "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", ' \
           b'"digest": "sha256:' + b"1" * 64 + b'", "size": ' + size + b"}]}"


def manifest_list_naming_a_list() -> tuple[Callable[[str], Script], str]:
    index_type = "application/vnd.oci.image.index.v1+json"

    def index(child: str) -> bytes:
        return json.dumps({"schemaVersion": 2, "mediaType": index_type, "manifests": [
            {"mediaType": index_type, "digest": child, "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()

    inner = index("sha256:" + "0" * 64)
    outer = index(digest_of(inner))

    def answer(line: str) -> Script:
        return Script.body(inner if digest_of(inner) in line else outer, content_type=index_type)

    return answer, digest_of(outer)


def registry_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for name, script in hostile_answers(interval=1.0).items():
        cases[name] = _registry_case(script, "sha256:" + "0" * 64)
    wrong_inside = {
        "size-as-string": layer_with(b'"1234"'),
        "size-negative": layer_with(b"-1"),
        "size-1e400": layer_with(b"1e400"),
        "size-nan": layer_with(b"NaN"),
        "size-bool": layer_with(b"true"),
        "json-nested-100k-deep": b'{"layers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "html-with-its-digest": b"<html><body>It works!</body></html>",
    }
    for name, body in wrong_inside.items():
        script, digest = manifest_script(body)
        cases[name] = _registry_case(script, digest)
    loop, digest = manifest_list_naming_a_list()
    cases["manifest-list-naming-a-list"] = _registry_case(loop, digest)
    return cases


def _registry_case(script: Script | Callable[[str], Script], digest: str) -> Case:
    def run(tmp: Path) -> dict[str, Any]:
        with BadServer(script, max_seconds=120) as registry:
            repo_digest = f"{registry.url[len('http://'):]}/comfyui@{digest}"
            with BadServer(docker_with_image(repo_digest), str(tmp)) as docker:
                return measure([*GPUHOST, "layers", "comfyui:0.3.64", "--docker-host", docker.address, "--json"],
                               summary=_registry_error)

    return run


def ec2_cases() -> dict[str, Case]:
    def case(script: Script) -> Case:
        def run(tmp: Path) -> dict[str, Any]:
            # the bench's own AWS variables, none of the caller's (they would point boto3 elsewhere);
            # boto3's default retries (3 attempts)
            env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
            env.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_CONFIG_FILE": str(tmp / "aws-config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-credentials"),
                        "AWS_EC2_METADATA_DISABLED": "true"})
            with BadServer(script, max_seconds=180) as endpoint:
                return measure([*GPUHOST, "tune-ebs", "--volume-id", "vol-0123456789abcdef0", "--region", "us-east-1",
                                "--preset", "pull", "--dry-run", "--endpoint-url", endpoint.url, "--json"], env=env)

        return run

    return {name: case(script) for name, script in hostile_answers(interval=1.0).items()}


@contextmanager
def special_files(tmp: Path) -> Iterator[dict[str, str]]:
    fifo = tmp / "workflow.fifo"
    os.mkfifo(fifo)
    huge = tmp / "huge.json"
    with open(huge, "wb") as fh:
        fh.truncate(4 * 1024**3)  # sparse: no disk is used
    yield {"fifo": str(fifo), "dev-zero": "/dev/zero", "sparse-4gib": str(huge)}


def special_file_cases() -> dict[str, Case]:
    commands = {
        "check-workflow": lambda path, tmp: [*GPUHOST, "check", "--workflow", path, "--docker-host", NO_DOCKER,
                                             "--comfyui-url", "http://127.0.0.1:9", "--json"],
        "models-verify-manifest": lambda path, tmp: [*GPUHOST, "models", "verify", str(tmp), "--manifest", path,
                                                     "--json"],
    }
    cases: dict[str, Case] = {}
    for command, argv in commands.items():
        for kind in ("fifo", "dev-zero", "sparse-4gib"):
            def run(tmp: Path, argv: Any = argv, kind: str = kind) -> dict[str, Any]:
                with special_files(tmp) as paths:
                    return measure(argv(paths[kind], tmp), timeout=FILE_TIMEOUT_S)

            cases[f"{command}:{kind}"] = run
    return cases


def comfyui_and_docker_cases() -> dict[str, Case]:
    def check_workflow(script: Script) -> Case:
        def run(tmp: Path) -> dict[str, Any]:
            workflow = tmp / "w.json"
            workflow.write_text(json.dumps(WORKFLOW))
            with BadServer(script, max_seconds=120) as comfyui:
                return measure([*GPUHOST, "check", "--workflow", str(workflow), "--docker-host", NO_DOCKER,
                                "--comfyui-url", comfyui.url, "--json"])

        return run

    def layers_at(script: Script, unix: bool) -> Case:
        def run(tmp: Path) -> dict[str, Any]:
            with BadServer(script, str(tmp) if unix else None) as docker:
                return measure([*GPUHOST, "layers", "comfyui:0.3.64", "--docker-host", docker.address, "--json"])

        return run

    page = Script(prefix=http_response(b"<html>404 Not Found</html>", status="404 Not Found", content_type="text/html"))
    return {
        "comfyui:object_info_100mb": check_workflow(Script(prefix=b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
                                                           b"\r\n\r\n{", filler_bytes=100 * 1024 * 1024)),
        "comfyui:object_info_trickle": check_workflow(Script(prefix=http_response(b"", length=10_000),
                                                             trickle=b"{" * 10_000, interval=0.2)),
        "docker:ssh_banner": layers_at(Script(prefix=SSH_BANNER, answer_before_request=True), unix=True),
        "docker:web_server_404_unix": layers_at(page, unix=True),
        "docker:web_server_404_tcp": layers_at(page, unix=False),
    }


SECTIONS: dict[str, Callable[[], dict[str, Case]]] = {
    "registry": registry_cases,
    "ec2_endpoint": ec2_cases,
    "special_files": special_file_cases,
    "comfyui_and_docker": comfyui_and_docker_cases,
}
# these may take their memory limit each: one at a time
ONE_AT_A_TIME = {"special_files"}


def run_case(case: Case) -> dict[str, Any]:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpuhost-bench-bad-")))
        return case(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    wanted = [name for name in args.only.split(",") if name]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    results: dict[str, Any] = {"bench": "bad_answers", "baseline": measure([*GPUHOST, "--version"]),
                               "memory_limit_mib": MEMORY_LIMIT // 2**20}
    for section in wanted:
        workers = 1 if section in ONE_AT_A_TIME else args.workers
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {name: pool.submit(run_case, case) for name, case in SECTIONS[section]().items()}
            results[section] = {name: future.result() for name, future in futures.items()}
    print(json.dumps(results, allow_nan=False))


if __name__ == "__main__":
    main()
