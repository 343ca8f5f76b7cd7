"""pytest fixtures for the EBS tests: the EC2 stand-ins (tests/support/aws.py) and a clean AWS environment.

moto is imported only when a fixture is used, so other tests do not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.aws import Ec2ErrorServer, Ec2Server, ImdsStandIn

# Variables that would point boto3 elsewhere than the stand-ins.
_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_EC2",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@pytest.fixture(scope="session")
def ec2_server() -> Iterator[Ec2Server]:
    from tests.support.aws import Ec2Server

    server = Ec2Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def imds_stand_in() -> Iterator[ImdsStandIn]:
    from tests.support.aws import ImdsStandIn

    stand_in = ImdsStandIn("i-00000000000000000").start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="session")
def ec2_errors() -> Iterator[Ec2ErrorServer]:
    from tests.support.aws import Ec2ErrorServer

    server = Ec2ErrorServer().start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ec2_server: Ec2Server, imds_stand_in: ImdsStandIn
) -> dict[str, str]:
    """Test credentials, no profile or region, no config files, EC2 and instance metadata at the stand-ins.

    Returned as a dict for subprocesses; this process's environment is set the same way.
    """
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
        # nothing in the tests may reach 169.254.169.254: boto3 and gpuhost both honour this
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds_stand_in.endpoint,
        # boto3 sends EC2 calls here unless --endpoint-url says otherwise
        "AWS_ENDPOINT_URL_EC2": ec2_server.endpoint,
        "AWS_MAX_ATTEMPTS": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
