"""`gpuhost storage plan --json` and `gpuhost-agent storage-plan` print the same plan for the same options:
the JSON a person reads is the JSON the docker_storage role reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuhost.agent import main as agent_main
from gpuhost.cli import app

NO_DOCKER = ["--docker-host", "unix:///nonexistent/docker.sock"]


def both(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[tuple[int, dict], tuple[int, dict]]:  # type: ignore[type-arg]
    cli = CliRunner().invoke(app, ["storage", "plan", *args, "--json"])
    code = agent_main(["storage-plan", *args])
    agent_out = capsys.readouterr().out
    return (cli.exit_code, json.loads(cli.stdout)), (code, json.loads(agent_out))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"data-root": "/srv/docker-old", "log-driver": "local"}))
    config = tmp_path / "docker-storage.json"
    config.write_text(json.dumps({"fallback_data_root": "/srv/recorded"}))
    return {"daemon_json": str(daemon_json), "config": str(config), "tmp": str(tmp_path)}


OPTIONS = [
    [],
    ["--label", "fastdisk"],
    ["--label", "fastdisk", "--array-name", "md-fast"],
    ["--mount-path", "/mnt/fast//docker/"],
    ["--missing-disk-policy", "wait"],
    ["--missing-disk-policy", "fallback", "--fallback-data-root", "/srv/fallback"],
    ["--device-timeout", "5"],
    ["--no-move"],
    ["--image-size", "100GB", "--image-store", "containerd"],
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: " ".join(o) or "defaults")
@pytest.mark.parametrize("with_files", [False, True], ids=["no-daemon-json", "daemon-json-and-config"])
def test_cli_and_agent_print_the_same_plan(
    options: list[str], with_files: bool, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    extra = (
        ["--daemon-json", files["daemon_json"], "--config", files["config"]]
        if with_files
        else ["--daemon-json", str(Path(files["tmp"]) / "absent.json"), "--config", str(Path(files["tmp"]) / "absent")]
    )
    (cli_code, cli_json), (agent_code, agent_json) = both([*options, *extra, *NO_DOCKER], capsys)
    assert cli_json == agent_json
    assert cli_code == agent_code
    assert cli_json["config"]["array_name"] == (
        "md-fast"
        if "--array-name" in options
        else options[options.index("--label") + 1]
        if "--label" in options
        else "gh-docker"
    )
    assert cli_json["data_root"] is not None
    if with_files:
        assert cli_json["data_root"]["current"] == "/srv/docker-old"


@pytest.mark.parametrize(
    "options",
    [
        ["--label", "far-too-long-a-label"],
        ["--mount-path", "relative"],
        ["--mount-path", "//etc"],
        ["--missing-disk-policy", "never"],
        ["--device", "/dev/gpuhost-no-such-disk"],
        ["--device", "/dev/gpuhost-no-such-disk", "--force", "/dev/gpuhost-no-such-disk"],
        ["--device", "/dev/null"],
        ["--device", "/" + "a" * 5000],
    ],
    ids=lambda o: " ".join(o)[:60],
)
def test_refused_requests_are_the_same_usage_error(options: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    (cli_code, cli_json), (agent_code, agent_json) = both([*options, *NO_DOCKER], capsys)
    assert cli_code == agent_code == 2
    assert cli_json == agent_json
    assert cli_json["exit_code"] == 2 and cli_json["error"]


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    (tmp_path / "real").mkdir()
    for name, target in {"to-etc": "/etc", "to-var-lib": "/var/lib", "relative-up": "../" * len(tmp_path.parts),
                         "loop": "loop", "to-real": "real", "to-root": "/", "to-usr": "/usr"}.items():
        (tmp_path / name).symlink_to(target)
    return tmp_path


@pytest.mark.parametrize(
    "options",
    [
        ["--mount-path", "{tmp}/to-etc"],
        ["--mount-path", "{tmp}/to-root"],
        ["--mount-path", "{tmp}/to-usr/local/docker"],
        ["--mount-path", "{tmp}/relative-up"],
        ["--mount-path", "{tmp}/to-var-lib"],
        ["--mount-path", "{tmp}/to-var-lib/docker-x/.."],
        ["--mount-path", "{tmp}/relative-up/usr"],
        ["--mount-path", "{tmp}/loop/docker"],
        ["--mount-path", "/mnt/docker\n"],
        ["--mount-path", "/mnt/docker /"],
        ["--mount-path", "/mnt/docker\\"],
        ["--missing-disk-policy", "fallback", "--fallback-data-root", "/var/../etc"],
        ["--missing-disk-policy", "fallback", "--fallback-data-root", "{tmp}/to-etc"],
        ["--missing-disk-policy", "fallback", "--fallback-data-root", "{tmp}/to-var-lib"],
        ["--missing-disk-policy", "fallback", "--fallback-data-root", "{tmp}/loop"],
        ["--missing-disk-policy", "fallback", "--fallback-data-root", "/srv/old "],
        ["--missing-disk-policy", "fallback", "--fallback-data-root", "/mnt/docker/old"],
    ],
    ids=lambda o: ascii(" ".join(o))[:60],
)
def test_paths_through_dot_dot_and_symlinks_are_the_same_usage_error(
    options: list[str], linked: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [o.replace("{tmp}", str(linked)) for o in options]
    (cli_code, cli_json), (agent_code, agent_json) = both([*args, *NO_DOCKER], capsys)
    assert cli_code == agent_code == 2
    assert cli_json == agent_json
    assert cli_json["exit_code"] == 2 and cli_json["error"] and cli_json["remedy"]


@pytest.mark.parametrize(
    ("options", "mount_path", "fallback"),
    [
        (["--mount-path", "{tmp}/to-real"], "{tmp}/real", None),
        (["--mount-path", "{tmp}/to-var-lib/docker"], "/var/lib/docker", None),
        (["--mount-path", "/mnt/100% docker", "--missing-disk-policy", "fallback", "--fallback-data-root",
          "{tmp}/to-real"], "/mnt/100% docker", "{tmp}/real"),
    ],
)
def test_both_front_ends_plan_where_a_path_really_leads(
    options: list[str], mount_path: str, fallback: str | None, linked: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [o.replace("{tmp}", str(linked)) for o in options]
    absent = ["--daemon-json", str(linked / "absent.json"), "--config", str(linked / "absent")]
    (cli_code, cli_json), (agent_code, agent_json) = both([*args, *absent, *NO_DOCKER], capsys)
    assert (cli_code, cli_json) == (agent_code, agent_json)
    assert cli_json["mount_path"] == cli_json["config"]["mount_path"] == mount_path.replace("{tmp}", str(linked))
    if fallback is not None:
        assert cli_json["config"]["fallback_data_root"] == fallback.replace("{tmp}", str(linked))
