"""End to end: phantom (NIfTI) → DICOM → import → fit → export → read back.

One subject, one visit of the tiny phantom (T2w, 8-b DWI and 50-frame DCE as enhanced multi-frame
objects, VFA and multi-echo GRE as classic series, lesion SEG), Philips style.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom")

import highdicom as hd
import nibabel as nib
import pydicom
import yaml

from tumorscope.errors import TumorscopeWarning
from tumorscope.io import open_study, validate_study
from tumorscope.io.bids import split_entities
from tumorscope.io.deid import find_identifiers
from tumorscope.io.dicom import import_dicom
from tumorscope.io.dicom.export import export_visit
from tumorscope.io.dicom.profile import pseudonymous_uid
from tumorscope.phantom import make_study
from tumorscope.phantom.dicom import study_to_dicom
from tumorscope.pipeline import run_study

CORE = {"T2w", "dwi", "VFA", "dce", "MEGRE", "MESE", "IRT1"}

# what study_to_dicom writes for the first subject and its first visit
IDENTIFIERS = ["SYNTH^PATIENT001", "MRN007340", "19500110", "ACC00090000", "Synthetic General"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("e2e")
    root = make_study(tmp / "phantom", size="tiny", seed=0, n_subjects=1)
    # keep the baseline visit only (the test stays fast)
    manifest = yaml.safe_load((root / "study.yaml").read_text())
    visits = manifest["subjects"]["001"]["visits"]
    for vid in list(visits)[1:]:
        del visits[vid]
        shutil.rmtree(root / "sub-001" / f"ses-{vid}")
        shutil.rmtree(root / "derivatives" / "lesions" / "sub-001" / f"ses-{vid}")
    (root / "study.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    # keep the series kinds DICOM MR carries; BIDS entities (ce-...) come back by role override
    roles: dict[str, str] = {}
    for series in open_study(root).subjects["001"].visits["01"].series.values():
        entities, suffix = split_entities(series.path)
        extra = "_".join(f"{k}-{v}" for k, v in entities.items() if k not in ("sub", "ses"))
        if suffix not in CORE:
            for f in series.path.parent.glob(series.path.name.split(".")[0] + ".*"):
                f.unlink()
        elif extra:
            roles[f"*_{extra}"] = f"{extra}_{suffix}"
    dicom = study_to_dicom(root, tmp / "dicom", vendors=("philips",), enhanced=("dwi", "dce"))
    rep = import_dicom(dicom, tmp / "imported", dce_baseline_frames=5, roles=roles)
    assert not rep.problems, rep.problems
    return {"nifti": root, "dicom": dicom, "imported": tmp / "imported", "tmp": tmp}


def test_imported_study_equals_the_original(chain: dict[str, Path]) -> None:
    a, b = open_study(chain["nifti"]), open_study(chain["imported"])
    assert not [p for p in validate_study(chain["imported"]) if p.severity == "error"]
    va, vb = a.subjects["001"].visits["01"], b.subjects["001"].visits["01"]
    assert va.date == vb.date
    assert set(va.series) == set(vb.series)
    assert set(va.series) >= {"anatomical", "dwi", "t1_vfa", "dce", "t2star"}
    for role, sa in va.series.items():
        sb = vb.series[role]
        xa, xb = sa.load(), sb.load()
        np.testing.assert_allclose(xb.affine, xa.affine, atol=1e-4, err_msg=role)
        np.testing.assert_array_equal(xb.data, xa.data, err_msg=role)
        assert xb.axes == xa.axes
        assert sb.protocol == sa.protocol, role
    side = vb.series["dwi"].sidecar
    assert (side["Manufacturer"], side["MagneticFieldStrength"]) == ("Philips Medical Systems", 3.0)
    assert vb.series["anatomical"].sidecar["EchoTime"] == pytest.approx(0.09)
    la, lb = va.lesions, vb.lesions
    assert la is not None and lb is not None
    np.testing.assert_array_equal(lb.load_labels().data, la.load_labels().data)
    assert lb.load_labels().same_grid(la.load_labels())
    assert lb.table == la.table


def test_default_import_carries_no_identifiers(chain: dict[str, Path]) -> None:
    assert find_identifiers(chain["imported"], IDENTIFIERS) == []
    mapping = chain["tmp"] / "imported-identifiers.tsv"
    text = mapping.read_text()
    for value in IDENTIFIERS[:4]:
        assert value in text
    # the search itself works: the DICOM folder does contain them
    for value in IDENTIFIERS[:4]:
        assert find_identifiers(chain["dicom"], [value])


@pytest.mark.filterwarnings("ignore::tumorscope.errors.TumorscopeWarning")
def test_fitted_maps_equal_and_export_reads_back(chain: dict[str, Path]) -> None:
    from tumorscope.lesions.geometry import measure
    from tumorscope.models import ADC

    a, b = open_study(chain["nifti"]), open_study(chain["imported"])
    maps = []
    for st in (a, b):
        s = st.subjects["001"].visits["01"].series["dwi"]
        vol = s.load()
        res = ADC(s.protocol, method="wlls", backend="numpy").fit(vol.data)
        maps.append(vol.with_data(np.asarray(res["ADC"], dtype=np.float32), axes=("x", "y", "z")))
    np.testing.assert_array_equal(maps[1].data, maps[0].data)

    visit = b.subjects["001"].visits["01"]
    labels = visit.lesions.load_labels()
    sizes = {
        i.lesion_id: measure(labels.data == i.label, labels.affine)
        for i in visit.lesions.table
        if (labels.data == i.label).any()
    }
    out = chain["tmp"] / "export"
    files = export_visit(
        chain["imported"],
        chain["dicom"],
        out,
        subject="001",
        visit="01",
        maps={"ADC": (maps[1], "dwi")},
        response="SD",
        sizes=sizes,
    )
    assert [f.name for f in files] == [
        "sub-001_ses-01_ADC_pm.dcm",
        "sub-001_ses-01_lesions_seg.dcm",
        "sub-001_ses-01_measurements_sr.dcm",
    ]
    pm = pydicom.dcmread(files[0])
    dwi_src = [
        pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(chain["dicom"].rglob("*.dcm"))
    ]
    dwi_uid = next(d.SeriesInstanceUID for d in dwi_src if d.SeriesDescription == "ep2d_diff_tra")
    # de-identified by default: the source series is referenced by its pseudonymous UID
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == pseudonymous_uid(dwi_uid)
    adc = maps[1]
    inv = np.linalg.inv(np.diag([-1.0, -1.0, 1.0, 1.0]) @ adc.affine)
    for n, item in enumerate(pm.PerFrameFunctionalGroupsSequence):
        ipp = np.array([float(x) for x in item.PlanePositionSequence[0].ImagePositionPatient])
        k = round((inv[:3, :3] @ ipp + inv[:3, 3])[2])
        np.testing.assert_array_equal(pm.pixel_array[n].T, adc.data[:, :, k])

    from tumorscope.io.dicom import read_segmentation

    back, rows = read_segmentation(files[1], labels)
    np.testing.assert_array_equal(back.data, labels.data)
    assert [r["lesion_id"] for r in rows] == [r.lesion_id for r in visit.lesions.table]

    sr = hd.sr.srread(files[2])
    groups = {g.tracking_identifier: g for g in sr.content.get_volumetric_roi_measurement_groups()}
    info = visit.lesions.by_label()[1]
    expected = measure(labels.data == 1, labels.affine)
    got = {m.name.meaning: m.value for m in groups[info.lesion_id].get_measurements()}
    assert got["Volume"] == pytest.approx(expected["volume_ml"])
    assert got["Long axis"] == pytest.approx(expected["longest_diameter_mm"])
    vals = adc.data[labels.data == 1]
    mean = next(
        m.value
        for m in groups[info.lesion_id].get_measurements()
        if m.derivation is not None and m.derivation.meaning == "Mean"
    )
    assert mean == pytest.approx(float(vals[np.isfinite(vals)].mean()), rel=1e-6)


def test_cli_import_and_export(chain: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from tumorscope.cli import app

    runner = CliRunner()
    out = chain["tmp"] / "cli-study"
    r = runner.invoke(
        app,
        [
            "import-dicom",
            str(chain["dicom"]),
            str(out),
            "--dce-baseline-frames",
            "5",
            "--role",
            "gre_me*=skip",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "sub-001/ses-01/dwi/sub-001_ses-01_dwi.nii.gz" in r.output
    assert not (out / "sub-001" / "ses-01" / "anat" / "sub-001_ses-01_MEGRE.nii.gz").exists()
    r = runner.invoke(app, ["import-dicom", str(chain["dicom"]), str(out)])
    assert r.exit_code == 2 and "exists" in r.output
    r = runner.invoke(
        app,
        [
            "export-dicom",
            str(out),
            str(chain["dicom"]),
            str(chain["tmp"] / "cli-export"),
            "--subject",
            "001",
            "--visit",
            "01",
            "--response",
            "PD",
        ],
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (chain["tmp"] / "cli-export").iterdir()) == [
        ".tumorscope-export.json",  # the folder's marker: which files the export may replace
        ".tumorscope-export.lock",  # the delivery's lock (two exports into one folder)
        "sub-001_ses-01_lesions_seg.dcm",
        "sub-001_ses-01_measurements_sr.dcm",
    ]
    # the command measures the lesions and the SR reports their size
    from tumorscope.lesions.geometry import measure

    lesions = open_study(out).subjects["001"].visits["01"].lesions
    labels = lesions.load_labels()
    sr = hd.sr.srread(chain["tmp"] / "cli-export" / "sub-001_ses-01_measurements_sr.dcm")
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len({int(x) for x in np.unique(labels.data) if x})
    for info in lesions.table:
        mask = labels.data == info.label
        if not mask.any():
            continue
        expected = measure(mask, labels.affine)
        (group,) = [g for g in groups if g.tracking_identifier == info.lesion_id]
        got = {m.name.meaning: m.value for m in group.get_measurements()}
        assert got["Volume"] == pytest.approx(expected["volume_ml"])
        assert got["Long axis"] == pytest.approx(expected["longest_diameter_mm"])
        assert got["Short axis"] == pytest.approx(expected["short_axis_mm"])


def test_export_of_pipeline_results(chain: dict[str, Path]) -> None:
    """Maps and response found in a run's output folder (map index + assessments table)."""
    import json

    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from tumorscope.io.dicom.export import pipeline_results

    st = open_study(chain["imported"])
    dwi = st.subjects["001"].visits["01"].series["dwi"].load()
    res = chain["tmp"] / "run"
    maps = res / "sub-001" / "ses-01" / "maps"
    adc = dwi.frame(0).with_data(np.full(dwi.spatial_shape, 1.5e-3, np.float32))
    adc.to_nifti(maps / "sub-001_ses-01_adc_ADC.nii.gz")
    dwi.to_nifti(maps / "sub-001_ses-01_x_curve.nii.gz")  # 4-D: not a parameter map
    index = {
        "adc.ADC": {"path": "sub-001/ses-01/maps/sub-001_ses-01_adc_ADC.nii.gz", "unit": "mm2/s"},
        "x.curve": {"path": "sub-001/ses-01/maps/sub-001_ses-01_x_curve.nii.gz", "unit": "1"},
    }
    (maps / "sub-001_ses-01_fit_dwi_index.json").write_text(json.dumps(index))
    rows = [{"subject": "001", "visit": "01", "criteria": "irecist", "response": "iUPD"}]
    pd.DataFrame(rows).to_parquet(res / "sub-001" / "sub-001_assessments.parquet")
    found, response, criteria = pipeline_results(res, subject="001", visit="01")
    assert found["adc.ADC"][1:] == ("mm2/s", "dwi")
    assert (response, criteria) == ("iUPD", "irecist")

    out = chain["tmp"] / "export-run"
    files = export_visit(
        chain["imported"], chain["dicom"], out, subject="001", visit="01", results=res
    )
    assert [f.name for f in files] == [
        "sub-001_ses-01_adc-ADC_pm.dcm",
        "sub-001_ses-01_lesions_seg.dcm",
        "sub-001_ses-01_measurements_sr.dcm",
    ]
    pm = pydicom.dcmread(files[0])
    assert np.all(pm.pixel_array == np.float32(1.5e-3))
    sr = hd.sr.srread(files[-1])
    resp = sr.content.get_image_measurement_groups()[0].get_qualitative_evaluations()[0]
    assert (resp.value.value, resp.value.scheme_designator) == ("iUPD", "99TUMORSCOPE")
    group = sr.content.get_volumetric_roi_measurement_groups()[0]
    means = [m.value for m in group.get_measurements() if m.derivation is not None]
    assert means == [pytest.approx(1.5e-3), pytest.approx(1.5e-3)]


@pytest.mark.filterwarnings("ignore::tumorscope.errors.TumorscopeWarning")
def test_export_of_a_whole_run_maps_each_fit_to_its_source(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    """``export-dicom --results`` of a real run (every step on the imported visit): every 3-D
    map of the run's indexes becomes a Parametric Map referencing the series it was fitted
    from (the index's ``series``: relaxometry, PET and the DCE's T1 from VFA included; until
    2026-12-06 any run with relaxometry or PET maps stopped the export, and the PET and
    metabolic maps' units had no UCUM code); the maps of a series that did not come from DICOM
    are left out with one warning, not the whole export."""
    import json

    study = tmp_path / "study"
    shutil.copytree(chain["imported"], study)
    # the multi-echo GRE as if it had been added as NIfTI (no source UID in the mapping file):
    # its maps are left out of the export with a warning, the others exported
    rows = (chain["tmp"] / "imported-identifiers.tsv").read_text().splitlines(keepends=True)
    (tmp_path / "study-identifiers.tsv").write_text(
        "".join(r for r in rows if "_ses-01_MEGRE.nii.gz" not in r)
    )
    manifest = yaml.safe_load((study / "study.yaml").read_text())
    manifest["dce"] = {"relaxivity": 4.5, "hematocrit": 0.42}  # DICOM does not carry them
    (study / "study.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    summary = run_study(study, tmp_path / "run", report=False)
    assert summary.ok, summary.failed
    with pytest.warns(TumorscopeWarning, match=r"map\(s\) of sub-001/ses-01/anat/sub-001_ses-"
                      r"01_MEGRE.nii.gz not exported \(t2star\.") as caught:  # fmt: skip
        files = export_visit(study, chain["dicom"], tmp_path / "export", subject="001",
                             visit="01", results=tmp_path / "run")  # fmt: skip
    assert len([w for w in caught if "not exported" in str(w.message)]) == 1
    pms = {f.name[len("sub-001_ses-01_") : -len("_pm.dcm")]: f for f in files if "_pm" in f.name}
    entries = {}
    for index in (tmp_path / "run" / "sub-001" / "ses-01" / "maps").glob("*_index.json"):
        for name, e in json.loads(index.read_text()).items():
            if nib.load(tmp_path / "run" / e["path"]).ndim == 3:
                entries[name.replace(".", "-")] = e["series"]
    left_out = {n for n, role in entries.items() if role == "t2star"}
    assert "t2star-T2star" in left_out
    assert set(pms) == set(entries) - left_out and {"irt1-T1", "vfa-T1"} <= set(pms)
    described = {
        pseudonymous_uid(ds.SeriesInstanceUID): ds.SeriesDescription
        for ds in (
            pydicom.dcmread(f, stop_before_pixels=True) for f in chain["dicom"].rglob("*.dcm")
        )
        if "SeriesInstanceUID" in ds
    }
    visit = open_study(study).subjects["001"].visits["01"]
    for name, path in pms.items():
        source = described[pydicom.dcmread(path).ReferencedSeriesSequence[0].SeriesInstanceUID]
        assert source == visit.series[entries[name]].sidecar["SeriesDescription"], name
