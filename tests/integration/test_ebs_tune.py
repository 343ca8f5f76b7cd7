"""`gpuhost tune-ebs` end to end against a real moto EC2 server on 127.0.0.1 and an IMDSv2 stand-in.

The server's own log of EC2 actions proves which calls were made (and which were not).
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from typing import Any

import pytest
from typer.testing import CliRunner

from gpuhost.cli import app
from tests.support.aws import Ec2ErrorServer, Ec2Server, ImdsStandIn, make_instance, make_volume
from tests.support.paths import REPO

REGION = "us-east-1"


class Run:
    def __init__(self, exit_code: int, stdout: str, stderr: str, exception: BaseException | None) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.exception = exception

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.stdout))


def tune(*args: str) -> Run:
    result = CliRunner().invoke(app, ["tune-ebs", *args])
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return Run(result.exit_code, result.stdout, result.stderr, exception)


def pull_preset(volume_id: str, *args: str) -> Run:
    return tune("--volume-id", volume_id, "--region", REGION, "--preset", "pull", *args)


def volume(ec2: Ec2Server, volume_id: str) -> dict[str, Any]:
    return dict(ec2.client().describe_volumes(VolumeIds=[volume_id])["Volumes"][0])


@pytest.fixture
def instance(aws_env: dict[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn) -> tuple[str, str]:
    """An instance with a 100 GiB gp3 root volume; the IMDS stand-in answers as that instance."""
    instance_id, volume_id = make_instance(ec2_server.client(), size_gib=100)
    imds_stand_in.set_identity(instance_id, REGION)
    return instance_id, volume_id


def test_preset_pull_on_this_instances_root_volume(
    instance: tuple[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn
) -> None:
    instance_id, volume_id = instance
    imds_before = len(imds_stand_in.requests)
    with ec2_server.recording() as actions:
        run = tune("--preset", "pull", "--json")
    assert run.exit_code == 0, run.stdout + run.stderr
    result = run.json
    assert result["schema"] == "gpuhost.tune-ebs/v1"
    assert (result["action"], result["changed"]) == ("modified", True)
    assert result["selection"] == {
        "by": "root",
        "volume_id": volume_id,
        "instance_id": instance_id,
        "device": "/dev/sda1",
        "path": "/",
    }
    assert actions == ["DescribeInstances", "DescribeVolumes", "DescribeVolumesModifications", "ModifyVolume"]
    modify = ec2_server.calls("ModifyVolume")[-1]
    assert (modify["VolumeId"], modify["Iops"], modify["Throughput"]) == (volume_id, "9000", "1000")
    assert "VolumeType" not in modify
    after = volume(ec2_server, volume_id)
    assert (after["Iops"], after["Throughput"], after["VolumeType"]) == (9000, 1000, "gp3")
    # IMDSv2: a token first, then the reads with it
    imds = imds_stand_in.requests[imds_before:]
    assert imds[0] == ("PUT", "/latest/api/token")
    assert ("GET", "/latest/meta-data/instance-id") in imds
    assert ("GET", "/latest/meta-data/placement/region") in imds
    plan = result["plan"]
    assert plan["cost"]["delta_month"] == pytest.approx(65.0)
    assert plan["unpack"]["reference_size"] is True


def test_explicit_values_then_already_at_target_makes_no_modify_call(
    aws_env: dict[str, str], ec2_server: Ec2Server
) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=50)
    args = ("--volume-id", volume_id, "--region", REGION, "--iops", "6000", "--throughput", "500", "--json")
    first = tune(*args)
    assert first.exit_code == 0, first.stdout + first.stderr
    assert first.json["action"] == "modified"
    assert first.json["plan"]["changes"] == {
        "iops": {"from": 3000, "to": 6000},
        "throughput_mibs": {"from": 125, "to": 500},
    }
    after = volume(ec2_server, volume_id)
    assert (after["Iops"], after["Throughput"]) == (6000, 500)

    with ec2_server.recording() as actions:
        again = tune(*args)
    assert again.exit_code == 0
    assert (again.json["action"], again.json["changed"], again.json["would_change"]) == ("none", False, False)
    assert "ModifyVolume" not in actions
    assert actions == ["DescribeVolumes", "DescribeVolumesModifications"]


def test_human_output_shows_the_plan(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100)
    run = pull_preset(volume_id, "--dry-run")
    assert run.exit_code == 0, run.stderr
    for words in ("current", "target", "9,000", "1,000 MiB/s", "+65.00 USD/month", "unpack 140 GB", "17.8 min"):
        assert words in run.stdout, words
    assert "planned: would change" in run.stdout
    assert "four" not in run.stdout or "modifications" in run.stdout


def test_dry_run_changes_nothing(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100)
    with ec2_server.recording() as actions:
        run = tune("--volume-id", volume_id, "--region", REGION, "--preset", "max", "--dry-run", "--json")
    assert run.exit_code == 0
    result = run.json
    assert (result["action"], result["changed"], result["would_change"], result["dry_run"]) == (
        "planned",
        False,
        True,
        True,
    )
    assert result["plan"]["target"]["iops"] == 50000  # 500 IOPS per GiB of 100 GiB
    assert result["plan"]["target"]["throughput_mibs"] == 2000
    assert "ModifyVolume" not in actions
    assert volume(ec2_server, volume_id)["Iops"] == 3000


def test_for_image_size_within_buys_the_cheapest_setting(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100)
    run = tune("--volume-id", volume_id, "--region", REGION, "--for-image-size", "140GB", "--within", "5m", "--json")
    assert run.exit_code == 0, run.stdout
    plan = run.json["plan"]
    assert (plan["target"]["iops"], plan["target"]["throughput_mibs"]) == (3000, 446)
    assert plan["unpack"]["after_s"] <= 300
    assert plan["cost"]["delta_month"] == pytest.approx(12.84)
    assert ec2_server.calls("ModifyVolume")[-1] == {**ec2_server.calls("ModifyVolume")[-1], "Throughput": "446"}
    assert "Iops" not in ec2_server.calls("ModifyVolume")[-1]


STATIC_ERRORS = [
    (["--iops", "2999"], "outside gp3's range 3,000-80,000 IOPS"),
    (["--iops", "80001"], "outside gp3's range 3,000-80,000 IOPS"),
    (["--throughput", "124"], "outside gp3's range 125-2,000 MiB/s"),
    (["--throughput", "2001"], "outside gp3's range 125-2,000 MiB/s"),
    (["--iops", "3000", "--throughput", "1000"], "needs at least 4,000 IOPS"),
    (["--preset", "turbo"], "unknown preset"),
    (["--preset", "pull", "--iops", "9000"], "choose one way"),
    (["--within", "5m"], "--within needs --for-image-size"),
    (["--for-image-size", "lots", "--within", "5m"], "--for-image-size: cannot read the size"),
    (["--for-image-size", "140GB", "--within", "soon"], "--within: cannot read the duration"),
    (["--for-image-size", "140GB", "--within", "10s"], "gp3 tops out at 2,000 MiB/s"),
    ([], "nothing to change"),
    (["--preset", "pull", "--volume-id", "vol-xyz"], "is not an EBS volume id"),
    (["--preset", "pull", "--region", "moon-1"], "is not an AWS region name"),
    (["--preset", "pull", "--target", "home"], "unknown --target"),
    (["--preset", "pull", "--wait-until", "soon"], "unknown --wait-until"),
]


@pytest.mark.parametrize(("args", "words"), STATIC_ERRORS)
def test_invalid_input_is_refused_before_any_call(
    args: list[str], words: str, aws_env: dict[str, str], ec2_server: Ec2Server, imds_stand_in: ImdsStandIn
) -> None:
    imds_before = len(imds_stand_in.requests)
    with ec2_server.recording() as actions:
        run = tune(*args, "--json")
    assert run.exit_code == 2, run.stdout
    assert words in run.json["error"]
    assert run.json["remedy"]
    assert actions == []
    assert imds_stand_in.requests[imds_before:] == []


def test_too_many_iops_for_the_volume_size_sends_no_modify(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=8)
    with ec2_server.recording() as actions:
        run = tune("--volume-id", volume_id, "--region", REGION, "--iops", "5000")
    assert run.exit_code == 2
    assert "exceed gp3's 500 IOPS per GiB" in run.stderr
    assert "hint: Lower --iops to 4000 or grow the volume to 10 GiB first." in run.stderr
    assert actions == ["DescribeVolumes", "DescribeVolumesModifications"]


@pytest.mark.parametrize("volume_type", ["gp2", "st1"])
def test_wrong_volume_type_is_refused_without_to_gp3(
    volume_type: str, aws_env: dict[str, str], ec2_server: Ec2Server
) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=500, volume_type=volume_type)
    with ec2_server.recording() as actions:
        run = pull_preset(volume_id)
    assert run.exit_code == 2
    assert f"{volume_id} is {volume_type}: tune-ebs sets IOPS and throughput on gp3 volumes only" in run.stderr
    assert "Add --to-gp3" in run.stderr
    assert "ModifyVolume" not in actions
    assert volume(ec2_server, volume_id)["VolumeType"] == volume_type


def test_to_gp3_converts_and_tunes_in_one_modification(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=200, volume_type="gp2")
    run = tune("--volume-id", volume_id, "--region", REGION, "--to-gp3", "--preset", "pull", "--json")
    assert run.exit_code == 0, run.stdout
    assert run.json["plan"]["changes"]["volume_type"] == {"from": "gp2", "to": "gp3"}
    modify = ec2_server.calls("ModifyVolume")[-1]
    assert (modify["VolumeType"], modify["Iops"], modify["Throughput"]) == ("gp3", "9000", "1000")
    after = volume(ec2_server, volume_id)
    assert (after["VolumeType"], after["Iops"], after["Throughput"]) == ("gp3", 9000, 1000)


def test_io1_to_gp3_baseline(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100, volume_type="io1", Iops=5000)
    run = tune("--volume-id", volume_id, "--region", REGION, "--to-gp3", "--json")
    assert run.exit_code == 0, run.stdout
    assert run.json["plan"]["target"] == {"volume_type": "gp3", "size_gib": 100, "iops": 3000, "throughput_mibs": 125}
    assert volume(ec2_server, volume_id)["VolumeType"] == "gp3"


def test_unknown_volume(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    run = tune("--volume-id", "vol-0123456789abcdef0", "--region", REGION, "--preset", "pull", "--json")
    assert run.exit_code == 2
    assert "does not exist" in run.json["error"]
    assert "region" in run.json["remedy"]


def test_four_modifications_in_24_hours_then_the_window_moves(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    client = ec2_server.client()
    volume_id = make_volume(client, size_gib=100)
    for iops in (3500, 4000, 4500, 5000):
        client.modify_volume(VolumeId=volume_id, Iops=iops)
    ec2_server.backdate_modifications(volume_id, hours=20)
    with ec2_server.recording() as actions:
        run = pull_preset(volume_id, "--json")
    assert run.exit_code == 1, run.stdout
    result = run.json
    assert result["action"] == "blocked"
    gate = result["plan"]["modification_gate"]
    assert (gate["allowed"], gate["modifications_in_window"], gate["max_per_window"]) == (False, 4, 4)
    assert gate["next_change_at"]
    assert "the next change is possible at" in result["message"]
    assert "(in 4.0 h)" in result["message"]
    assert "ModifyVolume" not in actions
    # a day later the history is outside the window
    ec2_server.backdate_modifications(volume_id, hours=5)
    later = pull_preset(volume_id, "--json")
    assert later.exit_code == 0
    assert later.json["action"] == "modified"


def test_modification_in_progress_blocks_with_its_state(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    client = ec2_server.client()
    volume_id = make_volume(client, size_gib=100)
    ec2_server.lifecycle.timelines[volume_id] = [(0, "modifying", 0), (3600, "optimizing", 50)]
    client.modify_volume(VolumeId=volume_id, Iops=4000)
    with ec2_server.recording() as actions:
        run = pull_preset(volume_id)
    assert run.exit_code == 1
    text = " ".join(run.stdout.split())
    assert "blocked: cannot change" in text
    assert "a modification is in progress (modifying, 0%" in text
    assert "ModifyVolume" not in actions
    dry = pull_preset(volume_id, "--dry-run", "--json")
    assert dry.exit_code == 1
    assert dry.json["plan"]["modification_gate"]["in_progress"]["state"] == "modifying"


def test_wait_follows_the_modification_until_optimizing(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100)
    ec2_server.lifecycle.timelines[volume_id] = [(0, "modifying", 0), (0.6, "optimizing", 40), (1.5, "completed", 100)]
    with ec2_server.recording() as actions:
        run = pull_preset(
            volume_id,
            "--wait",
            "--poll-interval",
            "0.2",
            "--json",
        )
    assert run.exit_code == 0, run.stdout
    wait = run.json["wait"]
    assert (wait["state"], wait["timed_out"], wait["failed"]) == ("optimizing", False, False)
    assert wait["polls"] >= 2
    assert actions.count("DescribeVolumesModifications") == 1 + wait["polls"]
    assert "reached optimizing" in run.json["message"]


def test_wait_until_completed_with_a_progress_bar(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100)
    ec2_server.lifecycle.timelines[volume_id] = [(0, "modifying", 0), (0.3, "optimizing", 40), (0.8, "completed", 100)]
    run = pull_preset(
        volume_id,
        "--wait-until",
        "completed",
        "--poll-interval",
        "0.2",
    )
    assert run.exit_code == 0, run.stdout + run.stderr
    assert "reached completed" in run.stdout
    assert volume_id in run.stderr  # the progress bar's description


def test_wait_times_out_and_a_failed_modification_fails(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    slow = make_volume(ec2_server.client(), size_gib=100)
    ec2_server.lifecycle.timelines[slow] = [(0, "modifying", 5)]
    run = pull_preset(
        slow,
        "--wait",
        "--timeout",
        "1s",
        "--poll-interval",
        "0.3",
        "--json",
    )
    assert run.exit_code == 1
    assert run.json["wait"]["timed_out"] is True
    assert run.json["changed"] is True  # the modification was made; only the wait gave up
    assert "still modifying after" in run.json["message"]

    broken = make_volume(ec2_server.client(), size_gib=100)
    ec2_server.lifecycle.timelines[broken] = [(0, "modifying", 0), (0.3, "failed", 0)]
    run = pull_preset(broken, "--wait", "--poll-interval", "0.2", "--json")
    assert run.exit_code == 1
    assert run.json["wait"]["failed"] is True


def test_already_at_target_with_wait_follows_the_running_modification(
    aws_env: dict[str, str], ec2_server: Ec2Server
) -> None:
    client = ec2_server.client()
    volume_id = make_volume(client, size_gib=100)
    ec2_server.lifecycle.timelines[volume_id] = [(0, "modifying", 0), (0.4, "optimizing", 30)]
    client.modify_volume(VolumeId=volume_id, Iops=9000, Throughput=1000)
    with ec2_server.recording() as actions:
        run = pull_preset(
            volume_id,
            "--wait",
            "--poll-interval",
            "0.2",
            "--json",
        )
    assert run.exit_code == 0
    assert (run.json["action"], run.json["wait"]["state"]) == ("none", "optimizing")
    assert "ModifyVolume" not in actions


AWS_ERRORS = [
    ("RequestLimitExceeded", "Request limit exceeded.", 503, 1, "AWS throttled the request"),
    ("Throttling", "Rate exceeded", 400, 1, "AWS throttled the request"),
    ("UnauthorizedOperation", "You are not authorized to perform this operation.", 403, 3, "not allowed"),
    ("RequestExpired", "Request has expired.", 400, 3, "credentials have expired"),
    ("ExpiredToken", "The security token included in the request is expired", 400, 3, "credentials have expired"),
    ("AuthFailure", "AWS was not able to validate the provided access credentials", 401, 3, "rejected the credentials"),
    ("InvalidVolume.NotFound", "The volume 'vol-0123456789abcdef0' does not exist.", 400, 2, "does not exist"),
    ("IncorrectModificationState", "Volume is being modified", 400, 1, "will not modify the volume now"),
]


@pytest.mark.parametrize(("code", "message", "status", "exit_code", "words"), AWS_ERRORS)
def test_aws_errors_are_one_line_with_a_remedy(
    code: str,
    message: str,
    status: int,
    exit_code: int,
    words: str,
    aws_env: dict[str, str],
    ec2_errors: Ec2ErrorServer,
) -> None:
    ec2_errors.answer(code, message, status)
    args = ("--volume-id", "vol-0123456789abcdef0", "--region", REGION, "--endpoint-url", ec2_errors.endpoint)
    run = tune(*args, "--preset", "pull")
    assert run.exception is None
    assert run.exit_code == exit_code
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 2, run.stderr
    assert lines[0].startswith("gpuhost: error: EC2 DescribeVolumes: ")
    assert words in lines[0]
    assert lines[1].startswith("gpuhost: hint: ")
    assert "Traceback" not in run.stdout + run.stderr
    as_json = tune(*args, "--preset", "pull", "--json")
    assert as_json.json["exit_code"] == exit_code
    assert ec2_errors.actions[-1] == "DescribeVolumes"


def test_no_credentials(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, ec2_server: Ec2Server) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with ec2_server.recording() as actions:
        run = tune("--volume-id", "vol-0123456789abcdef0", "--region", REGION, "--preset", "pull", "--json")
    assert run.exit_code == 3
    assert run.json["error"] == "no AWS credentials found"
    assert actions == []


def test_unknown_profile(aws_env: dict[str, str]) -> None:
    run = tune("--volume-id", "vol-0123456789abcdef0", "--profile", "nobody", "--preset", "pull", "--json")
    assert run.exit_code == 2
    assert "profile 'nobody' is not configured" in run.json["error"]


def test_no_region_off_ec2(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, ec2_server: Ec2Server) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")
    with ec2_server.recording() as actions:
        run = tune("--volume-id", "vol-0123456789abcdef0", "--preset", "pull", "--json")
    assert run.exit_code == 2
    assert "not an EC2 instance" in run.json["error"]
    assert "--region" in run.json["remedy"]
    assert actions == []


def test_region_comes_from_the_instance(instance: tuple[str, str], ec2_server: Ec2Server) -> None:
    _, volume_id = instance
    run = tune("--volume-id", volume_id, "--preset", "baseline", "--json")
    assert run.exit_code == 0, run.stdout
    assert run.json["plan"]["region"] == REGION


def test_root_of_another_instance(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    instance_id, volume_id = make_instance(ec2_server.client(), size_gib=80, device="/dev/xvda")
    run = tune("--instance-id", instance_id, "--region", REGION, "--preset", "pull", "--dry-run", "--json")
    assert run.exit_code == 0, run.stdout
    assert run.json["selection"]["volume_id"] == volume_id
    assert run.json["selection"]["device"] == "/dev/xvda"


def test_imds_unreachable_on_ec2(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{closed}")
    run = tune("--preset", "pull", "--region", REGION, "--json")
    assert run.exit_code == 3
    assert "cannot find this instance's root volume" in run.json["error"]
    assert "hop-limit" in run.json["remedy"]


def test_the_cli_as_a_person_runs_it(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpuhost",
            "tune-ebs",
            "--volume-id",
            volume_id,
            "--region",
            REGION,
            "--endpoint-url",
            ec2_server.endpoint,
            "--preset",
            "pull",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["action"] == "modified"
    assert volume(ec2_server, volume_id)["Throughput"] == 1000


def test_help_reads_like_a_reference_with_an_example_per_option() -> None:
    result = CliRunner().invoke(app, ["tune-ebs", "--help"], terminal_width=100)
    assert result.exit_code == 0
    text = result.stdout
    for section in ("NAME", "DESCRIPTION", "SYNOPSIS", "OPTIONS", "EXAMPLES", "OUTPUT", "EXIT CODES"):
        assert f"\n{section}\n" in f"\n{text}", section
    options = [
        line.strip().split()[0]
        for line in text.split("\nOPTIONS\n")[1].split("\nEXAMPLES\n")[0].splitlines()
        if line.startswith("       --")
    ]
    assert len(options) >= 20
    blocks = text.split("\nOPTIONS\n")[1].split("\nEXAMPLES\n")[0].split("\n\n       --")
    for block in blocks:
        assert "Example: " in block, block
    assert "80,000 IOPS" in text and "2,000 MiB/s" in text


def test_when_image_present_waits_for_the_image(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100)
    args = ("--volume-id", volume_id, "--region", REGION, "--preset", "pull", "--json")
    with ec2_server.recording() as actions:
        waiting = tune(*args, "--when-image-present", "gpuhost-ebs-test/absent:none")
    assert waiting.exit_code == 1
    assert waiting.json["action"] == "waiting"
    assert "Docker does not have gpuhost-ebs-test/absent:none yet" in waiting.json["message"]
    assert actions == []
    # the shared dockerd of the test machine has the base images
    present = tune(*args, "--when-image-present", "local/debian-systemd:bookworm")
    assert present.exit_code == 0, present.stdout
    assert present.json["action"] == "modified"


def test_region_from_aws_region_before_aws_default_region(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, ec2_server: Ec2Server
) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100)
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")  # off EC2: the region can only come from the environment
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # moto's volumes are regional: this one would not find it
    run = tune("--volume-id", volume_id, "--preset", "pull", "--dry-run", "--json")
    assert run.exit_code == 0, run.stdout
    assert run.json["plan"]["region"] == REGION
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    assert tune("--volume-id", volume_id, "--preset", "pull", "--dry-run", "--json").json["plan"]["region"] == REGION


def test_an_unknown_profile_in_aws_profile_is_named(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nosuch")
    run = tune("--volume-id", "vol-0123456789abcdef0", "--preset", "pull", "--json")
    assert run.exit_code == 2
    assert "profile 'nosuch' is not configured" in run.json["error"]
    assert "AWS_PROFILE" in run.json["remedy"]


def test_a_volume_is_never_reported_as_another_instances(aws_env: dict[str, str], ec2_server: Ec2Server) -> None:
    client = ec2_server.client()
    instance_id, own_volume = make_instance(client, size_gib=80)
    other_instance, other_volume = make_instance(client, size_gib=80)
    with ec2_server.recording() as actions:
        run = tune("--instance-id", instance_id, "--volume-id", other_volume, "--region", REGION, "--preset", "pull",
                   "--json")
    assert run.exit_code == 2, run.stdout
    assert run.json["error"] == f"{other_volume} is not attached to {instance_id} (attached to {other_instance})"
    assert "ModifyVolume" not in actions
    assert volume(ec2_server, other_volume)["Iops"] == 3000
    matching = tune("--instance-id", instance_id, "--volume-id", own_volume, "--region", REGION, "--preset", "pull",
                    "--dry-run", "--json")
    assert matching.exit_code == 0, matching.stdout
    assert matching.json["selection"]["instance_id"] == instance_id
    alone = tune("--volume-id", other_volume, "--region", REGION, "--preset", "pull", "--dry-run", "--json")
    assert alone.json["selection"]["instance_id"] == other_instance


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://127.0.0.1:99999", "http://127.0.0.1:4566 ", "ftp://127.0.0.1", "http://"]
)
def test_a_malformed_endpoint_url_is_refused_before_any_call(
    aws_env: dict[str, str], ec2_server: Ec2Server, url: str
) -> None:
    with ec2_server.recording() as actions:
        run = tune("--volume-id", "vol-0123456789abcdef0", "--region", REGION, "--preset", "pull",
                   "--endpoint-url", url, "--json")
    assert run.exit_code == 2, run.stdout
    assert "--endpoint-url" in run.json["error"] and run.json["remedy"]
    assert actions == []


def test_junk_aws_max_attempts_is_refused_before_any_call(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, ec2_server: Ec2Server
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "junk")
    with ec2_server.recording() as actions:
        run = tune("--volume-id", "vol-0123456789abcdef0", "--region", REGION, "--preset", "pull", "--json")
    assert run.exit_code == 2, run.stdout
    assert "AWS_MAX_ATTEMPTS" in run.json["error"]
    assert actions == []


class _NonsenseHandler(http.server.BaseHTTPRequestHandler):
    answer: tuple[int, str, bytes] = (200, "text/plain", b"")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, content_type, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    "answer",
    [
        (200, "text/plain", b"garbage<<<"),
        (500, "application/json", b'{"message": "internal error"}'),
        (200, "text/xml", b""),
        (503, "application/octet-stream", b"\x00\xff" * 64),
    ],
    ids=["garbage", "http-500-json", "empty", "binary-503"],
)
def test_an_endpoint_answering_nonsense_is_exit_3(aws_env: dict[str, str], answer: tuple[int, str, bytes]) -> None:
    handler = type("Handler", (_NonsenseHandler,), {"answer": answer})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        run = tune("--volume-id", "vol-0123456789abcdef0", "--region", REGION, "--preset", "pull",
                   "--endpoint-url", endpoint, "--json")
    finally:
        server.shutdown()
        server.server_close()
    assert run.exception is None
    assert run.exit_code == 3, run.stdout
    assert "not an EC2 API response" in run.json["error"] or "EC2 DescribeVolumes" in run.json["error"]
    assert "--endpoint-url" in run.json["remedy"] or run.json["remedy"]
