"""EBS volume limits, modification rules and prices: the one table tune-ebs plans from.

Sources, and when they were read:
- Limits: the EC2 API model shipped in botocore 1.44.8 (`botocore/data/ec2/2016-11-15/service-2.json`,
  CreateVolume/ModifyVolume parameter documentation): gp3 1-65,536 GiB, 3,000-80,000 IOPS,
  125-2,000 MiB/s. The older gp3 maxima (16,000 IOPS, 1,000 MiB/s, 16 TiB) are out of date since
  AWS raised them in 2025. The per-volume ratios (gp3: 500 IOPS per GiB, 0.25 MiB/s per IOPS;
  io1 50 and io2 1,000 IOPS per GiB) are from the Amazon EBS User Guide's volume type pages.
- Modification rule: the same model's ModifyVolume documentation (botocore 1.44.8): a modification
  must reach `completed` before the next one starts, and a volume may be modified at most four
  times in a rolling 24-hour period. Earlier editions of that reference required six hours
  between two modifications of a volume (the "six-hour cooldown").
- Prices: the Amazon EBS pricing page (https://aws.amazon.com/ebs/pricing/), list prices in USD per
  month (730 hours). us-east-1, us-east-2 and us-west-2 share one price list; eu-central-1's gp3/gp2
  figures are the published Frankfurt prices. Regions missing here are priced with us-east-1's
  figures and the output says so. They reproduce the seed figures: 125 -> 1,000 MiB/s is
  +$35/month and 3,000 -> 9,000 IOPS +$30/month in us-east-1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LIMITS_SOURCE = "botocore 1.44.8 EC2 model (CreateVolume/ModifyVolume), Amazon EBS User Guide volume types"
LIMITS_AS_OF = "2025-11"
PRICES_SOURCE = "https://aws.amazon.com/ebs/pricing/ (USD list prices)"
PRICES_AS_OF = "2025-11"
HOURS_PER_MONTH = 730.0
DEFAULT_PRICE_REGION = "us-east-1"


@dataclass(frozen=True)
class VolumeTypeLimits:
    volume_type: str
    size_gib: tuple[int, int]
    # provisionable IOPS and throughput ranges; None where the type has no such setting
    iops: tuple[int, int] | None
    throughput_mibs: tuple[int, int] | None
    max_iops_per_gib: float | None
    max_mibs_per_iops: float | None
    baseline_iops: int | None
    baseline_mibs: int | None
    # the type's throughput ceiling per volume, for predictions on types without a setting
    max_mibs: float


LIMITS: dict[str, VolumeTypeLimits] = {
    "gp3": VolumeTypeLimits("gp3", (1, 65536), (3000, 80000), (125, 2000), 500, 0.25, 3000, 125, 2000),
    "gp2": VolumeTypeLimits("gp2", (1, 16384), None, None, None, None, None, None, 250),
    "io1": VolumeTypeLimits("io1", (4, 16384), (100, 64000), None, 50, None, None, None, 1000),
    "io2": VolumeTypeLimits("io2", (4, 65536), (100, 256000), None, 1000, None, None, None, 4000),
    "st1": VolumeTypeLimits("st1", (125, 16384), None, None, None, None, None, None, 500),
    "sc1": VolumeTypeLimits("sc1", (125, 16384), None, None, None, None, None, None, 250),
    "standard": VolumeTypeLimits("standard", (1, 1024), None, None, None, None, None, None, 90),
}
GP3 = LIMITS["gp3"]
TUNABLE_TYPE = "gp3"


@dataclass(frozen=True)
class ModificationRule:
    """How often AWS lets one volume be modified."""

    max_per_window: int
    window_hours: float
    previous_must_complete: bool
    source: str


MODIFICATION_RULE = ModificationRule(
    max_per_window=4,
    window_hours=24.0,
    previous_must_complete=True,
    source="botocore 1.44.8 EC2 model, ModifyVolume documentation",
)
# What earlier editions of the EC2 API reference required; quoted in messages for context.
LEGACY_COOLDOWN_HOURS = 6.0


@dataclass(frozen=True)
class Presets:
    """Named gp3 settings: (IOPS, MiB/s). `max` depends on the volume's size (see plan.py)."""

    baseline: tuple[int, int] = (3000, 125)
    # the seed report's setting for a 140 GB pull: 1,000 MiB/s and 9,000 IOPS
    pull: tuple[int, int] = (9000, 1000)


PRESETS = Presets()
PRESET_NAMES = ("baseline", "pull", "max")


@dataclass(frozen=True)
class Price:
    """Monthly list price of one volume type in one region (USD)."""

    per_gib_month: float
    per_iops_month: float = 0.0  # per provisioned IOPS above `free_iops`
    free_iops: int = 0
    per_mibs_month: float = 0.0  # per provisioned MiB/s above `free_mibs`
    free_mibs: int = 0


_US_PRICES = {
    "gp3": Price(0.08, per_iops_month=0.005, free_iops=3000, per_mibs_month=0.040, free_mibs=125),
    "gp2": Price(0.10),
    "io1": Price(0.125, per_iops_month=0.065),
    # io2's IOPS price is tiered; this is the first tier (up to 32,000 IOPS)
    "io2": Price(0.125, per_iops_month=0.065),
    "st1": Price(0.045),
    "sc1": Price(0.015),
    "standard": Price(0.05),
}
PRICES: dict[str, dict[str, Price]] = {
    "us-east-1": _US_PRICES,
    "us-east-2": _US_PRICES,
    "us-west-2": _US_PRICES,
    "eu-central-1": {
        "gp3": Price(0.0952, per_iops_month=0.006, free_iops=3000, per_mibs_month=0.048, free_mibs=125),
        "gp2": Price(0.119),
    },
}


def price_for(region: str, volume_type: str) -> tuple[Price, str]:
    """The price of a type in a region and the region whose list it came from."""
    regional = PRICES.get(region, {})
    if volume_type in regional:
        return regional[volume_type], region
    return PRICES[DEFAULT_PRICE_REGION].get(volume_type, Price(0.0)), DEFAULT_PRICE_REGION


def monthly_cost(region: str, volume_type: str, size_gib: int, iops: int | None, mibs: int | None) -> float:
    price, _ = price_for(region, volume_type)
    cost = size_gib * price.per_gib_month
    if iops and price.per_iops_month:
        cost += max(0, iops - price.free_iops) * price.per_iops_month
    if mibs and price.per_mibs_month:
        cost += max(0, mibs - price.free_mibs) * price.per_mibs_month
    return round(cost, 4)


def write_mibs(volume_type: str, size_gib: int, iops: int | None, mibs: int | None) -> float:
    """Sustained write throughput a volume delivers, the input of the unpack-time model.

    gp3 delivers what is provisioned. The other types are estimates from their published
    behaviour: gp2 128 MiB/s up to 170 GiB and 250 MiB/s above; io1/io2 about 0.25 MiB/s per
    provisioned IOPS (256 KiB I/O) up to the type's ceiling; st1 and sc1 their baseline of 40
    and 12 MiB/s per TiB; magnetic volumes about 40 MiB/s.
    """
    limits = LIMITS.get(volume_type)
    if volume_type == "gp3":
        return float(mibs or GP3.baseline_mibs or 125)
    if volume_type == "gp2":
        return 128.0 if size_gib <= 170 else 250.0
    if volume_type in ("io1", "io2") and limits is not None:
        return float(min(limits.max_mibs, max(1.0, (iops or 100) * 0.25)))
    if volume_type == "st1":
        return float(min(500.0, max(1.0, 40.0 * size_gib / 1024)))
    if volume_type == "sc1":
        return float(min(250.0, max(1.0, 12.0 * size_gib / 1024)))
    return 40.0


def gp3_max_iops(size_gib: int) -> int:
    """The most IOPS a gp3 volume of this size may provision (3,000 is always allowed)."""
    ratio = GP3.max_iops_per_gib or 500
    return int(min(GP3.iops[1] if GP3.iops else 80000, max(3000, size_gib * ratio)))


def gp3_max_mibs(iops: int) -> int:
    ratio = GP3.max_mibs_per_iops or 0.25
    top = GP3.throughput_mibs[1] if GP3.throughput_mibs else 2000
    return int(min(top, math.floor(iops * ratio)))


def gp3_min_iops_for(mibs: int) -> int:
    """The fewest IOPS that allow `mibs` under the 0.25 MiB/s-per-IOPS ratio."""
    ratio = GP3.max_mibs_per_iops or 0.25
    baseline = GP3.baseline_iops or 3000
    return max(baseline, math.ceil(mibs / ratio))


def gp3_min_size_for(iops: int) -> int:
    ratio = GP3.max_iops_per_gib or 500
    return max(1, math.ceil(iops / ratio))
