#!/usr/bin/env python3
"""Replay a real ComfyUI capture (../shared/fixtures/comfyui, tests/fixtures/comfyui) as a container process.

  replay.py play CAPTURE [--listen [ADDR[,ADDR...]]] [--port N] [--speed F] [--freeze-after S]
                         [--exit-after S [--exit-code N]]  [ComfyUI's other arguments, ignored]
  replay.py hold [--listen ADDR] [--port N]

`play` writes each line of CAPTURE.timed.log to stdout at its recorded offset and ends the way the
capture ended: with the recorded exit code, or, for a run that was stopped with a signal, serving
until SIGTERM and exiting 143 without a word (as ComfyUI does). At the recorded GUI line it does
what ComfyUI does: binds each address, then prints `To see the GUI go to:` for it, one line per
address (a bare `--listen` is ComfyUI's `0.0.0.0,::`: both families, `[::]` IPv6-only beside
0.0.0.0). Without `--listen` the addresses are the ones the capture's GUI lines name; `--port`
replaces the recorded port (and the address in the Errno 98 line). It serves the HTTP answers the
capture recorded (CAPTURE.http.json, written by tests/support/comfyui_capture.py), the shared
bodies for the older captures. `--freeze-after S` stops writing at offset S and hangs (a stalled
start). `--exit-after S` ends the run S seconds after its last line with `--exit-code` (a server
that stopped by itself). `hold` serves the bodies at once and forever: the first instance that
keeps the port in the port-in-use capture.

It honours the interface of the real test image (tests/comfyui-image/entrypoint.py, whose own code
it runs, and roles/comfyui/README.md, "What an image must provide"): started as root with
WANTED_UID/WANTED_GID it becomes that user, COMFY_CMDLINE_EXTRA is appended to its arguments
(`--listen`/`--port` there win, as in ComfyUI), BASE_DIRECTORY must be absolute; and where the
real server fails on that base directory it replays the capture of that failure instead: a
`user/` there it cannot write (failure-user-dir-not-writable), no `user/` in a base directory it
cannot write (failure-base-dir-not-writable).

Nothing here talks to anything but its own port. Standard library only (python3 of the image).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Optional

FIXTURES = Path(os.environ.get("REPLAY_FIXTURES", "/replay/fixtures"))
GUI_PREFIX = "To see the GUI go to: "
GUI_RE = re.compile(r"To see the GUI go to: (?P<scheme>https?)://(?P<host>\[[^\]]*\]|[^:/\s]+):(?P<port>\d+)")
RECORDED_ADDRESS = re.compile(r"http://(127\.0\.0\.1|0\.0\.0\.0):8188")
RECORDED_BIND = re.compile(r"\('127\.0\.0\.1', 8188\)")
# ComfyUI's bare --listen (comfy/cli_args.py: const="0.0.0.0,::")
LISTEN_ALL = "0.0.0.0,::"
FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
INDEX = b"<!doctype html><title>ComfyUI</title><div id=vue-app></div>\n"
CORRUPT_PROMPT_ID = "629168f2-564d-4ccd-a5cb-59ca65c79b2a"
# the captures of what the real image does on a base directory its user cannot use
USER_DIR_NOT_WRITABLE = "failure-user-dir-not-writable"
BASE_DIR_NOT_WRITABLE = "failure-base-dir-not-writable"
ENTRYPOINT_PREFIX = "comfyui-entrypoint: "


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def recorded_log(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def recorded_answers(capture: Optional[str]) -> dict[str, dict[str, Any]]:
    """"METHOD /path" -> {status, content_type, body} as CAPTURE.http.json recorded them (bodies
    it kept whole only: /object_info is too big and comes from object_info.json)."""
    if not capture or not (FIXTURES / f"{capture}.http.json").is_file():
        return {}
    answers = json.loads((FIXTURES / f"{capture}.http.json").read_text()).get("answers") or {}
    return {route: answer for route, answer in answers.items() if isinstance(answer.get("body"), str)}


class Handler(BaseHTTPRequestHandler):
    server_version = "Python/3.11 aiohttp/3.14.5"
    sys_version = ""
    # set by serve(): the answers of the capture being replayed
    answers: ClassVar[dict[str, dict[str, Any]]] = {}

    def version_string(self) -> str:
        return self.server_version  # aiohttp's Server header has no trailing word

    def log_message(self, format: str, *args: object) -> None:  # ComfyUI logs no request lines
        return

    def _send(self, status: int, payload: bytes, content_type: str = "application/json; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _recorded(self, path: str) -> bool:
        answer = self.answers.get(f"GET {path}")
        if answer is None:
            return False
        self._send(int(answer["status"]), answer["body"].encode(), str(answer.get("content_type") or "text/plain"))
        return True

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        routes = {
            "/system_stats": "system_stats.json",
            "/queue": "queue.json",
            "/prompt": "prompt-get.json",
            "/object_info": "object_info.json",
        }
        if path != "/object_info" and self._recorded(path):
            return
        if path in routes:
            self._send(200, body(routes[path]))
        elif path.startswith("/object_info/"):
            info = json.loads(body("object_info.json"))
            name = path.split("/", 2)[2]
            self._send(200, json.dumps({name: info[name]} if name in info else {}).encode())
        elif path == "/history":
            self._send(200, b"{}")
        elif path == f"/history/{CORRUPT_PROMPT_ID}":
            self._send(200, body("history-corrupt-model.json"))
        elif path.startswith("/history/"):
            self._send(200, b"{}")
        elif path == "/features":
            self._send(200, json.dumps(FEATURES).encode())
        elif path == "/settings":
            self._send(200, b"{}")
        elif path == "/":
            self._send(200, INDEX, "text/html")
        else:  # ComfyUI's static route answers an unknown path with an empty 404
            self._send(404, b"", "application/octet-stream")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length > 0 else b""
        if self.path.split("?", 1)[0] != "/prompt":
            self._send(405, b"405: Method Not Allowed", "text/plain; charset=utf-8")
            return
        try:
            request = json.loads(data or b"{}")
        except ValueError:
            self._send(400, b'{"error": {"type": "invalid_prompt", "message": "invalid JSON"}, "node_errors": {}}')
            return
        names = {
            str((node.get("inputs") or {}).get("ckpt_name"))
            for node in (request.get("prompt") or {}).values()
            if isinstance(node, dict)
        }
        if "v1-5-pruned-emaonly.safetensors" in names:
            for line in recorded_log("prompt-missing-model.log"):
                out(line)
            self._send(400, body("prompt-missing-model.json"))
        elif "corrupt-model.safetensors" in names:
            self._send(200, body("prompt-corrupt-model.json"))
            for line in recorded_log("prompt-corrupt-model.log"):
                out(line)
        else:
            self._send(501, b'{"error": {"type": "replay", "message": "no recorded answer for this prompt"}}')


class Server(ThreadingHTTPServer):
    daemon_threads = True


class Server6(Server):
    """IPv6 only, as asyncio binds `::` (IPV6_V6ONLY): 0.0.0.0 and :: side by side on one port."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


def serve(listen: str, port: int, capture: Optional[str] = None) -> ThreadingHTTPServer:
    """Bind `listen` (an IPv4 or IPv6 address, bracketed or not) and serve from a thread. An
    OSError goes to the caller: ComfyUI dies on it the same way (Errno 98, 99)."""
    host = listen[1:-1] if listen.startswith("[") and listen.endswith("]") else listen
    Handler.answers = recorded_answers(capture)
    server = (Server6 if ":" in host else Server)((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def parse_timed(name: str) -> tuple[list[tuple[float, str]], float | None, int | None]:
    lines: list[tuple[float, str]] = []
    exit_at: float | None = None
    returncode: int | None = None
    for raw in (FIXTURES / f"{name}.timed.log").read_text().splitlines():
        stamp, _, text = raw.partition("\t")
        marker = re.match(r"^<<child exited rc=(-?\d+)>>$", text)
        if marker:
            exit_at, returncode = float(stamp[1:]), int(marker.group(1))
        else:
            lines.append((float(stamp[1:]), text))
    return lines, exit_at, returncode


def rewrite(text: str, listen: str | None, port: int | None) -> str:
    """A line other than a GUI line with the address and port ComfyUI started with these flags
    would print."""
    if listen is None and port is None:
        return text

    def address(match: re.Match[str]) -> str:
        host = listen.split(",")[0] if listen is not None else match.group(1)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port if port is not None else 8188}"

    text = RECORDED_ADDRESS.sub(address, text)
    return RECORDED_BIND.sub(f"('{(listen or '127.0.0.1').split(',')[0]}', {port or 8188})", text)


def gui_lines(recorded: list[str], listen: str | None, port: int | None) -> list[tuple[str, str]]:
    """(address to bind, line to print) for each address: those of --listen in its order, or
    else those the recorded GUI lines name; the port is --port's or the recorded one."""
    first = GUI_RE.search(recorded[0])
    assert first is not None
    scheme = first.group("scheme")
    if listen is not None:
        hosts = [host.strip() for host in listen.split(",") if host.strip()]
        ports = [port or int(first.group("port"))] * len(hosts)
    else:
        matches = [m for m in (GUI_RE.search(line) for line in recorded) if m is not None]
        hosts = [m.group("host").strip("[]") for m in matches]
        ports = [port or int(m.group("port")) for m in matches]
    result = []
    for host, number in zip(hosts, ports):
        shown = f"[{host}]" if ":" in host else host
        result.append((host, f"{GUI_PREFIX}{scheme}://{shown}:{number}"))
    return result


def play(args: argparse.Namespace) -> int:
    lines, exit_at, returncode = parse_timed(args.capture)
    recorded_gui = [text for _, text in lines if GUI_RE.search(text)]
    start = time.monotonic()
    speed = args.speed
    servers: list[ThreadingHTTPServer] = []
    gui_done = False
    for at, text in lines:
        if args.freeze_after is not None and at > args.freeze_after:
            while True:
                time.sleep(3600)
        delay = start + at / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if GUI_RE.search(text):
            if gui_done:
                continue  # printed with the first one, one line per address
            gui_done = True
            for host, line in gui_lines(recorded_gui, args.listen, args.port):
                port = int(line.rsplit(":", 1)[1])
                try:
                    servers.append(serve(host, port, args.capture))
                except OSError as exc:  # as asyncio words it; ComfyUI dies on it (exit 1)
                    bind = f"('{host}', {port})" if ":" not in host else f"('{host}', {port}, 0, 0)"
                    out(f"OSError: [Errno {exc.errno}] error while attempting to bind on address {bind}: "
                        f"{(exc.strerror or '').lower()}")
                    return 1
                out(line)
            continue
        out(rewrite(text, args.listen, args.port))
    if args.exit_after is not None:  # a run that served, then ended by itself
        time.sleep(args.exit_after)
        return int(args.exit_code)
    if returncode is not None and returncode >= 0:
        delay = start + (exit_at or 0.0) / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return returncode
    while True:  # the capture ended with a signal: serve until stopped
        time.sleep(3600)


def hold(args: argparse.Namespace) -> int:
    serve((args.listen or "127.0.0.1").split(",")[0], args.port or 8188)
    while True:
        time.sleep(3600)


# --- the image interface ---------------------------------------------------------------------------


def take_identity() -> None:
    """WANTED_UID/WANTED_GID and a writable HOME, by the real image's own entrypoint code."""
    try:
        import comfyui_entrypoint as entrypoint  # the image's copy of tests/comfyui-image/entrypoint.py
    except ImportError:  # run from a checkout
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "comfyui-image"))
        import entrypoint  # type: ignore[no-redef,import-not-found]

    identity = entrypoint.wanted_identity()
    if identity is not None:
        entrypoint.become(*identity)
    entrypoint.writable_home()


def base_directory() -> str:
    base = os.environ.get("BASE_DIRECTORY", "") or "/basedir"
    if not os.path.isabs(base) or "\n" in base:
        raise ValueError(f"BASE_DIRECTORY must be an absolute path, not {base!r}")
    return base


def failure_of(base: str) -> Optional[str]:
    """The capture of what the real server does on this base directory, when it fails there."""
    user = os.path.join(base, "user")
    if os.path.isdir(user):
        return None if os.access(user, os.W_OK | os.X_OK) else USER_DIR_NOT_WRITABLE
    if os.path.isdir(base) and not os.access(base, os.W_OK | os.X_OK):
        return BASE_DIR_NOT_WRITABLE
    return None


def arguments() -> list[str]:
    """The command's arguments, then COMFY_CMDLINE_EXTRA's words (ComfyUI's later ones win)."""
    extra = os.environ.get("COMFY_CMDLINE_EXTRA", "")
    try:
        words = shlex.split(extra)
    except ValueError as exc:
        raise ValueError(f"COMFY_CMDLINE_EXTRA cannot be split into arguments ({exc}): {extra!r}") from None
    return [*sys.argv[1:], *words]


def main() -> int:
    # as PID 1 a process ignores SIGTERM unless it handles it; ComfyUI dies silently on it (143)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    parser = argparse.ArgumentParser(prog="replay.py", allow_abbrev=False)
    sub = parser.add_subparsers(dest="mode", required=True)
    play_parser = sub.add_parser("play", allow_abbrev=False)
    play_parser.add_argument("capture", help="a capture name, e.g. startup-cpu (its .timed.log)")
    play_parser.add_argument("--speed", type=float, default=1.0)
    play_parser.add_argument("--freeze-after", type=float, default=None)
    play_parser.add_argument("--exit-after", type=float, default=None,
                             help="after the last line, serve this many seconds more, then exit with --exit-code")
    play_parser.add_argument("--exit-code", type=int, default=0)
    hold_parser = sub.add_parser("hold", allow_abbrev=False)
    for sub_parser in (play_parser, hold_parser):
        sub_parser.add_argument("--listen", default=None, nargs="?", const=LISTEN_ALL)
        sub_parser.add_argument("--port", type=int, default=None)
    try:
        argv = arguments()
        base = base_directory()
        take_identity()
    except Exception as exc:  # the entrypoint's ConfigError, OSError, ValueError: refused like the image
        sys.stderr.write(f"{ENTRYPOINT_PREFIX}{exc}\n")
        return 2
    args, _comfyui_arguments = parser.parse_known_args(argv)
    if args.mode == "play":
        failure = failure_of(base)
        if failure is not None and (FIXTURES / f"{failure}.timed.log").is_file():
            args.capture = failure
        if not (FIXTURES / f"{args.capture}.timed.log").is_file():
            names = sorted(p.name[: -len(".timed.log")] for p in FIXTURES.glob("*.timed.log"))
            parser.error(f"no capture {args.capture!r}; have: {', '.join(names)}")
        return play(args)
    return hold(args)


if __name__ == "__main__":
    sys.exit(main())
