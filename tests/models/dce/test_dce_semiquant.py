"""Semi-quantitative DCE measures on curves whose answers are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import DataError, ProtocolError
from tumorscope.models import aif
from tumorscope.models.dce import CURVE_TYPES, semi_quantitative
from tumorscope.models.dce import kinetics as kin

T = np.arange(0.0, 400.0, 5.0)


def _ramp(slope: float, arrival: float, plateau_from: float, late_slope: float) -> np.ndarray:
    """Piecewise-linear: 0 until arrival, rise, then a straight line after plateau_from."""
    peak = slope * (plateau_from - arrival)
    c = np.where(T < arrival, 0.0, slope * (T - arrival))
    return np.where(T > plateau_from, peak + late_slope * (T - plateau_from), c)


def test_known_values_of_a_piecewise_linear_curve() -> None:
    c = _ramp(0.02, 50.0, 100.0, -0.001)  # peak 1 mM at 100 s, slow washout
    out = semi_quantitative(c, T, n_baseline=5, arrival_s=50.0)
    # iAUC60: rise over 50 s (area 25) + 10 s from 1.0 down to 0.99 (area 9.95)
    assert out["iAUC60"] == pytest.approx(25.0 + 9.95, rel=1e-6)
    assert out["iAUC90"] == pytest.approx(25.0 + 40 * (1.0 + 0.96) / 2, rel=1e-6)
    assert out["TTP"] == pytest.approx(50.0)
    assert out["max_enhancement"] == pytest.approx(1.0)
    assert out["wash_in"] == pytest.approx(0.02)
    assert out["wash_out"] == pytest.approx(-0.001, rel=1e-6)
    # late 0.705 vs early peak 1.0: -29.5% -> washout
    assert CURVE_TYPES[int(out["curve_type"])] == "washout"


def test_arrival_estimated_from_onset() -> None:
    c = _ramp(0.02, 52.0, 100.0, 0.0)
    out = semi_quantitative(c, T, n_baseline=5)
    # 10% of the peak (0.096 mM) is reached 4.8 s after the onset, found by interpolation
    assert out["arrival"] == pytest.approx(52.0 + 4.8, abs=1e-6)


@pytest.mark.parametrize(
    ("late_slope", "kind"),
    [(0.002, "persistent"), (0.0, "plateau"), (-0.0002, "plateau"), (-0.002, "washout")],
)
def test_curve_types(late_slope: float, kind: str) -> None:
    c = _ramp(0.02, 50.0, 100.0, late_slope)
    out = semi_quantitative(c, T, n_baseline=5, arrival_s=50.0)
    assert CURVE_TYPES[int(out["curve_type"])] == kind


def test_maps_keep_spatial_shape_and_non_enhancing_voxels() -> None:
    t = np.arange(0.0, 300.0, 3.0)
    cp = aif.parker(t, delay_s=20.0) / 0.58
    p = np.array([[[0.3, 0.3, 0.02], [0.05, 0.5, 0.0]], [[0.0, 0.5, 0.0], [0.2, 0.2, 0.1]]])
    c = kin.extended_tofts(p, t, cp)
    c[1, 0] = 0.0  # no enhancement
    c[1, 1, 7] = np.nan
    out = semi_quantitative(c, t, n_baseline=5)
    for name, arr in out.items():
        assert arr.shape == (2, 2), name
    assert out["curve_type"].dtype == np.uint8
    assert out["curve_type"][1, 0] == 0 and np.isnan(out["iAUC60"][1, 0])
    assert out["curve_type"][1, 1] == 0 and np.isnan(out["TTP"][1, 1])
    # higher Ktrans, higher iAUC
    assert out["iAUC60"][0, 0] > out["iAUC60"][0, 1] > 0


def test_iauc_window_beyond_acquisition_is_nan() -> None:
    c = _ramp(0.02, 50.0, 100.0, 0.0)
    out = semi_quantitative(c, T, n_baseline=5, arrival_s=320.0)
    assert np.isnan(out["iAUC90"]) and np.isfinite(out["iAUC60"])


def test_relative_enhancement_of_signal() -> None:
    s = 100.0 + 50.0 * _ramp(0.02, 50.0, 100.0, 0.0)
    out = semi_quantitative(s, T, n_baseline=5, relative=True, arrival_s=50.0)
    assert out["max_enhancement"] == pytest.approx(0.5)


def test_bad_input() -> None:
    c = np.zeros(T.size)
    with pytest.raises(ProtocolError, match="n_baseline"):
        semi_quantitative(c, T, n_baseline=0)
    with pytest.raises(ProtocolError, match="times_s"):
        semi_quantitative(c, T[::-1], n_baseline=3)
    with pytest.raises(DataError, match="frames"):
        semi_quantitative(c[:-1], T, n_baseline=3)


def test_float32_curves_give_the_maps_of_their_float64_values() -> None:
    """float32 curves (the DCE stage's concentration) are converted block by block, not as a
    whole float64 copy: same maps as the same values in float64."""
    t = np.arange(0.0, 300.0, 3.0)
    cp = aif.parker(t, delay_s=20.0) / 0.58
    rng = np.random.default_rng(9)
    p = np.column_stack(
        [rng.uniform(0.05, 0.5, 50), rng.uniform(0.1, 0.6, 50), rng.uniform(0.0, 0.1, 50)]
    )
    c32 = kin.extended_tofts(p, t, cp).astype(np.float32).reshape(5, 10, -1)
    a = semi_quantitative(c32, t, n_baseline=5)
    b = semi_quantitative(c32.astype(np.float64), t, n_baseline=5)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with pytest.raises(DataError, match="numeric"):
        semi_quantitative(np.full((2, t.size), "x"), t, n_baseline=5)
