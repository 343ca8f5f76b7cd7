#!/usr/bin/python3
"""Start ComfyUI the way the comfyui role expects of an image (roles/comfyui/README.md, "What an
image must provide"), then stay PID 1 for it:

- started as root with WANTED_UID/WANTED_GID: become that user and group, keeping the
  supplementary groups the container was given (--group-add: the GPU device's group); started
  with --user (or without WANTED_*): stay who we are
- ComfyUI's data under BASE_DIRECTORY (/basedir) with --base-directory, its database in the
  user directory there (the install under /opt/ComfyUI is read-only to that user)
- the arguments: the container's command (the image's CMD: --listen 0.0.0.0 --port 8188), then
  COMFY_CMDLINE_EXTRA split as a shell splits words (later ones win, as in ComfyUI's argparse)

As PID 1 it forwards SIGTERM/SIGINT/SIGHUP to ComfyUI (which PID 1 would otherwise ignore),
reaps orphans, and exits with ComfyUI's status (128 + N when signal N ended it). It prints
nothing of its own but errors in its configuration (prefix "comfyui-entrypoint:", exit 2).
Python standard library only (the image's python3 runs it, not the venv).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys

COMFYUI_DIR = "/opt/ComfyUI"
VENV_PYTHON = "/opt/comfyui-venv/bin/python"
MAX_ID = 2**31 - 2  # the kernel's largest valid id; 2**32 - 1 means "no id"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class ConfigError(Exception):
    pass


def env_id(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit() or int(value) > MAX_ID:
        raise ConfigError(f"{name} must be a number from 0 to {MAX_ID}, not {value!r}")
    return int(value)


def wanted_identity() -> tuple[int, int] | None:
    uid, gid = env_id("WANTED_UID"), env_id("WANTED_GID")
    if (uid is None) != (gid is None):
        raise ConfigError("set both WANTED_UID and WANTED_GID, or neither")
    return None if uid is None or gid is None else (uid, gid)


def ensure_account(uid: int, gid: int, home: str) -> None:
    """A passwd and a group entry for the ids (getpass, ~ and some libraries look them up)."""
    with open("/etc/group", encoding="utf-8") as fh:
        groups = [line.split(":") for line in fh.read().splitlines() if line.count(":") >= 3]
    if not any(fields[2] == str(gid) for fields in groups):
        names = {fields[0] for fields in groups}
        name = "comfyui" if "comfyui" not in names else f"comfyui{gid}"
        with open("/etc/group", "a", encoding="utf-8") as fh:
            fh.write(f"{name}:x:{gid}:\n")
    with open("/etc/passwd", encoding="utf-8") as fh:
        users = [line.split(":") for line in fh.read().splitlines() if line.count(":") >= 6]
    if not any(fields[2] == str(uid) for fields in users):
        names = {fields[0] for fields in users}
        name = "comfyui" if "comfyui" not in names else f"comfyui{uid}"
        with open("/etc/passwd", "a", encoding="utf-8") as fh:
            fh.write(f"{name}:x:{uid}:{gid}:ComfyUI:{home}:/usr/sbin/nologin\n")


def become(uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        if (os.getuid(), os.getgid()) != (uid, gid):
            raise ConfigError(
                f"WANTED_UID/WANTED_GID ask for {uid}:{gid}, but the container runs as {os.getuid()}:{os.getgid()} "
                "without root: start it as root (no --user) or drop WANTED_UID/WANTED_GID"
            )
        return
    home = f"/home/comfyui-{uid}"
    ensure_account(uid, gid, home)
    os.makedirs(home, mode=0o755, exist_ok=True)
    os.chown(home, uid, gid)
    os.environ["HOME"] = home
    # the groups Docker gave the container (--group-add), not root's own
    supplementary = sorted({g for g in os.getgroups() if g != 0} | ({gid} if gid == 0 else set()))
    os.setgroups(supplementary)
    os.setgid(gid)
    os.setuid(uid)


def writable_home() -> None:
    home = os.environ.get("HOME", "")
    if home and os.path.isdir(home) and os.access(home, os.W_OK):
        return
    fallback = f"/tmp/home-{os.getuid()}"
    os.makedirs(fallback, mode=0o700, exist_ok=True)
    os.environ["HOME"] = fallback


def comfyui_argv(command: list[str]) -> list[str]:
    base = os.environ.get("BASE_DIRECTORY", "") or "/basedir"
    if not os.path.isabs(base) or "\n" in base:
        raise ConfigError(f"BASE_DIRECTORY must be an absolute path, not {base!r}")
    extra_env = os.environ.get("COMFY_CMDLINE_EXTRA", "")
    try:
        extra = shlex.split(extra_env)
    except ValueError as exc:
        raise ConfigError(f"COMFY_CMDLINE_EXTRA cannot be split into arguments ({exc}): {extra_env!r}") from None
    database = "sqlite:///" + os.path.join(base, "user", "comfyui.db")
    return [VENV_PYTHON, "main.py", "--base-directory", base, "--database-url", database, *command, *extra]


def supervise(argv: list[str]) -> int:
    child = os.fork()
    if child == 0:
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        os.chdir(COMFYUI_DIR)
        os.execv(argv[0], argv)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child:
            if os.WIFSIGNALED(status):
                return 128 + os.WTERMSIG(status)
            return os.waitstatus_to_exitcode(status)


def main() -> int:
    try:
        identity = wanted_identity()
        if identity is not None:
            become(*identity)
        writable_home()
        argv = comfyui_argv(sys.argv[1:])
    except (ConfigError, OSError) as exc:
        sys.stderr.write(f"comfyui-entrypoint: {exc}\n")
        return 2
    sys.stdout.flush()
    return supervise(argv)


if __name__ == "__main__":
    sys.exit(main())
