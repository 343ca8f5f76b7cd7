#!/usr/bin/env python3
"""Replay a real ComfyUI capture (../shared/fixtures/comfyui) as a container process.

  replay.py play CAPTURE [--listen ADDR] [--port N] [--speed F] [--freeze-after S]
                         [--exit-after S [--exit-code N]]
  replay.py hold [--listen ADDR] [--port N]

`play` writes each line of CAPTURE.timed.log to stdout at its recorded offset, binds the port and
serves the recorded HTTP bodies from the moment the recorded GUI line is written (ComfyUI binds,
then prints it), and ends the way the capture ended: with the recorded exit code, or, for a run
that was stopped with SIGTERM, serving until SIGTERM and exiting 143 without a word (as ComfyUI
does). `--listen`/`--port` replace the recorded address in the GUI and Errno 98 lines, as ComfyUI
started with those flags would print them. `--freeze-after S` stops writing at offset S and
hangs (a stalled start). `--exit-after S` ends the run S seconds after its last line with
`--exit-code` (a server that stopped by itself). `hold` serves the bodies at once and forever: the first instance that
keeps the port in the port-in-use capture.

Nothing here talks to anything but its own port. Standard library only (python3 of the image).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(os.environ.get("REPLAY_FIXTURES", "/replay/fixtures"))
GUI_PREFIX = "To see the GUI go to: "
RECORDED_ADDRESS = re.compile(r"http://(127\.0\.0\.1|0\.0\.0\.0):8188")
RECORDED_BIND = re.compile(r"\('127\.0\.0\.1', 8188\)")
FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
INDEX = b"<!doctype html><title>ComfyUI</title><div id=vue-app></div>\n"
CORRUPT_PROMPT_ID = "629168f2-564d-4ccd-a5cb-59ca65c79b2a"


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def recorded_log(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


class Handler(BaseHTTPRequestHandler):
    server_version = "Python/3.11 aiohttp/3.14.5"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # ComfyUI logs no request lines
        return

    def _send(self, status: int, payload: bytes, content_type: str = "application/json; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

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
        elif path == "/":
            self._send(200, INDEX, "text/html")
        else:
            self._send(404, b"404: Not Found", "text/plain; charset=utf-8")

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/prompt":
            self._send(405, b"405: Method Not Allowed", "text/plain; charset=utf-8")
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
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


def serve(listen: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((listen, port), Handler)
    server.daemon_threads = True
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
    if listen is None and port is None:
        return text

    def gui(match: re.Match[str]) -> str:
        host = listen if listen is not None else match.group(1)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port if port is not None else 8188}"

    text = RECORDED_ADDRESS.sub(gui, text)
    return RECORDED_BIND.sub(f"('{listen or '127.0.0.1'}', {port or 8188})", text)


def play(args: argparse.Namespace) -> int:
    lines, exit_at, returncode = parse_timed(args.capture)
    recorded_listen = "127.0.0.1"
    for _, text in lines:
        if text.startswith(GUI_PREFIX):
            recorded_listen = text[len(GUI_PREFIX):].split("//", 1)[1].rsplit(":", 1)[0]
    listen = args.listen if args.listen is not None else recorded_listen
    port = args.port if args.port is not None else 8188
    start = time.monotonic()
    speed = args.speed
    for at, text in lines:
        if args.freeze_after is not None and at > args.freeze_after:
            while True:
                time.sleep(3600)
        delay = start + at / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if text.startswith(GUI_PREFIX):
            serve(listen, port)
        out(rewrite(text, args.listen, args.port))
    if args.exit_after is not None:  # a run that served, then ended by itself
        time.sleep(args.exit_after)
        return int(args.exit_code)
    if returncode is not None and returncode >= 0:
        delay = start + (exit_at or 0.0) / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return returncode
    while True:  # the capture ended with SIGTERM: serve until stopped
        time.sleep(3600)


def hold(args: argparse.Namespace) -> int:
    serve(args.listen or "127.0.0.1", args.port or 8188)
    while True:
        time.sleep(3600)


def main() -> int:
    # as PID 1 a process ignores SIGTERM unless it handles it; ComfyUI dies silently on it (143)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    parser = argparse.ArgumentParser(prog="replay.py")
    sub = parser.add_subparsers(dest="mode", required=True)
    play_parser = sub.add_parser("play")
    play_parser.add_argument("capture", help="a capture name, e.g. startup-cpu (its .timed.log)")
    play_parser.add_argument("--speed", type=float, default=1.0)
    play_parser.add_argument("--freeze-after", type=float, default=None)
    play_parser.add_argument("--exit-after", type=float, default=None,
                             help="after the last line, serve this many seconds more, then exit with --exit-code")
    play_parser.add_argument("--exit-code", type=int, default=0)
    hold_parser = sub.add_parser("hold")
    for sub_parser in (play_parser, hold_parser):
        sub_parser.add_argument("--listen", default=None)
        sub_parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    if args.mode == "play":
        if not (FIXTURES / f"{args.capture}.timed.log").is_file():
            names = sorted(p.name[: -len(".timed.log")] for p in FIXTURES.glob("*.timed.log"))
            parser.error(f"no capture {args.capture!r}; have: {', '.join(names)}")
        return play(args)
    return hold(args)


if __name__ == "__main__":
    sys.exit(main())
