"""SUV factors against hand computations (decay from injection to scan start, units, weight)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest

from tumorscope.errors import DataError
from tumorscope.models.pet import (
    F18_HALF_LIFE_S,
    body_surface_area_m2,
    lean_body_mass_kg,
    sul_factor,
    suv_factor,
    suvbsa_factor,
)

INJ = datetime(2026, 1, 5, 9, 0, 0)
SCAN = INJ + timedelta(minutes=60)


def test_start_decays_the_dose_to_scan_start():
    # by hand: 370 MBq decays for 3600 s with T1/2 = 6586.2 s -> 370e6 * 2**(-3600/6586.2)
    # = 253.31 MBq at scan start; 70 kg = 70000 g; SUV of 5000 Bq/mL = 5000*70000/253.31e6
    f = suv_factor(
        injected_activity_bq=370e6,
        injection_time=INJ,
        scan_time=SCAN,
        half_life_s=F18_HALF_LIFE_S,
        weight_kg=70.0,
    )
    assert 370e6 * 2 ** (-3600 / 6586.2) == pytest.approx(253.3142e6, rel=1e-6)
    assert f * 5000.0 == pytest.approx(5000.0 * 70000.0 / 253.3142e6, rel=1e-6)
    assert f * 5000.0 == pytest.approx(1.38168, rel=1e-4)


def test_admin_uses_the_injected_dose():
    f = suv_factor(
        injected_activity_bq=370e6,
        injection_time=INJ,
        scan_time=SCAN,
        half_life_s=F18_HALF_LIFE_S,
        weight_kg=70.0,
        decay_correction="ADMIN",
    )
    assert f == pytest.approx(70000.0 / 370e6, rel=1e-12)


def test_none_corrects_each_frame_and_the_decay_within_it():
    # frame starting 90 min after injection, 180 s long: the mean activity over the frame is
    # A(t0) (1 - exp(-lam D)) / (lam D)
    lam = math.log(2) / F18_HALF_LIFE_S
    t0 = INJ + timedelta(minutes=90)
    f = suv_factor(
        injected_activity_bq=300e6,
        injection_time=INJ,
        scan_time=t0,
        half_life_s=F18_HALF_LIFE_S,
        weight_kg=80.0,
        decay_correction="NONE",
        frame_duration_s=180.0,
    )
    in_frame = (1 - math.exp(-lam * 180)) / (lam * 180)
    assert f == pytest.approx(80000.0 / (300e6 * math.exp(-lam * 5400) * in_frame), rel=1e-12)
    assert 0.99 < in_frame < 1.0


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"weight_kg": 0.0}, "PatientWeight"),
        ({"injected_activity_bq": -1.0}, "RadionuclideTotalDose"),
        ({"half_life_s": float("nan")}, "RadionuclideHalfLife"),
        ({"scan_time": INJ - timedelta(minutes=1)}, "scan_time"),
        ({"decay_correction": "DECAY"}, "DecayCorrection"),
    ],
)
def test_bad_values_name_the_field(kw, field):
    args = dict(
        injected_activity_bq=370e6,
        injection_time=INJ,
        scan_time=SCAN,
        half_life_s=F18_HALF_LIFE_S,
        weight_kg=70.0,
    )
    args.update(kw)
    with pytest.raises(DataError) as e:
        suv_factor(**args)
    assert e.value.field == field


def test_janmahasatian_lean_body_mass():
    # by hand, Janmahasatian 2005: 80 kg, 1.80 m -> BMI 24.691; men 9270*80/(6680+216*24.691)
    assert lean_body_mass_kg(80, 1.8, "M") == pytest.approx(741600 / (6680 + 216 * 80 / 3.24))
    assert lean_body_mass_kg(80, 1.8, "M") == pytest.approx(61.73, abs=0.01)
    # women: 9270*60/(8780+244*BMI), 60 kg, 1.65 m, BMI 22.039 -> 556200/14157.5
    assert lean_body_mass_kg(60, 1.65, "F") == pytest.approx(39.29, abs=0.01)
    with pytest.raises(DataError, match="M or F"):
        lean_body_mass_kg(60, 1.65, "O")
    with pytest.raises(DataError, match="metres"):
        lean_body_mass_kg(60, 165, "F")


def test_du_bois_surface_area_and_factors():
    # Du Bois 1916: 70 kg, 170 cm -> 0.007184 * 70**0.425 * 170**0.725 = 1.8097 m2
    assert body_surface_area_m2(70, 1.70) == pytest.approx(1.8097, abs=1e-4)
    f = 1e-4
    assert sul_factor(suv_bw_factor=f, weight_kg=80, height_m=1.8, sex="M") == pytest.approx(
        f * 61.73 / 80, rel=2e-4
    )
    assert suvbsa_factor(suv_bw_factor=f, weight_kg=70, height_m=1.7) == pytest.approx(
        f * 18097 / 70000, rel=1e-4
    )
