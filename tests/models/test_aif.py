"""Arterial input functions: population curves, delay, hematocrit, CSV loading, automatic AIF.

(Agreement of the population curves with the OSIPI reference is in
``test_dce_reference.py``.)
"""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import DataError, FitError, ProtocolError
from tumorscope.models import aif
from tumorscope.models.dce import kinetics as kin

T = np.arange(0.0, 400.0, 2.0)


@pytest.mark.parametrize("func", [aif.parker, aif.georgiou, aif.mcgrath])
def test_delay_shifts_the_curve_and_zero_before(func) -> None:
    base = func(T)
    delayed = func(T, delay_s=12.0)
    np.testing.assert_allclose(delayed[6:], base[:-6], rtol=1e-12, atol=1e-12)
    assert np.all(delayed[T < 12.0] == 0.0)
    assert np.all(base >= 0) and base.max() > 4.0  # mM, whole blood


def test_peak_values_in_mM() -> None:
    assert aif.parker(np.array([0.17046 * 60]))[0] == pytest.approx(6.07, abs=0.05)
    assert aif.mcgrath(np.array([7.0]))[0] == pytest.approx(5.21)
    assert aif.georgiou(np.arange(0.0, 300.0, 0.1)).max() == pytest.approx(8.65, abs=0.01)


def test_georgiou_continues_smoothly_after_its_table() -> None:
    t = np.arange(290.0, 600.0, 0.5)
    c = aif.georgiou(t)
    assert np.all(np.diff(c[t >= 300.0]) < 0)  # washes out
    assert np.max(np.abs(np.diff(c))) < 0.01  # no jump at 300 s


def test_hematocrit_round_trip_and_range() -> None:
    cb = aif.parker(T)
    cp = aif.blood_to_plasma(cb, hematocrit=0.42)
    np.testing.assert_allclose(cp, cb / 0.58)
    np.testing.assert_allclose(aif.plasma_to_blood(cp, hematocrit=0.42), cb)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ProtocolError, match="hematocrit"):
            aif.blood_to_plasma(cb, hematocrit=bad)


def test_population_aif_by_name() -> None:
    np.testing.assert_array_equal(aif.population_aif("Parker", T), aif.parker(T))
    with pytest.raises(FitError, match="unknown population AIF 'fritz-hansen'"):
        aif.population_aif("fritz-hansen", T)  # type: ignore[arg-type]


def test_bad_times_and_delay() -> None:
    with pytest.raises(ProtocolError, match="times_s"):
        aif.parker(np.zeros((2, 2)))
    with pytest.raises(ProtocolError, match="delay_s"):
        aif.parker(T, delay_s=float("inf"))


def test_shift_matches_delayed_population_curve() -> None:
    np.testing.assert_allclose(aif.shift(T, aif.mcgrath(T), 4.0), aif.mcgrath(T, delay_s=4.0))
    with pytest.raises(DataError, match="curve"):
        aif.shift(T, np.ones(3), 1.0)


# ----------------------------------------------------------------------------- CSV
def test_load_aif_csv_variants(tmp_path) -> None:
    p = tmp_path / "aif.csv"
    p.write_text("time_s,cp_mM,note\n0,0,a\n2,1.5,b\n4,3.0,c\n")
    t, c = aif.load_aif_csv(p)
    np.testing.assert_array_equal(t, [0, 2, 4])
    np.testing.assert_array_equal(c, [0, 1.5, 3.0])
    q = tmp_path / "aif.tsv"
    q.write_text("\ufefftime_s\tsub-001\n0\t0\n1\t2\n2\t1\n")  # BOM, TSV, one other column
    t, c = aif.load_aif_csv(q)
    np.testing.assert_array_equal(c, [0, 2, 1])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("t,cp_mM\n0,0\n1,1\n2,2\n", "no column 'time_s'"),
        ("time_s,a,b\n0,0,0\n1,1,1\n2,2,2\n", "cannot tell which column"),
        ("time_s,cp_mM\n0,0\n1,x\n2,2\n", r"row 3: expected a number, got 'x'"),
        ("time_s,cp_mM\n0,0\n2,1\n1,2\n", "strictly increasing"),
        ("time_s,cp_mM\n0,0\n1,1\n", "at least 3 rows"),
    ],
)
def test_load_aif_csv_errors_name_file_and_field(tmp_path, text, match) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        aif.load_aif_csv(p)
    assert info.value.file == str(p)


def test_load_aif_csv_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        aif.load_aif_csv(tmp_path / "nope.csv")


def test_load_aif_csv_binary_file_or_folder(tmp_path) -> None:
    p = tmp_path / "binary.csv"
    p.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match="not a text table") as info:
        aif.load_aif_csv(p)
    assert info.value.file == str(p) and info.value.field == "aif"
    with pytest.raises(DataError, match="not a regular file but a folder") as info:
        aif.load_aif_csv(tmp_path)
    assert info.value.file == str(tmp_path)


# ----------------------------------------------------------------------------- automatic
def _phantom(rng: np.random.Generator):
    """12×12×2 volume: 4 pure artery voxels, 6 partial-volume artery voxels (30-60% blood,
    rest tissue), a delayed vein-like vessel (high but late), tissue elsewhere; 1% noise."""
    t = np.arange(0.0, 300.0, 2.0)
    cb = aif.parker(t, delay_s=10.0)
    cp = cb / 0.58
    shape = (12, 12, 2)
    n_vox = int(np.prod(shape))
    tissue_p = np.column_stack(
        [rng.uniform(0.05, 0.4, n_vox), rng.uniform(0.1, 0.5, n_vox), rng.uniform(0.0, 0.08, n_vox)]
    )
    curves = kin.extended_tofts(tissue_p, t, cp).reshape((*shape, t.size))
    artery = [(2, 3, 0), (2, 4, 0), (3, 3, 0), (3, 4, 1)]
    partial = [(8, 8, 0), (8, 9, 0), (9, 8, 1), (5, 5, 1), (6, 6, 0), (7, 2, 1)]
    for v in artery:
        curves[v] = cb
    for i, v in enumerate(partial):
        w = 0.3 + 0.05 * i
        curves[v] = w * cb + (1 - w) * curves[v]
    vein = [(10, 1, 0), (10, 2, 0)]
    for v in vein:
        curves[v] = 0.9 * aif.parker(t, delay_s=25.0)  # high but 15 s late
    curves += 0.01 * cb.max() * rng.standard_normal(curves.shape)
    return t, cb, curves, artery


def test_automatic_aif_picks_the_pure_artery_voxels(rng) -> None:
    t, cb, curves, artery = _phantom(rng)
    res = aif.automatic_aif(curves, t, n_voxels=4)
    chosen = {tuple(int(i) for i in v) for v in res.voxels}
    assert chosen == set(artery)
    assert res.voxels.shape == (4, 3) and res.curves.shape == (4, t.size)
    assert np.all(np.diff(res.scores) <= 0)
    # the mean of 4 voxels with 1% noise: within 2% of the peak everywhere
    np.testing.assert_allclose(res.concentration_mM, cb, atol=0.02 * cb.max())
    assert res.n_candidates >= 4
    assert set(res.criteria) == {
        "peak_percentile",
        "max_arrival_s",
        "max_tail_ratio",
        "n_voxels",
        "min_cnr",
    }


def test_automatic_aif_respects_mask_and_reports_failure(rng) -> None:
    t, _, curves, artery = _phantom(rng)
    mask = np.zeros(curves.shape[:3], bool)
    mask[6:, :, :] = True  # excludes the pure arteries
    res = aif.automatic_aif(curves, t, mask=mask, n_voxels=2)
    for v in res.voxels:
        assert mask[tuple(v)]
        assert tuple(int(i) for i in v) not in artery
    with pytest.raises(DataError, match="mask has shape"):
        aif.automatic_aif(curves, t, mask=np.ones((2, 2), bool))
    flat = np.zeros_like(curves)
    with pytest.raises(DataError, match="no voxel passed"):
        aif.automatic_aif(flat, t)
    with pytest.raises(DataError, match="frames"):
        aif.automatic_aif(curves[..., :-1], t)
    with pytest.raises(FitError, match="n_voxels"):
        aif.automatic_aif(curves, t, n_voxels=0)
