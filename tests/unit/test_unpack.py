"""The unpack-time model: the seed figure, the measured processing rate, bad inputs."""

from __future__ import annotations

import pytest

from gpuhost.units import GB, MIB, format_duration
from gpuhost.unpack import (
    PullLayer,
    compression_of,
    default_write_mibs,
    median_rate,
    per_entry_cost_us,
    predict_pull,
    predict_unpack_seconds,
    processing_rate,
)


def test_the_seed_figure_140_gb_at_the_gp3_baseline() -> None:
    seconds = predict_unpack_seconds(140 * GB, default_write_mibs("ebs"))
    assert 17.5 * 60 < seconds < 19 * 60
    assert format_duration(seconds) == "17.8 min"


def test_a_measured_unpack_rate_adds_its_share() -> None:
    size = 2048 * MIB
    assert predict_unpack_seconds(size, 512.0) == pytest.approx(4.0)
    assert predict_unpack_seconds(size, 512.0, unpack_mib_s=128.0) == pytest.approx(4.0 + 16.0)
    # on a fast disk Docker's own processing dominates
    assert predict_unpack_seconds(size, 2048.0, 128.0) == pytest.approx(17.0)


@pytest.mark.parametrize(("write", "unpack"), [(0.0, None), (-1.0, None), (100.0, 0.0)])
def test_non_positive_rates_are_refused(write: float, unpack: float | None) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        predict_unpack_seconds(GB, write, unpack)


def test_defaults_per_device_class() -> None:
    assert default_write_mibs("instance-store") > default_write_mibs("ebs")
    assert default_write_mibs("something-new") == default_write_mibs("other")


@pytest.mark.parametrize(
    ("media_type", "compression"),
    [
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"),
        ("application/vnd.oci.image.layer.v1.tar+gzip", "gzip"),
        ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd"),
        ("application/vnd.docker.image.rootfs.diff.tar", "none"),
        ("application/vnd.oci.image.layer.v1.tar", "none"),
        ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "gzip"),
        ("application/octet-stream", "unknown"),
    ],
)
def test_layer_compression_from_its_media_type(media_type: str, compression: str) -> None:
    assert compression_of(media_type) == compression


def test_one_noisy_probe_round_does_not_move_the_rate() -> None:
    # the rounds of the probe: 85 and 125 MiB/s for two loads that took the same time
    assert median_rate([85.0, 125.0, 90.0]) == 90.0
    assert median_rate([90.0, 0.0, 91.0, 400.0]) == 91.0
    with pytest.raises(ValueError, match="no positive rate"):
        median_rate([0.0])


def test_a_pull_splits_into_download_decompression_and_write() -> None:
    layers = [PullLayer("gzip", 512 * MIB, 1024 * MIB), PullLayer("none", 1024 * MIB, 1024 * MIB)]
    prediction = predict_pull(layers, write_mib_s=1024.0, decompress_mib_s={"none": 128.0, "gzip": 64.0})
    assert prediction.write_s == pytest.approx(2.0)
    assert prediction.decompress_s == pytest.approx(16.0 + 8.0)
    assert prediction.download_s == 0.0
    assert prediction.total_s == pytest.approx(26.0)
    assert prediction.to_dict()["decompress_mib_s"] == {"gzip": 64.0, "none": 128.0}


def test_a_compression_not_measured_falls_back_to_the_uncompressed_rate() -> None:
    layers = [PullLayer("zstd", 512 * MIB, 1024 * MIB)]
    prediction = predict_pull(layers, write_mib_s=1024.0, decompress_mib_s={"none": 128.0, "gzip": 64.0})
    assert prediction.decompress_s == pytest.approx(8.0)
    assert prediction.rates_used == {"none": 128.0}


def test_a_slow_download_is_what_does_not_overlap_the_decompression() -> None:
    layers = [PullLayer("gzip", 1024 * MIB, 2048 * MIB) for _ in range(4)]
    slow = predict_pull(layers, write_mib_s=2048.0, decompress_mib_s={"gzip": 256.0}, download_mib_s=64.0)
    # 64 s of download, 32 s of decompression overlapping it: 32 s remain
    assert slow.download_s == pytest.approx(64.0 - 32.0)
    fast = predict_pull(layers, write_mib_s=2048.0, decompress_mib_s={"gzip": 256.0}, download_mib_s=1024.0)
    # a fast download still waits for the first layer
    assert fast.download_s == pytest.approx(1.0)
    with pytest.raises(ValueError, match="must be positive"):
        predict_pull(layers, write_mib_s=2048.0, download_mib_s=0.0)


def test_the_probe_takes_the_devices_share_back_out() -> None:
    # 1024 MiB in 10 s on a device that writes 1024 MiB/s: 1 s of it was the device's
    rate = processing_rate(1024.0, 10.0, 1024.0)
    assert rate == pytest.approx(1024.0 / 9.0)
    # predicting for the same device gives the measured time back
    assert predict_unpack_seconds(1024 * MIB, 1024.0, rate) == pytest.approx(10.0)
    # without the device's rate the whole time is Docker's
    assert processing_rate(1024.0, 10.0, None) == pytest.approx(102.4)
    # a device probe that claims more than the load took leaves the measured rate alone
    assert processing_rate(1024.0, 1.0, 1100.0) == pytest.approx(1024.0)


def test_each_file_of_a_layer_costs_the_probes_time_per_entry() -> None:
    site_packages = PullLayer("gzip", 100 * MIB, 400 * MIB, entries=50_000)
    weights = PullLayer("gzip", 1000 * MIB, 1024 * MIB, entries=3)
    prediction = predict_pull([site_packages, weights], 1024.0, {"gzip": 128.0}, per_entry_us={"none": 200.0})
    assert prediction.entries == 50_003
    assert prediction.files_s == pytest.approx(50_003 * 200e-6)
    assert prediction.total_s == pytest.approx(prediction.decompress_s + prediction.files_s + prediction.write_s)
    assert prediction.to_dict()["files_s"] == 10.0
    # not measured: the files add nothing, and the prediction says so
    unknown = predict_pull([site_packages, weights], 1024.0, {"gzip": 128.0})
    assert unknown.files_s == 0.0 and unknown.to_dict()["per_entry_us"] is None


def test_each_layer_pays_the_cost_per_file_of_its_compression() -> None:
    layers = [PullLayer("zstd", 60 * MIB, 240 * MIB, entries=10_000), PullLayer("gzip", 80 * MIB, 240 * MIB,
                                                                                  entries=10_000)]
    # zstd's decompressor runs beside the extraction: its files cost less than gzip's
    costs = {"none": 150.0, "gzip": 160.0, "zstd": 60.0}
    assert predict_pull(layers, 1024.0, {"none": 100.0}, per_entry_us=costs).files_s == pytest.approx(2.2)
    # a compression whose cost was not measured pays the uncompressed one
    assert predict_pull(layers, 1024.0, {"none": 100.0}, per_entry_us={"none": 150.0}).files_s == pytest.approx(3.0)


def test_the_unpacking_waits_for_the_first_layer_in_the_images_order_not_the_largest() -> None:
    # a small base layer first: the large layers download while the base unpacks, as in any pull
    layers = [PullLayer("gzip", 8 * MIB, 16 * MIB), PullLayer("gzip", 1024 * MIB, 1024 * MIB),
              PullLayer("gzip", 1024 * MIB, 1024 * MIB)]
    fast = predict_pull(layers, write_mib_s=4096.0, decompress_mib_s={"gzip": 256.0}, download_mib_s=1024.0)
    assert fast.download_s == pytest.approx(8 / 1024)
    # the largest layer first: the unpacking starts only once it is there
    largest_first = predict_pull(list(reversed(layers)), write_mib_s=4096.0, decompress_mib_s={"gzip": 256.0},
                                 download_mib_s=1024.0)
    assert largest_first.download_s == pytest.approx(1.0)


def test_the_files_overlap_the_download_like_the_decompression() -> None:
    layers = [PullLayer("none", 256 * MIB, 256 * MIB, entries=20_000) for _ in range(4)]
    # 4 s of download beside 1 GiB at 1024 MiB/s (1 s) and 80,000 files at 25 us (2 s)
    prediction = predict_pull(layers, 4096.0, {"none": 1024.0}, download_mib_s=256.0, per_entry_us={"none": 25.0})
    assert prediction.download_s == pytest.approx(4.0 - 1.0 - 2.0)


@pytest.mark.parametrize("cost", [-1.0, float("nan"), float("inf")])
def test_a_cost_per_entry_must_be_finite_and_not_negative(cost: float) -> None:
    with pytest.raises(ValueError, match="per entry"):
        predict_pull([PullLayer("none", MIB, MIB, entries=1)], 100.0, {"none": 100.0}, per_entry_us={"zstd": cost})


def test_the_probe_takes_the_bytes_share_out_of_the_small_files_load() -> None:
    # 20,000 files, 160 MiB, loaded in 6 s on a device that writes 800 MiB/s, Docker at 80 MiB/s:
    # the bytes explain 2 + 0.2 s, the files the other 3.8 s, 190 us each
    assert per_entry_cost_us(6.0, 160 * MIB, 20_000, 80.0, 800.0) == pytest.approx(190.0)
    assert per_entry_cost_us(6.0, 160 * MIB, 20_000, 80.0, None) == pytest.approx(200.0)
    # bytes that explain more than the load took leave no cost, never a negative one
    assert per_entry_cost_us(1.0, 160 * MIB, 20_000, 80.0, 800.0) == 0.0
    with pytest.raises(ValueError, match="needs entries"):
        per_entry_cost_us(6.0, 160 * MIB, 0, 80.0, 800.0)
