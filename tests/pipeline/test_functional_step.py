"""The ``functional`` step's registration and thresholds (tumorscope.pipeline.functional).

Synthetic visits with a known shift and known test–retest noise: after registration a
shifted copy of the baseline map is unchanged voxel for voxel (without it, a large part of
the lesion would be called changed); the voxel-wise RC from a test–retest pair is 2.77·σ·√2
/ √2 = 2.77·σ for independent noise of SD σ on both visits (wSD = σ; Raunig et al. 2015).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tumorscope.pipeline.functional import PUBLISHED_RC, _onto, _thresholds, _Visit
from tumorscope.response.functional import parametric_response_map
from tumorscope.volume import Volume

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _phantom(shift: int = 0, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Anatomy (smooth blobs), an ADC map and the lesion labels, shifted along x."""
    x, y, z = np.indices((40, 40, 24), dtype=float)
    anat = 100 + 400 * np.exp(-((x - 20) ** 2 + (y - 18) ** 2 + (z - 12) ** 2) / 60)
    anat += 200 * np.exp(-((x - 12) ** 2 + (y - 26) ** 2 + (z - 9) ** 2) / 20)
    adc = 1e-3 + 1e-3 * np.exp(-((x - 20) ** 2 + (y - 18) ** 2 + (z - 12) ** 2) / 40)
    lesion = ((x - 20) ** 2 + (y - 18) ** 2 + (z - 12) ** 2 <= 25).astype(np.int32)
    out = [np.roll(a, shift, axis=0) for a in (anat, adc, lesion)]
    if noise:
        out[1] = out[1] + np.random.default_rng(seed).normal(0, noise, adc.shape)
    return tuple(out)


def _visit(vid: str, shift: int = 0, noise: float = 0.0, seed: int = 0, days: int = 0) -> _Visit:
    anat, adc, lab = _phantom(shift, noise, seed)
    return _Visit(
        vid,
        days,
        Volume(anat.astype(np.float32), AFFINE),
        Volume(lab, AFFINE),
        {"adc.ADC": Volume(adc.astype(np.float32), AFFINE)},
        {"adc.ADC": "mm²/s"},
        {"L1": 1},
    )


def test_registration_removes_a_shift_before_the_fdm() -> None:
    base, fu = _visit("01"), _visit("02", shift=3)
    moved, lab, how = _onto(base, fu, "adc.ADC", {})
    assert how.startswith("registered")
    inside = (base.labels.data > 0) & (lab > 0)  # type: ignore[union-attr]
    assert inside.sum() > 0.9 * (base.labels.data > 0).sum()  # type: ignore[union-attr]
    rc = 0.1e-3
    rm = parametric_response_map(base.maps["adc.ADC"].data, moved, inside, threshold=rc)
    assert rm.fractions["ADC unchanged"] > 0.97
    # the same maps without registration: the shifted lesion looks changed
    raw = parametric_response_map(
        base.maps["adc.ADC"].data,
        fu.maps["adc.ADC"].data,
        base.labels.data > 0,
        threshold=rc,  # type: ignore[union-attr]
    )
    assert raw.fractions["ADC unchanged"] < 0.8


def test_threshold_from_test_retest_visits() -> None:
    sigma = 0.05e-3
    visits = {
        "00": _visit("00", noise=sigma, seed=1, days=-5),
        "01": _visit("01", noise=sigma, seed=2, days=0),
        "02": _visit("02", shift=2, days=42),
    }

    class Subj(list):  # type: ignore[type-arg]
        baseline = SimpleNamespace(id="01")

    s = Subj(
        [
            SimpleNamespace(id="00", prebaseline=True, days_on_treatment=-5),
            SimpleNamespace(id="01", prebaseline=False, days_on_treatment=0),
            SimpleNamespace(id="02", prebaseline=False, days_on_treatment=42),
        ]
    )
    notes: list[str] = []
    thr = _thresholds(s, visits, ["adc.ADC"], notes, {})
    rc, source = thr["adc.ADC"]
    assert "test–retest visits 00 and 01" in source
    # independent noise σ at both visits: wSD = σ, RC = 2.77 σ (sampling error ~ 1/√n)
    assert rc == pytest.approx(1.959964 * np.sqrt(2) * sigma, rel=0.15)
    # retest too far apart (> 7 days): the published value, with its source
    s[0].days_on_treatment = -30
    visits["00"].days = -30
    thr = _thresholds(s, visits, ["adc.ADC"], notes, {})
    assert thr["adc.ADC"][0] == PUBLISHED_RC["ADC"][0]
    assert "Moffat" in thr["adc.ADC"][1]
    # no published value for Ktrans: no map, and the reason is noted
    assert "extended_tofts.Ktrans" not in _thresholds(
        s, visits, ["extended_tofts.Ktrans"], notes, {}
    )
    assert any("Ktrans" in n and "no published" in n for n in notes)
