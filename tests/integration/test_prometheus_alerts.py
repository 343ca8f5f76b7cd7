"""The metrics timer's textfile, served by the distribution's node_exporter and scraped by the
distribution's Prometheus with gpuhost's alert rules (every `for:` and the staleness threshold
shortened to a test's time scale), all on loopback ports with private data directories.

A planted NVSwitch host whose fabric manager failed fires GpuhostFabricManagerDown; fixing the
tree resolves it. A run that fails keeps the previous file and fires GpuhostCheckFailing; a file
that is no longer refreshed fires GpuhostCheckStale; no file at all fires GpuhostCheckMissing.
Label values (a hostile models directory) reach Prometheus exactly as the host has them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuhost.ship import build_zipapp
from tests.support.paths import FIXTURES
from tests.support.prometheus import Prometheus, node_exporter, prometheus, shortened_rules, wait_until

SYSTEM_PYTHON = "/usr/bin/python3"
NO_DOCKER = "unix:///nonexistent/gpuhost-metrics-test.sock"
HOSTILE_MODELS = '/srv/mo"dels\\ with\nnewline'
FOR_SECONDS = 2
STALE_SECONDS = 25
FABRIC_UNIT = "Id=nvidia-fabricmanager.service\nLoadState=loaded\n"
FABRIC_FAILED = FABRIC_UNIT + "ActiveState=failed\nSubState=failed\nResult=exit-code\n"
FABRIC_RUNNING = FABRIC_UNIT + "ActiveState=active\nSubState=running\nResult=success\n"


@pytest.fixture(scope="module")
def agent() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="gpuhost-metrics-agent-"))
    try:
        path, _ = build_zipapp(directory / "gpuhost-agent.pyz")
        yield path
    finally:
        shutil.rmtree(directory)


class Host:
    """A planted host tree and the metrics timer's run on it."""

    def __init__(self, agent: Path, root: Path, textfile: Path) -> None:
        self.agent, self.root, self.textfile = agent, root, textfile

    def run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SYSTEM_PYTHON, str(self.agent), "check", "--root", str(self.root), "--dev-root", str(self.root / "dev"),
             "--docker-host", NO_DOCKER, "--format", "prometheus", "--textfile-directory", str(self.textfile), *extra],
            capture_output=True, text=True, timeout=60, check=False,
        )

    def refresh(self) -> None:
        result = self.run()
        assert result.returncode == 0, result.stdout + result.stderr

    def fabric_manager(self, before: str, after: str) -> None:
        path = self.root / "run" / "gpuhost-capture" / "systemctl-show.txt"
        text = path.read_text()
        assert before in text
        path.write_text(text.replace(before, after))


@pytest.fixture
def host(agent: Path, tmp_path: Path) -> Host:
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "hosts" / "p5-nvswitch-drift", root, symlinks=True)
    record = root / "etc" / "gpuhost" / "models.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"source": "s3://models/sd15", "directory": HOSTILE_MODELS, "files": []}))
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    return Host(agent, root, textfile)


def firing(server: Prometheus, name: str) -> list[dict[str, str]]:
    return server.firing(name)


def gone(server: Prometheus, name: str) -> bool:
    return not any(a["labels"]["alertname"] == name for a in server.api("/api/v1/alerts")["alerts"])


def test_alerts_fire_and_resolve_on_the_real_servers(host: Host, tmp_path: Path) -> None:
    host.refresh()
    work = tmp_path / "servers"
    work.mkdir()
    rules = shortened_rules(FOR_SECONDS, STALE_SECONDS)
    with node_exporter(host.textfile, work) as exporter, prometheus(
        work, [exporter], rules, target_labels={"gpuhost": "true"}
    ) as server:
        # the failing planted state fires its alert, labelled with the host it came from
        alert = wait_until("GpuhostFabricManagerDown firing",
                           lambda: firing(server, "GpuhostFabricManagerDown"), 60, tick=host.refresh)[0]
        assert alert["instance"] == exporter and alert["id"] == "gpu.fabric-manager"
        assert wait_until("GpuhostNextKernelWithoutModule firing",
                          lambda: firing(server, "GpuhostNextKernelWithoutModule"), 30, tick=host.refresh)
        for quiet in ("GpuhostCheckFailing", "GpuhostCheckStale", "GpuhostCheckMissing"):
            assert gone(server, quiet), quiet
        # label values arrive exactly as the host has them, escapes undone by Prometheus' parser
        models = server.query('gpuhost_disk_free_bytes{use="models"}')
        assert [m["metric"]["path"] for m in models] == [HOSTILE_MODELS]
        ok = server.query('gpuhost_finding{severity="ok"}')
        assert ok, "a host's ok findings are series too"

        # fixed on the host: the next runs resolve it
        host.fabric_manager(FABRIC_FAILED, FABRIC_RUNNING)
        wait_until("GpuhostFabricManagerDown resolved", lambda: gone(server, "GpuhostFabricManagerDown"), 60,
                   tick=host.refresh)
        assert firing(server, "GpuhostNextKernelWithoutModule"), "an unrelated alert stays"

        # a run that fails keeps the previous check's file and says it failed
        kept = (host.textfile / "gpuhost.prom").read_bytes()
        failed = host.run("--min-free-gb", "nan")
        assert failed.returncode == 2, failed.stdout
        assert (host.textfile / "gpuhost.prom").read_bytes() == kept
        wait_until("GpuhostCheckFailing firing", lambda: firing(server, "GpuhostCheckFailing"), 60)
        assert not firing(server, "GpuhostFabricManagerDown")

        # nobody refreshes the file any more: its timestamp ages past the threshold
        started = time.monotonic()
        wait_until("GpuhostCheckStale firing", lambda: firing(server, "GpuhostCheckStale"), STALE_SECONDS + 45)
        assert time.monotonic() - started > 5

        # no gpuhost metrics at all on a gpuhost host
        for name in os.listdir(host.textfile):
            os.unlink(host.textfile / name)
        wait_until("GpuhostCheckMissing firing", lambda: firing(server, "GpuhostCheckMissing"), 60)
