"""BIDS-style series files: sidecars, protocols from sidecars, the .bval/.bvec reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tumorscope.errors import DataError, ProtocolError
from tumorscope.io.bids import (
    implausible_fields,
    protocol_from_sidecar,
    read_bval,
    read_bvec,
    read_sidecar,
    sidecar_path,
    split_entities,
    stem,
)
from tumorscope.protocol import (
    DiffusionProtocol,
    DynamicProtocol,
    InversionRecoveryProtocol,
    MultiEchoProtocol,
    VFAProtocol,
)

IMAGE = "sub-01_ses-02_ce-ferumoxytol_MEGRE.nii.gz"


def _series(folder: Path, name: str, sidecar: dict | str | None = None, **files: str) -> Path:
    """An image path (the image itself is not needed) with its sidecar and other files."""
    image = folder / name
    if sidecar is not None:
        text = sidecar if isinstance(sidecar, str) else json.dumps(sidecar)
        sidecar_path(image).write_text(text)
    for ext, text in files.items():
        image.with_name(stem(image) + f".{ext}").write_text(text)
    return image


def test_names_entities_and_sidecar_path(tmp_path: Path) -> None:
    image = tmp_path / IMAGE
    assert stem(image) == "sub-01_ses-02_ce-ferumoxytol_MEGRE"
    assert stem(tmp_path / "x_T2w.nii") == "x_T2w"
    assert split_entities(image) == ({"sub": "01", "ses": "02", "ce": "ferumoxytol"}, "MEGRE")
    assert sidecar_path(image) == tmp_path / "sub-01_ses-02_ce-ferumoxytol_MEGRE.json"


def test_sidecar_missing_is_empty_and_malformed_names_the_file(tmp_path: Path) -> None:
    assert read_sidecar(tmp_path / IMAGE) == {}
    image = _series(tmp_path, IMAGE, {"EchoTime": [0.002, 0.004]})
    assert read_sidecar(image) == {"EchoTime": [0.002, 0.004]}
    for text, message in (("{not json", "cannot parse JSON"), ("[1, 2]", "a JSON object")):
        _series(tmp_path, IMAGE, text)
        with pytest.raises(DataError, match=message) as info:
            read_sidecar(image)
        assert info.value.file == str(sidecar_path(image))


def test_protocols_from_sidecars_in_seconds(tmp_path: Path) -> None:
    vfa = _series(tmp_path, "a_VFA.nii.gz", {"FlipAngle": [2, 10, 15], "RepetitionTime": 0.005})
    assert protocol_from_sidecar(vfa, "VFA", read_sidecar(vfa)) == VFAProtocol((2, 10, 15), 5.0)
    side = {"FrameTimes": [0, 3.5, 7], "FlipAngle": 15, "RepetitionTime": 0.005,
            "BaselineFrames": 1, "EchoTime": 0.0015}  # fmt: skip
    dce = _series(tmp_path, "a_dce.nii.gz", side)
    got = protocol_from_sidecar(dce, "dce", side)
    assert got == DynamicProtocol((0, 3.5, 7), 15, 5.0, 1, te_ms=1.5)
    me = _series(tmp_path, "a_MEGRE.nii.gz", {"EchoTime": [0.002, 0.005], "FlipAngle": 20})
    assert protocol_from_sidecar(me, "MEGRE", read_sidecar(me)) == MultiEchoProtocol(
        (2.0, 5.0), flip_angle_deg=20.0
    )
    ir = _series(tmp_path, "a_IRT1.nii.gz", {"InversionTime": [0.1, 0.5, 1.5], "RepetitionTime": 5})
    assert protocol_from_sidecar(ir, "IRT1", read_sidecar(ir)) == InversionRecoveryProtocol(
        (100.0, 500.0, 1500.0), tr_ms=5000.0
    )
    dwi = _series(tmp_path, "a_dwi.nii.gz", bval="0 500 1000\n", bvec="1 0 0\n0 1 0\n0 0 1\n")
    got = protocol_from_sidecar(dwi, "dwi", {})
    assert got == DiffusionProtocol((0, 500, 1000), bvecs=((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    assert got.source == str(tmp_path / "a_dwi.bval")
    assert protocol_from_sidecar(tmp_path / "a_T2w.nii.gz", "T2w", {}) is None


@pytest.mark.parametrize(
    ("suffix", "sidecar", "field", "error"),
    [
        ("VFA", {"RepetitionTime": 0.005}, "FlipAngle", DataError),
        ("VFA", {"FlipAngle": 15, "RepetitionTime": 0.005}, "FlipAngle", DataError),
        ("VFA", {"FlipAngle": [2, 10], "RepetitionTime": "fast"}, "RepetitionTime", DataError),
        ("dce", {"FrameTimes": [0, 5], "FlipAngle": 15, "RepetitionTime": 0.005}, "BaselineFrames",
         DataError),
        ("MEGRE", {"EchoTime": [0.002, 0.005], "RepetitionTime": None, "FlipAngle": "x"},
         "FlipAngle", DataError),
        ("IRT1", {"InversionTime": [0.1, 1.5], "RepetitionTime": [1]}, "RepetitionTime",
         DataError),
        ("VFA", {"FlipAngle": [2, -10], "RepetitionTime": 0.005}, "FlipAngle", ProtocolError),
        ("dce", {"FrameTimes": [0, 5, 3], "FlipAngle": 15, "RepetitionTime": 0.005,
                 "BaselineFrames": 1}, "FrameTimes", ProtocolError),
        ("MESE", {"EchoTime": [0.01, 0.02], "RepetitionTime": -1}, "RepetitionTime",
         ProtocolError),
    ],
)  # fmt: skip
def test_bad_sidecars_name_the_file_and_the_sidecar_field(
    tmp_path: Path, suffix: str, sidecar: dict, field: str, error: type
) -> None:
    image = _series(tmp_path, f"a_{suffix}.nii.gz", sidecar)
    with pytest.raises(error) as info:
        protocol_from_sidecar(image, suffix, sidecar)
    assert type(info.value) is error
    assert info.value.field == field
    assert info.value.file == str(sidecar_path(image))


def test_read_bval_beside_the_image_or_given_directly(tmp_path: Path) -> None:
    image = _series(tmp_path, "s_dwi.nii.gz", bval="0 50\t800\n")
    np.testing.assert_array_equal(read_bval(image), [0.0, 50.0, 800.0])
    np.testing.assert_array_equal(read_bval(tmp_path / "s_dwi.bval"), [0.0, 50.0, 800.0])
    np.testing.assert_array_equal(read_bval(str(tmp_path / "s_dwi.nii")), [0.0, 50.0, 800.0])
    (tmp_path / "column.bval").write_text("0\n500\n1000\n")  # one value per line
    np.testing.assert_array_equal(read_bval(tmp_path / "column.bval"), [0.0, 500.0, 1000.0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "b-value file is missing"),
        ("0 500 lots\n", "must be numbers"),
        ("\n  \n", "holds no b-values"),
        ("0 nan 1000\n", "finite"),
    ],
)
def test_read_bval_errors_name_file_and_field(
    tmp_path: Path, text: str | None, message: str
) -> None:
    bval = tmp_path / "s_dwi.bval"
    if text is not None:
        bval.write_text(text)
    for given in (tmp_path / "s_dwi.nii.gz", bval):
        with pytest.raises(DataError, match=message) as info:
            read_bval(given)
        assert (info.value.file, info.value.field) == (str(bval), "bval")


def test_a_bval_given_as_a_folder_or_another_name_is_read_as_given(tmp_path: Path) -> None:
    folder = tmp_path / "dwi"
    folder.mkdir()
    with pytest.raises(DataError, match="not a regular file but a folder") as info:
        read_bval(folder)  # not "dwi.bval", a path the user never gave
    assert (info.value.file, info.value.field) == (str(folder), "bval")
    (tmp_path / "bvals.txt").write_text("0 1000\n")
    np.testing.assert_array_equal(read_bval(tmp_path / "bvals.txt"), [0.0, 1000.0])
    with pytest.raises(DataError, match="gradient direction file is missing") as info:
        read_bvec(tmp_path / "bvecs.txt")
    assert info.value.file == str(tmp_path / "bvecs.txt")


def test_read_bvec_layouts(tmp_path: Path) -> None:
    rows = "1 0 0 0.6\n0 1 0 0.8\n0 0 1 0\n"  # FSL/BIDS: x, y and z rows
    image = _series(tmp_path, "s_dwi.nii.gz", bvec=rows)
    expected = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]]
    np.testing.assert_array_equal(read_bvec(image), expected)
    (tmp_path / "columns.bvec").write_text("1 0 0\n0 1 0\n0 0 1\n0.6 0.8 0\n")
    np.testing.assert_array_equal(read_bvec(tmp_path / "columns.bvec"), expected)
    assert read_bvec(tmp_path / "other_dwi.nii.gz") is None  # trace-weighted: no directions


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "gradient direction file is missing"),
        ("1 0 x\n0 1 0\n0 0 1\n", "must be numbers"),
        ("1 0 0 1\n0 1 0\n0 0 1 0\n", "same number of values"),
        ("1 0\n0 1\n", "3 rows"),
        ("1 0 0\n0 inf 0\n0 0 1\n", "finite"),
        ("", "holds no gradient directions"),
    ],
)
def test_read_bvec_errors_name_file_and_field(
    tmp_path: Path, text: str | None, message: str
) -> None:
    bvec = tmp_path / "s_dwi.bvec"
    if text is not None:
        bvec.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_bvec(bvec)
    assert (info.value.file, info.value.field) == (str(bvec), "bvec")
    if text is not None:  # found beside the image too
        with pytest.raises(DataError, match=message):
            read_bvec(tmp_path / "s_dwi.nii.gz")


VFA_OK = {"FlipAngle": [2, 10, 15], "RepetitionTime": 0.005}
DCE_OK = {"FrameTimes": [0, 5, 10], "FlipAngle": 15, "RepetitionTime": 0.005, "BaselineFrames": 1}


@pytest.mark.parametrize(
    ("suffix", "sidecar", "field"),
    [
        ("VFA", {**VFA_OK, "RepetitionTime": True}, "RepetitionTime"),  # was read as TR = 1 s
        ("VFA", {**VFA_OK, "RepetitionTime": "0.005"}, "RepetitionTime"),
        ("VFA", {**VFA_OK, "FlipAngle": ["2", "10", "15"]}, "FlipAngle"),
        ("VFA", {**VFA_OK, "FlipAngle": [2, True, 15]}, "FlipAngle"),
        ("dce", {**DCE_OK, "FlipAngle": "15"}, "FlipAngle"),
        ("dce", {**DCE_OK, "EchoTime": False}, "EchoTime"),
        ("MEGRE", {"EchoTime": ["0.002", "0.005"]}, "EchoTime"),
        ("dwi", {"EchoTime": "70ms"}, "EchoTime"),  # no fit reads it: checked all the same
        ("T2w", {"RepetitionTime": "2.5"}, "RepetitionTime"),
        ("T2w", {"MagneticFieldStrength": "3T"}, "MagneticFieldStrength"),
        ("hp13c", {"FrameTimes": ["0", "3", "6"], "FlipAngle": 10}, "FrameTimes"),  # numpy took it
    ],
)
def test_numbers_must_be_json_numbers_not_bools_or_text(
    tmp_path: Path, suffix: str, sidecar: dict, field: str
) -> None:
    image = _series(tmp_path, f"a_{suffix}.nii.gz", sidecar, bval="0 500 1000\n")
    with pytest.raises(DataError, match=r"expected a (list of )?number") as info:
        protocol_from_sidecar(image, suffix, read_sidecar(image))
    assert (info.value.file, info.value.field) == (str(sidecar_path(image)), field)


def test_a_huge_count_or_time_is_shown_as_written_without_warnings(tmp_path: Path) -> None:
    import warnings

    side = {"dce": {"FrameTimes": [0, 5, 10], "FlipAngle": 15, "RepetitionTime": 0.005,
                    "BaselineFrames": 1e308},
            "IRT1": {"InversionTime": [1e308, 1e308], "RepetitionTime": 5.0}}  # fmt: skip
    for suffix, sidecar in side.items():
        image = _series(tmp_path, f"a_{suffix}.nii.gz", sidecar)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no RuntimeWarning of an overflow on the way
            with pytest.raises((DataError, ProtocolError)) as info:
                protocol_from_sidecar(image, suffix, sidecar)
        assert len(str(info.value)) < 300 and info.value.file == str(sidecar_path(image))
    assert "got 1e+308" in str(info.value) or "inf" in str(info.value)


def test_a_key_listed_twice_in_a_sidecar_is_an_error_naming_it(tmp_path: Path) -> None:
    text = '{"FlipAngle": [2, 5], "RepetitionTime": 0.005, "RepetitionTime": 0.5}'
    image = _series(tmp_path, "a_VFA.nii.gz", text)
    with pytest.raises(DataError, match="'RepetitionTime' is listed twice") as info:
        read_sidecar(image)
    assert (info.value.file, info.value.field) == (str(sidecar_path(image)), "RepetitionTime")
    _series(tmp_path, "a_VFA.nii.gz", '{"B1map": {"x": 1, "x": 2}}')  # nested objects too
    with pytest.raises(DataError, match="'x' is listed twice"):
        read_sidecar(image)


@pytest.mark.parametrize(
    ("suffix", "sidecar", "field", "message"),
    [
        ("VFA", {**VFA_OK, "RepetitionTime": 5.0}, "RepetitionTime", "no VFA"),  # 5 ms in ms
        ("dce", {**DCE_OK, "RepetitionTime": 4.0}, "RepetitionTime", "no dce"),
        ("MEGRE", {"EchoTime": [2.0, 5.0]}, "EchoTime", "impossible"),
        ("dwi", {"EchoTime": 70}, "EchoTime", "impossible"),
        ("T2w", {"EchoTime": 0.08, "RepetitionTime": -2.5}, "RepetitionTime", ">= 0"),
    ],
)
def test_impossible_times_are_errors_naming_the_field(
    tmp_path: Path, suffix: str, sidecar: dict, field: str, message: str
) -> None:
    image = _series(tmp_path, f"a_{suffix}.nii.gz", sidecar, bval="0 500 1000\n")
    with pytest.raises(ProtocolError, match=message) as info:
        protocol_from_sidecar(image, suffix, sidecar)
    assert (info.value.file, info.value.field) == (str(sidecar_path(image)), field)


def test_long_but_possible_times_are_accepted_and_implausible_ones_flagged(tmp_path: Path) -> None:
    ir = {"InversionTime": [0.1, 1.5, 4.0], "RepetitionTime": 10.0, "EchoTime": 0.3}
    image = _series(tmp_path, "a_IRT1.nii.gz", ir)
    assert protocol_from_sidecar(image, "IRT1", ir) is not None  # a 10 s TR is normal for IR
    assert implausible_fields(ir) == []
    slip = {"InversionTime": [100, 1500, 4000], "RepetitionTime": 8000}  # written in ms
    assert protocol_from_sidecar(image, "IRT1", slip) is not None  # possible: a warning only
    assert [f for f, _ in implausible_fields(slip)] == ["RepetitionTime", "InversionTime"]
    vfa = {**VFA_OK, "RepetitionTime": 0.1}  # the bound itself is still a VFA
    assert protocol_from_sidecar(image, "VFA", vfa) == VFAProtocol((2, 10, 15), 100.0)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"Hematocrit": 42}, "Hematocrit", "a fraction between 0 and 1"),
        ({"Hematocrit": "0.42"}, "Hematocrit", "expected a number"),  # float() took it
        ({"Relaxivity": 0}, "Relaxivity", "> 0"),
    ],
)
def test_dce_sidecar_hematocrit_and_relaxivity(
    tmp_path: Path, fields: dict, field: str, message: str
) -> None:
    side = {**DCE_OK, **fields}
    image = _series(tmp_path, "a_dce.nii.gz", side)
    with pytest.raises((DataError, ProtocolError), match=message) as info:
        protocol_from_sidecar(image, "dce", side)
    assert info.value.field == field
