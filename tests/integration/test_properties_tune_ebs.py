"""`gpuhost tune-ebs` against moto's EC2 server, whatever the options: an exit code from 0 to 3, strict
JSON, no traceback, and a refused request (exit 1, 2 or 3) leaves the volume as it was, described by
the server before and after."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpuhost.cli import app
from tests.support.aws import Ec2Server, make_volume

REGION = "us-east-1"
NUMBERS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e400", "9" * 400, "-1", "0", "abc", "", " 5", "5\n", "3000", "9000"]),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
)
TEXT = st.one_of(st.sampled_from(["", "..", "../../info", "a b", "x\n", "comfyui:0.3.64"]), st.text(max_size=20))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _performance(ec2: Ec2Server, volume_id: str) -> tuple[Any, ...]:
    described = ec2.client().describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    return described["VolumeType"], described["Size"], described.get("Iops"), described.get("Throughput")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)
@given(
    iops=st.one_of(st.none(), NUMBERS),
    throughput=st.one_of(st.none(), NUMBERS),
    preset=st.one_of(st.none(), st.sampled_from(["pull", "baseline", "max", "nope"])),
    image_size=st.one_of(st.none(), NUMBERS, st.just("140GB")),
    within=st.one_of(st.none(), NUMBERS, st.just("5m")),
    poll=st.one_of(st.none(), NUMBERS),
    timeout=st.one_of(st.none(), NUMBERS),
    image=st.one_of(st.none(), TEXT),
    suffix=st.sampled_from(["", "\n", " "]),
    to_gp3=st.booleans(),
)
def test_refused_options_leave_the_volume_as_it_was(
    aws_env: dict[str, str],
    ec2_server: Ec2Server,
    iops: str | None,
    throughput: str | None,
    preset: str | None,
    image_size: str | None,
    within: str | None,
    poll: str | None,
    timeout: str | None,
    image: str | None,
    suffix: str,
    to_gp3: bool,
) -> None:
    volume_id = make_volume(ec2_server.client(), size_gib=100)
    before = _performance(ec2_server, volume_id)
    args = ["tune-ebs", "--volume-id", volume_id + suffix, "--region", REGION, "--json"]
    for flag, value in (("--iops", iops), ("--throughput", throughput), ("--preset", preset),
                        ("--for-image-size", image_size), ("--within", within), ("--poll-interval", poll),
                        ("--timeout", timeout), ("--when-image-present", image)):
        if value is not None:
            args += [flag, value]
    if poll is not None or timeout is not None:
        args.append("--wait")
    if to_gp3:
        args.append("--to-gp3")
    with ec2_server.recording() as actions:
        result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2, 3)
    assert "Traceback" not in result.stdout + result.stderr
    document = json.loads(result.stdout, parse_constant=_refuse_constant)
    assert document["exit_code"] == result.exit_code
    if result.exit_code != 0 or document.get("action") != "modified":
        assert "ModifyVolume" not in actions
        assert _performance(ec2_server, volume_id) == before
