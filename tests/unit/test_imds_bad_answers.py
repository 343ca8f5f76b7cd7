"""The instance metadata client against an endpoint on 127.0.0.1 that answers badly: each bad answer is
ImdsUnavailable within the client's timeout, in bounded memory; `tune-ebs` then stops with exit 3."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuhost.cli import app
from gpuhost.ebs.imds import ImdsClient, ImdsUnavailable
from tests.support.bad_servers import BadServer, Script, hostile_answers

USABLE = {"wrong-content-type", "deep-json"}  # HTTP 200 with some text: the metadata service's answers are text


@pytest.mark.parametrize("name", sorted(set(hostile_answers()) - USABLE))
def test_each_bad_answer_is_unavailable_within_the_timeout(name: str) -> None:
    with BadServer(hostile_answers()[name]) as server:
        started = time.monotonic()
        with pytest.raises(ImdsUnavailable, match="did not answer") as caught:
            ImdsClient(server.url, timeout=1.0).token()
        assert time.monotonic() - started < 1.5
    assert server.url in str(caught.value)
    assert server.bytes_sent < 64 * 1024 * 1024


def test_an_error_status_is_unavailable() -> None:
    with BadServer(Script.body(b"", status="403 Forbidden")) as server, pytest.raises(ImdsUnavailable,
                                                                                        match="HTTP 403"):
        ImdsClient(server.url, timeout=1.0).token()


def test_the_token_and_the_identity_from_a_good_answer() -> None:
    def answer(line: str) -> Script:
        if line.startswith("PUT /latest/api/token"):
            return Script.body(b"token-1", content_type="text/plain")
        value = {"instance-id": b"i-0123456789abcdef0", "availability-zone": b"us-east-1a",
                 "region": b"us-east-1", "instance-type": b"g5.xlarge"}[line.split()[1].rsplit("/", 1)[1]]
        return Script.body(value, content_type="text/plain")

    with BadServer(answer) as server:
        identity = ImdsClient(server.url, timeout=1.0).identity()
    assert (identity.instance_id, identity.region, identity.instance_type) == ("i-0123456789abcdef0", "us-east-1",
                                                                               "g5.xlarge")


@pytest.mark.parametrize("name", ["trickled-body", "endless-body", "bad-status-line"])
def test_tune_ebs_on_a_bad_metadata_endpoint_is_exit_3(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with BadServer(hostile_answers()[name]) as server:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url)
        started = time.monotonic()
        result = CliRunner().invoke(app, ["tune-ebs", "--preset", "pull", "--dry-run", "--json"])
        elapsed = time.monotonic() - started
    assert result.exit_code == 3, result.output
    assert "instance metadata" in json.loads(result.stdout)["error"]
    assert elapsed < 8, elapsed
