"""Per-lesion statistics of a map."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from tumorscope.errors import DataError, TumorscopeWarning
from tumorscope.lesions.stats import (
    STATS_COLUMNS,
    SUMMARY_STATISTICS,
    lesion_statistics,
    statistics_table,
)
from tumorscope.volume import Volume


def _as_dict(df):
    return dict(zip(df["statistic"], df["value"], strict=True))


@pytest.fixture
def lesion():
    rng = np.random.default_rng(11)
    values = rng.gamma(4.0, 2.5e-4, size=(12, 10, 6))
    mask = np.zeros(values.shape, bool)
    mask[2:10, 1:9, 1:5] = True
    return values, mask


def test_values_match_reference_implementations(lesion):
    values, mask = lesion
    df = lesion_statistics(values, mask, lesion_id="L1", visit="01", map_name="ADC")
    assert tuple(df.columns) == STATS_COLUMNS
    assert tuple(df["statistic"]) == SUMMARY_STATISTICS
    s = _as_dict(df)
    x = values[mask]
    assert s["n_voxels"] == s["n_valid"] == x.size and s["n_excluded"] == 0
    assert s["mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert s["median"] == pytest.approx(np.median(x), rel=1e-12)
    assert s["sd"] == pytest.approx(x.std(ddof=0), rel=1e-12)
    for p in (10, 25, 75, 90):
        assert s[f"p{p}"] == pytest.approx(np.percentile(x, p), rel=1e-12)
    assert s["min"] == x.min() and s["max"] == x.max()
    assert s["skewness"] == pytest.approx(sps.skew(x, bias=True), rel=1e-9)
    assert s["kurtosis"] == pytest.approx(sps.kurtosis(x, fisher=True, bias=True), rel=1e-9)
    units = dict(zip(df["statistic"], df["unit"], strict=True))
    assert units["mean"] == "mm2/s" and units["n_voxels"] == "voxels" and units["entropy"] == "bit"
    assert set(df["lesion_id"]) == {"L1"} and set(df["visit"]) == {"01"}
    assert (df["note"] == "").all()


def test_entropy_of_equally_populated_levels():
    # four equally frequent values spread over the 32 bins -> 2 bits exactly
    values = np.repeat([1.0, 2.0, 3.0, 4.0], 25).reshape(10, 10, 1)
    s = _as_dict(lesion_statistics(values, np.ones_like(values, bool)))
    assert s["entropy"] == pytest.approx(2.0)
    # all in two levels with 1:3 frequencies
    values = np.array([0.0] * 10 + [1.0] * 30).reshape(4, 10, 1)
    s = _as_dict(lesion_statistics(values, np.ones_like(values, bool), entropy_bins=8))
    assert s["entropy"] == pytest.approx(-(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75)))


def test_failed_fits_and_nan_are_excluded_and_counted(lesion):
    values, mask = lesion
    values = values.copy()
    status = np.zeros(values.shape, np.int8)
    idx = np.argwhere(mask)
    values[tuple(idx[:5].T)] = np.nan
    status[tuple(idx[5:12].T)] = 2  # e.g. at bound
    values[tuple(idx[5:12].T)] = 1.0  # absurd values that must not enter the statistics
    s = _as_dict(lesion_statistics(values, mask, status=status))
    assert s["n_excluded"] == 12 and s["n_valid"] == mask.sum() - 12
    keep = mask.copy()
    keep[tuple(idx[:12].T)] = False
    assert s["mean"] == pytest.approx(values[keep].mean(), rel=1e-12)
    assert s["max"] < 1.0
    # string statuses
    st = np.where(status == 0, "converged", "max-iterations")
    s2 = _as_dict(lesion_statistics(values, mask, status=st))
    assert s2["mean"] == s["mean"]


def test_all_nan_lesion_gives_nan_rows_with_a_reason(lesion):
    values, mask = lesion
    values = np.where(mask, np.nan, values)
    with pytest.warns(TumorscopeWarning, match="lesion L2, visit 03, map Ktrans"):
        df = lesion_statistics(values, mask, lesion_id="L2", visit="03", map_name="Ktrans")
    s = _as_dict(df)
    assert s["n_valid"] == 0 and s["n_excluded"] == mask.sum()
    assert np.isnan(s["mean"]) and np.isnan(s["entropy"])
    notes = df.set_index("statistic")["note"]
    assert "all 256 lesion voxels excluded" in notes["mean"]
    assert notes["n_voxels"] == ""
    with pytest.raises(DataError, match=r"map Ktrans.*all 256 lesion voxels excluded"):
        lesion_statistics(values, mask, lesion_id="L2", visit="03", map_name="Ktrans", strict=True)


def test_empty_mask_is_an_error(lesion):
    values, mask = lesion
    with pytest.raises(DataError, match=r"lesion L9.*empty"):
        lesion_statistics(values, np.zeros_like(mask), lesion_id="L9")


def test_mask_on_another_grid_is_an_error(lesion):
    values, mask = lesion
    vmap = Volume(values.astype(np.float32), np.diag([1.0, 1.0, 3.0, 1.0]))
    other = Volume(mask.astype(np.uint8), np.diag([2.0, 2.0, 3.0, 1.0]), source="mask.nii.gz")
    with pytest.raises(DataError, match=r"differs from the map grid.*resample_mask"):
        lesion_statistics(vmap, other, lesion_id="L1")
    with pytest.raises(DataError, match="does not match the map shape"):
        lesion_statistics(values, mask[:, :, :3])


def test_histogram_rows(lesion):
    values, mask = lesion
    df = lesion_statistics(values, mask, histogram_bins=10)
    s = _as_dict(df)
    frac = [s[f"histogram_{i:02d}"] for i in range(10)]
    assert sum(frac) == pytest.approx(1.0)
    assert s["histogram_min"] == s["min"]
    assert s["histogram_bin_width"] == pytest.approx((s["max"] - s["min"]) / 10)


def test_table_over_lesions_and_maps(lesion):
    values, mask = lesion
    other = np.zeros_like(mask)
    other[0:2, 0:2, 0:2] = True
    df = statistics_table(
        {"ADC": values, "ve": values * 100}, {"L1": mask, "L2": other}, visit="02"
    )
    assert len(df) == 2 * 2 * len(SUMMARY_STATISTICS)
    wide = df.pivot_table(index=["lesion_id", "map"], columns="statistic", values="value")
    assert wide.loc[("L1", "ve"), "mean"] == pytest.approx(100 * wide.loc[("L1", "ADC"), "mean"])
    assert wide.loc[("L2", "ADC"), "n_voxels"] == 8


def test_table_is_the_per_lesion_statistics_bit_for_bit():
    """``statistics_table`` (each map's validity once, each lesion's voxels gathered by
    index) gives exactly the rows of :func:`lesion_statistics` per lesion and map, in order:
    overlapping masks, NaN values, per-map and shared status, a Fortran-ordered map (as
    NIfTI maps load), units given or defaulted, a lesion with every voxel excluded."""
    import warnings

    import pandas as pd

    from tumorscope.errors import TumorscopeWarning

    rng = np.random.default_rng(3)
    shape = (9, 8, 5)
    adc = rng.lognormal(-7, 0.3, shape)
    adc[rng.random(shape) < 0.05] = np.nan
    ktrans = np.asfortranarray(rng.gamma(2.0, 0.05, shape).astype(np.float32))
    st_adc = (rng.random(shape) < 0.1).astype(np.uint8) * 4
    st_k = np.zeros(shape, np.uint8)
    masks = {}
    for i, (a, b) in enumerate(((0, 5), (3, 9), (6, 8))):
        m = np.zeros(shape, bool)
        m[a:b, 1:6, 1:4] = True
        masks[f"L{i}"] = m
    dead = np.zeros(shape, bool)
    dead[0, 0, 0] = True
    adc[0, 0, 0] = np.nan
    masks["dead"] = dead
    maps = {"ADC": adc, "Ktrans": ktrans}
    for status in ({"ADC": st_adc, "Ktrans": st_k}, st_adc, None):
        for units in (None, {"ADC": "mm2/s"}):
            with warnings.catch_warnings(record=True) as got:
                warnings.simplefilter("always", TumorscopeWarning)
                table = statistics_table(maps, masks, visit="03", status=status, units=units)
            with warnings.catch_warnings(record=True) as want_w:
                warnings.simplefilter("always", TumorscopeWarning)
                want = pd.concat(
                    [
                        lesion_statistics(
                            maps[n],
                            m,
                            lesion_id=lid,
                            visit="03",
                            map_name=n,
                            unit=None if units is None else units.get(n),
                            status=status.get(n) if isinstance(status, dict) else status,
                        )
                        for lid, m in masks.items()
                        for n in maps
                    ],
                    ignore_index=True,
                )
            pd.testing.assert_frame_equal(table, want)
            assert [str(w.message) for w in got] == [str(w.message) for w in want_w]
            assert len(got) >= 1  # the dead lesion's ADC
    with pytest.raises(DataError, match="empty"):
        statistics_table(maps, {"L9": np.zeros(shape, bool)})
    with pytest.raises(DataError, match="does not match"):
        statistics_table(maps, {"L9": np.ones((2, 2, 2), bool)})
