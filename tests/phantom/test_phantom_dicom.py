"""The synthetic DICOM writer: deterministic files, vendor styles, refused inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

import pydicom

from tumorscope.errors import DataError
from tumorscope.phantom.dicom import oblique_affine, write_series
from tumorscope.protocol import DiffusionProtocol, DynamicProtocol
from tumorscope.volume import Volume


def _vol(n: int = 1) -> Volume:
    data = np.arange(4 * 3 * 2 * n, dtype=np.float32).reshape(4, 3, 2, n)
    return Volume(data if n > 1 else data[..., 0], oblique_affine())


@pytest.mark.parametrize("enhanced", [False, True])
def test_the_same_call_writes_the_same_bytes(tmp_path: Path, enhanced: bool) -> None:
    proto = DynamicProtocol((0.0, 5.0, 10.0), 15.0, 5.0, 1)
    kw = {"suffix": "dce", "protocol": proto, "vendor": "philips", "enhanced": enhanced}
    a = write_series(_vol(3), tmp_path / "a", **kw)
    b = write_series(_vol(3), tmp_path / "b", **kw)
    assert [f.name for f in a] == [f.name for f in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    assert len(a) == (1 if enhanced else 6)


def test_vendor_styles_differ_where_scanners_do(tmp_path: Path) -> None:
    proto = DiffusionProtocol((0.0, 800.0))
    tags = {}
    for vendor in ("siemens", "ge", "philips"):
        (f, *_) = write_series(_vol(2), tmp_path / vendor, suffix="dwi", protocol=proto,
                               vendor=vendor, bvalue_tags="vendor")  # fmt: skip
        ds = pydicom.dcmread(f)
        assert "DiffusionBValue" not in ds
        tags[vendor] = (str(ds.Manufacturer), [t.tag.group for t in ds if t.tag.is_private])
    assert tags["siemens"][0] == "SIEMENS" and 0x0019 in tags["siemens"][1]
    assert tags["ge"][0] == "GE MEDICAL SYSTEMS" and 0x0043 in tags["ge"][1]
    assert tags["philips"][0] == "Philips Medical Systems" and 0x2001 in tags["philips"][1]


@pytest.mark.parametrize(
    ("volume", "kw", "field"),
    [
        (_vol(1), {"vendor": "acme"}, "vendor"),
        (_vol(1), {"bvalue_tags": "private"}, "bvalue_tags"),
        (_vol(2), {}, "T2w"),  # a 4-D series needs a protocol
        (_vol(3), {"protocol": DiffusionProtocol((0.0, 800.0))}, "protocol"),
        (_vol(1).with_data(_vol(1).data + 0.5), {}, "data"),
        (_vol(1).with_data(_vol(1).data - 40000), {}, "data"),
    ],
)
def test_refused_inputs_name_the_field(
    tmp_path: Path, volume: Volume, kw: dict, field: str
) -> None:
    with pytest.raises(DataError) as info:
        write_series(volume, tmp_path, suffix="T2w", **kw)
    assert info.value.field == field
    assert not tmp_path.exists() or not list(tmp_path.iterdir())
