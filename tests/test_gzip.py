"""The gzip streams of the images (``tumorscope._gzip``): deterministic, and readable by the
standard library and nibabel (independent readers), as theirs are by ours."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorscope import _gzip
from tumorscope.volume import Volume


def test_written_stream_is_deterministic_and_nameless(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((20, 10, 5)).astype(np.float32)
    for name in ("a.nii.gz", "b.nii.gz"):
        Volume(data, np.eye(4)).to_nifti(tmp_path / name)
    a, b = (tmp_path / "a.nii.gz").read_bytes(), (tmp_path / "b.nii.gz").read_bytes()
    assert a == b  # no file name (the temporary one differs), zero mtime
    assert a[:2] == b"\x1f\x8b" and a[4:8] == b"\0\0\0\0" and not a[3] & 0x08  # FNAME unset
    # the standard library and nibabel read it
    img = nib.Nifti1Image.from_bytes(gzip.decompress(a))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    np.testing.assert_array_equal(nib.load(tmp_path / "a.nii.gz").get_fdata(), data)
    assert _gzip.compress(b"xyz" * 1000) == _gzip.compress(b"xyz" * 1000)
    assert gzip.decompress(_gzip.compress(b"xyz" * 1000)) == b"xyz" * 1000


def test_reads_what_nibabel_and_zlib_wrote(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6 * 3, dtype=np.int16).reshape(4, 5, 6, 3)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "n.nii.gz")  # nibabel's zlib stream
    got = Volume.from_nifti(tmp_path / "n.nii.gz")
    np.testing.assert_array_equal(got.data, data.astype(np.float32))
    with _gzip.open_read(tmp_path / "n.nii.gz") as fh:
        assert fh.read() == gzip.decompress((tmp_path / "n.nii.gz").read_bytes())


def test_writer_closes_its_file(tmp_path: Path) -> None:
    fh = _gzip.open_write(tmp_path / "x.gz")
    fh.write(b"hello")
    fh.close()
    fh.close()  # twice is harmless
    assert fh.closed
    assert gzip.decompress((tmp_path / "x.gz").read_bytes()) == b"hello"


def test_zlib_fallback_reads_and_writes_the_same_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without isal the standard library's gzip is used: the same NIfTI bytes, readable by
    either back-end."""
    data = np.random.default_rng(2).random((6, 5, 4, 3)).astype(np.float32)
    Volume(data, np.eye(4)).to_nifti(tmp_path / "fast.nii.gz")
    monkeypatch.setattr(_gzip, "_igzip", None)
    Volume(data, np.eye(4)).to_nifti(tmp_path / "zlib.nii.gz")
    fast, slow = (tmp_path / "fast.nii.gz").read_bytes(), (tmp_path / "zlib.nii.gz").read_bytes()
    assert gzip.decompress(fast) == gzip.decompress(slow)
    assert slow[4:8] == b"\0\0\0\0" and not slow[3] & 0x08  # zero mtime, no file name
    assert slow != fast  # another compressor wrote it
    for name in ("fast.nii.gz", "zlib.nii.gz"):
        np.testing.assert_array_equal(Volume.from_nifti(tmp_path / name).data, data)
    assert gzip.decompress(_gzip.compress(b"abc")) == b"abc"


def test_the_file_depends_on_the_bytes_only(tmp_path: Path) -> None:
    """The same bytes written in other pieces, and the same map from a C- and a
    Fortran-ordered array (nibabel writes them in other slabs), give the same file: ISA-L's
    output depends on how its input is cut, the writer re-blocks it."""
    payload = np.random.default_rng(3).random(700_000).astype(np.float32).tobytes()
    files = []
    for k, piece in enumerate((len(payload), 1 << 20, 100_003, 4096)):
        p = tmp_path / f"x{k}.gz"
        with _gzip.open_write(p) as fh:
            for i in range(0, len(payload), piece):
                fh.write(payload[i : i + piece])
        files.append(p.read_bytes())
    assert len(set(files)) == 1 and gzip.decompress(files[0]) == payload
    data = np.random.default_rng(4).random((40, 30, 20, 6)).astype(np.float32)
    Volume(np.ascontiguousarray(data), np.eye(4)).to_nifti(tmp_path / "c.nii.gz")
    Volume(np.asfortranarray(data), np.eye(4)).to_nifti(tmp_path / "f.nii.gz")
    assert (tmp_path / "c.nii.gz").read_bytes() == (tmp_path / "f.nii.gz").read_bytes()
    with _gzip.open_write(tmp_path / "s.gz") as fh:  # forward seek: zeros
        fh.write(b"ab")
        fh.seek(10)
        fh.write(b"c")
        assert fh.tell() == 11
    assert gzip.decompress((tmp_path / "s.gz").read_bytes()) == b"ab" + bytes(8) + b"c"


def test_reads_real_scanner_conversions_as_nibabel_does() -> None:
    """The real scanner series converted by dcm2niix (vendored from ../shared/dicom-real with
    its licence: Siemens mosaic EPI, GE/NIH EPI, the transfer-syntax set) read through our
    gzip back-end give nibabel's values and affine, every volume."""
    root = Path(__file__).parent / "data" / "dicom-real"
    refs = sorted(root.glob("*/Ref/*.nii.gz"))
    assert len(refs) >= 3
    for p in refs:
        img = nib.load(p)
        want = np.asanyarray(img.dataobj).astype(np.float32)
        got = Volume.from_nifti(p)
        while want.ndim > got.data.ndim and want.shape[-1] == 1:
            want = want[..., 0]
        assert got.data.shape == want.shape, p.name
        np.testing.assert_array_equal(got.data, want, err_msg=p.name)
        np.testing.assert_allclose(got.affine, img.affine, atol=1e-6, err_msg=p.name)


def test_header_checks_kept_by_bytes_give_nibabels_affine_on_real_conversions() -> None:
    """The checked header layout is kept by the header's bytes (``volume._checked_layout``):
    on the vendored dcm2niix conversions of real scanner series, a second read (taken from
    what the first kept) still gives nibabel's values and affine, and each file's header
    was checked once."""
    from tumorscope import volume

    root = Path(__file__).parent / "data" / "dicom-real"
    refs = sorted(root.glob("*/Ref/*.nii.gz"))
    volume._checked_layout.cache_clear()
    for p in refs:
        img = nib.load(p)
        for _ in range(2):
            got = Volume.from_nifti(p)
            np.testing.assert_allclose(got.affine, img.affine, atol=1e-6, err_msg=p.name)
            want = np.asanyarray(img.dataobj).astype(np.float32).reshape(got.data.shape)
            np.testing.assert_array_equal(got.data, want, err_msg=p.name)
    info = volume._checked_layout.cache_info()
    distinct = len({volume._read_header(p).binaryblock for p in refs})
    assert info.misses == distinct
    assert info.hits == 2 * len(refs) - distinct


def test_frames_of_real_scanner_conversions_are_nibabels() -> None:
    """``Volume.frames_from_nifti`` (align reads series one frame at a time) on the vendored
    dcm2niix conversions of real scanner series: every frame is nibabel's, with its affine."""
    root = Path(__file__).parent / "data" / "dicom-real"
    refs = sorted(root.glob("*/Ref/*.nii.gz"))
    four_d = 0
    for p in refs:
        img = nib.load(p)
        want = np.asanyarray(img.dataobj).astype(np.float32)
        while want.ndim > 4 and want.shape[-1] == 1:
            want = want[..., 0]
        frames = list(Volume.frames_from_nifti(p))
        expected = [want] if want.ndim == 3 else [want[..., k] for k in range(want.shape[3])]
        assert len(frames) == len(expected), p.name
        four_d += want.ndim == 4
        for got, w in zip(frames, expected, strict=True):
            np.testing.assert_array_equal(got.data, w, err_msg=p.name)
            np.testing.assert_allclose(got.affine, img.affine, atol=1e-6, err_msg=p.name)
    assert four_d >= 2  # the multi-volume EPI series, streamed frame by frame
