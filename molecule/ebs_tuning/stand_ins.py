#!/usr/bin/env python3
"""EC2 (moto) and IMDSv2 stand-ins on 127.0.0.1 for the ebs_tuning scenario, in the background.

Usage: stand_ins.py STATE_FILE. Starts both servers, runs an instance with a 100 GiB gp3 root
volume, serves an instance profile's credentials from IMDSv2 (as EC2 does: the host needs no keys),
writes {"ec2": URL, "imds": URL, "instance_id": ..., "volume_id": ..., "pid": ...} to STATE_FILE and
serves until SIGTERM. The scenario's container shares the host network, so the
agent inside it reaches them on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.aws import Ec2Server, ImdsStandIn, make_instance


def main() -> int:
    state = Path(sys.argv[1])
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    ec2 = Ec2Server()
    ec2.start()
    instance_id, volume_id = make_instance(ec2.client(), size_gib=100)
    imds = ImdsStandIn(instance_id, "us-east-1").grant_role().start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tmp = state.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "ec2": ec2.endpoint,
                "imds": imds.endpoint,
                "instance_id": instance_id,
                "volume_id": volume_id,
                "pid": os.getpid(),
            }
        )
    )
    tmp.replace(state)
    stop.wait(3600)  # bounded: a forgotten scenario does not leave it running for ever
    imds.stop()
    ec2.stop()
    state.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
