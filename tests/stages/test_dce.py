"""The DCE stage (:mod:`tumorscope.stages.dce`) on a one-subject tiny phantom.

Accuracy tolerance: the phantom simulates tissue curves on a 0.1 s grid (not the
piecewise-linear frame-time AIF the models assume), adds Rician noise (SNR 40 on the DCE,
100 on the VFA) and the T1 comes from a VFA fit, so the fit is not exact. Measured median
relative errors in the lesion voxels: Ktrans 2.2–2.6%, ve 1.9–2.2% (true or aligned Parker
AIF), 4.6% / 2.7% with the automatic AIF (partial volume in the artery); the tests allow 5%
(8% for the automatic AIF) and 0.005 absolute on vp.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tumorscope.errors import DataError, FitError, ProtocolError, TumorscopeError
from tumorscope.io import open_study
from tumorscope.protocol import DynamicProtocol, VFAProtocol
from tumorscope.stages.base import SeriesInput
from tumorscope.stages.dce import DCEOptions, fit_dce, fit_dce_visit
from tumorscope.volume import Volume


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tumorscope.phantom.generate import make_study

    return make_study(tmp_path_factory.mktemp("dce") / "study", size="tiny", n_subjects=1)


@pytest.fixture(scope="module")
def visit(phantom: Path):
    study = open_study(phantom)
    return next(iter(study.visits()))


def _truth(root: Path, name: str) -> np.ndarray:
    d = root / "derivatives" / "truth" / "sub-001" / "ses-01"
    return Volume.from_nifti(d / f"sub-001_ses-01_desc-{name}.nii.gz").data


def _errors(out, root: Path) -> dict[str, float]:
    kt, ve, vp = (_truth(root, f"{p}_truth") for p in ("Ktrans", "ve", "vp"))
    m = (out.fit.status <= 2) & np.isfinite(kt) & (kt > 0)
    assert m.sum() > 50
    return {
        "Ktrans": float(np.median(np.abs(out.fit["Ktrans"][m] / kt[m] - 1))),
        "ve": float(np.median(np.abs(out.fit["ve"][m] / ve[m] - 1))),
        "vp": float(np.median(np.abs(out.fit["vp"][m] - vp[m]))),
    }


def _quiet(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args, **kwargs)


def _in_memory(vol: Volume, role: str, protocol, sidecar=None) -> SeriesInput:
    """A series held in memory (no file: provenance names it "volume")."""
    return SeriesInput(Path(role), role, protocol, sidecar or {}, loader=lambda: vol)


def _raises(cls: type[TumorscopeError], call, *, message: str, field: str, file=None) -> None:
    """``call()`` raises exactly ``cls`` with this message, field and file."""
    with pytest.raises(cls) as info:
        call()
    assert type(info.value) is cls
    assert (info.value.message, info.value.field, info.value.file) == (
        message,
        field,
        None if file is None else str(file),
    )


def test_visit_with_aligned_parker_aif(visit, phantom: Path, tmp_path: Path) -> None:
    out = _quiet(fit_dce_visit, visit, out_dir=tmp_path, options=DCEOptions(aif="parker"))
    err = _errors(out, phantom)
    assert err["Ktrans"] < 0.05 and err["ve"] < 0.05 and err["vp"] < 0.005, err
    assert out.aif_info["source"] == "parker" and out.aif_info["delay_estimated"]
    pre = "sub-001_ses-01_"
    for name in ("extended_tofts_Ktrans", "concentration", "vfa_T1", "sq_iAUC60", "aif", "stage"):
        assert out.outputs[name].exists(), name
        assert out.outputs[name].name.startswith(pre)
    side = json.loads((tmp_path / f"{pre}extended_tofts_Ktrans.json").read_text())
    assert side["Units"] == "1/min"
    assert side["Provenance"]["model"] == "extended_tofts"
    assert "sha256" in side["Provenance"]["inputs"]["dce"]
    conc = json.loads((tmp_path / f"{pre}concentration.json").read_text())
    assert conc["Units"] == "mM" and conc["Provenance"]["relaxivity_per_mM_s"] == 4.5
    stage = json.loads(out.outputs["stage"].read_text())
    assert stage["aif"]["hematocrit"] == 0.42 and "delay_s" in stage["aif"]
    assert Volume.from_nifti(out.outputs["concentration"]).data.ndim == 4
    with open(out.outputs["aif"], encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == out.times_s.size
    np.testing.assert_allclose([float(r["cp_mM"]) for r in rows], out.aif_mM, rtol=1e-5, atol=1e-6)


def test_automatic_aif_chooses_artery_voxels(visit, phantom: Path, tmp_path: Path) -> None:
    options = DCEOptions(aif="auto", semiquant=False)
    out = _quiet(fit_dce_visit, visit, out_dir=tmp_path, options=options)
    artery = _truth(phantom, "artery_mask") > 0
    vox = np.array(out.aif_info["voxels"])
    assert artery[tuple(vox.T)].all()
    assert Volume.from_nifti(out.outputs["aif_voxels"]).data.sum() == len(vox)
    err = _errors(out, phantom)
    assert err["Ktrans"] < 0.08 and err["ve"] < 0.08, err
    assert not any(k.startswith("sq_") for k in out.outputs)
    assert not any(m.model == "sq" for m in out.maps)


def test_aif_from_file_and_delay_fit(visit, phantom: Path, tmp_path: Path) -> None:
    with open(phantom / "derivatives" / "truth" / "aif.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    path = tmp_path / "aif.csv"
    path.write_text(
        "time_s,cp_mM\n" + "".join(f"{r['time_s']},{r['cp_mM_sub-001']}\n" for r in rows)
    )
    options = DCEOptions(aif=path, fit_delay=True)
    out = _quiet(fit_dce_visit, visit, out_dir=tmp_path / "o", options=options)
    assert out.aif_info["kind"] == "plasma"
    assert "delay" in out.fit.maps
    err = _errors(out, phantom)
    assert err["Ktrans"] < 0.05 and err["ve"] < 0.05 and err["vp"] < 0.005, err
    kt = _truth(phantom, "Ktrans_truth")
    m = (out.fit.status <= 2) & np.isfinite(kt) & (kt > 0)
    # the true AIF is aligned: fitted delays are near zero
    assert abs(float(np.median(out.fit["delay"][m]))) < 2.0


def test_bad_input_is_rejected_before_writing(visit, tmp_path: Path) -> None:
    """Each bad input raises its own error (class, message, field, file); nothing is written."""
    dce = SeriesInput.of(visit.series["dce"])
    vfa = SeriesInput.of(visit.series["t1_vfa"])
    out = tmp_path / "never"

    def run(dce_in=dce, vfa_in=None, **options):
        return fit_dce(dce_in, vfa_in, out_dir=out, options=DCEOptions(**options))

    _raises(
        FitError,
        lambda: run(vfa_in=vfa, t1_ms=1000.0),
        message="give exactly one of a VFA series (vfa=, --vfa) or a T1 value (t1_ms=, --t1-ms)",
        field="t1",
    )
    _raises(
        FitError,
        lambda: run(),
        message="give exactly one of a VFA series (vfa=, --vfa) or a T1 value (t1_ms=, --t1-ms)",
        field="t1",
    )
    _raises(
        FitError,
        lambda: run(t1_ms=1000.0, model="ivim"),
        message="unknown DCE model 'ivim'; expected one of "
        "('tofts', 'extended_tofts', 'patlak', '2cxm', '2cum')",
        field="model",
    )
    _raises(
        FitError,
        lambda: run(t1_ms=1000.0, method="bayes"),
        message="unknown method 'bayes' for model 'extended_tofts'; "
        "expected one of 'varpro', 'lm', 'linear'",
        field="method",
    )
    _raises(
        ProtocolError, lambda: run(t1_ms=-5.0), message="must be > 0 ms, got -5.0", field="t1_ms"
    )
    _raises(
        ProtocolError,
        lambda: run(t1_ms=1000.0, hematocrit=1.5),
        message="must be in [0, 1), got 1.5",
        field="Hematocrit",
    )
    _raises(
        FitError,
        lambda: run(t1_ms=1000.0, aif="nope"),
        message="unknown AIF 'nope': expected one of ('parker', 'georgiou', 'mcgrath', 'auto') "
        "or an existing CSV/TSV file",
        field="aif",
    )
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(128, 256)) * 8)
    _raises(
        DataError,
        lambda: run(t1_ms=1000.0, aif=binary),
        message="not a text table (expected CSV or TSV with time_s and a concentration column)",
        field="aif",
        file=binary,
    )
    short = tmp_path / "short.csv"
    short.write_text("time_s,cb_mM\n0,0\n10,1\n20,2\n")
    last = visit.series["dce"].protocol.t[-1]
    _raises(
        DataError,
        lambda: run(t1_ms=1000.0, aif=short),
        message=f"the AIF covers 0-20 s but the frames span 0-{last:g} s",
        field="time_s",
        file=short,
    )
    # a DCE volume without sidecar values: no relaxivity anywhere
    vol = Volume.from_nifti(visit.series["dce"].path)
    proto = DynamicProtocol(tuple(np.arange(vol.n_measurements) * 3.5), 15.0, 5.0, 5)
    _raises(
        ProtocolError,
        lambda: run(_in_memory(vol, "dce", proto), t1_ms=1000.0),
        message="no relaxivity given: set Relaxivity in the DCE sidecar, 'relaxivity' under "
        "'dce:' in study.yaml, or pass relaxivity=",
        field="Relaxivity",
    )
    # a VFA series on another grid
    v = Volume.from_nifti(vfa.path)
    moved = Volume(v.data, v.affine @ np.diag([1.0, 1.0, 2.0, 1.0]), v.axes, v.meta)
    vfa_moved = _in_memory(moved, "t1_vfa", VFAProtocol((2.0, 5.0, 10.0, 15.0), 5.0))
    _raises(
        DataError,
        lambda: run(vfa_in=vfa_moved),
        message=f"the VFA series grid {v.spatial_shape} differs from the DCE grid "
        f"{v.spatial_shape} (or their affines differ); register them first",
        field="affine",
    )
    assert not out.exists()


def test_visit_maps_are_what_the_pipeline_indexes(visit, tmp_path: Path) -> None:
    """Model maps (with the model's status map and fit), sq maps (no status) and VFA T1/R1
    (VFA status), each on the grid of its series; every file and sidecar listed."""
    out = _quiet(fit_dce_visit, visit, out_dir=tmp_path, options=DCEOptions(model="tofts"))
    files = out.outputs
    by_model: dict[str, list] = {}
    for m in out.maps:
        by_model.setdefault(m.model, []).append(m)
    assert [m.parameter for m in by_model["tofts"]] == [
        p for p in out.fit.maps if f"tofts_{p}" in files
    ]
    assert {m.parameter for m in by_model["tofts"]} >= {"Ktrans", "ve", "kep"}
    for m in by_model["tofts"]:
        assert (m.path, m.status, m.series, m.fit) == (
            files[f"tofts_{m.parameter}"],
            files["tofts_status"],
            "dce",
            out.fit,
        )
    assert {m.parameter for m in by_model["sq"]} == {k[3:] for k in files if k.startswith("sq_")}
    assert all(m.status is None and m.series == "dce" for m in by_model["sq"])
    assert [(m.parameter, m.path, m.status, m.series, m.fit) for m in by_model["vfa"]] == [
        (p, files[f"vfa_{p}"], files["vfa_status"], "t1_vfa", None) for p in ("T1", "R1")
    ]
    assert set(by_model) == {"tofts", "sq", "vfa"}
    written = {p for p in tmp_path.iterdir()}
    assert set(out.files) == written and len(out.files) == len(written)
    assert out.rows == {}


def test_an_empty_mask_writes_empty_maps_with_a_note(visit, tmp_path: Path) -> None:
    """Every lesion gone (an empty mask): no error; the same files as a fitted visit, every
    map NaN with status 255, the note in the warnings and the stage JSON, the population AIF
    not aligned (0 s: no voxel uses it); the curve type (a class map) is 0, unclassified."""
    full = _quiet(fit_dce_visit, visit, out_dir=tmp_path / "full")
    empty = np.zeros(visit.series["dce"].load().spatial_shape, bool)
    out = _quiet(fit_dce_visit, visit, out_dir=tmp_path / "empty", mask=empty)
    assert sorted(out.outputs) == sorted(full.outputs)
    assert [m.name for m in out.maps] == [m.name for m in full.maps]
    for m in out.maps:
        data = Volume.from_nifti(m.path).data
        assert np.isnan(data).all() or (m.parameter == "curve_type" and not data.any()), m.name
    assert np.all(out.fit.status == 255)
    assert any("the mask is empty" in w for w in out.warnings)
    stage = json.loads(out.outputs["stage"].read_text())
    assert "the mask is empty" in stage["note"]
    assert (stage["aif"]["delay_s"], stage["aif"]["delay_estimated"]) == (0.0, False)


def test_provenance_names_inputs_relative_to_the_study(visit, tmp_path: Path) -> None:
    """Sidecars and the stage JSON name inputs by their path in the study (with their
    SHA-256) and the files written by their name: no absolute path, no user's folder."""
    out = _quiet(fit_dce_visit, visit, out_dir=tmp_path, options=DCEOptions(model="tofts"))
    stage = json.loads(out.outputs["stage"].read_text())
    assert stage["dce"] == visit.series["dce"].relpath
    assert stage["inputs"]["dce"]["path"] == stage["dce"]
    assert len(stage["inputs"]["vfa"]["sha256"]) == 64
    assert stage["files"]["tofts_Ktrans"] == out.outputs["tofts_Ktrans"].name
    for path in out.files:
        if path.suffix == ".json":
            text = path.read_text()
            assert str(tmp_path) not in text and str(visit.study.root) not in text, path.name


def test_b1_map_corrects_t1_and_concentration(tmp_path: Path) -> None:
    """Noise-free volume acquired with 15% too large flip angles: with the B1 map the stage
    recovers the truth (rtol 1e-3: float32 images); without it Ktrans is biased."""
    from tumorscope.models import aif as aifmod
    from tumorscope.models.dce import concentration_to_signal
    from tumorscope.models.dce import kinetics as kin
    from tumorscope.models.relaxometry import spgr_signal

    rng = np.random.default_rng(4)
    shape = (4, 4, 2)
    t = np.arange(0.0, 300.0, 3.0)
    cp = aifmod.blood_to_plasma(aifmod.parker(t, delay_s=12.0), hematocrit=0.42)
    truth = np.stack(
        [
            rng.uniform(0.1, 0.4, shape),
            rng.uniform(0.2, 0.5, shape),
            rng.uniform(0.01, 0.08, shape),
        ],
        axis=-1,
    )
    conc = kin.extended_tofts(truth, t, cp)
    t1 = rng.uniform(800.0, 1500.0, shape)
    b1 = np.full(shape, 1.15)
    fa = (2.0, 5.0, 10.0, 15.0)
    m0 = np.full(shape, 1000.0)
    vfa = spgr_signal(np.stack([m0, t1], -1), fa, 5.0, b1=b1)
    dce = concentration_to_signal(conc, t1_ms=t1, flip_angle_deg=15.0, tr_ms=5.0,
                                  relaxivity=4.5, m0=m0, b1=b1)  # fmt: skip
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    dce_in = _in_memory(
        Volume(dce.astype(np.float32), aff), "dce", DynamicProtocol(tuple(t), 15.0, 5.0, 4)
    )
    vfa_in = _in_memory(Volume(vfa.astype(np.float32), aff), "t1_vfa", VFAProtocol(fa, 5.0))
    options = DCEOptions(relaxivity=4.5, hematocrit=0.42, aif_delay_s=12.0, semiquant=False)

    def run(out: Path, **kw):
        return _quiet(fit_dce, dce_in, vfa_in, out_dir=out, options=options, **kw)

    good = run(tmp_path / "b1", b1=b1)
    np.testing.assert_allclose(good.t1_ms, t1, rtol=1e-3)
    np.testing.assert_allclose(good.fit["Ktrans"], truth[..., 0], rtol=1e-3)
    np.testing.assert_allclose(good.fit["vp"], truth[..., 2], rtol=1e-3, atol=1e-4)
    assert (tmp_path / "b1" / "vfa_T1.nii.gz").exists()
    bad = run(tmp_path / "nob1")
    assert np.median(np.abs(bad.fit["Ktrans"] / truth[..., 0] - 1)) > 0.05
    _raises(
        DataError,
        lambda: run(tmp_path / "x", b1=b1 * 100),
        message="expected a relative flip-angle map near 1 (actual / nominal); divide a map in "
        "percent by 100",
        field="b1",
    )


def test_visit_reads_the_b1_map_named_by_the_vfa_sidecar(phantom: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "study"
    shutil.copytree(phantom, root)
    vfa_json = root / "sub-001" / "ses-01" / "anat" / "sub-001_ses-01_VFA.json"
    side = json.loads(vfa_json.read_text())
    side["B1map"] = "b1.nii.gz"
    vfa_json.write_text(json.dumps(side))
    visit = next(iter(open_study(root).visits()))
    _raises(
        DataError,
        lambda: fit_dce_visit(visit, out_dir=tmp_path / "o1"),
        message="the VFA sidecar names a B1 map 'b1.nii.gz' that does not exist",
        field="B1map",
        file=visit.series["t1_vfa"].relpath,
    )
    like = Volume.from_nifti(visit.series["t1_vfa"].path)
    Volume(np.full(like.spatial_shape, 1.0, np.float32), like.affine).to_nifti(
        vfa_json.parent / "b1.nii.gz"
    )
    out = _quiet(fit_dce_visit, visit, out_dir=tmp_path / "o2", options=DCEOptions(semiquant=False))
    stage = json.loads(out.outputs["stage"].read_text())
    assert stage["t1"]["b1"].endswith("b1.nii.gz")
    assert (
        "b1"
        in json.loads((tmp_path / "o2" / "sub-001_ses-01_vfa_T1.json").read_text())["Provenance"][
            "inputs"
        ]
    )
