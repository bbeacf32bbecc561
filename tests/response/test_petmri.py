"""Joint PET/MRI read-outs: ΔTLG + ΔADCmean (cut-off required), flare flag, metabolic
pseudoprogression."""

from __future__ import annotations

import pandas as pd
import pytest

from tumorscope.errors import ResponseError
from tumorscope.response import joint_pet_mri, metabolic_pseudoprogression, pet_flare

DATES = ["2026-01-05", "2026-01-19", "2026-02-16"]


def _table(values):
    """values: per visit, {lesion: (tlg, adc, sul_peak, diameter)}."""
    rows = []
    for i, les in enumerate(values):
        for lid, (tlg, adc, sul, d) in les.items():
            rows.append(
                dict(subject="1", visit=str(i + 1), date=DATES[i], lesion_id=lid, tlg41_g=tlg,
                     ADC_mean=adc, sul_peak=sul, diameter_mm=d)
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_joint_changes_are_percent_from_baseline_and_their_sum():
    t = _table([
        {"L1": (100.0, 1.0e-3, 8.0, 30.0), "L2": (50.0, 0.8e-3, 6.0, 20.0)},
        {"L1": (60.0, 1.2e-3, 5.0, 28.0), "L2": (30.0, 1.0e-3, 4.0, 19.0)},
    ])  # fmt: skip
    out = joint_pet_mri(t, cutoff_pct=0.0, favourable="below")
    f = out.iloc[1]
    assert f["delta_tlg_pct"] == pytest.approx(-40.0)  # 150 -> 90 g
    assert f["delta_adc_pct"] == pytest.approx(100 * (1.1e-3 - 0.9e-3) / 0.9e-3)
    assert f["joint_pct"] == pytest.approx(f["delta_tlg_pct"] + f["delta_adc_pct"])
    assert f["favourable"] is True  # -17.8 <= 0
    assert out.iloc[0]["favourable"] is None
    above = joint_pet_mri(t, cutoff_pct=0.0, favourable="above")
    assert above.iloc[1]["favourable"] is False


def test_joint_needs_its_cut_off():
    t = _table([{"L1": (1.0, 1e-3, 5.0, 10.0)}])
    with pytest.raises(TypeError):
        joint_pet_mri(t)  # type: ignore[call-arg]
    with pytest.raises(ResponseError, match="favourable"):
        joint_pet_mri(t, cutoff_pct=-20.0, favourable="left")  # type: ignore[arg-type]


def test_flare_needs_uptake_up_adc_up_and_stable_size():
    base = {"L1": (100.0, 1.0e-3, 8.0, 30.0)}
    flare = {"L1": (150.0, 1.1e-3, 11.0, 31.0)}  # uptake +37.5 %, ADC +10 %, size +3 %
    grown = {"L1": (150.0, 1.1e-3, 11.0, 40.0)}  # size +33 %: not stable
    adc_down = {"L1": (150.0, 0.9e-3, 11.0, 31.0)}
    out = pet_flare(_table([base, flare, grown]))
    assert out["flare"].tolist() == [None, True, False]
    assert "L1" in out["reason"].iloc[1]
    assert pet_flare(_table([base, adc_down]))["flare"].tolist() == [None, False]
    # ADC rise below a given repeatability does not count
    assert pet_flare(_table([base, flare]), adc_rise_pct=15.0)["flare"].tolist() == [None, False]


def test_metabolic_pseudoprogression_from_ipercist():
    a = pd.DataFrame({
        "subject": ["1"] * 3 + ["2"] * 3 + ["3"] * 2,
        "visit": ["1", "2", "3"] * 2 + ["1", "2"],
        "date": pd.to_datetime(DATES * 2 + DATES[:2]),
        "ipercist": ["baseline", "UPMD", "PMR", "baseline", "UPMD", "CPMD", "baseline", "UPMD"],
    })  # fmt: skip
    out = metabolic_pseudoprogression(a).set_index("subject")
    assert out.loc["1", "flag"] is True and out.loc["1", "visit"] == "2"
    assert out.loc["2", "flag"] is False
    assert out.loc["3", "flag"] is None
