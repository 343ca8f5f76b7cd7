"""The EC2 calls tune-ebs makes, and AWS errors turned into one line with a remedy.

boto3 is imported here and only when a call is about to be made: it takes a quarter of a second
to import and does not travel in the agent zipapp (the host's distribution package provides it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from gpuhost.ebs.plan import check_endpoint_url
from gpuhost.ebs.volume import Modification, Performance, Volume, modification_from_api, volume_from_api
from gpuhost.model import ExitCode, GpuhostError, UsageError
from gpuhost.redact import redact_urls

IAM_ACTIONS = "ec2:DescribeVolumes, ec2:DescribeVolumesModifications, ec2:ModifyVolume, ec2:DescribeInstances"
# An EC2 answer gpuhost reads describes a few volumes or one instance: a few KB. An endpoint that
# sends more than this is not answering those calls.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
ENDPOINT_REMEDY = "Check --endpoint-url (or AWS_ENDPOINT_URL_EC2): it must be an EC2 API endpoint."


class AwsError(GpuhostError):
    """An AWS failure as gpuhost reports it: one line, a remedy, an exit code (3 when AWS could not be
    reached or refused access, 2 for what AWS says is bad input, 1 for what cannot be done now)."""

    def __init__(self, message: str, remedy: str, exit_code: ExitCode, aws_code: str = "") -> None:
        super().__init__(message, remedy, exit_code)
        self.aws_code = aws_code


@dataclass
class AwsOptions:
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    connect_timeout: float = 5.0
    # each request's whole exchange (connect to last byte), and each call's, retries included
    read_timeout: float = 20.0
    call_timeout: float = 60.0
    # None: boto3's own setting (AWS_MAX_ATTEMPTS, the profile, or its default)
    max_attempts: int | None = None


def boto3_missing() -> AwsError:
    return AwsError(
        "boto3 is not installed for this Python",
        "Install it: apt-get install python3-boto3 (Debian/Ubuntu), dnf install python3-boto3 (Amazon Linux), "
        "or pip install boto3.",
        ExitCode.SOURCE_UNREADABLE,
    )


def _import_boto3() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise boto3_missing() from exc
    return boto3


_LOADER: Any = None


def _session(profile: str | None = None, region: str | None = None) -> Any:
    """A fresh boto3 session (credentials as the environment is now) sharing one model loader:
    parsing the EC2 model costs a few hundred milliseconds, once per process is enough."""
    return _sessions(profile, region)[0]


def _sessions(profile: str | None = None, region: str | None = None) -> tuple[Any, Any]:
    """(boto3 session, the botocore session under it)."""
    global _LOADER
    boto3 = _import_boto3()
    import botocore.loaders
    import botocore.session

    if _LOADER is None:
        _LOADER = botocore.loaders.create_loader()
    core = botocore.session.get_session()
    core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core, profile_name=profile, region_name=region), core


# the AWS CLI v2 reads AWS_REGION first; botocore itself reads only AWS_DEFAULT_REGION
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL")  # boto3 reads them for the EC2 client
_MAX_ATTEMPTS = re.compile(r"[1-9][0-9]{0,2}")


def check_environment() -> None:
    """The AWS variables boto3 would choke on later, refused before any call (UsageError)."""
    raw = os.environ.get("AWS_MAX_ATTEMPTS")
    if raw is not None and not _MAX_ATTEMPTS.fullmatch(raw):
        raise UsageError(
            f"AWS_MAX_ATTEMPTS={raw[:40]!r} is not a whole number of attempts from 1 to 999",
            "Unset AWS_MAX_ATTEMPTS or set it to a number, e.g. AWS_MAX_ATTEMPTS=5.",
        )


def environment_region() -> str | None:
    for name in REGION_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _profile_not_found(profile: str | None) -> AwsError:
    name = profile or os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or ""
    where = "--profile" if profile else "AWS_PROFILE"
    return AwsError(
        f"AWS profile {name!r} is not configured",
        f"List profiles with `aws configure list-profiles`, or leave out {where}.",
        ExitCode.USAGE,
    )


def configured_region(profile: str | None) -> str | None:
    """The region from AWS_REGION, AWS_DEFAULT_REGION, then the profile (no network)."""
    from botocore.exceptions import ProfileNotFound

    try:
        return environment_region() or _session(profile).region_name
    except ProfileNotFound as exc:
        raise _profile_not_found(profile) from exc


def check_endpoint_environment(endpoint_url: str | None) -> None:
    """The endpoint boto3 would take from the environment when no --endpoint-url is given, refused
    before any call when it is not an http(s) URL (AwsError, exit 2): boto3's own error names neither
    the variable nor a remedy."""
    if endpoint_url is not None or os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return
    for name in ENDPOINT_VARIABLES:
        url = os.environ.get(name)
        if url:  # boto3 skips an empty one and uses the first one set
            try:
                check_endpoint_url(url, name)
            except UsageError as exc:
                raise AwsError(str(exc), exc.remedy, ExitCode.USAGE) from None
            return


def ec2_client(options: AwsOptions) -> Any:
    check_endpoint_environment(options.endpoint_url)
    _import_boto3()
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ProfileNotFound

    retries: dict[str, Any] = {"mode": "standard"}
    if options.max_attempts is not None:
        retries["max_attempts"] = options.max_attempts
    config = Config(
        retries=retries,  # type: ignore[arg-type]
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        user_agent_extra="gpuhost-tune-ebs",
    )
    try:
        session, core = _sessions(options.profile, options.region or environment_region())
        client = session.client("ec2", config=config, endpoint_url=options.endpoint_url)
        ca_bundle = core.get_config_variable("ca_bundle")
    except ProfileNotFound as exc:
        raise _profile_not_found(options.profile) from exc
    except BotoCoreError as exc:
        raise translate(exc, "client") from exc
    from gpuhost.awshttp import bound

    try:
        return bound(
            client, options.read_timeout, options.call_timeout, MAX_ANSWER_BYTES, options.connect_timeout, ca_bundle
        )
    except (OSError, ValueError) as exc:  # a CA bundle that cannot be read
        raise AwsError(
            f"the CA bundle {str(ca_bundle)[:200]!r} cannot be used: {exc}",
            "Point AWS_CA_BUNDLE (or the profile's ca_bundle) at a readable PEM file.",
            ExitCode.USAGE,
        ) from exc


_THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "TooManyRequestsException",
}
_DENIED = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "OptInRequired", "Blocked"}
_BAD_CREDENTIALS = {"AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch"}
_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
_NOT_FOUND = {
    "InvalidVolume.NotFound",
    "InvalidVolumeID.Malformed",
    "InvalidInstanceID.NotFound",
    "InvalidInstanceID.Malformed",
}
_BUSY = {"IncorrectModificationState", "VolumeModificationRateExceeded", "IncorrectState"}
_REJECTED = {"InvalidParameterValue", "InvalidParameterCombination", "InvalidParameter", "UnsupportedOperation"}


def _first_line(text: str) -> str:
    """An error's text on one line, without URL credentials (botocore names the endpoint URL)."""
    return " ".join(redact_urls(str(text)).split())


def _credential_load_errors(bexc: Any) -> tuple[type[Exception], ...]:
    # older botocore releases (distribution packages) lack some of these
    names = ("CredentialRetrievalError", "SSOTokenLoadError", "TokenRetrievalError", "UnauthorizedSSOTokenError")
    return tuple(getattr(bexc, name) for name in names if hasattr(bexc, name))


def translate(exc: Exception, operation: str) -> AwsError:
    """One line and a remedy for any botocore failure."""
    from botocore import exceptions as bexc

    if isinstance(exc, bexc.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        aws_message = _first_line(error.get("Message", "")) or code
        where = f"EC2 {operation}"
        if code in _THROTTLED:
            return AwsError(
                f"{where}: AWS throttled the request ({code}): {aws_message}",
                "Wait a minute and run it again; many callers share the account's EC2 API rate. "
                "AWS_MAX_ATTEMPTS raises boto3's retries.",
                ExitCode.FAILING,
                code,
            )
        if code in _DENIED:
            return AwsError(
                f"{where}: not allowed ({code}): {aws_message}",
                f"Grant the caller's IAM role or user {IAM_ACTIONS} (on the host: the instance profile).",
                ExitCode.SOURCE_UNREADABLE,
                code,
            )
        if code in _EXPIRED:
            return AwsError(
                f"{where}: the AWS credentials have expired ({code})",
                "Refresh them (aws sso login, a new STS session, or re-export AWS_SESSION_TOKEN) and run it again.",
                ExitCode.SOURCE_UNREADABLE,
                code,
            )
        if code in _BAD_CREDENTIALS:
            return AwsError(
                f"{where}: AWS rejected the credentials ({code}): {aws_message}",
                "Check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --profile, and the host's clock.",
                ExitCode.SOURCE_UNREADABLE,
                code,
            )
        if code in _NOT_FOUND:
            return AwsError(
                f"{where}: {aws_message}",
                "Check the id and the region (volumes and instances are regional: --region).",
                ExitCode.USAGE,
                code,
            )
        if code in _BUSY or "modification rate" in aws_message.lower():
            return AwsError(
                f"{where}: AWS will not modify the volume now ({code}): {aws_message}",
                "A modification is still running or the volume's modification limit is reached; "
                "follow it with `gpuhost tune-ebs --dry-run` and run again when it allows.",
                ExitCode.FAILING,
                code,
            )
        if code in _REJECTED:
            return AwsError(
                f"{where}: AWS rejected the request ({code}): {aws_message}",
                "Check the values against `gpuhost tune-ebs --help` (limits and their source).",
                ExitCode.USAGE,
                code,
            )
        return AwsError(
            f"{where}: {code or 'error'}: {aws_message}",
            "See the AWS error code in the EC2 API reference.",
            ExitCode.SOURCE_UNREADABLE,
            code,
        )
    if isinstance(exc, bexc.NoRegionError):
        return AwsError(
            "no AWS region: none given and none configured",
            "Give --region us-east-1 (or set AWS_REGION / the profile's region).",
            ExitCode.USAGE,
        )
    if isinstance(exc, (bexc.NoCredentialsError, bexc.PartialCredentialsError)):
        return AwsError(
            "no AWS credentials found",
            "Configure them: aws configure, AWS_PROFILE/--profile, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or an instance profile on the host.",
            ExitCode.SOURCE_UNREADABLE,
        )
    if isinstance(exc, _credential_load_errors(bexc)):
        return AwsError(
            f"AWS credentials could not be loaded: {_first_line(str(exc))}",
            "Refresh them (aws sso login --profile NAME) and run it again.",
            ExitCode.SOURCE_UNREADABLE,
        )
    from gpuhost.awshttp import CallDeadlinePassed, EndpointUnusable

    if isinstance(exc, EndpointUnusable):
        return AwsError(
            f"EC2 {operation}: the endpoint's answer cannot be used: {_first_line(str(exc))[:300]}",
            ENDPOINT_REMEDY,
            ExitCode.SOURCE_UNREADABLE,
        )
    if isinstance(
        exc, (bexc.EndpointConnectionError, bexc.ConnectTimeoutError, bexc.ReadTimeoutError, CallDeadlinePassed)
    ):
        return AwsError(
            f"EC2 {operation}: cannot reach the EC2 API: {_first_line(str(exc))}",
            "Check the network path to the EC2 endpoint (or --endpoint-url) and run it again.",
            ExitCode.SOURCE_UNREADABLE,
        )
    if isinstance(exc, bexc.ParamValidationError):
        return AwsError(
            f"EC2 {operation}: invalid parameters: {_first_line(str(exc))}", "Check the values given.", ExitCode.USAGE
        )
    return AwsError(
        f"EC2 {operation}: {_first_line(str(exc))}",
        "Run it again; report it if it persists.",
        ExitCode.SOURCE_UNREADABLE,
    )


def call(client: Any, operation: str, **params: Any) -> dict[str, Any]:
    """Call one EC2 operation by its API name (e.g. DescribeVolumes); AWS errors become AwsError."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    method = getattr(client, _snake(operation))
    try:
        answer = dict(method(**params))
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, operation) from exc
    except ResponseParserError as exc:
        raise AwsError(
            f"EC2 {operation}: the endpoint's answer is not an EC2 API response: {_first_line(str(exc))[:200]}",
            ENDPOINT_REMEDY,
            ExitCode.SOURCE_UNREADABLE,
        ) from exc
    # any well-formed XML parses (a web server's HTML page reads as an empty answer): every EC2
    # answer carries its request id
    metadata = answer.get("ResponseMetadata")
    if not isinstance(metadata, dict) or not metadata.get("RequestId"):
        raise AwsError(
            f"EC2 {operation}: the endpoint's answer is not an EC2 API response (it carries no request id)",
            ENDPOINT_REMEDY,
            ExitCode.SOURCE_UNREADABLE,
        )
    return answer


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def describe_volume(client: Any, volume_id: str) -> Volume:
    volumes = call(client, "DescribeVolumes", VolumeIds=[volume_id]).get("Volumes") or []
    if not volumes:
        raise AwsError(
            f"EC2 DescribeVolumes: volume {volume_id} not found",
            "Check the id and the region (--region).",
            ExitCode.USAGE,
            "InvalidVolume.NotFound",
        )
    return volume_from_api(volumes[0])


def describe_volumes(client: Any, volume_ids: list[str]) -> list[Volume]:
    if not volume_ids:
        return []
    return [volume_from_api(v) for v in call(client, "DescribeVolumes", VolumeIds=volume_ids).get("Volumes") or []]


def describe_modifications(client: Any, volume_ids: list[str]) -> list[Modification]:
    """The modification history AWS reports (real AWS: the latest per volume)."""
    if not volume_ids:
        return []
    try:
        answer = call(client, "DescribeVolumesModifications", VolumeIds=volume_ids)
    except AwsError as exc:
        # AWS answers this for a volume that was never modified
        if exc.aws_code == "InvalidVolumeModification.NotFound":
            return []
        raise
    return [modification_from_api(m) for m in answer.get("VolumesModifications") or []]


def modify_volume(client: Any, volume: Volume, target: Performance) -> Modification:
    params: dict[str, Any] = {"VolumeId": volume.volume_id}
    if target.volume_type != volume.volume_type:
        params["VolumeType"] = target.volume_type
    if target.iops is not None and target.iops != volume.performance.iops:
        params["Iops"] = target.iops
    if target.throughput_mibs is not None and target.throughput_mibs != volume.performance.throughput_mibs:
        params["Throughput"] = target.throughput_mibs
    answer = call(client, "ModifyVolume", **params)
    return modification_from_api(answer.get("VolumeModification") or {"VolumeId": volume.volume_id})


@dataclass
class InstanceBlockDevices:
    instance_id: str
    root_device_name: str
    # device name as EC2 knows it (/dev/xvda, /dev/sda1, /dev/sdf) -> volume id
    volumes: dict[str, str]


def instance_block_devices(client: Any, instance_id: str) -> InstanceBlockDevices:
    answer = call(client, "DescribeInstances", InstanceIds=[instance_id])
    for reservation in answer.get("Reservations") or []:
        for instance in reservation.get("Instances") or []:
            if instance.get("InstanceId") != instance_id:
                continue
            volumes = {
                str(m.get("DeviceName", "")): str((m.get("Ebs") or {}).get("VolumeId", ""))
                for m in instance.get("BlockDeviceMappings") or []
                if (m.get("Ebs") or {}).get("VolumeId")
            }
            return InstanceBlockDevices(instance_id, str(instance.get("RootDeviceName", "")), volumes)
    raise AwsError(
        f"EC2 DescribeInstances: instance {instance_id} not found",
        "Check the instance id and the region (--region).",
        ExitCode.USAGE,
        "InvalidInstanceID.NotFound",
    )
