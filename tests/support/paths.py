"""Where the tests find the project, its recorded data and the tools installed beside pytest."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
SHARED = Path(os.environ.get("GPUHOST_SHARED", REPO.parent / "shared"))
FIXTURES = REPO / "tests" / "fixtures"
# ansible-playbook, molecule and friends live beside the interpreter running the tests
VENV_BIN = Path(sys.executable).parent


def nvidia_gpu_present() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount()) > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return False
