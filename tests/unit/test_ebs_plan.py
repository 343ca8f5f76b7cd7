"""tune-ebs planning: limits, presets, the cheapest setting, prices, predictions and AWS's modification rule.

This is gpuhost's own logic (moto models none of it); the end-to-end tests run it against the server.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import re
from pathlib import Path

import botocore
import pytest

from gpuhost.ebs import aws, limits
from gpuhost.ebs.plan import (
    REFERENCE_IMAGE_BYTES,
    Settings,
    cheapest_gp3_for,
    make_plan,
    modification_gate,
    required_mibs,
    target_for,
    validate_settings,
    validate_target,
)
from gpuhost.ebs.tune import TuneOptions
from gpuhost.ebs.volume import Modification, Performance, Volume
from gpuhost.model import UsageError
from gpuhost.units import GB, parse_duration, parse_size
from gpuhost.unpack import predict_unpack_seconds

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def gp3(size: int = 100, iops: int = 3000, mibs: int = 125, volume_id: str = "vol-0123456789abcdef0") -> Volume:
    return Volume(volume_id, Performance("gp3", size, iops, mibs))


def done(hours_ago: float, state: str = "completed") -> Modification:
    return Modification("vol-0123456789abcdef0", state, 100, NOW - dt.timedelta(hours=hours_ago))


def test_gp3_limits_match_the_installed_botocore_model() -> None:
    model_path = Path(botocore.__file__).parent / "data/ec2/2016-11-15/service-2.json.gz"
    with gzip.open(model_path) as fh:
        model = json.loads(fh.read())
    shape = model["shapes"][model["operations"]["ModifyVolume"]["input"]["shape"]]["members"]
    text = {k: re.sub(r"<[^>]+>", " ", shape[k]["documentation"]) for k in ("Size", "Iops", "Throughput")}
    assert re.search(r"gp3\s*:\s*1 - 65,536", text["Size"])
    assert re.search(r"gp3\s*:\s*3,000 - 80,000", text["Iops"])
    assert "Maximum value of 2,000" in text["Throughput"]
    assert limits.GP3.size_gib == (1, 65536)
    assert limits.GP3.iops == (3000, 80000)
    assert limits.GP3.throughput_mibs == (125, 2000)
    rule = re.sub(r"<[^>]+>", " ", model["operations"]["ModifyVolume"]["documentation"])
    assert "up to four times within a rolling 24-hour period" in rule
    assert (limits.MODIFICATION_RULE.max_per_window, limits.MODIFICATION_RULE.window_hours) == (4, 24.0)


def test_seed_figures_are_reproduced() -> None:
    # 125 -> 1000 MiB/s is about +$35/month, 3,000 -> 9,000 IOPS about +$30/month (us-east-1)
    base = limits.monthly_cost("us-east-1", "gp3", 100, 3000, 125)
    assert limits.monthly_cost("us-east-1", "gp3", 100, 3000, 1000) - base == pytest.approx(35.0)
    assert limits.monthly_cost("us-east-1", "gp3", 100, 9000, 125) - base == pytest.approx(30.0)
    assert base == pytest.approx(8.0)
    # a 140 GB image at 125 MiB/s is about 18 minutes to unpack
    assert predict_unpack_seconds(REFERENCE_IMAGE_BYTES, 125) / 60 == pytest.approx(17.8, abs=0.1)


def test_regional_prices_and_the_fallback() -> None:
    price, region = limits.price_for("eu-central-1", "gp3")
    assert (region, price.per_gib_month, price.per_mibs_month) == ("eu-central-1", 0.0952, 0.048)
    price, region = limits.price_for("ap-south-2", "gp3")
    assert region == "us-east-1"
    assert price.per_iops_month == 0.005


@pytest.mark.parametrize(
    ("text", "expected"),
    [("140GB", 140 * GB), ("140 GB", 140 * GB), ("70gib", 70 * 1024**3), ("20000MB", 20 * GB), ("1.5TB", 1500 * GB)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "140 parsecs", "-5GB", "0GB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize(("text", "seconds"), [("5m", 300), ("300s", 300), ("1h", 3600), ("2m30s", 150), ("90", 90)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "0s", "5x"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (Settings(iops=2999), "outside gp3's range 3,000-80,000"),
        (Settings(iops=80001), "outside gp3's range 3,000-80,000"),
        (Settings(throughput_mibs=124), "outside gp3's range 125-2,000"),
        (Settings(throughput_mibs=2001), "outside gp3's range 125-2,000"),
        (Settings(iops=3000, throughput_mibs=1000), "needs at least 4,000 IOPS"),
        (Settings(preset="fast"), "unknown preset"),
        (Settings(preset="pull", iops=9000), "choose one way"),
        (Settings(within_s=300), "--within needs --for-image-size"),
        (Settings(), "nothing to change"),
    ],
)
def test_invalid_settings_are_refused_with_a_remedy(settings: Settings, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_settings(settings)
    assert words in str(caught.value)
    assert caught.value.remedy


def test_iops_per_gib_limit_needs_the_volume() -> None:
    validate_settings(Settings(iops=5000))
    with pytest.raises(UsageError) as caught:
        target_for(Settings(iops=5000), gp3(size=8), "us-east-1")
    assert "500 IOPS per GiB" in str(caught.value)
    assert "8 GiB allows 4,000" in str(caught.value)
    assert "10 GiB" in caught.value.remedy


def test_throughput_alone_is_checked_against_the_current_iops() -> None:
    with pytest.raises(UsageError) as caught:
        target_for(Settings(throughput_mibs=1000), gp3(iops=3000), "us-east-1")
    assert "needs at least 4,000 IOPS" in str(caught.value)
    target, _ = target_for(Settings(throughput_mibs=1000), gp3(iops=6000), "us-east-1")
    assert (target.iops, target.throughput_mibs) == (6000, 1000)


def test_validate_target_checks_every_limit() -> None:
    validate_target(Performance("gp3", 1, 3000, 125))  # a 1 GiB gp3 volume still has the baseline
    validate_target(Performance("gp3", 160, 80000, 2000))
    for bad in (
        Performance("gp3", 100, 2000, 125),
        Performance("gp3", 100, 3000, 100),
        Performance("gp3", 1000, 6000, 1600),
        Performance("gp3", 10, 6000, 125),
    ):
        with pytest.raises(UsageError):
            validate_target(bad)


def test_presets() -> None:
    assert target_for(Settings(preset="baseline"), gp3(iops=9000, mibs=1000), "us-east-1")[0].iops == 3000
    pull, notes = target_for(Settings(preset="pull"), gp3(), "us-east-1")
    assert (pull.iops, pull.throughput_mibs, notes) == (9000, 1000, [])
    top, _ = target_for(Settings(preset="max"), gp3(size=200), "us-east-1")
    assert (top.iops, top.throughput_mibs) == (80000, 2000)
    small, _ = target_for(Settings(preset="max"), gp3(size=8), "us-east-1")
    assert (small.iops, small.throughput_mibs) == (4000, 1000)


def test_pull_preset_is_capped_on_a_small_volume() -> None:
    target, notes = target_for(Settings(preset="pull"), gp3(size=8), "us-east-1")
    assert (target.iops, target.throughput_mibs) == (4000, 1000)
    assert "capped to 4,000" in notes[0]


def test_cheapest_setting_for_an_image() -> None:
    # 140 GB in 5 minutes: 446 MiB/s, which the baseline 3,000 IOPS allow (0.25 MiB/s per IOPS)
    assert required_mibs(140 * GB, 300) == 446
    assert predict_unpack_seconds(140 * GB, 446) <= 300 < predict_unpack_seconds(140 * GB, 445)
    assert cheapest_gp3_for(140 * GB, 300) == (3000, 446)
    assert cheapest_gp3_for(20 * GB, 300) == (3000, 125)
    assert cheapest_gp3_for(140 * GB, 70) == (7632, 1908)


def test_cheapest_setting_beyond_gp3_or_the_volume_size() -> None:
    with pytest.raises(UsageError) as caught:
        cheapest_gp3_for(140 * GB, 30)
    assert "gp3 tops out at 2,000 MiB/s" in str(caught.value)
    with pytest.raises(UsageError) as caught:
        cheapest_gp3_for(140 * GB, 100, size_gib=8)
    assert "this volume has 8 GiB" in str(caught.value)


def test_image_target_keeps_higher_current_values() -> None:
    settings = Settings(image_bytes=140 * GB, within_s=300)
    target, notes = target_for(settings, gp3(iops=6000), "us-east-1")
    assert (target.iops, target.throughput_mibs) == (6000, 446)
    assert notes


def test_wrong_volume_type_needs_to_gp3() -> None:
    gp2 = Volume("vol-0123456789abcdef0", Performance("gp2", 100))
    with pytest.raises(UsageError) as caught:
        target_for(Settings(preset="pull"), gp2, "us-east-1")
    assert "is gp2" in str(caught.value)
    assert "--to-gp3" in caught.value.remedy
    target, notes = target_for(Settings(preset="pull", to_gp3=True), gp2, "us-east-1")
    assert (target.volume_type, target.iops, target.throughput_mibs) == ("gp3", 9000, 1000)
    assert "converts gp2 to gp3" in notes[0]


def test_gate_allows_a_fresh_volume() -> None:
    verdict = modification_gate([], NOW)
    assert verdict.allowed and verdict.recent == 0


def test_gate_stops_while_a_modification_runs() -> None:
    verdict = modification_gate([done(5), done(0.1, "optimizing")], NOW)
    assert not verdict.allowed
    assert "in progress (optimizing, 100%" in verdict.reason
    assert verdict.in_progress is not None


def test_gate_stops_at_four_in_24_hours_and_says_when() -> None:
    history = [done(23), done(10), done(5), done(1)]
    verdict = modification_gate(history, NOW)
    assert not verdict.allowed
    assert verdict.next_change_at == NOW + dt.timedelta(hours=1)
    assert "(in 60.0 min)" in verdict.reason
    # older ones and failed ones do not count
    assert modification_gate([done(25), done(10), done(5), done(1)], NOW).allowed
    assert modification_gate([done(23, "failed"), done(10), done(5), done(1)], NOW).allowed


def test_plan_reports_cost_prediction_and_revert() -> None:
    settings = Settings(preset="pull", image_bytes=140 * GB)
    plan = make_plan(settings, gp3(), [done(2)], "us-east-1", NOW)
    data = plan.to_dict()
    assert data["changes"] == {
        "iops": {"from": 3000, "to": 9000},
        "throughput_mibs": {"from": 125, "to": 1000},
    }
    assert data["cost"]["delta_month"] == pytest.approx(65.0)
    assert data["cost"]["delta_day"] == pytest.approx(2.14, abs=0.01)
    assert data["unpack"]["before_s"] == pytest.approx(1068.1, abs=0.5)
    assert data["unpack"]["after_s"] == pytest.approx(133.5, abs=0.5)
    assert data["modification_gate"]["modifications_in_window"] == 1
    assert "2 left after this one" in data["revert"]
    assert not plan.at_target


# --- every option checked before any AWS call (TuneOptions.parse) --------------------------------

PULL = {"volume_id": "vol-0123456789abcdef0", "region": "us-east-1", "preset": "pull"}


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"wait": True, "poll_interval": math.nan}, "--poll-interval"),
        ({"wait": True, "poll_interval": math.inf}, "--poll-interval"),
        ({"wait": True, "timeout": "9" * 400}, "--timeout"),
        ({"wait": True, "timeout": "nan"}, "--timeout"),
        ({"preset": None, "for_image_size": "9" * 400, "within": "5m"}, "--for-image-size"),
        ({"preset": None, "for_image_size": "inf", "within": "5m"}, "--for-image-size"),
        ({"when_image_present": ""}, "--when-image-present"),
        ({"when_image_present": ".."}, "--when-image-present"),
        ({"when_image_present": "../../info"}, "--when-image-present"),
        ({"when_image_present": "a b"}, "--when-image-present"),
        ({"when_image_present": "comfyui:0.3.64\n"}, "--when-image-present"),
        ({"volume_id": "vol-0123456789abcdef0\n"}, "volume id"),
        ({"region": "us-east-1\n"}, "region"),
        ({"volume_id": None, "instance_id": "i-0123456789abcdef0\n"}, "instance id"),
        ({"endpoint_url": "http://[::1"}, "--endpoint-url"),
        ({"endpoint_url": "http://127.0.0.1:99999"}, "--endpoint-url"),
        ({"endpoint_url": "http://127.0.0.1:4566 "}, "--endpoint-url"),
        ({"endpoint_url": "ftp://127.0.0.1:4566"}, "--endpoint-url"),
        ({"endpoint_url": "http://"}, "--endpoint-url"),
    ],
)
def test_bad_options_are_refused_before_any_aws_call(options: dict[str, object], words: str) -> None:
    with pytest.raises(UsageError, match=re.escape(words)) as caught:
        TuneOptions.parse(**{**PULL, **options})  # type: ignore[arg-type]
    assert caught.value.remedy


@pytest.mark.parametrize("value", ["junk", "", "-1", "0", "1e3", "9" * 400, " 3"])
def test_a_bad_aws_max_attempts_is_a_usage_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", value)
    with pytest.raises(UsageError, match="AWS_MAX_ATTEMPTS"):
        TuneOptions.parse(**PULL)  # type: ignore[arg-type]


def test_a_good_aws_max_attempts_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "5")
    assert TuneOptions.parse(**PULL).aws.region == "us-east-1"  # type: ignore[arg-type]


def test_image_references_pass_unchanged() -> None:
    options = TuneOptions.parse(**PULL, when_image_present="ghcr.io/org/comfyui:0.3.64")  # type: ignore[arg-type]
    assert options.when_image_present == "ghcr.io/org/comfyui:0.3.64"


@pytest.fixture
def no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config"
    config.write_text("[profile other]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    return config


def test_region_from_aws_region_first_then_aws_default_region(
    monkeypatch: pytest.MonkeyPatch, no_aws_config: Path
) -> None:
    assert aws.configured_region(None) is None
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert aws.configured_region(None) == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert aws.configured_region(None) == "eu-central-1"
    assert aws.configured_region("other") == "eu-central-1"  # the environment beats the profile, as in AWS CLI v2
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert aws.configured_region("other") == "ap-south-1"


def test_an_unknown_profile_from_the_environment_is_named(monkeypatch: pytest.MonkeyPatch, no_aws_config: Path) -> None:
    monkeypatch.setenv("AWS_PROFILE", "nosuch")
    with pytest.raises(aws.AwsError, match="'nosuch'") as caught:
        aws.configured_region(None)
    assert "None" not in str(caught.value) and caught.value.exit_code == 2
