"""The align step: series of a visit against its anatomical image, lesion masks that follow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tumorscope.errors import DataError
from tumorscope.io import open_study
from tumorscope.pipeline import run_study
from tumorscope.pipeline.align import align_visit, representative_frame
from tumorscope.study import default_url, open_store

STEPS = ("register", "align", "fit_dwi", "measure")
OPTIONS = {"dwi_models": ("adc",)}


def _table(out: Path, name: str) -> pd.DataFrame:
    store = open_store(default_url(out))
    try:
        return store.read_table(name)
    finally:
        store.close()


def _shift_dwi(study: Path, subject: str, visit: str, voxels: int) -> np.ndarray:
    """Move the DWI content of one visit by ``voxels`` along i (the patient moved)."""
    path = (
        study / f"sub-{subject}" / f"ses-{visit}" / "dwi" / f"sub-{subject}_ses-{visit}_dwi.nii.gz"
    )
    img: Any = nib.load(str(path))
    data = np.roll(np.asarray(img.dataobj), voxels, axis=0)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    return np.asarray(img.affine)[:3, 0] * voxels


def test_the_phantom_shows_no_motion(full_run: Any) -> None:
    a = _table(full_run.out_dir, "alignments")
    visits = _table(full_run.out_dir, "visits")
    assert set(zip(a.subject, a.visit, strict=True)) == set(
        zip(visits.subject, visits.visit, strict=True)
    )
    reg = a[a.status == "registered"]
    assert len(reg) > 0
    assert not a.applied.any()
    assert {"dwi", "dce", "t2star", "t1_vfa"} <= set(reg.series)
    # a registration either finds the series where it is (well inside the tolerance) or is
    # recorded as not matching better than no motion
    ok = reg.mean_displacement_mm < 0.25 * reg.tolerance_mm
    assert (ok | reg.reason.fillna("").str.contains("no motion")).all()
    assert ok.mean() > 0.9
    skipped = a[a.status == "skipped"]
    # no anatomical contrast to register: 19F, hyperpolarised 13C, spectroscopy, and the PET's
    # reference masks (drawn on the PET grid)
    assert skipped.series.str.startswith(("fluorine", "hp13c", "mrs", "pet_")).all()
    assert "pet" in set(reg.series)  # the PET itself is registered like any series


def test_a_moved_series_is_found_and_the_masks_follow_it(study2: Path, tmp_path: Path) -> None:
    ref = run_study(study2, tmp_path / "ref", steps=STEPS, options=OPTIONS, report=False)
    assert ref.ok, ref.failed
    shift = _shift_dwi(study2, "001", "02", 2)  # 8 mm
    moved = run_study(study2, tmp_path / "moved", steps=STEPS, options=OPTIONS, report=False)
    assert moved.ok, moved.failed
    blind = run_study(
        study2,
        tmp_path / "blind",
        steps=("register", "fit_dwi", "measure"),
        options=OPTIONS,
        report=False,
    )
    assert blind.ok, blind.failed

    a = _table(tmp_path / "moved", "alignments").set_index(["subject", "visit", "series"])
    row = a.loc[("001", "02", "dwi")]
    assert bool(row.applied)
    assert row.mean_displacement_mm == pytest.approx(float(np.linalg.norm(shift)), abs=1.0)
    translation = np.asarray(row.matrix)[:3, 3]
    np.testing.assert_allclose(translation, shift, atol=1.0)
    # the other visits and series did not move
    others = a.drop(index=("001", "02", "dwi"))
    assert not others.applied.any()

    def adc_means(out: Path) -> pd.Series:
        m = _table(out, "measurements")
        m = m[(m["map"] == "adc.ADC") & (m.statistic == "mean") & (m.subject == "001")]
        return m.set_index(["visit", "lesion_id"])["value"]

    r, mv, bl = (
        adc_means(tmp_path / "ref"),
        adc_means(tmp_path / "moved"),
        adc_means(tmp_path / "blind"),
    )
    at = r.index.get_level_values("visit") == "02"
    assert at.any()
    # with the masks moved along, the lesion ADC is that of the motionless study; with the
    # masks as drawn, it is taken partly from the wrong tissue
    err_aligned = np.abs(mv[at] / r[at] - 1)
    err_blind = np.abs(bl[at] / r[at] - 1)
    assert err_aligned.max() < 0.05
    assert err_blind.max() > 2 * err_aligned.max()
    # visits that did not move are measured exactly as before
    pd.testing.assert_series_equal(mv[~at], r[~at])


def test_align_visit_checks_its_tolerance(small_study: Path) -> None:
    visit = open_study(small_study).subjects["001"].visits["01"]
    with pytest.raises(DataError, match="tolerance"):
        align_visit(visit, tolerance_vox=0)


def test_representative_frame_is_the_brightest(small_study: Path) -> None:
    dwi = open_study(small_study).subjects["001"].visits["01"].series["dwi"].load()
    frame = representative_frame(dwi)
    means = np.nanmean(np.asarray(dwi.data, dtype=np.float64).reshape(-1, dwi.shape[-1]), axis=0)
    np.testing.assert_array_equal(frame.data, dwi.frame(int(np.argmax(means))).data)


def test_series_representative_frame_is_the_loaded_series_one(small_study: Path) -> None:
    """align reads each series one frame at a time: the frame, its values and affine are
    those of ``representative_frame(series.load())`` for every series of a visit."""
    from tumorscope.io.study import MRS_SUFFIXES
    from tumorscope.pipeline.align import series_representative_frame

    visit = open_study(small_study).subjects["001"].visits["01"]
    seen = 0
    for series in visit.series.values():
        if series.suffix in MRS_SUFFIXES:
            continue
        streamed = series_representative_frame(series)
        loaded = representative_frame(series.load())
        np.testing.assert_array_equal(streamed.data, loaded.data, err_msg=series.role)
        np.testing.assert_array_equal(streamed.affine, loaded.affine)
        assert streamed.data.shape == loaded.data.shape and streamed.data.dtype == np.float32
        seen += 1
    assert seen >= 8


def test_align_visit_is_the_same_on_any_number_of_threads(study2: Path) -> None:
    """The series of a visit are read and registered on a thread pool (longest first): the
    alignments, their order and every transform are those of one thread, bit for bit
    (serial and Dask runs compare their tables byte for byte), also with a moved series."""
    _shift_dwi(study2, "001", "02", 2)
    visit = open_study(study2).subjects["001"].visits["02"]
    one = align_visit(visit, threads=1)
    assert any(a.applied for a in one)  # the moved DWI: the metric check runs in the pool too
    for n in (2, 3):
        other = align_visit(visit, threads=n)
        assert [a.series for a in other] == [a.series for a in one]
        for a, b in zip(one, other, strict=True):
            assert a.row("001", "02") == b.row("001", "02")
            if a.matrix is not None:
                assert b.matrix is not None
                np.testing.assert_array_equal(a.matrix, b.matrix)


def test_the_frame_mean_counts_only_finite_voxels() -> None:
    """The mean of a frame's finite voxels: the all-finite shortcut (one float64 sum) and the
    masked path agree with numpy's nanmean; a frame without finite voxels ranks last."""
    from tumorscope.pipeline.align import _frame_mean

    rng = np.random.default_rng(0)
    f = rng.normal(100.0, 10.0, (8, 9, 5)).astype(np.float32)
    assert _frame_mean(f) == pytest.approx(float(np.mean(f, dtype=np.float64)), rel=1e-12)
    g = f.copy()
    g[0, 0, 0], g[1, 2, 3], g[2, 2, 2] = np.nan, np.inf, -np.inf
    expect = float(np.mean(g[np.isfinite(g)], dtype=np.float64))
    assert _frame_mean(g) == pytest.approx(expect, rel=1e-12)
    assert _frame_mean(np.full((2, 2, 2), np.nan, np.float32)) == -np.inf
