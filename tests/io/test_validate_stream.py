"""validate_visit streams a series' image data instead of loading it as float32: the same
grids, the same non-finite counts and the same refusals as :meth:`Series.load`."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.io import open_study, validate_study
from tumorscope.io.study import MRS_SUFFIXES, _loaded_scan, _scan_series


def _series(study: Path, subject: str, visit: str, role: str) -> Any:
    return open_study(study).subjects[subject].visits[visit].series[role]


def test_streamed_scan_matches_the_loaded_series(tiny_study: Path) -> None:
    visit = open_study(tiny_study).subjects["001"].visits["01"]
    images = [s for s in visit.series.values() if s.suffix not in MRS_SUFFIXES]
    assert len(images) > 5
    for series in images:
        grid, n_bad = _scan_series(series)
        ref, ref_bad = _loaded_scan(series)
        assert grid.shape == ref.shape, series.role
        np.testing.assert_array_equal(grid.affine, ref.affine)
        assert n_bad == ref_bad


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_values_of_a_float_image_are_counted(study_copy: Path, dtype: Any) -> None:
    path = study_copy / "sub-001/ses-01/dwi/sub-001_ses-01_dwi.nii.gz"
    img: Any = nib.load(str(path))
    data = np.asarray(img.dataobj).astype(dtype)
    data[3, 4, 1, 2] = np.nan
    data[5, 6, 2, :] = np.inf
    if dtype == np.float64:
        data[1, 1, 1, 0] = 1e300  # finite as float64, inf once read as float32 (as load reads)
    nib.save(nib.Nifti1Image(data, img.affine), str(path))
    series = _series(study_copy, "001", "01", "dwi")
    expected = int(np.count_nonzero(~np.isfinite(series.load().data)))
    assert expected == 1 + data.shape[3] + (dtype == np.float64)
    assert _scan_series(series)[1] == expected
    warnings = [p for p in validate_study(study_copy) if p.file.endswith("01_dwi.nii.gz")]
    assert [(p.severity, p.field, p.message) for p in warnings] == [
        ("warning", "data", f"{expected} non-finite voxel value(s)")
    ]


def test_an_image_without_a_finite_value_is_an_error(study_copy: Path) -> None:
    """A few NaN are a warning (a scanner's masked voxels: the fits leave them out); an image
    with no finite value at all is an error naming it (sweep of 2026-12-06: validate and run
    exited 0 on an all-NaN T2w, and align then failed on "a constant image")."""
    path = study_copy / "sub-001/ses-01/anat/sub-001_ses-01_T2w.nii.gz"
    img: Any = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.full(img.shape, np.nan, np.float32), img.affine), str(path))
    found = [p for p in validate_study(study_copy) if p.file.endswith("01_T2w.nii.gz")]
    assert [(p.severity, p.field, p.message) for p in found] == [
        ("error", "data", "every voxel value is non-finite (NaN or inf)")
    ]


def test_a_corrupt_stream_is_refused_naming_the_file(study_copy: Path) -> None:
    """Damage inside the compressed image data (the header and the size trailer intact) is
    found only by decompressing every byte, as loading the series does."""
    path = study_copy / "sub-002/ses-01/perf/sub-002_ses-01_dce.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    # a stream of stored blocks (level 0): bytes in the middle are the image's own bytes;
    # replacing a block header there breaks the deflate stream itself
    packed = bytearray(gzip.compress(raw, compresslevel=0, mtime=0))
    mid = len(packed) // 2
    packed[mid : mid + 64] = b"\xff" * 64
    path.write_bytes(bytes(packed))
    series = _series(study_copy, "002", "01", "dce")
    with pytest.raises(DataError) as loaded:
        series.load()
    with pytest.raises(DataError) as scanned:
        _scan_series(series)
    assert "cannot read NIfTI image" in scanned.value.message
    assert scanned.value.file == loaded.value.file
    errs = [p for p in validate_study(study_copy) if p.severity == "error"]
    assert [e.file for e in errs] == ["sub-002/ses-01/perf/sub-002_ses-01_dce.nii.gz"]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_rescaled_image_is_loaded_whole(study_copy: Path) -> None:
    """Scale factors are left to the loader: a slope that overflows float32 is non-finite."""
    path = study_copy / "sub-001/ses-01/anat/sub-001_ses-01_T2w.nii.gz"
    img: Any = nib.load(str(path))
    out = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int16), img.affine)
    out.header.set_slope_inter(1e36, 0.0)
    nib.save(out, str(path))
    series = _series(study_copy, "001", "01", "anatomical")
    n = int(np.count_nonzero(~np.isfinite(series.load().data)))
    assert n > 0
    assert _scan_series(series)[1] == n


def test_scans_on_threads_find_the_same_problems_in_the_same_order(study_copy: Path) -> None:
    """``validate_visit(pool=...)`` (the register step reads a visit's images on the unit's
    threads): the problems of a visit with a corrupt series, a truncated one, non-finite
    values and a wrong volume count are those of the one-thread scan, in its order."""
    from concurrent.futures import ThreadPoolExecutor

    from tumorscope.io import validate_visit

    ses = study_copy / "sub-001/ses-01"
    dce = ses / "perf/sub-001_ses-01_dce.nii.gz"
    packed = bytearray(gzip.compress(gzip.decompress(dce.read_bytes()), 0, mtime=0))
    packed[len(packed) // 2 : len(packed) // 2 + 64] = b"\xff" * 64
    dce.write_bytes(bytes(packed))
    t2w = ses / "anat/sub-001_ses-01_T2w.nii.gz"
    t2w.write_bytes(t2w.read_bytes()[: t2w.stat().st_size // 2])
    dwi = ses / "dwi/sub-001_ses-01_dwi.nii.gz"
    img: Any = nib.load(str(dwi))
    data = np.asarray(img.dataobj).astype(np.float32)
    data[2, 2, 1, :] = np.nan
    nib.save(nib.Nifti1Image(data[..., :-1], img.affine), str(dwi))  # one volume short
    vfa = next(ses.glob("anat/*VFA.nii.gz"), None)
    if vfa is not None:
        img = nib.load(str(vfa))
        data = np.asarray(img.dataobj).astype(np.float32)
        data[1, 1, 1, 0] = np.inf
        nib.save(nib.Nifti1Image(data, img.affine), str(vfa))

    def problems(pool: Any) -> list[tuple[str, str, str, str]]:
        study = open_study(study_copy)
        visit = study.subjects["001"].visits["01"]
        found = validate_visit(study, visit, pool=pool)
        return [(p.severity, p.file, p.field, p.message) for p in found]

    alone = problems(None)
    with ThreadPoolExecutor(3) as pool:
        threaded = problems(pool)
    assert threaded == alone
    files = {f for s, f, _, _ in alone if s == "error"}
    assert {dce.name, t2w.name, dwi.name} <= {Path(f).name for f in files}
