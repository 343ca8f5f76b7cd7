"""The distribution's Prometheus, node_exporter and promtool (Debian packages `prometheus` and
`prometheus-node-exporter`, which scripts/setup-test-host installs), run for a test: loopback ports,
a private data directory, stopped afterwards, every wait bounded."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.support.paths import REPO

PROMTOOL = "promtool"
PROMETHEUS = "prometheus"
NODE_EXPORTER = "prometheus-node-exporter"
RULES = REPO / "files" / "prometheus" / "gpuhost.rules.yml"
RULE_TESTS = REPO / "files" / "prometheus" / "gpuhost.rules.test.yml"
STALE_THRESHOLD = "time() - gpuhost_check_timestamp_seconds > 300"


def program(name: str) -> str:
    # each looked up by its literal name: tests/unit/test_setup_test_host.py finds the commands the suite runs
    path = {
        PROMTOOL: shutil.which(PROMTOOL),
        PROMETHEUS: shutil.which(PROMETHEUS),
        NODE_EXPORTER: shutil.which(NODE_EXPORTER),
    }[name]
    if path is None:
        pytest.fail(f"{name} is not installed: scripts/setup-test-host installs it (Debian's prometheus packages)")
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program(PROMTOOL), *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read(16 * 1024 * 1024))


def wait_until(what: str, probe: Callable[[], Any], timeout: float, tick: Callable[[], None] | None = None) -> Any:
    """probe() until it returns something true, at most `timeout` seconds; tick() between tries."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as exc:
            last = exc
        if last and not isinstance(last, OSError):
            return last
        if tick is not None:
            tick()
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")


@contextmanager
def _process(command: list[str], log: Path, ready_url: str, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{command[0]} exited {process.returncode}:\n{log.read_text()[-3000:]}")
            return bool(get(ready_url, timeout=2.0))

        wait_until(f"{command[0]} answering {ready_url}", ready, timeout=60)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def node_exporter(textfile_dir: Path, workdir: Path) -> Iterator[str]:
    """node_exporter with the textfile collector alone, on a loopback port; yields its address."""
    address = f"127.0.0.1:{free_port()}"
    command = [
        program(NODE_EXPORTER),
        f"--web.listen-address={address}",
        "--collector.disable-defaults",
        "--collector.textfile",
        f"--collector.textfile.directory={textfile_dir}",
    ]
    with _process(command, workdir / "node-exporter.log", f"http://{address}/metrics", workdir):
        yield address


def shortened_rules(for_seconds: int, stale_seconds: int) -> dict[str, Any]:
    """gpuhost.rules.yml with every `for:` set to `for_seconds` and the staleness threshold to `stale_seconds`:
    the same expressions, on a test's time scale."""
    rules = yaml.safe_load(RULES.read_text())
    replaced = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = f"{for_seconds}s"
            if rule["expr"].strip() == STALE_THRESHOLD:
                rule["expr"] = STALE_THRESHOLD.replace("300", str(stale_seconds))
                replaced += 1
    assert replaced == 1, f"{RULES.name} has no rule `{STALE_THRESHOLD}` to shorten"
    return dict(rules)


class Prometheus:
    def __init__(self, address: str) -> None:
        self.url = f"http://{address}"

    def api(self, path: str) -> Any:
        answer = json.loads(get(self.url + path))
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/query?query=" + urllib.request.quote(expr))["result"])

    def alerts(self, state: str = "firing") -> list[dict[str, Any]]:
        return [a for a in self.api("/api/v1/alerts")["alerts"] if a["state"] == state]

    def firing(self, name: str) -> list[dict[str, str]]:
        return [a["labels"] for a in self.alerts() if a["labels"]["alertname"] == name]


@contextmanager
def prometheus(
    workdir: Path,
    targets: list[str],
    rules: dict[str, Any],
    interval: str = "1s",
    target_labels: dict[str, str] | None = None,
) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (as job `node`) and evaluating `rules`, every `interval`, with its data in
    workdir; yields a client of its HTTP API."""
    address = f"127.0.0.1:{free_port()}"
    (workdir / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(workdir / "rules.yml")],
        "scrape_configs": [
            {"job_name": "node", "static_configs": [{"targets": targets, "labels": target_labels or {}}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    checked = promtool("check", "config", str(workdir / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    command = [
        program(PROMETHEUS),
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={address}",
        "--storage.tsdb.retention.time=1h",
    ]
    with _process(command, workdir / "prometheus.log", f"http://{address}/-/ready", workdir):
        yield Prometheus(address)

