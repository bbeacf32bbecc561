"""Reading one DICOM series: geometry, measurements and protocols, frame times, rejections."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pydicom")

import pydicom
from _dicom_helpers import read_one, volume
from hypothesis import given, settings
from hypothesis import strategies as st

from tumorscope.errors import DataError
from tumorscope.io.dicom import affine_from_frames, read_series, scan_dicom
from tumorscope.phantom.dicom import SynthStudy, oblique_affine, write_series
from tumorscope.preprocessing.dynamic import baseline_frames
from tumorscope.protocol import (
    DiffusionProtocol,
    DynamicProtocol,
    InversionRecoveryProtocol,
    MultiEchoProtocol,
    VFAProtocol,
)
from tumorscope.volume import Volume


# ------------------------------------------------------------------ geometry and values
def test_voxel_world_position_by_hand(tmp_path: Path) -> None:
    """Voxel (i, j, k) is column i, row j of slice k; LPS IPP becomes RAS by flipping x, y."""
    vol = volume(1)
    files = write_series(vol, tmp_path, suffix="T2w", echo_time_ms=90.0)
    ds = min((pydicom.dcmread(f) for f in files), key=lambda d: int(d.InstanceNumber))
    ipp = np.array([float(x) for x in ds.ImagePositionPatient])
    iop = np.array([float(x) for x in ds.ImageOrientationPatient])
    r, c = 3, 7
    lps = ipp + iop[:3] * float(ds.PixelSpacing[1]) * c + iop[3:] * float(ds.PixelSpacing[0]) * r
    ras = lps * [-1, -1, 1]
    sd = read_one(tmp_path)
    np.testing.assert_allclose(sd.volume.affine @ [c, r, 0, 1], [*ras, 1], atol=1e-4)
    assert ds.pixel_array[r, c] == vol.data[c, r, 0]


def test_affine_from_frames_rejects_a_gap() -> None:
    pos = [np.array([0.0, 0.0, z]) for z in (0.0, 4.0, 8.0, 16.0)]
    with pytest.raises(DataError, match="not evenly spaced"):
        affine_from_frames(pos, np.array([1.0, 0, 0, 0, 1, 0]), (1.0, 1.0))
    a = affine_from_frames(pos[:3], np.array([1.0, 0, 0, 0, 1, 0]), (2.0, 3.0))
    np.testing.assert_allclose(a, np.diag([-3.0, -2.0, 4.0, 1.0]))


def test_a_missing_slice_is_rejected_naming_file_and_tag(tmp_path: Path) -> None:
    files = write_series(volume(1), tmp_path, suffix="T2w", echo_time_ms=90)
    by_pos = sorted(files, key=lambda f: float(pydicom.dcmread(f).SliceLocation))
    by_pos[2].unlink()
    (series,) = scan_dicom(tmp_path).series
    with pytest.raises(DataError, match="missing slice") as info:
        read_series(series)
    assert info.value.field == "ImagePositionPatient"
    assert info.value.file == str(tmp_path)


def test_standard_b_tag_and_t2w_guess(tmp_path: Path) -> None:
    write_series(
        volume(3),
        tmp_path / "a",
        suffix="dwi",
        protocol=DiffusionProtocol((0, 50, 800)),
        bvalue_tags="standard",
        vendor="ge",
    )
    assert read_one(tmp_path / "a").protocol == DiffusionProtocol((0, 50, 800))
    write_series(volume(1), tmp_path / "b", suffix="T2w", echo_time_ms=95.0)
    sd = read_one(tmp_path / "b")
    assert sd.suffix == "T2w" and sd.protocol is None
    assert sd.sidecar["EchoTime"] == pytest.approx(0.095)


@pytest.mark.parametrize("enhanced", [False, True])
def test_vfa_multiecho_ir(tmp_path: Path, enhanced: bool) -> None:
    cases = [
        ("VFA", VFAProtocol((2.0, 5.0, 10.0, 15.0), 5.0), "VFA"),
        ("MEGRE", MultiEchoProtocol((2.0, 5.0, 8.0), tr_ms=40.0, flip_angle_deg=20.0), "MEGRE"),
        ("MESE", MultiEchoProtocol((10.0, 20.0, 30.0), tr_ms=2000.0), "MESE"),
        ("IRT1", InversionRecoveryProtocol((100.0, 500.0, 1500.0), tr_ms=5000.0), "IRT1"),
    ]
    for suffix, proto, expected in cases:
        vol = volume(proto.n_measurements)
        write_series(vol, tmp_path / suffix, suffix=suffix, protocol=proto, enhanced=enhanced)
        sd = read_one(tmp_path / suffix)
        assert sd.suffix == expected
        assert sd.protocol == proto
        np.testing.assert_array_equal(sd.volume.data, vol.data)
    vfa = read_one(tmp_path / "VFA")
    assert vfa.sidecar["FlipAngle"] == [2.0, 5.0, 10.0, 15.0]
    assert vfa.sidecar["RepetitionTime"] == pytest.approx(0.005)


# ------------------------------------------------------------------ dynamic series
@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
@pytest.mark.parametrize("enhanced", [False, True])
def test_dynamic_frame_times_per_vendor(tmp_path: Path, vendor: str, enhanced: bool) -> None:
    times = (0.0, 3.5, 7.0, 10.5, 22.5, 34.5)
    proto = DynamicProtocol(times, 15.0, 5.0, 2, te_ms=1.5)
    vol = volume(len(times))
    write_series(vol, tmp_path, suffix="dce", protocol=proto, vendor=vendor, enhanced=enhanced)
    sd = read_one(tmp_path, dce_baseline_frames=2)
    assert sd.suffix == "dce"
    assert sd.protocol == proto
    assert sd.sidecar["BaselineFramesSource"] == "given at import"
    np.testing.assert_array_equal(sd.volume.data, vol.data)


def test_siemens_dynamic_has_only_acquisition_time(tmp_path: Path) -> None:
    proto = DynamicProtocol((0.0, 5.0, 10.0), 15.0, 5.0, 1)
    files = write_series(volume(3), tmp_path, suffix="dce", protocol=proto, vendor="siemens")
    ds = pydicom.dcmread(files[0])
    assert "TriggerTime" not in ds and "TemporalPositionIdentifier" not in ds
    assert read_one(tmp_path, dce_baseline_frames=1).protocol.frame_times_s == (0.0, 5.0, 10.0)


def test_baseline_frames_are_estimated_when_not_given(tmp_path: Path) -> None:
    times = tuple(3.0 * i for i in range(12))
    rng = np.random.default_rng(1)
    data = 100 + rng.integers(0, 3, (10, 8, 5, 12)).astype(np.float32)
    data[4:6, 3:5, 1:3, 5:] += 400.0  # enhancing from frame 5
    vol = Volume(data, oblique_affine())
    write_series(vol, tmp_path, suffix="dce", protocol=DynamicProtocol(times, 15.0, 5.0, 1))
    sd = read_one(tmp_path)
    assert sd.protocol.n_baseline == 5 == baseline_frames(data)
    assert sd.sidecar["BaselineFrames"] == 5
    assert sd.sidecar["BaselineFramesSource"] == "estimated from the enhancement onset"


@pytest.mark.parametrize("enhanced", [False, True])
def test_dynamic_series_running_past_midnight(tmp_path: Path, enhanced: bool) -> None:
    times = (0.0, 10.0, 20.0, 30.0)
    proto = DynamicProtocol(times, 15.0, 5.0, 1)
    study = SynthStudy(time=dt.time(23, 58, 55))  # the series starts at 23:59:55
    write_series(volume(4), tmp_path, suffix="dce", protocol=proto, study=study, enhanced=enhanced)
    assert read_one(tmp_path, dce_baseline_frames=1).protocol.frame_times_s == times


def _dynamic_epi(
    folder: Path,
    description: str,
    tr_ms: float,
    *,
    agent: str = "",
    te_ms: float | None = 30.0,
    number: int = 1,
) -> None:
    """A 4-frame 2-D EPI time series (GE-EPI, frames one TR apart) named ``description`` (in
    SeriesDescription and ProtocolName), with ``agent`` in ContrastBolusAgent when given."""
    times = tuple(i * tr_ms / 1000.0 for i in range(4))
    proto = DynamicProtocol(times, 90.0, tr_ms, 1, te_ms=te_ms)
    files = write_series(
        volume(4),
        folder,
        suffix="dsc",
        protocol=proto,
        series_description=description,
        series_number=number,
    )
    for f in files:
        ds = pydicom.dcmread(f)
        ds.ProtocolName = description
        if agent:
            ds.ContrastBolusAgent = agent
        ds.save_as(f)


@pytest.mark.parametrize(
    ("description", "tr_ms", "agent", "kind"),
    [
        ("ep2d_perf", 1500.0, "", "dsc"),  # named perfusion
        ("DSC brain", 2900.0, "", "dsc"),  # named so, even at a long TR
        ("ax epi", 3000.0, "GADOBUTROL", "dsc"),  # a contrast agent, whatever the TR and name
        ("rest fMRI", 800.0, "", "bold"),  # named BOLD, at a multiband TR
        ("ep2d_bold_moco", 2000.0, "", "bold"),
        ("MB_rest_AP", 720.0, "", "bold"),  # "rest" as a word of its own
        ("restricted perf", 1500.0, "", "dsc"),  # not inside a word
        ("ax epi dynamic", 1500.0, "", "dsc"),  # neutral: a TR that samples a first pass
        ("ax epi dynamic", 3000.0, "", "bold"),  # neutral: too slow for a first pass
    ],
)
def test_a_dynamic_epi_is_dsc_or_bold_never_dce(
    tmp_path: Path, description: str, tr_ms: float, agent: str, kind: str
) -> None:
    """A dynamic EPI is T2*-weighted: DSC perfusion or BOLD fMRI (the importer leaves BOLD
    out), decided by the contrast agent, the name, then the TR; never DCE."""
    from tumorscope.io.dicom.kinds import DSC_MAX_TR_MS, NotImported

    _dynamic_epi(tmp_path, description, tr_ms, agent=agent)
    sd = read_one(tmp_path)
    assert sd.suffix == kind, sd.reason
    assert sd.sidecar["FrameTimes"] == pytest.approx([i * tr_ms / 1000.0 for i in range(4)])
    assert "BaselineFrames" not in sd.sidecar  # DSC: the DSC step finds the bolus onset
    if kind == "bold":
        with pytest.raises(NotImported, match="BOLD fMRI"):
            read_one(tmp_path, refuse_not_imported=True)
    else:
        assert sd.sidecar["EchoTime"] == pytest.approx(0.03)
        assert read_one(tmp_path, refuse_not_imported=True).suffix == "dsc"
    if not agent and description == "ax epi dynamic":  # the TR rule, at its bound
        assert (tr_ms <= DSC_MAX_TR_MS) == (kind == "dsc")


@pytest.mark.parametrize(
    ("suffix", "protocol"),
    [
        ("dsc", DynamicProtocol((0.0, 1.5, 3.0, 4.5), 90.0, 1500.0, 1, te_ms=30.0)),
        ("MESE", MultiEchoProtocol((10.0, 20.0, 30.0, 40.0), tr_ms=2000.0)),
        ("MEGRE", MultiEchoProtocol((3.0, 6.0, 9.0, 12.0), tr_ms=40.0)),
    ],
)
def test_enhanced_objects_are_read_by_their_pulse_sequence_module(
    tmp_path: Path, suffix: str, protocol: Any
) -> None:
    """Enhanced MR objects have no ScanningSequence: EPI and the echo type come from
    EchoPlanarPulseSequence and EchoPulseSequence (a DSC series is not DCE, a spin-echo train
    is MESE)."""
    files = write_series(volume(4), tmp_path, suffix=suffix, protocol=protocol, enhanced=True)
    ds = pydicom.dcmread(files[0])
    assert "ScanningSequence" not in ds and ds.EchoPulseSequence in ("SPIN", "GRADIENT")
    sd = read_one(tmp_path)
    assert sd.suffix == suffix, sd.reason


@pytest.mark.parametrize(
    ("description", "kind"),
    [
        ("APT_CEST_3D", "cest"),
        ("apt weighted", "cest"),
        ("Zspectrum tse", "cest"),
        ("WASSR", "cest"),
        ("t1_vibe_dyn adapted", "dce"),  # "apt" inside a word is not APT
    ],
)
def test_a_cest_time_series_is_left_out_not_read_as_dce(
    tmp_path: Path, description: str, kind: str
) -> None:
    """A non-EPI time series named CEST/APT/Z-spectrum/WASSR would be DCE by its parameters;
    its saturation offsets are in no standard attribute, so it is left out with a warning that
    says how to bring it in (a NIfTI with its SaturationOffsets)."""
    from tumorscope.io.dicom import import_dicom

    proto = DynamicProtocol(tuple(float(i) for i in range(5)), 10.0, 5.0, 1)
    write_series(
        volume(5), tmp_path / "dicom", suffix="dce", protocol=proto, series_description=description
    )
    sd = read_one(tmp_path / "dicom", dce_baseline_frames=1)
    assert sd.suffix == kind, sd.reason
    if kind == "dce":
        return
    with pytest.raises(DataError, match="no importable MR series"):
        import_dicom(tmp_path / "dicom", tmp_path / "study")
    write_series(volume(1), tmp_path / "dicom", suffix="T2w", echo_time_ms=90.0, series_number=2)
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert [r["suffix"] for r in rep.series] == ["T2w"]
    (warn,) = [p for p in rep.problems if "not imported" in p.message]
    assert "CEST, whose saturation offsets no standard DICOM attribute holds" in warn.message
    assert "SaturationOffsets (docs/cest.md)" in warn.message


def _dual_echo(
    folder: Path, description: str, *, epi: bool, number: int = 1, echoes: int = 2
) -> Volume:
    """A dual-echo time series as Siemens writes it: 4 time points × echoes of 20 and 45 ms
    (``echoes`` 3: and 70 ms), each image with its own EchoTime / EchoNumbers, timed by
    AcquisitionTime only. Returns the volumes written, in acquisition order."""
    n = 4 * echoes
    proto = DynamicProtocol(tuple(0.75 * i for i in range(n)), 90.0 if epi else 12.0,
                            1500.0 if epi else 5.0, 1, te_ms=20.0)  # fmt: skip
    vol = volume(n)
    files = write_series(vol, folder, suffix="dsc" if epi else "dce", protocol=proto,
                         series_description=description, series_number=number)  # fmt: skip
    nz = volume(1).data.shape[2]
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        echo = (i // nz) % echoes  # the volumes alternate echo 1, echo 2 (, echo 3)
        ds.EchoTime = (20.0, 45.0, 70.0)[echo]
        ds.EchoNumbers = echo + 1
        if not epi:
            ds.ScanningSequence = "GR"
        ds.save_as(f)
    return vol


@pytest.mark.parametrize(
    ("description", "epi", "echoes", "what"),
    [
        ("dyn_2echo", False, 2, "e.g. a dual-echo DCE"),
        ("rest_bold_2echo", True, 2, "e.g. a multi-echo BOLD"),
        ("ep2d_perf_3echo", True, 3, "e.g. a multi-echo BOLD"),
    ],
)
def test_a_multi_echo_time_series_other_than_dual_echo_dsc_is_left_out(
    tmp_path: Path, description: str, epi: bool, echoes: int, what: str
) -> None:
    """A dual-echo DCE, a multi-echo BOLD or a three-echo EPI varies its echo time: by the
    rule of the varying parameter it was one MEGRE of all its volumes, a silent wrong series.
    It is left out with a warning, and the role dce given to it is refused naming EchoTime."""
    from tumorscope.errors import ProtocolError
    from tumorscope.io.dicom import import_dicom
    from tumorscope.io.dicom.kinds import NotImported

    _dual_echo(tmp_path / "dicom" / "a", description, epi=epi, echoes=echoes)
    sd = read_one(tmp_path / "dicom" / "a")
    assert sd.suffix == "multiecho_dynamic", sd.reason
    times = "20, 45 ms" if echoes == 2 else "20, 45, 70 ms"
    assert f"{4 * echoes} volumes at {echoes} echo times ({times}), each repeated" in sd.reason
    assert what in sd.reason
    with pytest.raises(NotImported):
        read_one(tmp_path / "dicom" / "a", refuse_not_imported=True)
    with pytest.raises(ProtocolError, match=rf"{echoes} echo times \({times}\)") as err:
        read_one(tmp_path / "dicom" / "a", suffix="dce")
    assert err.value.field == "EchoTime"
    with pytest.raises(ProtocolError, match="strictly increasing"):
        read_one(tmp_path / "dicom" / "a", suffix="MEGRE")
    write_series(volume(1), tmp_path / "dicom" / "b", suffix="T2w", echo_time_ms=90.0,
                 series_number=2)  # fmt: skip
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert [r["suffix"] for r in rep.series] == ["T2w"]
    (warn,) = [p for p in rep.problems if "not imported" in p.message]
    assert warn.severity == "warning" and "the DCE fit takes one echo" in warn.message


def test_a_dual_echo_dsc_imports_as_the_two_echo_files_of_the_study(tmp_path: Path) -> None:
    """A dual-echo DSC EPI (two echo times, each repeated, named perfusion) is imported as
    ``perf/*_echo-1_dsc`` and ``*_echo-2_dsc``, each with its scalar EchoTime and the same
    FrameTimes, read by the study as the roles ``dsc`` and ``dsc_echo2`` and clean for
    validate. Synthetic DICOM: /work/shared/dicom-real (and tests/data/dicom-real) hold no real
    dual-echo DSC series."""
    from tumorscope.io import open_study, validate_study
    from tumorscope.io.dicom import import_dicom

    vol = _dual_echo(tmp_path / "dicom" / "a", "ep2d_perf_2echo", epi=True)
    sd = read_one(tmp_path / "dicom" / "a")
    assert sd.suffix == "dsc" and sd.entities == "echo-1" and len(sd.more) == 1, sd.reason
    assert "4 repeated EPI volumes at 2 echo times (20, 45 ms)" in sd.reason
    assert sd.reason.endswith("(perf): DSC perfusion: dual-echo DSC")
    second = sd.more[0]
    assert second.entities == "echo-2" and second.suffix == "dsc"
    np.testing.assert_array_equal(sd.volume.data, vol.data[..., 0::2])
    np.testing.assert_array_equal(second.volume.data, vol.data[..., 1::2])
    assert (sd.sidecar["EchoTime"], second.sidecar["EchoTime"]) == (0.02, 0.045)
    assert sd.sidecar["FrameTimes"] == second.sidecar["FrameTimes"] == [0.0, 1.5, 3.0, 4.5]
    forced = read_one(tmp_path / "dicom" / "a", suffix="dsc")  # --role '...=dsc': the same
    assert forced.entities == "echo-1" and len(forced.more) == 1
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert [r["file"].rsplit("/", 1)[1] for r in rep.series] == [
        "sub-001_ses-01_echo-1_dsc.nii.gz",
        "sub-001_ses-01_echo-2_dsc.nii.gz",
    ]
    assert not [p for p in rep.problems if "not imported" in p.message]
    (visit,) = open_study(tmp_path / "study").subjects["001"]
    assert visit.series["dsc"].protocol.te_ms == pytest.approx(20.0)
    assert visit.series["dsc_echo2"].protocol.te_ms == pytest.approx(45.0)
    assert not [p for p in validate_study(tmp_path / "study") if p.severity == "error"]


def test_a_three_plane_localizer_is_skipped_with_a_warning_not_rejected(tmp_path: Path) -> None:
    """Every real exam starts with a localizer, often three orthogonal planes in one series:
    by its orientations an error, so the import of every exam exited 1. It is left out by
    name with a warning; the exam's other series are imported and the exit code is 0's."""
    from tumorscope.io.dicom import import_dicom

    files = write_series(volume(1), tmp_path / "dicom" / "loc", suffix="T2w", echo_time_ms=90.0,
                         series_description="3-Plane Loc SSFSE")  # fmt: skip
    ds = pydicom.dcmread(files[1])
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # a sagittal plane
    ds.save_as(files[1])
    write_series(volume(1), tmp_path / "dicom" / "t2", suffix="T2w", echo_time_ms=90.0,
                 series_number=2)  # fmt: skip
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert [r["description"] for r in rep.series] == ["t2_tse_tra"]
    assert rep.n_rejected == 0 and not [p for p in rep.problems if p.severity == "error"]
    (warn,) = [p for p in rep.problems if "localizer" in p.message]
    assert warn.severity == "warning" and "('3-Plane Loc' in '3-Plane Loc SSFSE')" in warn.message
    # given a role, it is read, and its mixed orientations are the error they are
    rep = import_dicom(tmp_path / "dicom", tmp_path / "forced", roles={"3-Plane*": "T2w"})
    assert rep.n_rejected == 1


def test_a_dsc_series_without_echo_time_is_rejected_naming_the_tag(tmp_path: Path) -> None:
    from tumorscope.errors import ProtocolError

    _dynamic_epi(tmp_path, "ep2d_perf", 1500.0, te_ms=None)
    with pytest.raises(ProtocolError, match=r"needs its EchoTime \(0018,0081\)") as err:
        read_one(tmp_path)
    assert err.value.field == "EchoTime"


def test_a_dynamic_epi_imports_as_dsc_into_perf_and_bold_is_left_out(tmp_path: Path) -> None:
    """The importer: a DSC series in ``perf/`` with the sidecar the study format reads (its
    protocol read back), a BOLD series of the same patient left out with a warning that says
    how to import it anyway."""
    from tumorscope.io import open_study
    from tumorscope.io.dicom import import_dicom

    # the patient's name in the free text the reason quotes: scrubbed from what is written
    _dynamic_epi(tmp_path / "dicom" / "a", "ep2d_perf DOE JANE", 1500.0, agent="GADOBUTROL")
    _dynamic_epi(tmp_path / "dicom" / "b", "rest fMRI", 800.0, number=2)
    rep = import_dicom(tmp_path / "dicom", tmp_path / "study")
    assert [r["suffix"] for r in rep.series] == ["dsc"]
    assert rep.series[0]["file"].endswith("/perf/sub-001_ses-01_dsc.nii.gz")
    (side,) = (tmp_path / "study").glob("sub-001/ses-01/perf/*_dsc.json")
    assert "DOE" not in side.read_text() and "JANE" not in side.read_text()
    assert json.loads(side.read_text())["SeriesDescription"] == "ep2d_perf [removed]"
    assert "contrast agent 'GADOBUTROL'" in rep.series[0]["reason"]
    (warn,) = [p for p in rep.problems if "not imported" in p.message]
    assert warn.severity == "warning" and "--role 'rest fMRI=dsc'" in warn.message
    (visit,) = open_study(tmp_path / "study").subjects["001"]
    (series,) = visit.series.values()
    assert series.role == "dsc" and series.protocol.te_ms == pytest.approx(30.0)
    assert series.protocol.frame_times_s == pytest.approx((0.0, 1.5, 3.0, 4.5))


# ------------------------------------------------------------------ cross-check with dcm2niix
def test_geometry_agrees_with_dcm2niix(tmp_path: Path) -> None:
    """dcm2niix is an independent implementation: same voxels at the same world positions."""
    nib = pytest.importorskip("nibabel")
    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("dcm2niix binary not installed")
    vol = volume(3)
    write_series(vol, tmp_path / "in", suffix="dwi", protocol=DiffusionProtocol((0, 500, 1000)))
    (tmp_path / "out").mkdir()
    subprocess.run(
        [exe, "-z", "n", "-f", "x", "-o", str(tmp_path / "out"), str(tmp_path / "in")],
        check=True,
        capture_output=True,
    )
    theirs = nib.as_closest_canonical(nib.load(tmp_path / "out" / "x.nii"))
    mine = read_one(tmp_path / "in").volume
    ours = nib.as_closest_canonical(nib.Nifti1Image(mine.data, mine.affine))
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))


# ------------------------------------------------------------------ property: any geometry
@settings(max_examples=12, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-180, 180)] * 3),
    voxel=st.tuples(*[st.floats(0.3, 6.0)] * 3),
    origin=st.tuples(*[st.floats(-200, 200)] * 3),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 4)),
    flip=st.booleans(),
    enhanced=st.booleans(),
)
def test_any_geometry_round_trips(angles, voxel, origin, shape, flip, enhanced) -> None:  # type: ignore[no-untyped-def]
    """Any rotation, voxel size, origin and handedness comes back as an equivalent grid."""
    aff = oblique_affine(angles_deg=angles, voxel_mm=voxel, origin_mm=origin)
    if flip:  # a left-handed voxel grid (slices stacked against the normal)
        aff = aff @ np.diag([1.0, 1.0, -1.0, 1.0])
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    vol = Volume(data, aff)
    with tempfile.TemporaryDirectory() as d:
        write_series(vol, Path(d), suffix="T2w", echo_time_ms=90, enhanced=enhanced)
        got = read_one(Path(d)).volume
    # voxel centres carry the same values at the same world positions
    ijk = np.indices(shape).reshape(3, -1)
    world = aff[:3, :3] @ ijk + aff[:3, 3:4]
    back = np.linalg.inv(got.affine)
    idx = back[:3, :3] @ world + back[:3, 3:4]
    np.testing.assert_allclose(idx, np.round(idx), atol=1e-3)
    np.testing.assert_array_equal(got.data[tuple(np.round(idx).astype(int))], data.reshape(-1))
    np.testing.assert_allclose(got.voxel_sizes[:2], voxel[:2], rtol=1e-5)
