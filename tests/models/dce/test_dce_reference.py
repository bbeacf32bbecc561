"""DCE chain against the OSIPI DCE-DSC-MRI CodeCollection reference data.

Files are read from ``tests/data/reference/osipi_dce_dsc_codecollection`` (copied from the OSIPI
code collection, Apache-2.0, commit 40984f7c; see ``tests/data/reference/README.md``).
Tolerances are the source's own (listed in that README too):

* signal to concentration: atol 1e-5 + rtol 1e-5 mM, baseline = mean(s[1:numbaselinepts]);
* population AIFs: atol 1e-4 + rtol 1e-2 mM on whole-blood Cb;
* model fits: Ktrans/PS atol 0.005 + rtol 0.1 /min; ve atol 0.05; vp atol 0.025;
  Fp atol 5 + rtol 0.1 mL/100 mL/min; delay atol 1 s.
"""

from __future__ import annotations

import csv
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tumorscope.models import ExtendedTofts, Patlak, Tofts, TwoCXM, aif
from tumorscope.models.dce import ConcentrationStatus, signal_to_concentration

REF = Path(__file__).resolve().parents[2] / "data" / "reference"
DCE = REF / "osipi_dce_dsc_codecollection"


def _rows(rel: str) -> list[dict[str, str]]:
    with open(DCE / rel, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def _vec(cell: str) -> np.ndarray:
    return np.array(cell.split(), dtype=float)


def _within(measured: float, reference: float, atol: float, rtol: float) -> bool:
    return abs(measured - reference) <= atol + rtol * abs(reference)


# ----------------------------------------------------------------------------- SI -> C
def test_signal_to_concentration_matches_reference() -> None:
    rows = _rows("SI_to_Conc/SI2Conc_data.csv")
    assert len(rows) == 5
    for r in rows:
        s = _vec(r["s"])
        conc, status = signal_to_concentration(
            s,
            t1_ms=float(r["T1base"]) * 1e3,
            flip_angle_deg=float(r["FA"]),
            tr_ms=float(r["TR"]) * 1e3,
            relaxivity=float(r["r1"]),
            n_baseline=int(r["numbaselinepts"]),
            baseline_start=1,
        )
        assert status == ConcentrationStatus.OK
        np.testing.assert_allclose(conc[1:], _vec(r["conc"])[1:], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- AIFs
def _curves(rel: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    acc: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in _rows(rel):
        acc[r["label"]].append((float(r["time"]), float(r["Cb"])))
    return {k: (np.array(v)[:, 0], np.array(v)[:, 1]) for k, v in acc.items()}


@pytest.mark.parametrize(
    ("rel", "func", "to_seconds", "n_labels"),
    [
        ("PopulationAIF_DCE/ParkerAIF_ref.csv", aif.parker, 60.0, 11),
        ("PopulationAIF_DCE/GeorgiouAIF_ref.csv", aif.georgiou, 60.0, 7),
        ("PopulationAIF_DCE/preclinicalAIF_ref.csv", aif.mcgrath, 1.0, 10),
    ],
)
def test_population_aif_matches_reference(rel, func, to_seconds, n_labels) -> None:
    curves = _curves(rel)
    assert len(curves) == n_labels
    for label, (time, cb) in curves.items():
        ours = func(time * to_seconds)
        np.testing.assert_allclose(ours, cb, atol=1e-4, rtol=1e-2, err_msg=label)


def test_parker_parameters_are_the_reference_table() -> None:
    row = _rows("PopulationAIF_DCE/ParkerAIF.csv")[0]
    for key, value in aif.PARKER_PARAMETERS.items():
        assert float(row[key]) == value, key


# ----------------------------------------------------------------------------- models
TOL = {
    "Ktrans": (0.005, 0.1),
    "PS": (0.005, 0.1),
    "ve": (0.05, 0.0),
    "vp": (0.025, 0.0),
    "Fp": (5.0, 0.1),
}


def _fit_quiet(model, c: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(c[None])


CASES = [
    ("dce_DRO_data_tofts.csv", Tofts, "C", "ca", {"Ktrans": "Ktrans", "ve": "ve"}, 25),
    (
        "dce_DRO_data_extended_tofts.csv",
        ExtendedTofts,
        "C",
        "ca",
        {"Ktrans": "Ktrans", "ve": "ve", "vp": "vp"},
        15,
    ),
    ("patlak_sd_0.02_delay_0.csv", Patlak, "C_t", "cp_aif", {"Ktrans": "ps", "vp": "vp"}, 9),
    (
        "2cxm_sd_0.001_delay_0.csv",
        TwoCXM,
        "C_t",
        "cp_aif",
        {"Fp": "fp", "PS": "ps", "ve": "ve", "vp": "vp"},
        24,
    ),
]


@pytest.mark.parametrize(("fname", "cls", "ccol", "acol", "names", "n_rows"), CASES)
def test_model_fits_match_reference(fname, cls, ccol, acol, names, n_rows) -> None:
    rows = _rows(f"DCEmodels/{fname}")
    assert len(rows) == n_rows
    failures = []
    for r in rows:
        t, c, ca = _vec(r["t"]), _vec(r[ccol]), _vec(r[acol])  # each row's own (noisy) AIF
        fit = _fit_quiet(cls(t, ca), c)
        for ours, theirs in names.items():
            value = float(fit[ours][0])
            if cls is TwoCXM and ours == "PS":
                value /= 100.0  # reference PS in /min, ours in mL/100 mL/min
            if not _within(value, float(r[theirs]), *TOL[ours]):
                failures.append((r["label"], ours, value, float(r[theirs])))
    assert not failures


def test_patlak_linear_method_matches_reference() -> None:
    for r in _rows("DCEmodels/patlak_sd_0.02_delay_0.csv"):
        fit = _fit_quiet(Patlak(_vec(r["t"]), _vec(r["cp_aif"]), method="linear"), _vec(r["C_t"]))
        assert _within(float(fit["Ktrans"][0]), float(r["ps"]), *TOL["Ktrans"])
        assert _within(float(fit["vp"][0]), float(r["vp"]), *TOL["vp"])


@pytest.mark.parametrize(
    ("fname", "cls", "shift", "names"),
    [
        ("dce_DRO_data_tofts.csv", Tofts, 10, {"Ktrans": "Ktrans", "ve": "ve"}),
        (
            "dce_DRO_data_extended_tofts.csv",
            ExtendedTofts,
            5,
            {"Ktrans": "Ktrans", "ve": "ve", "vp": "vp"},
        ),
    ],
)
def test_delay_fit_matches_reference_variant(fname, cls, shift, names) -> None:
    """The source's delay variant: C shifted right by ``shift`` samples, zero-filled."""
    for r in _rows(f"DCEmodels/{fname}"):
        t, c, ca = _vec(r["t"]), _vec(r["C"]), _vec(r["ca"])
        shifted = np.concatenate([np.zeros(shift), c[:-shift]])
        fit = _fit_quiet(cls(t, ca, fit_delay=True, delay_range_s=(-10.0, 10.0)), shifted)
        assert _within(float(fit["delay"][0]), float(t[shift]), 1.0, 0.0), r["label"]
        for ours, theirs in names.items():
            assert _within(float(fit[ours][0]), float(r[theirs]), *TOL[ours]), (r["label"], ours)
