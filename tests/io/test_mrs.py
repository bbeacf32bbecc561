"""NIfTI-MRS reading and writing; bad spectra give errors naming the file.

Our writer's files are checked with the reference implementation's validator and reader
(the ``nifti-mrs`` package of the NIfTI-MRS standard's authors) when it is installed.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.io.mrs import read_nifti_mrs, require_water_reference, write_nifti_mrs

DWELL, F0 = 1 / 2000, 123.2


def _fid(n: int = 256) -> np.ndarray:
    t = np.arange(n) * DWELL
    return (np.exp((2j * np.pi * 50 - 10) * t)).reshape(1, 1, 1, n)


def test_round_trip_and_reference_validator(tmp_path) -> None:
    coils = np.stack([_fid() * (1 + k) for k in range(3)], axis=-1)
    path = write_nifti_mrs(
        tmp_path / "svs.nii.gz", coils, dwell_s=DWELL, frequency_mhz=F0, dim_tags=("DIM_COIL",)
    )
    got = read_nifti_mrs(path, nucleus="1H")
    assert got.dwell_s == pytest.approx(DWELL)
    assert got.frequency_mhz == pytest.approx(F0)
    assert got.axis("DIM_COIL") == 4 and got.data.shape == (1, 1, 1, 256, 3)
    np.testing.assert_allclose(got.data, coils, rtol=1e-6)
    ref = pytest.importorskip("nifti_mrs.nifti_mrs")
    img = ref.NIFTI_MRS(str(path))  # the reference reader validates on load
    assert img.dwelltime == pytest.approx(DWELL)
    assert img.spectrometer_frequency[0] == pytest.approx(F0)
    assert img.dim_tags[0] == "DIM_COIL"
    np.testing.assert_allclose(img[:], coils, rtol=1e-6)


def _broken(tmp_path, name, **kw):
    return write_nifti_mrs(
        tmp_path / name, kw.pop("data", _fid()), **{"dwell_s": DWELL, "frequency_mhz": F0, **kw}
    )


def test_bad_spectra_name_the_file(tmp_path) -> None:
    p = _broken(tmp_path, "slow.nii.gz", dwell_s=0.5)  # ms typed as s: 2 Hz spectral width
    with pytest.raises(DataError, match="spectral width") as e:
        read_nifti_mrs(p)
    assert "slow.nii.gz" in str(e.value) and e.value.field == "dwell_time"
    p = _broken(tmp_path, "sw.nii.gz", extra={"SpectralWidth": 4000.0})
    with pytest.raises(DataError, match="disagrees with SpectralWidth") as e:
        read_nifti_mrs(p)
    assert "sw.nii.gz" in str(e.value)
    data = _fid()
    data[0, 0, 0, 7] = np.nan
    p = _broken(tmp_path, "nan.nii.gz", data=data)
    with pytest.raises(DataError, match="NaN") as e:
        read_nifti_mrs(p)
    assert "nan.nii.gz" in str(e.value)
    plain = tmp_path / "plain.nii.gz"
    nib.save(nib.Nifti2Image(_fid().astype(np.complex64), np.eye(4)), str(plain))
    with pytest.raises(DataError, match="extension 44") as e:
        read_nifti_mrs(plain)
    assert "plain.nii.gz" in str(e.value)
    p = _broken(tmp_path, "c13.nii.gz", nucleus="13C")
    with pytest.raises(DataError, match="13C"):
        read_nifti_mrs(p, nucleus="1H")
    with pytest.raises(DataError, match="no water reference") as e:
        require_water_reference(None, for_file=tmp_path / "svs.nii.gz")
    assert "svs.nii.gz" in str(e.value)
    json.dumps({"ok": True})


def test_zero_real_valued_or_truncated_spectra_are_refused(tmp_path) -> None:
    p = _broken(tmp_path, "zero.nii.gz", data=np.zeros_like(_fid()))
    with pytest.raises(DataError, match="every point is zero") as e:
        read_nifti_mrs(p)
    assert e.value.file == str(p) and e.value.field == "data"
    p = _broken(tmp_path, "real.nii.gz", data=np.abs(_fid()).astype(np.complex64))
    with pytest.raises(DataError, match="real-valued") as e:
        read_nifti_mrs(p)
    assert e.value.file == str(p) and e.value.field == "datatype"
    p = _broken(tmp_path, "cut.nii.gz", data=np.tile(_fid(4096), (2, 2, 2, 1)))
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated") as e:
        read_nifti_mrs(p)
    assert e.value.file == str(p) and e.value.field == "data"


def test_spec2nii_is_asked_to_leave_identifiers_out(tmp_path, monkeypatch) -> None:
    """spec2nii copies the patient's name and birth date from vendor headers into the NIfTI-MRS
    header extension; tumorscope passes its ``--anon`` (a subcommand option in spec2nii 0.8)
    unless the user asks to keep identifiers. A stand-in ``spec2nii`` on PATH records its
    arguments (spec2nii itself is not installed here)."""
    import os

    from tumorscope.io.mrs import convert_with_spec2nii

    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "args.txt"
    exe = bindir / "spec2nii"
    exe.write_text(f'#!/bin/sh\necho "$@" > {log}\n')
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    convert_with_spec2nii(["rda", "in.rda"], tmp_path / "out")
    assert log.read_text().split() == ["rda", "in.rda", "-o", str(tmp_path / "out"), "--anon"]
    convert_with_spec2nii(["rda", "in.rda"], tmp_path / "out", keep_identifiers=True)
    assert "--anon" not in log.read_text().split()
