"""Every script in scripts/ answers -h/--help and refuses what it does not know before it changes anything.

The scripts run as root, as a user runs them, inside a throwaway container of
local/debian-systemd:bookworm with this checkout mounted read-only and no network. `docker diff`
lists every file the container's processes added, changed or removed: for help and refusals it must
stay empty. Arguments the usage documents are run in a second container, where each script must get
past its argument checks to its first step (installing packages, debootstrap, ruff...), which there
fails or changes files: the same `docker diff` sees those changes, so its silence above means something.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.paths import REPO

BASE = "local/debian-systemd:bookworm"
# every program in scripts/ (lib.sh is sourced, not run): a new script must answer --help too
SCRIPTS = sorted(path.name for path in (REPO / "scripts").iterdir() if path.is_file() and os.access(path, os.X_OK))
TIMEOUT_S = "120"

pytestmark = [pytest.mark.docker]


@contextlib.contextmanager
def throwaway_container(role: str) -> Iterator[Any]:
    import docker

    client = docker.from_env(timeout=120)
    container = client.containers.run(
        BASE,
        ["sleep", "infinity"],
        name=f"gpuhost-scripts-usage-{role}-{os.getpid()}",
        detach=True,
        network_mode="none",
        volumes={str(REPO): {"bind": "/src", "mode": "ro"}},
        working_dir="/src",
    )
    try:
        yield container
    finally:
        container.remove(force=True)


def changes(container: Any) -> list[str]:
    """`docker diff`: C (changed), A (added) or D (deleted) and the path, for every change to the container's files."""
    kinds = {0: "C", 1: "A", 2: "D"}
    return sorted(f"{kinds[change['Kind']]} {change['Path']}" for change in container.diff() or [])


@pytest.fixture(scope="module")
def untouched() -> Iterator[Any]:
    with throwaway_container("untouched") as container:
        # the mount point of the checkout is the one difference from the image before any script runs
        assert changes(container) == ["A /src"]
        yield container


def run(
    container: Any, script: str, *args: str, user: str = "root", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    result = container.exec_run(
        ["timeout", TIMEOUT_S, f"/src/scripts/{script}", *args], user=user, environment=env or {}, demux=True
    )
    out, err = result.output
    return result.exit_code, (out or b"").decode(), (err or b"").decode()


def test_every_script_is_covered() -> None:
    assert {"install", "provision", "test", "setup-test-host", "build-base-images", "lint"} <= set(SCRIPTS)
    assert "capture-host-tree" in SCRIPTS and "lib.sh" not in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_the_usage_and_changes_nothing(untouched: Any, script: str, flag: str) -> None:
    rc, out, err = run(untouched, script, flag)
    assert (rc, err) == (0, ""), err
    assert f"Usage: scripts/{script}" in out
    assert "-h, --help" in out
    assert changes(untouched) == ["A /src"]


@pytest.mark.parametrize("script", ["install", "provision", "test", "setup-test-host"])
def test_help_needs_no_root(untouched: Any, script: str) -> None:
    rc, out, err = run(untouched, script, "--help", user="nobody")
    assert (rc, err) == (0, ""), err
    assert f"Usage: scripts/{script}" in out


REFUSED = [
    ("install", ["--bogus"], "unknown option: --bogus"),
    ("install", ["-x"], "unknown option: -x"),
    ("install", ["extra"], "unexpected argument: extra"),
    ("install", ["--json", "--min-free-gb", "5"], "unknown option: --min-free-gb"),
    ("install", ["--no-check", "--json"], "--no-check runs no check"),
    ("install", ["--no-check", "--", "--strict"], "--no-check runs no check"),
    ("provision", ["--bogus"], "unknown option: --bogus"),
    ("provision", ["--check", "--forks", "3"], "unknown option: --forks"),
    ("provision", ["site.yml"], "unexpected argument: site.yml"),
    ("provision", ["-Cv"], "unknown option: -Cv"),
    ("provision", ["--tags"], "--tags needs a value"),
    ("provision", ["--tags", "--check"], "--tags needs a value (got the option --check)"),
    ("provision", ["--skip-tags="], "--skip-tags needs a value"),
    ("provision", ["-t", ""], "-t needs a value"),
    ("provision", ["-e"], "-e needs a value"),
    ("provision", ["-e", "@"], "-e @FILE needs a file name"),
    ("provision", ["-e", "@/nonexistent/my-vars.yml"], "-e @/nonexistent/my-vars.yml: no such file"),
    ("provision", ["-e@missing.yml"], "-e @missing.yml: no such file"),
    ("provision", ["--extra-vars=@/etc"], "--extra-vars @/etc: not a regular file"),
    ("test", ["--bogus"], "unknown option: --bogus"),
    ("test", ["--collect-only"], "unknown option: --collect-only"),
    ("test", ["-k"], "-k needs a value"),
    ("test", ["-m", "-x"], "-m needs a value (got the option -x)"),
    ("test", ["tests/no_such_test.py"], "no such test path: tests/no_such_test.py"),
    ("test", ["tests/no_such_test.py::test_x"], "no such test path: tests/no_such_test.py::test_x"),
    ("setup-test-host", ["--bogus"], "unknown option: --bogus"),
    ("setup-test-host", ["bookworm"], "unexpected argument: bookworm"),
    ("build-base-images", ["--bogus"], "unknown option: --bogus"),
    ("build-base-images", ["sid"], "unknown release: sid"),
    ("build-base-images", ["bookworm", "--force"], "unknown option: --force"),
    ("lint", ["--fix"], "unknown option: --fix"),
    ("lint", ["gpuhost"], "unexpected argument: gpuhost"),
    ("capture-host-tree", [], "OUTPUT_DIR is missing"),
    ("capture-host-tree", ["/tmp/a", "/tmp/b"], "unexpected argument: /tmp/b"),
    ("capture-host-tree", ["--bogus", "/tmp/a"], "unknown option: --bogus"),
    ("capture-host-tree", [""], "OUTPUT_DIR is empty"),
    ("record-comfyui-capture", ["record", "--bogus", "startup-cpu"], "unrecognized arguments: --bogus"),
    ("record-comfyui-capture", ["record", "no-such-scenario"], "no scenario no-such-scenario"),
    ("record-comfyui-capture", ["replay"], "invalid choice: 'replay'"),
]


@pytest.mark.parametrize(("script", "args", "message"), REFUSED)
def test_refused_before_anything_changes(untouched: Any, script: str, args: list[str], message: str) -> None:
    rc, out, err = run(untouched, script, *args)
    assert rc == 2, (out, err)
    assert message in err
    assert f"scripts/{script} --help shows the usage" in err
    assert changes(untouched) == ["A /src"]


def test_provision_refuses_a_vars_file_it_cannot_read(untouched: Any) -> None:
    # provision needs root, but the file is checked first: as nobody, /etc/shadow is unreadable
    rc, _, err = run(untouched, "provision", "-e", "@/etc/shadow", user="nobody")
    assert rc == 2
    assert "-e @/etc/shadow: not readable" in err
    assert changes(untouched) == ["A /src"]


def test_install_refuses_a_relative_prefix(untouched: Any) -> None:
    rc, _, err = run(untouched, "install", env={"GPUHOST_PREFIX": "opt/gpuhost"})
    assert rc == 2
    assert "GPUHOST_PREFIX must be an absolute path" in err
    assert changes(untouched) == ["A /src"]


# What the usage texts and docs show: accepted, so each script goes on to its first real step.
ACCEPTED = [
    ("install", ["--json", "--strict", "--", "--min-free-gb", "5"], "apt-get install python3-venv"),
    ("install", ["--no-check"], "apt-get install python3-venv"),
    (
        "provision",
        [
            *("--check", "-D", "-vv", "--tags", "docker,check", "--skip-tags=comfyui", "-tdocker"),
            *("-e", "@site.yml", "--extra-vars", "docker_install_source=distribution", "-e@/etc/os-release"),
            *("--", "--forks", "3"),
        ],
        "apt-get install python3-venv",
    ),
    (
        "test",
        ["-k", "readiness", "-x", "-q", "tests/unit", "tests/unit/test_readiness.py::x", "--", "-p", "no:x"],
        "apt-get install",
    ),
    ("setup-test-host", [], "apt-get install docker.io"),
    ("build-base-images", ["bookworm"], "debootstrap bookworm"),
    ("lint", [], "==> ruff"),
]


def test_documented_arguments_are_accepted() -> None:
    with throwaway_container("accepted") as container:
        # no sources: apt-get update is then done at once rather than waiting for a network there is not
        assert container.exec_run(["rm", "/etc/apt/sources.list"]).exit_code == 0
        for script, args, first_step in ACCEPTED:
            rc, out, err = run(container, script, *args)
            assert "--help shows the usage" not in err, (script, args, err)
            assert first_step in err, (script, args, out, err)
        rc, out, err = run(container, "capture-host-tree", "--", "/tmp/tree")
        assert (rc, out.strip()) == (0, "captured into /tmp/tree"), err
        # the same check that found nothing above sees what these runs changed
        assert "A /tmp/tree" in changes(container)
        assert any(change.startswith(("A /var/lib/apt", "C /var/lib/apt")) for change in changes(container))
