"""A container's secrets that its log repeats never reach a readiness verdict."""

from __future__ import annotations

import json
from typing import Any

from gpuhost.comfyui.readiness import LogLine, Phase, ReadinessMachine
from gpuhost.comfyui.scrub import MASK, scrubber_for
from gpuhost.model import to_jsonable

SECRETS = {
    "hf": "hf_AbCdEfGhIjKlMnOp",
    "aws": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "api": "sk-live-0123456789",
    "db": "dbpass99",
    "short": "pw12",
    "custom": "opaque-value-42",
}


def inspect(**config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Config": {
            "Entrypoint": ["/entrypoint.sh"],
            "Cmd": ["python", "main.py", "--listen", "0.0.0.0", "--port", "8188", "--api-key", SECRETS["api"],
                    f"--database-url=postgresql://comfy:{SECRETS['db']}@db/comfy", "--output-directory", "/data/out"],
            "Env": [f"HF_TOKEN={SECRETS['hf']}", f"AWS_SECRET_ACCESS_KEY={SECRETS['aws']}",
                    f"WEB_PASSWORD={SECRETS['short']}", f"MY_SETTING={SECRETS['custom']}",
                    "PATH=/usr/local/bin:/usr/bin", "HOST=0.0.0.0", "COMFYUI_DIR=/opt/ComfyUI",
                    "NVIDIA_VISIBLE_DEVICES=all", "HF_HOME=/data/hf"],
        }
    }
    body["Config"].update(config)
    return body


def verdict_of(lines: list[str]) -> Any:
    machine = ReadinessMachine(started_at=0.0, host_network=True)
    for index, line in enumerate(lines):
        machine.feed(LogLine(float(index), line))
    return machine.verdict


def test_a_refused_flag_and_an_echoed_environment_are_masked() -> None:
    lines = [
        f"+ exec python main.py --api-key {SECRETS['api']} --database-url=postgresql://comfy:{SECRETS['db']}@db/comfy",
        f"HF_TOKEN={SECRETS['hf']} AWS_SECRET_ACCESS_KEY={SECRETS['aws']} WEB_PASSWORD={SECRETS['short']}",
        f"setting {SECRETS['custom']}",
        "usage: main.py [-h] [--listen [IP]] [--port PORT]",
        f"main.py: error: unrecognized arguments: --api-key {SECRETS['api']}",
    ]
    raw = verdict_of(lines)
    assert raw.phase is Phase.FAILED and raw.reason == "bad-arguments"
    assert SECRETS["api"] in raw.message  # what the machine sees is the log as it is
    scrubbed = scrubber_for(inspect()).verdict(raw)
    shown = json.dumps(to_jsonable(scrubbed))
    for secret in SECRETS.values():
        assert secret not in shown
    assert MASK in scrubbed.failing_line and scrubbed.reason == "bad-arguments"
    assert raw.failing_line.endswith(SECRETS["api"])  # the original is left as it was


def test_harmless_values_stay_readable() -> None:
    lines = ["PATH is /usr/local/bin:/usr/bin", "ComfyUI version: 0.3.64", "Output to /data/out",
             "model dir /opt/ComfyUI/models", "To see the GUI go to: http://0.0.0.0:8188"]
    raw = verdict_of(lines)
    scrubbed = scrubber_for(inspect()).verdict(raw)
    assert scrubbed.tail == raw.tail and scrubbed.gui_url == "http://0.0.0.0:8188"


def test_the_scrubber_never_shows_its_values() -> None:
    scrubber = scrubber_for(inspect())
    assert all(secret not in repr(scrubber) for secret in SECRETS.values())
    assert scrubber_for({}).values == () and scrubber_for({"Config": "nonsense"}).values == ()
