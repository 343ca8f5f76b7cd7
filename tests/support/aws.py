"""AWS stand-ins on 127.0.0.1 for the tune-ebs tests.

- Ec2Server: moto's ThreadedMotoServer on a free loopback port, with a log of every EC2 action
  it answered (read from the request body, before moto sees it), and the modification lifecycle
  AWS has but moto does not model (modifying -> optimizing -> completed over time).
- ImdsStandIn: the IMDSv2 endpoints gpuhost reads (token, instance id, placement, type);
  moto does not serve instance metadata.
- Ec2ErrorServer: answers every EC2 request with one EC2 error document, for the failures
  moto cannot produce (throttling, expired credentials, UnauthorizedOperation, ...).
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import secrets
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from typing import Any

from moto.core.utils import utcnow
from moto.ec2.models import ec2_backends
from moto.ec2.models.elastic_block_store import VolumeModification
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

ACCOUNT = "123456789012"

# volume id -> [(seconds after the modification started, state, progress)]
Timeline = list[tuple[float, str, int]]


class _LifecycleModel:
    """Gives moto's volume modifications AWS's states over time, per volume."""

    def __init__(self) -> None:
        self.timelines: dict[str, Timeline] = {}
        self._saved: dict[str, Any] = {}

    def step(self, modification: VolumeModification) -> tuple[str, int]:
        timeline = self.timelines.get(modification.volume.id)
        if not timeline:
            return "completed", 100
        elapsed = (utcnow() - modification.start_time).total_seconds()
        state, progress = timeline[0][1], timeline[0][2]
        for at, step_state, step_progress in timeline:
            if elapsed >= at:
                state, progress = step_state, step_progress
        return state, progress

    def install(self) -> None:
        model = self
        self._saved = {
            "modification_state": VolumeModification.__dict__["modification_state"],
            "progress": VolumeModification.__dict__["progress"],
        }
        VolumeModification.modification_state = property(lambda m: model.step(m)[0])  # type: ignore[assignment,method-assign]
        VolumeModification.progress = property(lambda m: model.step(m)[1])  # type: ignore[assignment,method-assign]

    def uninstall(self) -> None:
        for name, value in self._saved.items():
            setattr(VolumeModification, name, value)


class _ActionLog:
    """WSGI middleware recording the EC2 action of every request (query protocol: Action=...)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.entries: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = BytesIO(body)
        fields = dict(urllib.parse.parse_qsl(body.decode("utf-8", errors="replace")))
        fields.update(dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""))))
        if "Action" in fields:
            with self._lock:
                self.entries.append((fields["Action"], fields))
        return self.app(environ, start_response)


@contextmanager
def clean_moto_server() -> Iterator[str]:
    """A plain moto server on loopback, yielding its endpoint, with nothing left from earlier tests.

    moto keeps its backends per process, not per server: instances an earlier test made on another
    server are still listed unless the state is reset.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30)
        yield endpoint
    finally:
        server.stop()


class Ec2Server(ThreadedMotoServer):
    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.log: _ActionLog | None = None
        self.lifecycle = _LifecycleModel()

    def _server_entry(self) -> None:
        self.log = _ActionLog(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, self.log, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.lifecycle.install()
        super().start()

    def stop(self) -> None:
        super().stop()
        self.lifecycle.uninstall()

    @property
    def endpoint(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def actions(self) -> list[str]:
        assert self.log is not None
        return [action for action, _ in self.log.entries]

    def calls(self, action: str) -> list[dict[str, str]]:
        assert self.log is not None
        return [fields for name, fields in self.log.entries if name == action]

    @contextmanager
    def recording(self) -> Iterator[list[str]]:
        """Yield a list that holds, after the block, the actions answered inside it."""
        assert self.log is not None
        before = len(self.log.entries)
        seen: list[str] = []
        yield seen
        seen.extend(action for action, _ in self.log.entries[before:])

    def client(self, region: str = "us-east-1") -> Any:
        import boto3

        return boto3.client("ec2", region_name=region, endpoint_url=self.endpoint)

    def backend(self, region: str = "us-east-1") -> Any:
        return ec2_backends[ACCOUNT][region]

    def backdate_modifications(self, volume_id: str, hours: float, region: str = "us-east-1") -> None:
        """Move a volume's recorded modifications `hours` into the past (time passes; moto has no clock)."""
        volume = self.backend(region).volumes[volume_id]
        for modification in volume.modifications:
            modification.start_time -= dt.timedelta(hours=hours)
            modification.end_time -= dt.timedelta(hours=hours)


class _ImdsHandler(http.server.BaseHTTPRequestHandler):
    server: _ImdsHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self, status: int, body: str = "") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        self.server.requests.append(("PUT", self.path))
        if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self._answer(400)
            return
        self._answer(200, self.server.token)

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path))
        if self.headers.get("X-aws-ec2-metadata-token") != self.server.token:
            self._answer(401)  # IMDSv2 only: no token, no answer
            return
        value = self.server.metadata.get(self.path)
        if value is None:
            self._answer(404)
        else:
            self._answer(200, value)


class _ImdsHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    token: str
    metadata: dict[str, str]
    requests: list[tuple[str, str]]


class ImdsStandIn:
    def __init__(self, instance_id: str, region: str = "us-east-1", instance_type: str = "g5.xlarge") -> None:
        self.server = _ImdsHttpServer(("127.0.0.1", 0), _ImdsHandler)
        self.server.token = secrets.token_hex(16)
        self.server.requests = []
        self.set_identity(instance_id, region, instance_type)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def set_identity(self, instance_id: str, region: str = "us-east-1", instance_type: str = "g5.xlarge") -> None:
        self.server.metadata = {
            "/latest/meta-data/instance-id": instance_id,
            "/latest/meta-data/placement/region": region,
            "/latest/meta-data/placement/availability-zone": region + "a",
            "/latest/meta-data/instance-type": instance_type,
        }

    def grant_role(self, role: str = "gpuhost-host") -> ImdsStandIn:
        """Serve an instance profile's temporary credentials, as IMDSv2 does (boto3 finds them itself)."""
        now = dt.datetime.now(dt.timezone.utc)
        credentials = {
            "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "ASIAGPUHOSTSTANDIN01",
            "SecretAccessKey": secrets.token_hex(20), "Token": secrets.token_hex(32),
            "LastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Expiration": (now + dt.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.server.metadata["/latest/meta-data/iam/security-credentials/"] = role
        self.server.metadata[f"/latest/meta-data/iam/security-credentials/{role}"] = json.dumps(credentials)
        return self

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.server.requests

    def start(self) -> ImdsStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _ErrorHandler(http.server.BaseHTTPRequestHandler):
    server: _ErrorHttpServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        fields = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        self.server.actions.append(fields.get("Action", ""))
        code, message, status = self.server.error
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            "<RequestID>5b1a3e1c-0000-4000-8000-000000000000</RequestID></Response>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _ErrorHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    error: tuple[str, str, int]
    actions: list[str]


class Ec2ErrorServer:
    """Answers every EC2 call with the error (code, message, HTTP status) set last."""

    def __init__(self) -> None:
        self.server = _ErrorHttpServer(("127.0.0.1", 0), _ErrorHandler)
        self.server.error = ("InternalError", "An internal error has occurred", 500)
        self.server.actions = []
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, code: str, message: str, status: int) -> None:
        self.server.error = (code, message, status)
        self.server.actions.clear()

    @property
    def actions(self) -> list[str]:
        return self.server.actions

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Ec2ErrorServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_IMAGES: list[str] = []


def _image_id(client: Any) -> str:
    # moto lists its whole AMI catalogue here (slow): once per session is enough
    if not _IMAGES:
        _IMAGES.append(client.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"])
    return _IMAGES[0]


def make_instance(
    client: Any, size_gib: int = 100, volume_type: str = "gp3", device: str = "/dev/sda1"
) -> tuple[str, str]:
    """Run an instance whose root EBS volume is as given; return (instance id, root volume id).

    moto takes size and type from the mapping, not IOPS or throughput: modify the volume for those.
    """
    answer = client.run_instances(
        ImageId=_image_id(client),
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.xlarge",
        BlockDeviceMappings=[{"DeviceName": device, "Ebs": {"VolumeSize": size_gib, "VolumeType": volume_type}}],
    )
    instance = answer["Instances"][0]
    volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    return instance["InstanceId"], volume_id


def make_volume(client: Any, size_gib: int = 100, volume_type: str = "gp3", **extra: Any) -> str:
    answer = client.create_volume(AvailabilityZone="us-east-1a", Size=size_gib, VolumeType=volume_type, **extra)
    return str(answer["VolumeId"])
