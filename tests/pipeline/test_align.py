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
from tumorscope.volume import Volume

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


def test_the_check_of_the_images_keeps_each_series_representative_frame_for_align(
    small_study: Path,
) -> None:
    """``register``'s check reads every series frame by frame and keeps the representative
    frame it finds: the very frame (values, affine, role, source) that reading the series
    again gives, taken once; a series changed since is read again."""
    import shutil

    from tumorscope import _frames as vol_mod
    from tumorscope.io.study import MRS_SUFFIXES, _scan_series
    from tumorscope.pipeline.align import series_representative_frame

    visit = open_study(small_study).subjects["001"].visits["01"]
    series = [
        s
        for s in visit.series.values()
        if s.suffix not in MRS_SUFFIXES and s.path.name.endswith(".gz")
    ]
    four_d = [s for s in series if s.load().data.ndim == 4]
    assert len(four_d) >= 5
    with vol_mod._KEPT_LOCK:
        vol_mod._KEPT.clear()
    for s in series:
        _scan_series(s)
    for s in four_d:
        kept = vol_mod.take_frame(s.path)
        assert kept is not None, s.role
        vol_mod.keep_frame(s.path, kept)  # (put back for align)
        fresh = representative_frame(s.load())
        np.testing.assert_array_equal(kept.data, fresh.data, err_msg=s.role)
        np.testing.assert_array_equal(kept.affine, fresh.affine)
        assert kept.data.dtype == np.float32 and kept.data.flags.f_contiguous
        assert kept.meta == {"role": s.role} and kept.source == str(s.path)
        assert kept.axes == ("x", "y", "z")
        # align takes it (no second read), and only once
        assert series_representative_frame(s) is kept
        assert vol_mod.take_frame(s.path) is None
    # a series rewritten after the check is read again, not taken from the check
    s = four_d[0]
    _scan_series(s)
    copy = s.path.with_name("copy.nii.gz")
    shutil.copy2(s.path, copy)
    copy.replace(s.path)  # same bytes, another file
    assert vol_mod.take_frame(s.path) is None
    with vol_mod._KEPT_LOCK:
        vol_mod._KEPT.clear()


def test_kept_frames_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tumorscope import _frames as vol_mod

    monkeypatch.setattr(vol_mod, "_KEPT", {})
    monkeypatch.setattr(vol_mod, "KEPT_FRAME_BYTES", 3 * 4000)
    paths = []
    for i in range(5):
        p = tmp_path / f"s{i}.nii.gz"
        p.write_bytes(b"x" * (i + 1))
        paths.append(p)
        vol_mod.keep_frame(p, Volume(np.zeros((10, 10, 10), np.float32), np.eye(4)))
    # the three newest are kept, the oldest dropped
    assert [vol_mod.take_frame(p) is not None for p in paths] == [False, False, True, True, True]


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
    from tumorscope._frames import frame_mean as _frame_mean

    rng = np.random.default_rng(0)
    f = rng.normal(100.0, 10.0, (8, 9, 5)).astype(np.float32)
    assert _frame_mean(f) == pytest.approx(float(np.mean(f, dtype=np.float64)), rel=1e-12)
    g = f.copy()
    g[0, 0, 0], g[1, 2, 3], g[2, 2, 2] = np.nan, np.inf, -np.inf
    expect = float(np.mean(g[np.isfinite(g)], dtype=np.float64))
    assert _frame_mean(g) == pytest.approx(expect, rel=1e-12)
    assert _frame_mean(np.full((2, 2, 2), np.nan, np.float32)) == -np.inf


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.int8, np.int32, np.float64])
def test_a_frame_measured_by_its_stored_integers_is_the_float32_one(dtype: Any) -> None:
    """``BrightestFrame.offer_stored``: the frame mean of small integers from their integer
    sum equals ``frame_mean`` of the float32 frame bit for bit (ties: the first)."""
    from tumorscope._frames import BrightestFrame, frame_mean

    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo, hi = (info.min, info.max) if info is not None else (-1e3, 1e3)
    frames = [rng.uniform(lo, hi, (17, 13, 11)).astype(dtype) for _ in range(6)]
    frames.insert(3, frames[1].copy())  # a tie: the first of the two wins
    a, b = BrightestFrame(), BrightestFrame()
    made = []
    for f in frames:
        as32 = f.astype(np.float32)
        a.offer(as32, as32)
        b.offer_stored(f, lambda as32=as32: made.append(1) or as32)
        if np.dtype(dtype).itemsize <= 2 and np.dtype(dtype).kind in "iu":
            exact = float(np.sum(f, dtype=np.int64)) / f.size
            assert exact == frame_mean(as32)
    assert a.frame is b.frame and a.mean == b.mean  # the same frame: the first of a tie
    if np.dtype(dtype).itemsize <= 2 and np.dtype(dtype).kind in "iu":
        assert len(made) < len(frames)  # only the brightest so far are made


_REAL = Path(__file__).resolve().parents[1] / "data" / "dicom-real"


@pytest.mark.parametrize(
    "rel",
    [
        "dcm_qa_mosaic/Ref/10_ep2d_Asc_HF.nii.gz",  # Siemens mosaic EPI, 6 volumes
        "dcm_qa_nih/Ref/DCM2NIIX_regression_test_4.nii.gz",  # GE EPI, 10 volumes
        "dcm_qa_nih/Ref/EPI_PE=AP_3.nii.gz",  # Siemens EPI, 2 volumes
    ],
)
def test_the_kept_frame_of_a_real_scanner_series_is_the_one_align_reads(
    rel: str, tmp_path: Path
) -> None:
    """Real scanner series (dcm2niix's reference conversions of its public validation sets,
    int16 as scanners store them; ``tests/data/dicom-real/README.md``): the frame the check
    of the images keeps is the brightest frame of the loaded series, found independently
    with numpy here, and the one align reads when nothing was kept."""
    import shutil

    from tumorscope import _frames
    from tumorscope.io.study import Series, _scan_series
    from tumorscope.pipeline.align import series_representative_frame

    path = tmp_path / "sub-001_ses-01_bold.nii.gz"
    shutil.copy(_REAL / rel, path)
    series = Series("bold", "bold", path, tmp_path)
    with _frames._KEPT_LOCK:
        _frames._KEPT.clear()
    grid, n_bad = _scan_series(series)
    assert n_bad == 0 and grid.data.ndim == 4
    kept = _frames.take_frame(path)
    assert kept is not None
    data = np.asarray(nib.load(path).dataobj, dtype=np.float64)  # independent of tumorscope
    means = data.reshape(-1, data.shape[-1], order="F").mean(axis=0)
    np.testing.assert_array_equal(kept.data, data[..., int(np.argmax(means))].astype(np.float32))
    np.testing.assert_allclose(kept.affine, nib.load(path).affine, atol=1e-5)
    read = series_representative_frame(series)  # nothing kept any more: read from the file
    assert read is not kept
    np.testing.assert_array_equal(read.data, kept.data)
    np.testing.assert_array_equal(read.affine, kept.affine)
