"""Predicted image unpack time: how long `docker pull`/`docker load` takes to write an image.

One model for every command that predicts (tune-ebs, layers, check, the storage role's
findings): unpacking is bound by the data-root device's sustained write throughput. The seed
figure it must reproduce: 140 GB at gp3's 125 MB/s baseline is about 18-19 minutes.
"""

from __future__ import annotations

from gpuhost.units import MIB

# Sustained write throughput by device class when nothing was measured, in MiB/s.
# ebs: the gp3 baseline (125 MiB/s), the class's floor; a tuned volume passes its own figure.
# instance-store: one local NVMe disk of g5/g6e/p4d class instances (AWS quotes sequential
# writes of roughly 1-2 GB/s per disk); 1000 MiB/s is the conservative end.
DEFAULT_WRITE_MIBS = {
    "ebs": 125.0,
    "instance-store": 1000.0,
    "md": 1000.0,
    "loop": 125.0,
    "other": 125.0,
}


def default_write_mibs(device_class: str) -> float:
    return DEFAULT_WRITE_MIBS.get(device_class, DEFAULT_WRITE_MIBS["other"])


def predict_unpack_seconds(image_bytes: int, write_mib_s: float, unpack_mib_s: float | None = None) -> float:
    """Seconds until `image_bytes` of unpacked layers are on a device that writes `write_mib_s`.

    `unpack_mib_s` is Docker's own processing rate on the host (reading, hashing and extracting
    layers, measured by gpuhost.storage.probe.measure_unpack). Given, it adds its share: the
    processing runs ahead into the page cache and the device's writes finish after it, so the
    two add up. Left out, the device alone bounds the time (a floor of the real figure).
    """
    if write_mib_s <= 0:
        raise ValueError("write throughput must be positive")
    seconds = image_bytes / (write_mib_s * MIB)
    if unpack_mib_s is not None:
        if unpack_mib_s <= 0:
            raise ValueError("unpack throughput must be positive")
        seconds += image_bytes / (unpack_mib_s * MIB)
    return seconds
