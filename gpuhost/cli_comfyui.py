"""`gpuhost wait-ready` and `gpuhost layers`, and what `check --workflow` needs: parse, call, render."""

from __future__ import annotations

from typing import Any, Optional

import typer

from gpuhost.clihelp import ReferenceCommand
from gpuhost.model import ExitCode, SourceError, UsageError


def register(app: typer.Typer) -> None:
    app.command("wait-ready", epilog=WAIT_READY_EXIT_CODES, cls=ReferenceCommand)(wait_ready)
    app.command("layers", epilog=LAYERS_EXIT_CODES, cls=ReferenceCommand)(layers)


def ready_comfyui_url(report: Any) -> str:
    from gpuhost.readiness import Phase

    for container in report.facts.comfyui.containers:
        if container.verdict.phase is Phase.READY and container.verdict.probe_url:
            return str(container.verdict.probe_url)
    raise SourceError(
        "ComfyUI",
        "no ready ComfyUI container found on this host to validate the workflow against",
        "Start one (roles/comfyui, `gpuhost wait-ready NAME`) or pass --comfyui-url http://127.0.0.1:8188.",
    )


def _docker_host_option() -> Any:
    return typer.Option(
        None,
        "--docker-host",
        metavar="HOST",
        help="(string) Docker daemon address. Default: $DOCKER_HOST or unix:///var/run/docker.sock. "
        "Example: --docker-host unix:///run/docker.sock",
    )


def _seconds(text: str, option: str) -> float:
    from gpuhost.ebs.plan import parse_duration

    try:
        return parse_duration(text)
    except UsageError as exc:
        raise UsageError(f"{option}: {exc}", f"Example: {option} 5m (or 300s, 1h, 90)") from exc


WAIT_READY_EXIT_CODES = (
    "Exit codes: 0 ComfyUI is ready (the GUI line in this container's log and HTTP 200 from its /system_stats); "
    "1 it failed, stalled or was not ready before --timeout; 2 bad usage or input (no such container, bad "
    "duration); 3 Docker could not be read (not running, permission denied)."
)


def wait_ready(
    container: str = typer.Argument(..., metavar="CONTAINER", help="The ComfyUI container's name or id."),
    timeout: str = typer.Option(
        "10m",
        "--timeout",
        metavar="DURATION",
        help="(string) Give up (exit 1) when ComfyUI is not ready after this long. Example: --timeout 15m",
    ),
    stall_timeout: str = typer.Option(
        "3m",
        "--stall-timeout",
        metavar="DURATION",
        help="(string) Before the GUI line: stalled (exit 1) when no new log line comes for this long; the last "
        "line seen is reported. Example: --stall-timeout 90s",
    ),
    url: Optional[str] = typer.Option(
        None,
        "--url",
        metavar="URL",
        help="(string) Probe this URL instead of /system_stats through the container's published port (or "
        "its --listen/--port on the host network). Example: --url http://127.0.0.1:8188/system_stats",
    ),
    docker_host: Optional[str] = _docker_host_option(),
    as_json: bool = typer.Option(
        False, "--json", help="(boolean) Print the result as JSON (schema gpuhost.wait-ready/v1). Example: --json"
    ),
) -> None:
    """Wait until ComfyUI in CONTAINER really serves, or say why it will not.

    Follows the container's log through the Docker Engine API and its state (running, exit code,
    restart count), and probes GET /system_stats through the container's own published port. Ready
    needs both the line `To see the GUI go to: http://...` in THIS container's log and HTTP 200 after
    it: a 200 before it comes from another process holding the port.

    Failed: a missing Python module before `ComfyUI version:` (the process is about to exit), an
    unhandled exception from main.py, `OSError: [Errno 98]` (port in use), the container exiting or
    restarting. Stalled: no new log line for --stall-timeout before the GUI line. Tracebacks and
    IMPORT FAILED lines of comfy_extras or custom nodes are warnings that name the node: ComfyUI
    still serves without them.

    A live status line shows on a terminal while waiting. On failure the reason, the failing line,
    what to do and the last 30 log lines are printed.

    Examples:
    To wait for the container the comfyui role started:
      gpuhost wait-ready comfyui

    To allow a slow first start (image init, pip installs) and print JSON:
      gpuhost wait-ready comfyui --timeout 30m --stall-timeout 10m --json

    Output:
    With --json, one object (schema gpuhost.wait-ready/v1):
      verdict         ready | failed | stalled
      reason          ready, missing-module, port-in-use, crashed, exited, stopped, restarted,
                      listen-loopback, not-published, stalled, timeout
      message, remedy, failing_line, last_line, url, gui_url, last_probe, comfyui_version
      warnings        nodes that failed to import: kind (custom-node | comfy-extras), node, path, reason
      tail            the last 30 log lines
      elapsed_s, exit_code
    """
    from gpuhost.cli import emit_json, fail
    from gpuhost.comfyui.wait import WaitOptions
    from gpuhost.comfyui.wait import wait_ready as run_wait
    from gpuhost.engine import EngineClient, EnginePermissionDenied, EngineUnavailable

    try:
        options = WaitOptions(
            timeout=_seconds(timeout, "--timeout"), stall_timeout=_seconds(stall_timeout, "--stall-timeout"), url=url
        )
        client = EngineClient(docker_host, timeout=10.0)
    except (UsageError, ValueError) as exc:
        fail(ExitCode.USAGE, str(exc), getattr(exc, "remedy", ""), as_json)
    try:
        if as_json:
            result = run_wait(client, container, options)
        else:
            from gpuhost.comfyui.render import WaitProgress

            with WaitProgress(container) as progress:
                result = run_wait(client, container, options, on_progress=progress.update)
    except UsageError as exc:
        fail(ExitCode.USAGE, str(exc), exc.remedy, as_json)
    except SourceError as exc:
        fail(ExitCode.SOURCE_UNREADABLE, str(exc), exc.remedy, as_json)
    except (EngineUnavailable, EnginePermissionDenied) as exc:
        fail(ExitCode.SOURCE_UNREADABLE, str(exc), "Start Docker, or run as root / a member of the docker group.",
             as_json)
    if as_json:
        emit_json(result.to_dict())
    else:
        from gpuhost.comfyui.render import print_wait

        print_wait(result)
    raise typer.Exit(result.exit_code)


LAYERS_EXIT_CODES = (
    "Exit codes: 0 no model layer is empty or too small; 1 at least one is (a failed download); "
    "2 bad usage or input (no such image, unreadable manifest); 3 Docker could not be read."
)


def layers(
    image: str = typer.Argument(..., metavar="IMAGE", help="An image on this Docker host (name:tag, name@digest, id)."),
    manifest: Optional[str] = typer.Option(
        None,
        "--manifest",
        metavar="PATH",
        help="(path) Expected model sizes: a models.manifest.yaml/.json, or the build context directory that "
        "holds one (the format is in the README). Example: --manifest docker/comfyui/",
    ),
    min_model_bytes: Optional[str] = typer.Option(
        None,
        "--min-model-bytes",
        metavar="SIZE",
        help="(string) A model layer smaller than this is a failed download. Default: the manifest's "
        "min_model_bytes, else 1MiB. Example: --min-model-bytes 100MB",
    ),
    write_mibs: Optional[float] = typer.Option(
        None,
        "--write-mibs",
        metavar="MiB/s",
        help="(number) The data-root device's sustained write throughput for the unpack prediction. Default: "
        "gpuhost.unpack's figure for the device class under Docker's data-root. Example: --write-mibs 1000",
    ),
    docker_host: Optional[str] = _docker_host_option(),
    as_json: bool = typer.Option(
        False, "--json", help="(boolean) Print the report as JSON (schema gpuhost.layers/v1). Example: --json"
    ),
) -> None:
    """Show an image's layers and flag the model downloads that produced nothing or too little.

    A layer whose command downloads or copies a model (wget, curl, aria2c, hf download,
    huggingface-cli download, hf_hub_download, COPY/ADD into a models path or of a model file) is
    flagged when it is 0 B, smaller than --min-model-bytes, or smaller than the manifest expects:
    `RUN curl ... || true` that fetched nothing, or an error page saved under a model's name, is
    cached by the build like a success. Sizes and commands come from the Docker Engine API
    (/images/{name}/history). The total feeds the unpack-time prediction for the device under
    Docker's data-root.

    Examples:
    To check an image built here:
      gpuhost layers comfyui-sd15:2025-10

    To hold it to the sizes in the manifest beside its Dockerfile:
      gpuhost layers comfyui-sd15:2025-10 --manifest docker/comfyui-sd15/

    Output:
    With --json, one object (schema gpuhost.layers/v1):
      layers          index (1 = base), id, instruction, command, size, model_step, model_why,
                      expected_bytes, manifest_keys, severity, problem
      flagged         indexes of the failing layers
      total_bytes, model_bytes, min_model_bytes, manifest, unmatched_manifest_entries
      unpack          data_root, device, device_class, write_mib_s, write_source, predicted_s, predicted
      findings, exit_code
    """
    from gpuhost.cli import emit_json, fail
    from gpuhost.engine import EngineClient, EngineError, EnginePermissionDenied, EngineUnavailable
    from gpuhost.layers import image_layers, load_manifest, parse_bytes

    try:
        threshold = parse_bytes(min_model_bytes, "--min-model-bytes") if min_model_bytes is not None else None
        loaded = load_manifest(manifest) if manifest else None
        report = image_layers(EngineClient(docker_host, timeout=30.0), image, threshold, loaded, write_mibs)
    except (UsageError, ValueError) as exc:
        fail(ExitCode.USAGE, str(exc), getattr(exc, "remedy", ""), as_json)
    except (EngineUnavailable, EnginePermissionDenied, EngineError) as exc:
        fail(ExitCode.SOURCE_UNREADABLE, str(exc), "Start Docker, or run as root / a member of the docker group.",
             as_json)
    if as_json:
        emit_json(report.to_dict())
    else:
        from gpuhost.comfyui.render import print_layers

        print_layers(report)
    raise typer.Exit(int(report.exit_code))
