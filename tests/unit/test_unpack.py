"""The unpack-time model: the seed figure, the measured processing rate, bad inputs."""

from __future__ import annotations

import pytest

from gpuhost.units import GB, MIB, format_duration
from gpuhost.unpack import default_write_mibs, predict_unpack_seconds


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
