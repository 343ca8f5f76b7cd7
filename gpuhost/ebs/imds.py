"""The EC2 instance metadata service, IMDSv2 only, standard library only.

The endpoint follows boto3's settings: `AWS_EC2_METADATA_SERVICE_ENDPOINT` (default
http://169.254.169.254) and `AWS_EC2_METADATA_DISABLED=true`. Requests never go through an HTTP
proxy, and each request has a short total deadline (connect to last byte) and a 64 KiB cap: off EC2
nothing answers and the caller moves on, and an endpoint that trickles or answers without end cannot
hold it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gpuhost import userfile
from gpuhost.exchange import Deadline, ExchangeError, exchange

DEFAULT_ENDPOINT = "http://169.254.169.254"
ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
DISABLED_ENV = "AWS_EC2_METADATA_DISABLED"
TOKEN_TTL_S = 300
# an instance id, a zone, a token: a few dozen bytes
MAX_ANSWER_BYTES = 64 * 1024


class ImdsUnavailable(Exception):
    """The metadata service did not answer (not on EC2, disabled, or hop limit too low)."""


@dataclass
class InstanceIdentity:
    instance_id: str
    region: str
    availability_zone: str = ""
    instance_type: str = ""


def imds_endpoint() -> str:
    return (os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def imds_disabled() -> bool:
    return os.environ.get(DISABLED_ENV, "").strip().lower() == "true"


class ImdsClient:
    def __init__(self, endpoint: str | None = None, timeout: float = 1.0) -> None:
        self.endpoint = (endpoint or imds_endpoint()).rstrip("/")
        self.timeout = timeout
        self._token: str | None = None

    def _request(self, method: str, path: str, headers: dict[str, str]) -> str:
        """One request within `timeout` in all (connect to last byte), its answer at most MAX_ANSWER_BYTES."""
        try:
            answer = exchange(
                method, self.endpoint + path, Deadline(self.timeout), MAX_ANSWER_BYTES, headers, use_proxy=False
            )
        except ExchangeError as exc:
            raise ImdsUnavailable(f"instance metadata at {exc.where} did not answer: {exc.reason}") from exc
        if answer.status != 200:
            raise ImdsUnavailable(f"instance metadata {path}: HTTP {answer.status}")
        return answer.body.decode("utf-8", errors="replace").strip()

    def token(self) -> str:
        if imds_disabled():
            raise ImdsUnavailable(f"instance metadata is disabled ({DISABLED_ENV}=true)")
        if self._token is None:
            self._token = self._request(
                "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)}
            )
        return self._token

    def get(self, path: str) -> str:
        return self._request("GET", path, {"X-aws-ec2-metadata-token": self.token()})

    def identity(self) -> InstanceIdentity:
        instance_id = self.get("/latest/meta-data/instance-id")
        zone = self.get("/latest/meta-data/placement/availability-zone")
        try:
            region = self.get("/latest/meta-data/placement/region")
        except ImdsUnavailable:
            region = zone[:-1] if zone else ""
        try:
            instance_type = self.get("/latest/meta-data/instance-type")
        except ImdsUnavailable:
            instance_type = ""
        return InstanceIdentity(instance_id, region, zone, instance_type)


def looks_like_ec2(root: str = "/") -> bool:
    """True when the firmware says Amazon EC2 or an IMDS endpoint is configured explicitly."""
    if os.environ.get(ENDPOINT_ENV):
        return True
    for name in ("board_vendor", "sys_vendor"):
        if (userfile.read_host_prefix(os.path.join(root, "sys/class/dmi/id", name), 256) or "").strip() == "Amazon EC2":
            return True
    return False
