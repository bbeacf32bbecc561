"""PET import (Modality PT): SUV from the DICOM headers equals a hand computation for every
Units × DecayCorrection combination, the vendor quirks, and clear errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorscope.io.dicom import import_dicom
from tumorscope.phantom.dicom.series import SynthStudy
from tumorscope.phantom.pet import PetAcquisition, stored_values, write_pet_dicom

INJ = dt.datetime(2026, 1, 5, 9, 0, 0)
SCAN = INJ + dt.timedelta(minutes=60)
# hand computation: 5000 Bq/mL at scan start, 60 min after 370 MBq of F-18 (T1/2 6586.2 s),
# 70 kg: the dose at scan start is 370e6 * 2**(-3600/6586.2) = 253.3142 MBq, so
# SUVbw = 5000 * 70000 / 253.3142e6 = 1.38168 g/mL
HAND_SUV = 1.38168
AFFINE = np.diag([4.0, 4.0, 5.0, 1.0])


def _bqml() -> np.ndarray:
    x = np.full((6, 5, 3), 1000.0)
    x[2:4, 2:4, 1] = 5000.0
    return x


def _import(tmp_path: Path, acq: PetAcquisition, values: np.ndarray | None = None):
    vals = stored_values(_bqml(), acq) if values is None else values
    write_pet_dicom(vals, AFFINE, tmp_path / "dcm", acq=acq, study=SynthStudy(date=SCAN.date()))
    rep = import_dicom(tmp_path / "dcm", tmp_path / "study")
    return rep


def _read(tmp_path: Path, rep):
    (row,) = [r for r in rep.series if r["suffix"] == "pet"]
    path = tmp_path / "study" / row["file"]
    side = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    return np.asarray(nib.load(path).dataobj, dtype=float), side, row


@pytest.mark.parametrize("units", ["BQML", "CNTS", "GML"])
@pytest.mark.parametrize("decay", ["START", "ADMIN", "NONE"])
def test_suv_from_headers_equals_the_hand_computation(tmp_path, units, decay):
    acq = PetAcquisition(
        injection=INJ,
        scan_start=SCAN,
        units=units,
        decay=decay,
        vendor="philips" if units == "CNTS" else "siemens",
        frame_durations_s=(300.0,),
    )
    rep = _import(tmp_path, acq)
    assert rep.n_rejected == 0, rep.problems
    data, side, row = _read(tmp_path, rep)
    assert row["file"].startswith("sub-001/ses-01/pet/") and row["file"].endswith("_pet.nii.gz")
    assert side["Units"] == "Bq/mL" and side["OriginalUnits"] == units
    (f,) = side["SUVbwFactor"]
    suv = data * f
    # 16-bit storage with a per-slice slope: 1/32000 of the slice maximum
    assert suv[2, 2, 1] == pytest.approx(HAND_SUV, rel=2e-4)
    assert suv[0, 0, 1] == pytest.approx(HAND_SUV / 5, rel=2e-4)
    assert side["ImageDecayCorrected"] is (decay != "NONE")
    assert side["ScanStart"] == pytest.approx(3600.0)
    assert side["InjectedRadioactivity"] == pytest.approx(370.0)
    assert side["TracerName"].lower() == "fluorodeoxyglucose"
    assert side["BodyWeight"] == 70.0 and side["Sex"] == "M"
    if decay == "START" and units == "BQML":
        assert data[2, 2, 1] == pytest.approx(5000.0, rel=1e-4)
    if decay == "ADMIN" and units == "BQML":  # corrected to the injection: 2**(3600/6586.2)
        assert data[2, 2, 1] == pytest.approx(5000.0 * 1.460652, rel=2e-4)


def test_ge_series_time_rewritten_uses_the_private_scan_time(tmp_path):
    acq = PetAcquisition(injection=INJ, scan_start=SCAN, vendor="ge", ge_series_time_rewritten=True)
    rep = _import(tmp_path, acq)
    data, side, _ = _read(tmp_path, rep)
    assert side["ScanStart"] == pytest.approx(3600.0)
    assert data[2, 2, 1] * side["SUVbwFactor"][0] == pytest.approx(HAND_SUV, rel=2e-4)
    assert any("GE" in p.message for p in rep.problems)


def test_injection_time_without_date_and_before_midnight(tmp_path):
    inj = dt.datetime(2026, 1, 4, 23, 30)
    scan = dt.datetime(2026, 1, 5, 0, 30)
    acq = PetAcquisition(injection=inj, scan_start=scan, full_injection_datetime=False)
    rep = _import(tmp_path, acq)
    data, side, _ = _read(tmp_path, rep)
    assert side["ScanStart"] == pytest.approx(3600.0)
    assert data[2, 2, 1] * side["SUVbwFactor"][0] == pytest.approx(HAND_SUV, rel=2e-4)


def test_dynamic_uncorrected_frames_each_get_their_factor(tmp_path):
    acq = PetAcquisition(
        injection=INJ,
        scan_start=SCAN,
        decay="NONE",
        frame_starts_s=(0.0, 600.0, 1200.0),
        frame_durations_s=(600.0, 600.0, 600.0),
    )
    truth = _bqml()
    frames = np.stack([stored_values(truth, acq, i) for i in range(3)], axis=-1)
    rep = _import(tmp_path, acq, frames)
    data, side, _ = _read(tmp_path, rep)
    assert data.shape == (6, 5, 3, 3)
    assert side["FrameTimesStart"] == pytest.approx([3600.0, 4200.0, 4800.0])
    lam = math.log(2) / 6586.2
    for i, f in enumerate(side["SUVbwFactor"]):
        # each frame back to the activity at its own start, and that against the dose then
        t = 3600.0 + 600.0 * i
        in_frame = (1 - math.exp(-lam * 600)) / (lam * 600)
        hand = data[2, 2, 1, i] * 70000 / (370e6 * math.exp(-lam * t) * in_frame)
        assert data[2, 2, 1, i] * f == pytest.approx(hand, rel=1e-9)
    # the same tissue: the uptake at each frame start is 5000 Bq/mL decayed from scan start,
    # so its SUV (against the decayed dose) is the same at every frame
    suv = [data[2, 2, 1, i] * f for i, f in enumerate(side["SUVbwFactor"])]
    assert suv == pytest.approx([HAND_SUV] * 3, rel=3e-4)


@pytest.mark.parametrize(
    "change,field",
    [
        ({"units": "PROPCPS"}, "Units"),
        ({"decay": "DECAY"}, "DecayCorrection"),
        ({"units": "GML", "weight_kg": None}, "PatientWeight"),
        (
            {
                "units": "CNTS",
                "vendor": "philips",
                "philips_write_bqml_factor": False,
                "weight_kg": None,
            },
            "Units",
        ),
    ],
)
def test_bad_headers_reject_the_series_naming_the_tag(tmp_path, change, field):
    base = PetAcquisition(injection=INJ, scan_start=SCAN)
    acq = dataclasses.replace(base, **change)
    if acq.units in ("BQML", "CNTS", "GML") and acq.weight_kg is not None:
        vals = stored_values(_bqml(), acq)
    else:
        vals = _bqml()
    write_pet_dicom(vals, AFFINE, tmp_path / "dcm", acq=acq, study=SynthStudy(date=SCAN.date()))
    from tumorscope.errors import DataError

    with pytest.raises(DataError):
        import_dicom(tmp_path / "dcm", tmp_path / "study")
    from tumorscope.io.dicom.pet import read_pet_series
    from tumorscope.io.dicom.scan import scan_dicom

    (s,) = scan_dicom(tmp_path / "dcm").series
    with pytest.raises(DataError) as e:
        read_pet_series(s)
    assert e.value.field == field


def test_philips_cnts_with_only_the_suv_scale_factor(tmp_path):
    acq = PetAcquisition(
        injection=INJ,
        scan_start=SCAN,
        units="CNTS",
        vendor="philips",
        philips_write_bqml_factor=False,
    )
    rep = _import(tmp_path, acq)
    data, side, _ = _read(tmp_path, rep)
    assert data[2, 2, 1] == pytest.approx(5000.0, rel=2e-4)
    assert data[2, 2, 1] * side["SUVbwFactor"][0] == pytest.approx(HAND_SUV, rel=2e-4)
