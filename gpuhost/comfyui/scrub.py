"""A container's own secrets kept out of what gpuhost reports about its log.

Readiness quotes the log: the failing line, the last line, the last 30 lines, in messages. A log can
repeat what the container was given: ComfyUI refuses a flag it does not know by printing it
(`main.py: error: unrecognized arguments: --api-key sk-...`), entrypoints echo their command line or
their environment. The readiness machine reads the raw lines; its verdict is scrubbed before anyone
sees it: every value the container holds that may be a secret is replaced by `***`.

Which values may be secrets, from the Engine API's inspect body:
- the value of every variable whose name says secret (TOKEN, SECRET, PASS, KEY, AUTH, CRED, ...);
- every other variable's value, but for the names in HARMLESS_ENV (and its prefixes) and values that
  are addresses, numbers or absolute paths, which readiness messages need to stay readable;
- the value of every flag of the command (Entrypoint and Cmd) and of every variable's value read as a
  command line (COMFY_CMDLINE_EXTRA and the like), but for ComfyUI's flags in PUBLIC_FLAGS (addresses,
  ports, directories).
Values shorter than MIN_SECRET characters (MIN_NAMED_SECRET for a variable named as a secret) are left
alone: `1`, `all` and `true` are not secrets, and masking them would mask words of every line.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from gpuhost.comfyui.readiness import NodeWarning, Verdict

MASK = "***"
MIN_SECRET = 6
MIN_NAMED_SECRET = 4  # a variable named *TOKEN*, *PASSWORD*, ...
HARMLESS_ENV = frozenset({
    "PATH", "HOME", "HOSTNAME", "LANG", "LANGUAGE", "TZ", "TERM", "SHELL", "USER", "PWD", "SHLVL",
    "DEBIAN_FRONTEND", "LD_LIBRARY_PATH", "LIBRARY_PATH", "VIRTUAL_ENV", "HF_HOME", "WANTED_UID", "WANTED_GID",
})
HARMLESS_ENV_PREFIXES = ("LC_", "PYTHON", "NVIDIA_", "CUDA_", "NV_", "CUDNN_", "NCCL_")
# ComfyUI 0.3.64's flags (comfy/cli_args.py) whose values are addresses, ports, paths or settings
PUBLIC_FLAGS = frozenset({
    "--listen", "--port", "--base-directory", "--extra-model-paths-config", "--output-directory",
    "--temp-directory", "--input-directory", "--user-directory", "--cuda-device", "--default-device",
    "--preview-method", "--preview-size", "--reserve-vram", "--cache-lru", "--max-upload-size",
    "--oneapi-device-selector", "--default-hashing-function", "--verbose", "--front-end-version",
    "--front-end-root", "--tls-keyfile", "--tls-certfile", "--whitelist-custom-nodes", "--fast",
})


SECRET_NAME_RE = re.compile(r"TOKEN|SECRET|PASS|PWD|KEY|AUTH|CRED|COOKIE|SESSION|PRIVATE|SIGNATURE|API", re.I)
PLAIN_VALUE_RE = re.compile(r"[0-9.:,\[\]]+|/[A-Za-z0-9._/-]*", re.ASCII)


def _maybe_secret(name: str, value: str) -> bool:
    harmless = name in HARMLESS_ENV or name.startswith(HARMLESS_ENV_PREFIXES)
    return not harmless and not PLAIN_VALUE_RE.fullmatch(value)


def _flag_values(tokens: list[str]) -> list[str]:
    values = []
    for index, token in enumerate(tokens):
        if not token.startswith("-") or token.lstrip("-")[:1].isdigit():
            continue
        name, equals, attached = token.partition("=")
        if name in PUBLIC_FLAGS:
            continue
        if equals:
            values.append(attached)
        elif index + 1 < len(tokens) and not tokens[index + 1].startswith("-"):
            values.append(tokens[index + 1])
    return values


@dataclass(frozen=True)
class Scrubber:
    """Replaces a container's secret values in text. The values never show in its repr."""

    values: tuple[str, ...] = field(default=(), repr=False)

    def text(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def verdict(self, verdict: Verdict) -> Verdict:
        """A copy of `verdict` with every text of it scrubbed."""
        if not self.values:
            return verdict
        changes: dict[str, Any] = {}
        for item in dataclasses.fields(verdict):
            value = getattr(verdict, item.name)
            if isinstance(value, str):
                changes[item.name] = self.text(value)
        changes["tail"] = [self.text(line) for line in verdict.tail]
        changes["notes"] = [self.text(note) for note in verdict.notes]
        changes["warnings"] = [
            NodeWarning(**{k: self.text(v) for k, v in dataclasses.asdict(warning).items()})
            for warning in verdict.warnings
        ]
        return dataclasses.replace(verdict, **changes)


def scrubber_for(inspect: dict[str, Any]) -> Scrubber:
    """The secret values of the container an Engine API inspect body describes."""
    config = inspect.get("Config") if isinstance(inspect, dict) else None
    config = config if isinstance(config, dict) else {}

    def strings(value: Any) -> list[str]:
        return [str(item) for item in value] if isinstance(value, list) else []

    found = _flag_values(strings(config.get("Entrypoint")) + strings(config.get("Cmd")))
    named: list[str] = []
    for item in strings(config.get("Env")):
        name, _, value = item.partition("=")
        if SECRET_NAME_RE.search(name) and name != "PWD" and len(value) >= MIN_NAMED_SECRET:
            named.append(value)
        elif _maybe_secret(name, value):
            found.append(value)
        found.extend(_flag_values(value.split()))
    values = {value for value in found if len(value) >= MIN_SECRET} | set(named)
    # the longest first: a value that holds another is masked whole
    return Scrubber(tuple(sorted(values, key=lambda v: (-len(v), v))))
