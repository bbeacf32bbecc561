"""Exports a PACS and every viewer accept: ``dciodvfy`` on every object of an exported visit.

``dciodvfy`` (Debian's ``dicom3tools``, David Clunie's validator of the standard's IODs) must
report no error on any Parametric Map, SEG or SR tumorscope writes (warnings are allowed; those
left are listed in ``docs/dicom.md``). The visit is one of the synthetic study, written as DICOM
the way real data come: the DWI as a Siemens XA-style enhanced object (pixel spacing and
orientation per frame, not shared) and every image without the Type 2 attributes ``PatientSex``
and ``StudyID`` (as after a de-identification elsewhere), both of which once crashed the export.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("highdicom")

import highdicom as hd
import pydicom
import yaml

from tumorscope.io import open_study
from tumorscope.io.dicom import import_dicom
from tumorscope.io.dicom.codes import PRIVATE_SCHEME
from tumorscope.io.dicom.export import export_visit
from tumorscope.phantom import make_study
from tumorscope.phantom.dicom import study_to_dicom

DCIODVFY = shutil.which("dciodvfy")

#: maps exported, by source series: standard codes and one without (Fp, private)
MAPS = {
    "dwi": ["adc.ADC", "adc.S0", "ivim.D", "ivim.f", "ivim.D_star", "dki.K"],
    "dce": ["extended_tofts.Ktrans", "tofts.kep", "tofts.ve", "extended_tofts.vp", "2cxm.Fp"],
    "t1_vfa": ["vfat1.T1"],
    "t2": ["t2.T2"],
    "t2star": ["t2star.R2star"],
}


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """The errors and warnings ``dciodvfy`` reports on a file."""
    assert DCIODVFY is not None
    res = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    lines = (res.stdout + res.stderr).splitlines()
    return (
        [x for x in lines if x.startswith("Error")],
        [x for x in lines if x.startswith("Warning")],
    )


def _as_found_in_the_wild(dicom: Path) -> None:
    """Per-frame pixel measures and orientation in enhanced objects (Siemens XA); no
    ``PatientSex`` or ``StudyID`` anywhere (de-identified elsewhere)."""
    import copy

    for f in dicom.rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        if ds.Modality != "MR":
            continue
        for keyword in ("PatientSex", "StudyID"):
            if keyword in ds:
                delattr(ds, keyword)
        if "PerFrameFunctionalGroupsSequence" in ds:
            shared = ds.SharedFunctionalGroupsSequence[0]
            for keyword in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
                group = shared[keyword]
                del shared[keyword]
                for item in ds.PerFrameFunctionalGroupsSequence:
                    item[keyword] = copy.deepcopy(group)
        ds.save_as(f)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("validity")
    root = make_study(tmp / "phantom", size="tiny", seed=0, n_subjects=1)
    manifest = yaml.safe_load((root / "study.yaml").read_text())
    visits = manifest["subjects"]["001"]["visits"]
    for vid in list(visits)[1:]:  # the baseline visit only
        del visits[vid]
        shutil.rmtree(root / "sub-001" / f"ses-{vid}")
        shutil.rmtree(root / "derivatives" / "lesions" / "sub-001" / f"ses-{vid}")
    (root / "study.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    dicom = study_to_dicom(root, tmp / "dicom", vendors=("siemens",), enhanced=("dwi",))
    _as_found_in_the_wild(dicom)
    import_dicom(dicom, tmp / "study", dce_baseline_frames=5, roles={"*ce-*": "skip"})
    visit = open_study(tmp / "study").subjects["001"].visits["01"]
    maps: dict[str, Any] = {}
    rng = np.random.default_rng(1)
    for role, names in MAPS.items():
        vol = visit.series[role].load()
        for name in names:
            data = rng.uniform(1e-4, 3e-3, vol.spatial_shape).astype(np.float32)
            maps[name] = (vol.with_data(data, axes=("x", "y", "z")), role)
    units = {"2cxm.Fp": "mL/100mL/min"}
    files = export_visit(
        tmp / "study", dicom, tmp / "out", subject="001", visit="01", maps=maps, units=units,
        response="PR", sizes={},
    )  # fmt: skip
    # the lesions referenced on the enhanced DWI too (SEG and SR built on a multi-frame source)
    on_dwi = export_visit(
        tmp / "study", dicom, tmp / "out-dwi", subject="001", visit="01",
        maps={"adc.ADC": maps["adc.ADC"]}, reference="dwi", sizes={},
    )  # fmt: skip
    return {"files": files, "maps": maps, "on_dwi": on_dwi}


def test_export_holds_every_map_a_seg_and_an_sr(exported: dict[str, Any]) -> None:
    names = [f.name for f in exported["files"]]
    assert len(names) == len(exported["maps"]) + 2
    assert names[-2:] == ["sub-001_ses-01_lesions_seg.dcm", "sub-001_ses-01_measurements_sr.dcm"]
    for f in exported["files"][:-2]:
        pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(f))
        assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    hd.seg.segread(exported["files"][-2])
    hd.sr.srread(exported["files"][-1])
    seg = hd.seg.segread(exported["on_dwi"][1])  # on the enhanced DWI: references its frames
    dwi = pydicom.dcmread(exported["on_dwi"][0]).ReferencedSeriesSequence[0].SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == dwi
    assert hd.sr.srread(exported["on_dwi"][2]).content.get_volumetric_roi_measurement_groups()


@pytest.mark.skipif(
    DCIODVFY is None,
    reason="dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it",
)
def test_dciodvfy_reports_no_error_on_any_exported_object(exported: dict[str, Any]) -> None:
    files = [*exported["files"], *exported["on_dwi"]]
    assert len(files) == len(exported["maps"]) + 5
    found = {f"{f.parent.name}/{f.name}": dciodvfy(f)[0] for f in files}
    assert not any(found.values()), {k: v for k, v in found.items() if v}


def test_quantities_carry_standard_codes(exported: dict[str, Any]) -> None:
    """Every quantity with a DICOM code carries it, in the PM and in the SR; Fp is private."""
    expected = {
        "adc.ADC": "113041", "adc.S0": "110852", "ivim.D": "113291", "ivim.f": "113293",
        "ivim.D_star": "113292", "dki.K": "113206", "extended_tofts.Ktrans": "126312",
        "tofts.kep": "126313", "tofts.ve": "126314", "extended_tofts.vp": "126331",
        "vfat1.T1": "113063", "t2.T2": "113065", "t2star.R2star": "126395",
    }  # fmt: skip
    by_name = {}
    for f in exported["files"][:-2]:
        ds = pydicom.dcmread(f)
        rwvm = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        concept = rwvm.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
        by_name[str(rwvm.LUTLabel)] = (concept.CodingSchemeDesignator, concept.CodeValue)
        assert rwvm.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    for name, value in expected.items():
        assert by_name[name[:16]] == ("DCM", value), name
    assert by_name["2cxm.Fp"][0] == PRIVATE_SCHEME
    sr = hd.sr.srread(exported["files"][-1])
    codes_in_sr = {
        m.name.meaning: (m.name.scheme_designator, m.name.value, m.unit.scheme_designator)
        for g in sr.content.get_volumetric_roi_measurement_groups()
        for m in g.get_measurements()
    }
    assert codes_in_sr["Apparent Diffusion Coefficient"] == ("DCM", "113041", "UCUM")
    assert codes_in_sr["vp"] == ("DCM", "126331", "UCUM")
    private = {k for k, (scheme, _, _) in codes_in_sr.items() if scheme == PRIVATE_SCHEME}
    assert private == {"2cxm.Fp"}


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is absent")
def test_dciodvfy_finds_the_errors_of_the_old_maps(exported: dict[str, Any], tmp_path) -> None:
    """The check is not vacuous: the two errors of the maps before issue 15 are reported."""
    ds = pydicom.dcmread(exported["files"][0])  # the ADC map: window width < 1
    ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0].VOILUTFunction = "LINEAR"
    del ds.Laterality
    ds.save_as(tmp_path / "old.dcm")
    errors = " ".join(dciodvfy(tmp_path / "old.dcm")[0])
    assert "WindowWidth" in errors and "Laterality" in errors
