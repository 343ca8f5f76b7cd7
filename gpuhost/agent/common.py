"""What every agent command shares: strict JSON on stdout and the arguments defined once."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from gpuhost.facts.docker import DAEMON_JSON
from gpuhost.redact import redact_all

Handler = Callable[[argparse.Namespace], int]
Handlers = dict[str, Handler]


def print_json(payload: Any) -> None:
    """Strict JSON on stdout; no URL in it carries its credentials (gpuhost.redact)."""
    sys.stdout.write(json.dumps(redact_all(payload), indent=2, allow_nan=False) + "\n")


def add_docker_host(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docker-host", default=None, help="Docker daemon address (default: $DOCKER_HOST)")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="accepted for symmetry: output is always JSON")


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="/", help="read /proc, /sys and /etc under this directory")
    parser.add_argument("--dev-root", default="/dev")
    add_docker_host(parser)
    parser.add_argument("--daemon-json", default=DAEMON_JSON)
