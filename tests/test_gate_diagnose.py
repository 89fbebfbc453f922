"""`benchmarks/gate_diagnose.py --strengths`: the disguise it scales (the README's detection-limit table)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from synthmed.privacy.memorisation import PlantConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scaled_plant():
    spec = importlib.util.spec_from_file_location("gate_diagnose", ROOT / "benchmarks/gate_diagnose.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gate_diagnose", module)
    spec.loader.exec_module(module)
    return module.scaled_plant


ZOOMS = (1.0, 0.95, 0.9)


def test_strength_zero_is_an_exact_copy_but_for_the_flips(scaled_plant) -> None:
    plant = scaled_plant(PlantConfig(), 0.0, ZOOMS)
    assert (plant.noise_std, plant.max_shift_px, plant.crop_fraction) == (0.0, 0, 1.0)
    assert plant.intensity_gain == (1.0, 1.0) and plant.intensity_offset == (0.0, 0.0)
    assert plant.flip_probability == PlantConfig().flip_probability


def test_strength_one_is_the_configured_plant(scaled_plant) -> None:
    assert scaled_plant(PlantConfig(), 1.0, ZOOMS) == PlantConfig()


def test_the_crop_snaps_to_a_searched_zoom_never_below_the_configured_crop(scaled_plant) -> None:
    half = scaled_plant(PlantConfig(), 0.5, ZOOMS)
    assert half.crop_fraction == 0.95 and half.noise_std == pytest.approx(0.025) and half.max_shift_px == 1
    assert half.intensity_gain == pytest.approx((0.95, 1.05))
    assert half.intensity_offset == pytest.approx((-0.025, 0.025))
    assert scaled_plant(PlantConfig(), 0.25, ZOOMS).crop_fraction == 1.0  # 0.975: no zoom for a 31 px crop
    assert scaled_plant(PlantConfig(crop_fraction=0.95), 1.0, (1.0, 0.9)).crop_fraction == 1.0
