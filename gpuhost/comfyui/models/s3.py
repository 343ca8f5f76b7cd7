"""An S3 models source: HEAD for size and ETag, parallel ranged GETs pinned to that ETag.

boto3 is imported here and only when the source is opened: it does not travel in the agent zipapp
(the host's distribution package provides it), and `gpuhost models verify` never needs it.
botocore's standard retry mode retries throttling (SlowDown, 503) and 5xx answers before the body;
a body that breaks off is a TransientError the sync retries itself. Requests go out through
gpuhost.awshttp: each within `timeout_s` in all (a part's body included), each answer but an
object's bytes within a size cap.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

from gpuhost.comfyui.models.source import ChangedObject, MissingObject, RemoteObject, TransientError
from gpuhost.model import SourceError, UsageError
from gpuhost.redact import redact_url

S3_ACTIONS = "s3:GetObject (and s3:ListBucket, so that a missing key reads as missing, not as denied)"
CHUNK = 1024 * 1024
# what S3 answers besides an object's bytes (HEAD, errors) is a few KB
MAX_ANSWER_BYTES = 16 * 1024 * 1024

_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
              "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
           "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


_BUCKET_RE = re.compile(r"[A-Za-z0-9._-]{3,63}", re.ASCII)


@dataclass
class S3Location:
    bucket: str
    prefix: str


def parse_s3_url(url: str) -> S3Location:
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    # S3's bucket characters (legacy names add upper case and `_`): nothing else, `user:pw@` included
    if not _BUCKET_RE.fullmatch(bucket):
        raise UsageError(f"source {redact_url(url)!r}: no valid bucket name", "Example: s3://my-models/comfyui")
    if ".." in prefix.split("/"):
        raise UsageError(f"source {redact_url(url)!r}: the prefix must not contain `..`")
    return S3Location(bucket=bucket, prefix=prefix.strip("/"))


def _import_boto3() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise SourceError(
            "boto3", "not installed for this Python: an s3:// source needs it",
            "Install it: apt-get install python3-boto3 (Debian/Ubuntu), dnf install python3-boto3 (Amazon Linux), "
            "or pip install boto3; or serve the models over https://.",
        ) from exc
    return boto3


def _transient_errors(bexc: Any) -> tuple[type[Exception], ...]:
    # older botocore releases (distribution packages) lack some of these
    names = ("ReadTimeoutError", "ConnectTimeoutError", "ResponseStreamingError", "IncompleteReadError",
             "ConnectionClosedError")
    return tuple(getattr(bexc, name) for name in names if hasattr(bexc, name))


class S3Source:
    def __init__(
        self,
        url: str,
        *,
        region: Optional[str] = None,
        profile: Optional[str] = None,
        endpoint_url: Optional[str] = None,
        connections: int = 16,
        timeout_s: float = 60.0,
        attempts: int = 5,
    ) -> None:
        self.url = url
        self.location = parse_s3_url(url)
        # how messages name the endpoint: scheme, host and port only (never a user or password in it)
        self.endpoint = _endpoint_name(endpoint_url) if endpoint_url else ""
        self._bodies: set[Any] = set()
        self._lock = threading.Lock()
        self._aborted = False
        boto3 = _import_boto3()
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ProfileNotFound

        config = Config(
            retries={"mode": "standard", "max_attempts": attempts},
            connect_timeout=min(10.0, timeout_s),
            read_timeout=timeout_s,
            max_pool_connections=connections,
            user_agent_extra="gpuhost-models",
        )
        import botocore.session

        from gpuhost.awshttp import bound

        try:
            core = botocore.session.get_session()
            session = boto3.session.Session(botocore_session=core, profile_name=profile, region_name=region)
            # every request within timeout_s in all (a part's body included), its retries within `attempts` of them
            self.client = bound(
                session.client("s3", config=config, endpoint_url=endpoint_url),
                request_s=timeout_s,
                call_s=timeout_s * attempts,
                max_bytes=MAX_ANSWER_BYTES,
                connect_s=min(10.0, timeout_s),
                ca_bundle=core.get_config_variable("ca_bundle"),
            )
        except ProfileNotFound as exc:
            raise UsageError(f"AWS profile {profile!r} is not configured",
                             "List profiles with `aws configure list-profiles`, or leave out --profile.") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "client") from exc
        except (OSError, ValueError) as exc:  # a CA bundle that cannot be read
            raise UsageError(f"the CA bundle cannot be used: {exc}",
                             "Point AWS_CA_BUNDLE (or the profile's ca_bundle) at a readable PEM file.") from exc

    def key(self, relative: str) -> str:
        return f"{self.location.prefix}/{relative}" if self.location.prefix else relative

    def _translate(self, exc: Exception, key: str) -> Exception:
        from botocore import exceptions as bexc

        where = f"s3://{self.location.bucket}/{key}"
        if isinstance(exc, bexc.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = " ".join(str(error.get("Message", "")).split()) or code
            if code in _MISSING:
                return MissingObject(f"{where}: not in the source ({code})")
            if code in ("PreconditionFailed", "412"):
                return ChangedObject(f"{where}: changed while it was being copied")
            if code in ("InvalidRange", "416"):
                return ChangedObject(f"{where}: changed while it was being copied (now shorter: {code})")
            if code in _THROTTLED:
                return TransientError(f"{where}: {code}: {message}")
            if code in _DENIED:
                return SourceError(where, f"access refused ({code}): {message}",
                                   f"Give the caller (on the host: the instance profile) {S3_ACTIONS}, and check "
                                   "the credentials and the host's clock.")
            if code == "NoSuchBucket":
                return self._no_bucket(code)
            if code in ("PermanentRedirect", "301", "AuthorizationHeaderMalformed"):
                return UsageError(f"{where}: the bucket is in another region ({code}): {message}",
                                  "Give its region with --region.")
            return SourceError(where, f"{code or 'error'}: {message}", "See the S3 error code in the S3 API reference.")
        if isinstance(exc, (bexc.NoCredentialsError, bexc.PartialCredentialsError)):
            return SourceError("AWS credentials", "none found",
                               "Configure them (aws configure, --profile, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) "
                               "or give the host an instance profile.")
        if isinstance(exc, bexc.EndpointConnectionError):
            return SourceError(where, f"cannot reach S3: {' '.join(str(exc).split())}",
                               "Check the network path to S3 (or --endpoint-url) and run it again.")
        if isinstance(exc, _transient_errors(bexc)):
            return TransientError(f"{where}: {' '.join(str(exc).split())}")
        if isinstance(exc, bexc.ParamValidationError):
            return UsageError(f"{where}: {' '.join(str(exc).split())}")
        return SourceError(where, " ".join(str(exc).split()) or type(exc).__name__, "Run it again.")

    def _no_bucket(self, code: str) -> SourceError:
        at = f" at {self.endpoint}" if self.endpoint else ""
        return SourceError(f"s3://{self.location.bucket}", f"no such bucket{at} ({code})",
                           "Check the bucket's name, the account (credentials) and --endpoint-url.")

    def explain_missing(self, keys: list[str]) -> Optional[Exception]:
        """HEAD says 404 both for a missing key and for a missing bucket: ask the bucket itself (a
        listing needs s3:ListBucket; without it the misses stay per file)."""
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = f"{self.location.prefix}/" if self.location.prefix else ""
        try:
            answer = self.client.list_objects_v2(Bucket=self.location.bucket, Prefix=prefix, MaxKeys=1)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                return self._no_bucket(code)
            if code in ("404", "NotFound"):  # a 404 with no S3 error document: not an S3 endpoint
                at = self.endpoint or "S3"
                return SourceError(f"s3://{self.location.bucket}",
                                   f"{at} answers 404 for the bucket itself, with no S3 error: not an S3 endpoint, "
                                   "or no such bucket", "Check --endpoint-url, --region and the bucket's name.")
            return None
        except BotoCoreError:
            return None
        if not answer.get("KeyCount") and not answer.get("Contents"):
            return SourceError(f"s3://{self.location.bucket}/{prefix}",
                               f"the bucket holds nothing under this prefix: none of the {len(keys)} files is there",
                               "Check the prefix in SOURCE (s3://BUCKET/PREFIX); each file is "
                               "PREFIX/FOLDER/NAME, or PREFIX/ the entry's `source`.")
        return None

    def abort(self) -> None:
        """Fail every GET in flight now (its socket shut down wakes the blocked read) and every later one."""
        with self._lock:
            self._aborted = True
            bodies = list(self._bodies)
        for body in bodies:
            sock = _socket_of(body)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stat(self, key: str) -> RemoteObject:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self.key(key)
        try:
            answer = self.client.head_object(Bucket=self.location.bucket, Key=full)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, full) from exc
        size = answer.get("ContentLength")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise SourceError(f"s3://{self.location.bucket}/{full}", "the answer to HEAD gives no Content-Length",
                              "Check --endpoint-url: it must be an S3 endpoint.")
        return RemoteObject(key=full, size=size, version=str(answer.get("ETag", "")))

    def read_range(self, obj: RemoteObject, start: int, end: int) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        params: dict[str, Any] = {"Bucket": self.location.bucket, "Key": obj.key, "Range": f"bytes={start}-{end - 1}"}
        if obj.version:
            params["IfMatch"] = obj.version
        with self._lock:
            if self._aborted:
                raise TransientError(f"{obj.key}: stopped")
        try:
            answer = self.client.get_object(**params)
            body = answer["Body"]
            with self._lock:
                self._bodies.add(body)
            left = end - start
            try:
                _check_answer(answer, obj, start, end)
                for chunk in body.iter_chunks(min(CHUNK, left) or 1):
                    if len(chunk) > left:
                        raise TransientError(f"{obj.key}: S3 sent more than the {end - start} bytes asked for")
                    left -= len(chunk)
                    yield chunk
            finally:
                with self._lock:
                    self._bodies.discard(body)
                body.close()
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, obj.key) from exc
        except OSError as exc:
            raise TransientError(f"{obj.key}: {exc}") from exc
        if left:
            raise TransientError(f"{obj.key}: the answer broke off {left} bytes short")

    def close(self) -> None:
        self.client.close()


def _endpoint_name(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:  # botocore refuses such an endpoint itself
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _check_answer(answer: dict[str, Any], obj: RemoteObject, start: int, end: int) -> None:
    """The range asked for, of the object stat saw (for stores that ignore If-Match)."""
    content_range = str(answer.get("ContentRange") or "")
    total = content_range.rpartition("/")[2]
    if total.isdigit() and int(total) != obj.size:
        raise ChangedObject(f"{obj.key}: changed while it was being copied (now {total} bytes, was {obj.size})")
    tag = str(answer.get("ETag") or "")
    if tag and obj.version and tag != obj.version:
        raise ChangedObject(f"{obj.key}: changed while it was being copied (ETag {tag}, was {obj.version})")


def _socket_of(body: Any) -> Optional[socket.socket]:
    """The socket under a botocore StreamingBody (urllib3's response, then http.client's), if it can
    be reached: shutting it down is the one way to wake a thread blocked reading it."""
    raw = getattr(body, "_raw_stream", None)
    connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        return sock
    reader = getattr(getattr(raw, "_fp", None), "fp", None)  # a BufferedReader over the SocketIO
    for holder in (reader, getattr(reader, "raw", None)):
        sock = getattr(holder, "_sock", None)
        if isinstance(sock, socket.socket):
            return sock
    return None
