"""Volume: geometry, no rescaling, NIfTI round trip, atomic writes, corrupt files."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.volume import Volume, atomic_write


def _oblique_affine() -> np.ndarray:
    th = np.deg2rad(20)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.8, 1.2, 3.0])
    aff[:3, 3] = [-10.0, 5.0, 2.5]
    return aff


def test_geometry() -> None:
    v = Volume(np.zeros((4, 5, 6), np.float32), _oblique_affine())
    np.testing.assert_allclose(v.voxel_sizes, (0.8, 1.2, 3.0))
    assert v.voxel_volume_ml == pytest.approx(0.8 * 1.2 * 3.0 / 1000)
    assert v.axes == ("x", "y", "z") and v.n_measurements == 1


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8, np.float64])
def test_nifti_round_trip_keeps_affine_dtype_values(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(1)
    data = (rng.random((5, 4, 3, 2)) * 100).astype(dtype)
    v = Volume(data, _oblique_affine(), ("x", "y", "z", "b"))
    p = v.to_nifti(tmp_path / "img.nii.gz")
    back = Volume.from_nifti(p, dtype=dtype)
    assert back.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, v.affine, atol=1e-5)
    default = Volume.from_nifti(p)
    assert default.data.dtype == np.float32  # float32 by default, values unchanged
    np.testing.assert_allclose(default.data, data.astype(np.float32))


def test_no_rescaling_of_intensities(tmp_path: Path) -> None:
    data = np.full((2, 2, 2), 30000, np.int16)
    Volume(data, np.eye(4)).to_nifti(tmp_path / "a.nii")
    assert float(Volume.from_nifti(tmp_path / "a.nii").data.max()) == 30000.0


def test_bad_construction() -> None:
    with pytest.raises(DataError, match="expected a 3-D or 4-D image"):
        Volume(np.zeros((3, 3)), np.eye(4))
    with pytest.raises(DataError, match="affine must be a finite 4x4 matrix"):
        Volume(np.zeros((3, 3, 3)), np.eye(3))
    with pytest.raises(DataError, match="singular"):
        Volume(np.zeros((3, 3, 3)), np.diag([1, 0, 1, 1]))
    with pytest.raises(DataError, match="2 axis names"):
        Volume(np.zeros((3, 3, 3)), np.eye(4), ("x", "y"))


def test_with_data_checks_grid() -> None:
    v = Volume(np.zeros((3, 3, 3), np.float32), np.eye(4))
    w = v.with_data(np.ones((3, 3, 3, 2), np.float32), axes=("x", "y", "z", "t"), units="s")
    assert w.axes[-1] == "t" and w.meta["units"] == "s" and v.meta == {}
    with pytest.raises(DataError, match="does not match grid"):
        v.with_data(np.zeros((2, 3, 3)))


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "img.nii.gz"
    Volume(np.random.default_rng(0).random((20, 20, 20)).astype(np.float32), np.eye(4)).to_nifti(p)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cannot read NIfTI image") as info:
        Volume.from_nifti(p)
    assert info.value.file == str(p)


def test_not_a_nifti(tmp_path: Path) -> None:
    p = tmp_path / "img.nii.gz"
    p.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(DataError, match="cannot read NIfTI image"):
        Volume.from_nifti(p)
    with pytest.raises(DataError, match="file not found"):
        Volume.from_nifti(tmp_path / "missing.nii.gz")


def test_label_dtype_rejects_fractional(tmp_path: Path) -> None:
    Volume(np.full((2, 2, 2), 1.5, np.float32), np.eye(4)).to_nifti(tmp_path / "l.nii.gz")
    with pytest.raises(DataError, match="non-integer"):
        Volume.from_nifti(tmp_path / "l.nii.gz", dtype=np.int32)


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    def boom(tmp: Path) -> None:
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "out.json", boom)
    assert list(tmp_path.iterdir()) == []


def test_int16_series_read_frame_by_frame_as_nibabel_reads_it(tmp_path: Path) -> None:
    """A compressed 4-D int16 series is read into float32 one frame at a time: the values and
    the (F) layout nibabel gives, with no whole int16 copy held beside the result."""
    import tracemalloc

    import nibabel as nib

    rng = np.random.default_rng(1)
    # large enough that the decompressor's own read buffer (a fixed 0.5 MiB with ISA-L, see
    # tumorscope._gzip) is small beside the image: the bound is about a copy of the image
    data = rng.integers(-2000, 30000, size=(96, 80, 12, 30)).astype(np.int16)
    p = tmp_path / "dce.nii.gz"
    Volume(data, _oblique_affine()).to_nifti(p)
    ref = np.asanyarray(nib.load(p).dataobj).astype(np.float32)  # nibabel, then the cast
    tracemalloc.start()
    try:
        got = Volume.from_nifti(p).data
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == np.float32 and got.flags.f_contiguous
    assert peak < got.nbytes * 1.2, peak / got.nbytes  # nibabel then the cast: 1.5×
    # scale factors are applied as nibabel applies them (that path is nibabel's own)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.0, -3.0)
    img.to_filename(tmp_path / "scaled.nii.gz")
    scaled = Volume.from_nifti(tmp_path / "scaled.nii.gz").data
    np.testing.assert_array_equal(scaled, data.astype(np.float32) * 2.0 - 3.0)
    # a cut stream still names the file
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(DataError, match=r"cannot read NIfTI image|truncated"):
        Volume.from_nifti(p)


@pytest.mark.parametrize(
    ("shape", "dtype", "order", "to"),
    [
        ((7, 5, 3), np.float32, "C", None),
        ((7, 5, 3), np.float32, "F", None),
        ((7, 5, 3), np.float64, "C", np.float32),
        ((7, 5, 3), np.float64, "F", None),
        ((7, 5, 3, 4), np.float32, "C", None),
        ((7, 5, 3, 4), np.float64, "F", np.float32),
        ((7, 5, 3, 4), np.int16, "C", None),
        ((7, 5, 3), np.float32, "C", np.uint8),
        ((7, 5, 3), np.bool_, "C", None),
        ((7, 5, 3), np.uint8, "F", None),
        ((1, 1, 1), np.float32, "C", None),
        ((9, 1, 4, 1), np.float64, "C", np.float32),
    ],
)
def test_gz_written_byte_for_byte_as_nibabel_writes_it(
    tmp_path: Path, shape: tuple[int, ...], dtype: type, order: str, to: type | None
) -> None:
    """``to_nifti``'s own ``.nii.gz`` writer (cached nibabel header + the data in Fortran
    order) makes the very file nibabel's image writer makes through the same gzip stream:
    the same compressed bytes, for C, Fortran and strided arrays, casts, NaN, inf and values
    beyond float32 (nibabel's ``Nifti1Image.to_stream`` is the peer)."""
    import warnings as _w

    from tumorscope import _gzip
    from tumorscope.volume import _nifti_image

    rng = np.random.default_rng(3)
    raw = rng.normal(scale=50.0, size=shape)
    if dtype == np.bool_:
        data = raw > 0
    elif np.dtype(dtype).kind in "iu" or to == np.uint8:
        data = (np.abs(raw) % 200).astype(dtype)
    else:
        data = raw.astype(dtype)
        if data.size >= 3:  # NaN, inf and (float64) a value beyond float32: inf once cast
            data.flat[:3] = [np.nan, np.inf, 1e300 if dtype == np.float64 else -np.inf]
    data = np.asfortranarray(data) if order == "F" else np.ascontiguousarray(data)
    aff = _oblique_affine()
    views = [data, data[::-1]] if data.shape[0] > 1 else [data]  # and a strided view
    for k, arr in enumerate(views):
        new = tmp_path / f"new{k}.nii.gz"
        with _w.catch_warnings():
            _w.simplefilter("ignore", RuntimeWarning)  # 1e300 -> float32 overflows to inf
            Volume(arr, aff).to_nifti(new, dtype=to)
            conv = arr
            target = arr.dtype if to is None else np.dtype(to)
            lazy = target != arr.dtype and target.kind == "f" and arr.dtype.kind == "f"
            if target != arr.dtype and not lazy:
                conv = arr.astype(target)
            if conv.dtype == np.bool_:
                conv = conv.astype(np.uint8)
            img = _nifti_image(conv, target if lazy else conv.dtype, aff)
            ref = tmp_path / f"ref{k}.nii.gz"
            with _gzip.open_write(ref) as fh:
                img.to_stream(fh)
        assert new.read_bytes() == ref.read_bytes(), (shape, dtype, order, to, k)


def test_plain_reader_fixes_the_header_as_nibabel_does(tmp_path: Path) -> None:
    """Headers other writers make — ``pixdim[0]`` (qfac) 0, a negative voxel size, only a
    qform, ``vox_offset`` 0 — give the affine and data nibabel's image reader gives (the
    peer: ``nibabel.load``), through the direct reader as through nibabel's."""
    import nibabel as nib

    from tumorscope import _gzip

    rng = np.random.default_rng(2)
    data = rng.normal(size=(6, 5, 4)).astype(np.float32)
    cases = {"qfac0": {"pixdim0": 0.0}, "negative": {"pixdim2": -2.0}, "offset0": {"off": 0}}
    for name, change in cases.items():
        img = nib.Nifti1Image(data, _oblique_affine())
        img.set_sform(None, code=0)
        img.set_qform(_oblique_affine(), code=1)
        p = tmp_path / f"{name}.nii.gz"
        with _gzip.open_write(p) as fh:
            img.to_stream(fh)
        with _gzip.open_read(p) as fh:
            raw = bytearray(fh.read())
        hdr = np.frombuffer(raw[:348], dtype=img.header.structarr.dtype).copy()
        if "pixdim0" in change:
            hdr["pixdim"][0][0] = change["pixdim0"]
        if "pixdim2" in change:
            hdr["pixdim"][0][2] = change["pixdim2"]
        if "off" in change:
            hdr["vox_offset"] = change["off"]
        raw[:348] = hdr.tobytes()
        with _gzip.open_write(p) as fh:
            fh.write(bytes(raw))
        ref = nib.load(p)
        got = Volume.from_nifti(p)
        np.testing.assert_array_equal(got.data, np.asanyarray(ref.dataobj))
        np.testing.assert_array_equal(got.affine, ref.affine)


@pytest.mark.parametrize(
    ("name", "stored", "shape", "slope"),
    [
        ("a.nii.gz", np.int16, (5, 4, 3, 6), None),  # streamed frame by frame
        ("b.nii.gz", np.float32, (5, 4, 3, 2), None),  # streamed
        ("c.nii.gz", np.int16, (5, 4, 3, 3), 2.5),  # scale factors: read whole
        ("d.nii", np.uint8, (5, 4, 3, 2), None),  # not compressed: read whole
        ("e.nii.gz", np.float32, (5, 4, 3), None),  # 3-D: its own frame
    ],
)
def test_frames_from_nifti_are_the_loaded_frames(
    tmp_path: Path, name: str, stored: Any, shape: tuple[int, ...], slope: float | None
) -> None:
    """``Volume.frames_from_nifti`` (align reads series one frame at a time) yields exactly
    ``Volume.from_nifti(p).frame(k)``: values, dtype, order, affine."""
    rng = np.random.default_rng(3)
    data = (rng.random(shape) * 100).astype(stored)
    if data.dtype.kind == "f":
        data.flat[7] = np.nan
    affine = np.diag([1.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = [4.0, -5.0, 6.0]
    img = nib.Nifti1Image(data, affine)
    if slope is not None:
        img.header.set_slope_inter(slope, 1.0)
    p = tmp_path / name
    nib.save(img, str(p))
    whole = Volume.from_nifti(p)
    frames = list(Volume.frames_from_nifti(p))
    expected = [whole] if whole.data.ndim == 3 else [whole.frame(k) for k in range(shape[3])]
    assert len(frames) == len(expected)
    for got, want in zip(frames, expected, strict=True):
        assert got.data.dtype == np.float32 and got.data.shape == want.data.shape
        np.testing.assert_array_equal(got.data, want.data)
        np.testing.assert_array_equal(got.affine, want.affine)
        assert got.source == want.source


def test_frames_from_nifti_refuse_a_corrupt_or_short_stream(tmp_path: Path) -> None:
    p = tmp_path / "s.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4, 5), np.int16), np.eye(4)), str(p))
    raw = gzip.decompress(p.read_bytes())
    bad = bytearray(gzip.compress(raw, 0, mtime=0))
    bad[len(bad) // 2 : len(bad) // 2 + 64] = b"\xff" * 64
    p.write_bytes(bytes(bad))
    with pytest.raises(DataError, match="cannot read NIfTI image") as err:
        list(Volume.frames_from_nifti(p))
    assert Path(str(err.value.file)) == p
    short = tmp_path / "t.nii.gz"  # refused from its header, as from_nifti refuses it
    short.write_bytes(gzip.compress(raw[: len(raw) - 100], mtime=0))
    with pytest.raises(DataError, match="truncated; the header declares") as err:
        next(Volume.frames_from_nifti(short))
    assert Path(str(err.value.file)) == short
    with pytest.raises(DataError, match="not found"):
        list(Volume.frames_from_nifti(tmp_path / "missing.nii.gz"))


@pytest.mark.parametrize("name", ["c.nii.gz", "c.nii"])
def test_a_complex_image_is_refused_where_real_values_are_read(tmp_path: Path, name: str) -> None:
    """Read as float32 the imaginary part was dropped with a ComplexWarning only."""
    data = (np.arange(24, dtype=np.float32) * (1 + 1j)).astype(np.complex64).reshape(2, 3, 2, 2)
    p = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4)), p)
    for read in (lambda: Volume.from_nifti(p), lambda: list(Volume.frames_from_nifti(p))):
        with pytest.raises(DataError, match=r"complex values \(complex64\); a magnitude") as e:
            read()
        assert (e.value.file, e.value.field) == (str(p), "datatype")
    assert np.array_equal(Volume.from_nifti(p, dtype=np.complex64).data, data)  # asked for
