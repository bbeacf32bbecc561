"""The one writer of maps and sidecars, the JSON encoder and file hashes (``tumorscope.files``)."""

from __future__ import annotations

import enum
import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorscope.files import (
    file_sha256,
    json_default,
    read_sidecar,
    sidecar_of,
    to_json,
    write_json,
    write_map,
)


class _Colour(enum.Enum):
    RED = "red"


@dataclass
class _Point:
    x: float
    y: float


def test_write_map_writes_the_image_and_its_sidecar(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    prov = {"model": "adc", "options": {"b": np.float32(1.5), "bvalues": np.array([0, 500])}}
    image, side = write_map(
        tmp_path / "m" / "x_ADC.nii.gz",
        data,
        affine,
        units="mm2/s",
        description="ADC map",
        provenance=prov,
    )
    assert side == tmp_path / "m" / "x_ADC.json"
    img = nib.load(image)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    np.testing.assert_array_equal(img.affine, affine)
    assert json.loads(side.read_text()) == {
        "Units": "mm2/s",
        "Description": "ADC map",
        "Provenance": {"model": "adc", "options": {"b": 1.5, "bvalues": [0, 500]}},
    }
    assert read_sidecar(image)["Units"] == "mm2/s"
    # no temporary file left behind
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["x_ADC.json", "x_ADC.nii.gz"]


def test_write_map_keeps_the_dtype_or_takes_the_one_given(tmp_path: Path) -> None:
    status = np.zeros((2, 2, 2), np.uint8)
    (image, _) = write_map(
        tmp_path / "s.nii.gz", status, np.eye(4), units="1", description="", provenance=None
    )
    assert nib.load(image).get_data_dtype() == np.uint8
    (image, _) = write_map(
        tmp_path / "f.nii.gz",
        status,
        np.eye(4),
        units="1",
        description="",
        provenance=None,
        dtype=np.float32,
    )
    assert nib.load(image).get_data_dtype() == np.float32


def test_write_map_rejects_what_json_cannot_hold_before_the_sidecar(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_map(
            tmp_path / "x.nii.gz",
            np.zeros((1, 1, 1)),
            np.eye(4),
            units="",
            description="",
            provenance={"bad": object()},
        )
    assert not (tmp_path / "x.json").exists()


def test_json_default_encodes_our_values_and_refuses_the_rest() -> None:
    text = to_json(
        {
            "n": np.int64(3),
            "a": np.array([[1.0, 2.0]]),
            "p": Path("/x/y"),
            "e": _Colour.RED,
            "d": _Point(1.0, 2.0),
            "s": {"b", "a"},
        },
        indent=None,
    )
    assert json.loads(text) == {
        "n": 3,
        "a": [[1.0, 2.0]],
        "p": "/x/y",
        "e": "red",
        "d": {"x": 1.0, "y": 2.0},
        "s": ["a", "b"],
    }
    assert text.endswith("\n")
    for bad in (object(), 1 + 2j, _Point):
        with pytest.raises(TypeError):
            json_default(bad)


def test_write_json_is_atomic_and_sorted_on_request(tmp_path: Path) -> None:
    path = write_json(tmp_path / "a" / "b.json", {"z": 1, "a": 2}, indent=None, sort_keys=True)
    assert path.read_text() == '{"a": 2, "z": 1}\n'


def test_sidecar_names_and_unreadable_sidecars(tmp_path: Path) -> None:
    assert sidecar_of("d/x.nii.gz") == Path("d/x.json")
    assert sidecar_of("d/x.nii") == Path("d/x.json")
    assert sidecar_of("d/x.mha") == Path("d/x.json")
    assert read_sidecar(tmp_path / "none.nii.gz") == {}
    (tmp_path / "bad.json").write_text("{not json")
    assert read_sidecar(tmp_path / "bad.nii.gz") == {}


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    blob = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # across the 1 MiB blocks
    p = tmp_path / "blob"
    p.write_bytes(blob)
    assert file_sha256(p) == hashlib.sha256(blob).hexdigest()


def test_write_map_converts_float64_slab_by_slab_to_the_same_bytes(tmp_path: Path) -> None:
    """A float64 map written as float32 gives the bytes of nibabel saving the whole array cast
    first (NaN, ±inf and float32 overflow included), without a float32 copy of the whole map
    (the peak of numpy buffers stays under a third of the float32 image)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    data = rng.random((64, 64, 16, 24))
    data[0] = np.nan
    data[1, 0] = 1e300  # overflows float32: inf in both
    data[1, 1] = -np.inf
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    # the reference: nibabel's own writer, the whole array cast first (as before)
    ref = nib.Nifti1Image(data.astype(np.float32), affine)
    ref.header.set_xyzt_units("mm", "sec")
    ref.header.set_slope_inter(1.0, 0.0)
    ref.set_sform(affine, code=1)
    ref.set_qform(affine, code=1)
    with np.errstate(over="ignore"):
        nib.save(ref, tmp_path / "ref.nii.gz")
    tracemalloc.start()
    try:
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        with np.errstate(over="ignore"):
            write_map(
                tmp_path / "x.nii.gz",
                data,
                affine,
                units="",
                description="",
                provenance=None,
                dtype=np.float32,
            )
        peak = tracemalloc.get_traced_memory()[1] - held
    finally:
        tracemalloc.stop()
    # the same NIfTI bytes once decompressed (the gzip streams differ when ISA-L writes ours:
    # another compressor, see tumorscope._gzip)
    got = gzip.decompress((tmp_path / "x.nii.gz").read_bytes())
    assert got == gzip.decompress((tmp_path / "ref.nii.gz").read_bytes())
    assert peak < data.size * 4 / 3, peak  # the whole cast first: > data.size * 4


def test_file_sha256_is_remembered_only_while_the_file_is_unchanged(tmp_path: Path) -> None:
    """A hash is remembered under the file's identity and state, never for a file changed in
    the last seconds (file times are coarse); rewritten (even with the same size and its
    modification time put back) or renamed over, a file is hashed again."""
    import os

    import tumorscope.files as files

    p = tmp_path / "a.bin"
    p.write_bytes(b"one")
    first = file_sha256(p)
    assert first == hashlib.sha256(b"one").hexdigest()
    assert not any(v == first for v in files._HASHES.values())  # just written: not remembered
    st = p.stat()
    key = files._identity(st)
    files._HASHES[key] = first
    assert file_sha256(p) == first  # remembered (the key of an unchanged file)
    files._HASHES[key] = "stale"
    assert file_sha256(p) == "stale"  # taken from memory, not from the bytes
    del files._HASHES[key]
    p.write_bytes(b"two")  # same size
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # modification time put back
    assert file_sha256(p) == hashlib.sha256(b"two").hexdigest()
    q = tmp_path / "b.bin"
    q.write_bytes(b"one")
    os.replace(q, p)  # renamed over: another inode
    assert file_sha256(p) == first
