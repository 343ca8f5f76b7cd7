"""EC2 calls (boto3) against an `--endpoint-url` on 127.0.0.1 that answers badly: each is exit 3 with a
message, every request within its deadline and every call within its own (retries included), every
answer within the size cap: never a traceback, never a hang."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpuhost.agent import main as agent_main
from gpuhost.cli import app
from gpuhost.ebs import aws
from gpuhost.model import ExitCode
from tests.support.bad_servers import BadServer, Script, hostile_answers

VOLUME = "vol-0123456789abcdef0"
UNUSABLE = "the endpoint's answer cannot be used"
TOO_SLOW = "cannot reach the EC2 API: .*no complete answer within"
NOT_EC2 = "not an EC2 API response"
EXPECTED = {
    "not-http": UNUSABLE,
    "bad-status-line": UNUSABLE,
    "huge-header": UNUSABLE,
    "too-many-headers": UNUSABLE,
    "endless-headers": UNUSABLE,
    "trickled-headers": TOO_SLOW,
    "trickled-body": TOO_SLOW,
    "endless-body": UNUSABLE,
    "declared-huge": UNUSABLE,
    "premature-close": UNUSABLE,
    "invalid-chunked": UNUSABLE,
    "closed-without-answer": UNUSABLE,
    "silent": TOO_SLOW,
    "wrong-content-type": NOT_EC2,
    "deep-json": NOT_EC2,
}


@pytest.fixture(autouse=True)
def test_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials that sign requests; no profile, region or endpoint from this machine."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_EC2", "AWS_MAX_ATTEMPTS", "AWS_CA_BUNDLE", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def quick_client(endpoint: str, attempts: int = 3) -> Any:
    options = aws.AwsOptions(region="us-east-1", endpoint_url=endpoint, connect_timeout=0.5, read_timeout=1.0,
                             call_timeout=2.5, max_attempts=attempts)
    return aws.ec2_client(options)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_answer_is_exit_3_within_the_calls_deadline(name: str) -> None:
    assert set(EXPECTED) == set(hostile_answers())
    with BadServer(hostile_answers()[name]) as server:
        client = quick_client(server.url)
        started = time.monotonic()
        with pytest.raises(aws.AwsError, match=EXPECTED[name]) as caught:
            aws.describe_volume(client, VOLUME)
        elapsed = time.monotonic() - started
    assert caught.value.exit_code is ExitCode.SOURCE_UNREADABLE
    assert caught.value.remedy
    assert elapsed < 2.5 + 1.0, elapsed  # the call's deadline, retries and their back-off included
    # three attempts, each stopped at the cap (plus what the kernel's socket buffers took): not the GiB offered
    assert server.bytes_sent < 200 * 1024 * 1024


def test_the_calls_deadline_ends_the_retries() -> None:
    slow = Script(trickle=b"HTTP/1.1 200 OK\r\n", interval=0.3)
    with BadServer(slow) as server:
        client = quick_client(server.url, attempts=50)
        started = time.monotonic()
        with pytest.raises(aws.AwsError, match=r"retries included"):
            aws.describe_volume(client, VOLUME)
        assert time.monotonic() - started < 2.5 + 1.0
    assert 2 <= len(server.requests) < 10


def test_an_endpoint_that_refuses_connections_is_exit_3() -> None:
    with BadServer(Script()) as server:
        endpoint = server.url
    with pytest.raises(aws.AwsError, match=r"cannot reach the EC2 API: .*connection refused") as caught:
        aws.describe_volume(quick_client(endpoint, attempts=1), VOLUME)
    assert caught.value.exit_code is ExitCode.SOURCE_UNREADABLE


def test_a_good_answer_still_reads() -> None:
    answer = (
        b'<?xml version="1.0" encoding="UTF-8"?><DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/'
        b'2016-11-15/"><requestId>r</requestId><volumeSet><item><volumeId>' + VOLUME.encode() +
        b"</volumeId><size>100</size><volumeType>gp3</volumeType><iops>3000</iops><throughput>125</throughput>"
        b"<status>in-use</status></item></volumeSet></DescribeVolumesResponse>"
    )
    with BadServer(Script.body(answer, content_type="text/xml")) as server:
        volume = aws.describe_volume(quick_client(server.url), VOLUME)
    assert (volume.volume_id, volume.size_gib, volume.performance.iops) == (VOLUME, 100, 3000)
    assert server.requests == ["POST / HTTP/1.1"]


@pytest.mark.parametrize("name", ["bad-status-line", "endless-body", "not-http", "closed-without-answer"])
def test_tune_ebs_and_the_agent_say_so_as_json(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    args = ["--volume-id", VOLUME, "--region", "us-east-1", "--preset", "pull", "--json"]
    with BadServer(hostile_answers()[name]) as server:
        result = CliRunner().invoke(app, ["tune-ebs", *args, "--endpoint-url", server.url])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert result.exit_code == 3, result.output
        payload = json.loads(result.stdout)
        assert payload["exit_code"] == 3 and server.url in payload["error"] and payload["remedy"]
        assert agent_main(["tune-ebs", *args, "--endpoint-url", server.url]) == 3


BAD_ENVIRONMENT_ENDPOINTS = {
    "no scheme": "ec2.us-east-1.amazonaws.com",
    "not http": "ftp://127.0.0.1:21",
    "no host": "http://",
    "port zero": "http://127.0.0.1:0",
    "port past 65535": "http://127.0.0.1:70000",
    "trailing space": "http://127.0.0.1:8 ",
    "newline": "http://127.0.0.1:8\n",
    "credentials and a bad port": "http://admin:hunter2@127.0.0.1:99999",
}


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"])
@pytest.mark.parametrize("case", sorted(BAD_ENVIRONMENT_ENDPOINTS))
def test_a_bad_endpoint_in_the_environment_is_refused_before_any_call(
    variable: str, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with BadServer(Script()) as server:  # would see any request made
        monkeypatch.setenv(variable, BAD_ENVIRONMENT_ENDPOINTS[case])
        args = ["--volume-id", VOLUME, "--region", "us-east-1", "--preset", "pull", "--json"]
        result = CliRunner().invoke(app, ["tune-ebs", *args])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert result.exit_code == 2, result.output
        payload = json.loads(result.stdout)
        assert payload["exit_code"] == 2 and variable in payload["error"], payload
        assert variable in payload["remedy"], payload
        assert "hunter2" not in result.output
        assert server.requests == []


def test_an_endpoint_option_or_the_ignore_switch_passes_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "not a url")
    aws.check_endpoint_environment("http://127.0.0.1:8")  # boto3 uses the option, not the variable
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    aws.check_endpoint_environment(None)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
    with pytest.raises(aws.AwsError, match="AWS_ENDPOINT_URL_EC2 'not a url'") as caught:
        aws.check_endpoint_environment(None)
    assert caught.value.exit_code is ExitCode.USAGE


def test_an_empty_endpoint_variable_is_skipped_as_boto3_skips_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "ftp://x")
    with pytest.raises(aws.AwsError, match="AWS_ENDPOINT_URL 'ftp://x'"):
        aws.check_endpoint_environment(None)
