"""The synthetic study: reproducible, and its images follow its own truth maps."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.io import open_study
from tumorscope.phantom import (
    SCENARIOS,
    etofts_concentration,
    make_study,
    parker_blood_mM,
    spgr_signal,
)
from tumorscope.volume import Volume


def _digest(root: Path) -> dict[str, str]:
    """Every file's SHA-256 but the record of what was written (tumorscope.owned: it holds
    the files' modification times, the bookkeeping of --overwrite, not the study)."""
    from tumorscope.owned import RECORD_NAME

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != RECORD_NAME
    }


def _truth(root: Path, sid: str, vid: str, name: str) -> np.ndarray:
    p = root / f"derivatives/truth/sub-{sid}/ses-{vid}/sub-{sid}_ses-{vid}_desc-{name}_truth.nii.gz"
    return Volume.from_nifti(p, dtype=np.float64).data


def _mask(root: Path, sid: str, vid: str, name: str) -> np.ndarray:
    p = root / f"derivatives/truth/sub-{sid}/ses-{vid}/sub-{sid}_ses-{vid}_desc-{name}_mask.nii.gz"
    return Volume.from_nifti(p, dtype=np.uint8).data.astype(bool)


def _meta(root: Path) -> dict:
    return json.loads((root / "derivatives/truth/phantom.json").read_text())


def test_same_seed_same_bytes(tiny_study: Path, tmp_path: Path) -> None:
    again = make_study(tmp_path / "again", size="tiny", seed=0)
    assert _digest(again) == _digest(tiny_study)


def test_other_seed_other_noise(tiny_study: Path, tmp_path: Path) -> None:
    other = make_study(tmp_path / "other", size="tiny", seed=1, n_subjects=1)
    rel = "sub-001/ses-01/dwi/sub-001_ses-01_dwi.nii.gz"
    a = Volume.from_nifti(tiny_study / rel).data
    b = Volume.from_nifti(other / rel).data
    assert not np.array_equal(a, b)
    # truth does not depend on the noise seed outside the smooth heterogeneity field
    ta = _truth(tiny_study, "001", "01", "T1")
    tb = _truth(other, "001", "01", "T1")
    np.testing.assert_array_equal(ta, tb)


def test_refuses_to_overwrite(tiny_study: Path) -> None:
    with pytest.raises(DataError, match="output folder exists"):
        make_study(tiny_study, size="tiny")
    with pytest.raises(DataError, match="unknown phantom size 'huge'"):
        make_study(tiny_study.parent / "x", size="huge")


def _tissue_voxels(root: Path, sid: str, vid: str) -> np.ndarray:
    """Body voxels without any arterial partial volume."""
    body = _mask(root, sid, vid, "body")
    frac = _truth(root, sid, vid, "arteryfraction")
    return body & (frac == 0)


def _check_noise(data: np.ndarray, model: np.ndarray, sigma: float) -> None:
    """Residuals of high-SNR samples are zero-mean with SD sigma (Rician ~ Gaussian there)."""
    keep = model > 10 * sigma
    res = (data - model)[keep]
    assert res.size > 500
    # mean within 5 standard errors + the rounding to integers; Rician bias sigma²/(2S) < 0.05 sigma
    assert abs(res.mean()) < 5 * sigma / np.sqrt(res.size) + 0.05 * sigma
    assert res.std() == pytest.approx(np.hypot(sigma, 1 / np.sqrt(12)), rel=0.1)


def test_dwi_follows_truth(tiny_study: Path) -> None:
    sid, vid = "002", "02"
    series = open_study(tiny_study).subjects[sid].visits[vid].series["dwi"]
    data = series.load().data.astype(float)
    b = np.asarray(series.protocol.bvalues)  # type: ignore[union-attr]
    keep = _tissue_voxels(tiny_study, sid, vid)
    s0, d, f, ds, k = (
        _truth(tiny_study, sid, vid, n)[keep][:, None] for n in ("S0", "D", "f", "D_star", "K")
    )
    # IVIM with kurtosis, written out here independently of the phantom's code
    model = s0 * (f * np.exp(-b * ds) + (1 - f) * np.exp(-b * d + (b * d) ** 2 * k / 6))
    _check_noise(data[keep], model, _meta(tiny_study)["sigma"]["dwi"])


def test_vfa_follows_truth(tiny_study: Path) -> None:
    sid, vid = "001", "03"
    series = open_study(tiny_study).subjects[sid].visits[vid].series["t1_vfa"]
    data = series.load().data.astype(float)
    proto = series.protocol
    keep = _tissue_voxels(tiny_study, sid, vid)
    t1 = _truth(tiny_study, sid, vid, "T1")[keep][:, None]
    m0 = _truth(tiny_study, sid, vid, "M0")[keep][:, None]
    a = np.deg2rad(np.asarray(proto.flip_angles_deg))  # type: ignore[union-attr]
    e1 = np.exp(-proto.tr_ms / t1)  # type: ignore[union-attr]
    model = m0 * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)
    _check_noise(data[keep], model, _meta(tiny_study)["sigma"]["vfa"])


def test_megre_follows_truth(tiny_study: Path) -> None:
    sid, vid = "005", "03"
    series = open_study(tiny_study).subjects[sid].visits[vid].series["t2star"]
    data = series.load().data.astype(float)
    te = np.asarray(series.protocol.echo_times_ms)  # type: ignore[union-attr]
    keep = _tissue_voxels(tiny_study, sid, vid)
    t2s = _truth(tiny_study, sid, vid, "T2star")[keep][:, None]
    m0 = _truth(tiny_study, sid, vid, "M0")[keep][:, None]
    _check_noise(data[keep], m0 / 30 * np.exp(-te / t2s), _meta(tiny_study)["sigma"]["megre"])


def test_dce_follows_truth(tiny_study: Path) -> None:
    sid, vid = "003", "02"
    meta = _meta(tiny_study)
    series = open_study(tiny_study).subjects[sid].visits[vid].series["dce"]
    data = series.load().data.astype(float)
    t = np.asarray(series.protocol.frame_times_s)  # type: ignore[union-attr]
    keep = _tissue_voxels(tiny_study, sid, vid)
    delay = SCENARIOS[2].aif_delay_s
    dt = 0.1
    t_fine = np.arange(0.0, t[-1] + 2 * dt, dt)
    cp_fine = parker_blood_mM(t_fine, delay_s=delay) / (1 - meta["hematocrit"])
    kt, ve, vp, t1, m0 = (
        _truth(tiny_study, sid, vid, n)[keep] for n in ("Ktrans", "ve", "vp", "T1", "M0")
    )
    conc = etofts_concentration(t, cp_fine, dt, kt, ve, vp)
    model = spgr_signal(
        m0[:, None],
        1e3 / t1[:, None] + meta["relaxivity"] * conc,
        meta["dce_flip_deg"],
        meta["dce_tr_ms"],
    )
    _check_noise(data[keep], model, meta["sigma"]["dce"])
    # the AIF table holds the plasma curve that was used
    with (tiny_study / "derivatives/truth/aif.tsv").open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    np.testing.assert_allclose(
        [float(r[f"cp_mM_sub-{sid}"]) for r in rows], np.interp(t, t_fine, cp_fine), atol=1e-5
    )


def test_artery_enhances_like_the_aif(tiny_study: Path) -> None:
    """Voxels fully inside the artery follow the blood curve: early, high and narrow."""
    sid, vid = "001", "01"
    data = open_study(tiny_study).subjects[sid].visits[vid].series["dce"].load().data
    art = _truth(tiny_study, sid, vid, "arteryfraction") == 1
    tis = _tissue_voxels(tiny_study, sid, vid)
    assert art.sum() >= 1
    a = data[art].mean(0)
    peak = int(np.argmax(a))
    t = np.asarray(
        json.loads(
            (tiny_study / f"sub-{sid}/ses-{vid}/perf/sub-{sid}_ses-{vid}_dce.json").read_text()
        )["FrameTimes"]
    )
    assert 18.0 <= t[peak] <= 40.0  # bolus arrives at 18 s, blood peaks ~10 s later
    assert a.max() / a[:5].mean() > 4 * (data[tis].mean(0).max() / data[tis].mean(0)[:5].mean())


def test_trajectories_are_labelled_and_sizes_follow_them(tiny_study: Path) -> None:
    with (tiny_study / "derivatives/truth/trajectories.tsv").open() as fh:
        traj = list(csv.DictReader(fh, delimiter="\t"))
    labels = {r["trajectory"] for r in traj}
    assert labels == {
        "responder",
        "pseudoprogressor",
        "progressor",
        "mixed",
        "hyperprogressor",
        "stable",
    }
    assert any(r["role"] == "new" for r in traj)
    assert any(r["nodal"] == "true" and r["role"] == "target" for r in traj)
    assert any(r["role"] == "non-target" for r in traj)
    with (tiny_study / "derivatives/truth/lesions.tsv").open() as fh:
        les = list(csv.DictReader(fh, delimiter="\t"))
    vol = {(r["subject"], r["visit"], r["lesion_id"]): float(r["ellipsoid_volume_ml"]) for r in les}
    # pseudoprogressor: grows at visit 2, then shrinks below baseline
    assert vol[("002", "02", "L1")] > 1.9 * vol[("002", "01", "L1")]
    assert vol[("002", "04", "L1")] < 0.3 * vol[("002", "01", "L1")]
    # a new lesion appears only at the third visit of the progressor
    study = open_study(tiny_study)
    present = {v.id: {r.lesion_id for r in v.lesions.table} for v in study.subjects["003"]}  # type: ignore[union-attr]
    assert "NEW1" not in present["01"] and "NEW1" not in present["02"] and "NEW1" in present["03"]
    # the label map's voxels of a lesion match the truth table's count
    v = study.subjects["001"].visits["03"]
    masks = v.lesions.masks()  # type: ignore[union-attr]
    counts = {
        r["lesion_id"]: int(r["n_voxels"])
        for r in les
        if r["subject"] == "001" and r["visit"] == "03"
    }
    assert {k: int(m.sum()) for k, m in masks.items()} == {k: c for k, c in counts.items() if c > 0}


def test_functional_trajectories_in_truth(tiny_study: Path) -> None:
    """Responder: D rises and Ktrans falls in the lesion; pseudoprogressor: D falls then rises."""
    study = open_study(tiny_study)

    def lesion_mean(sid: str, vid: str, name: str) -> float:
        m = study.subjects[sid].visits[vid].lesions.masks()["L1"]  # type: ignore[union-attr]
        return float(np.nanmedian(_truth(tiny_study, sid, vid, name)[m]))

    assert lesion_mean("001", "03", "D") > 1.3 * lesion_mean("001", "01", "D")
    assert lesion_mean("001", "03", "Ktrans") < 0.6 * lesion_mean("001", "01", "Ktrans")
    assert (
        lesion_mean("002", "02", "D")
        < lesion_mean("002", "01", "D")
        < lesion_mean("002", "04", "D")
    )


def test_substudy_series_follow_truth(tiny_study: Path) -> None:
    """IR T1, multi-echo T2 and the post-ferumoxytol GRE follow T1, T2 and T2*, dR2*."""
    sid, vid = "001", "02"
    meta = _meta(tiny_study)
    v = open_study(tiny_study).subjects[sid].visits[vid]
    keep = _tissue_voxels(tiny_study, sid, vid)
    pd = _truth(tiny_study, sid, vid, "M0")[keep][:, None] / 30
    t1 = _truth(tiny_study, sid, vid, "T1")[keep][:, None]
    ti = np.asarray(v.series["t1_ir"].protocol.inversion_times_ms)  # type: ignore[union-attr]
    ir = np.abs(pd * (1 - 2 * np.exp(-ti / t1) + np.exp(-meta["ir_tr_ms"] / t1)))
    _check_noise(v.series["t1_ir"].load().data[keep].astype(float), ir, meta["sigma"]["ir"])
    t2 = _truth(tiny_study, sid, vid, "T2")[keep][:, None]
    te2 = np.asarray(v.series["t2"].protocol.echo_times_ms)  # type: ignore[union-attr]
    mese = pd * np.exp(-te2 / t2)
    _check_noise(v.series["t2"].load().data[keep].astype(float), mese, meta["sigma"]["mese"])
    r2s = 1e3 / _truth(tiny_study, sid, vid, "T2star")[keep][:, None]
    dr = _truth(tiny_study, sid, vid, "dR2star_ferumoxytol")[keep][:, None]
    post_series = v.series["t2star_ferumoxytol"]
    te = np.asarray(post_series.protocol.echo_times_ms)  # type: ignore[union-attr]
    post = pd * np.exp(-te * 1e-3 * (r2s + dr))
    _check_noise(post_series.load().data[keep].astype(float), post, meta["sigma"]["megre"])
    # macrophage-rich responding tumour takes up iron
    masks = v.lesions.masks()  # type: ignore[union-attr]
    assert np.nanmedian(_truth(tiny_study, sid, vid, "dR2star_ferumoxytol")[masks["L1"]]) > 15


def test_fluorine_cells_recovered(tiny_study: Path) -> None:
    """19F: cells in a lesion from the reference-tube calibration (Srinivas et al. 2007,
    doi:10.1002/mrm.21288) match the truth within 3 noise-predicted standard errors."""
    from tumorscope.models.cells.fluorine import calibrate_fluorine, count_cells

    sid, vid = "002", "02"
    v = open_study(tiny_study).subjects[sid].visits[vid]
    img = v.series["fluorine"].load()
    tubes = v.series["fluorine_tubes"].load().data.astype(int)
    side = v.series["fluorine"].sidecar
    keys = sorted(int(k) for k in side["ReferenceTubes"])
    conc = [side["ReferenceTubes"][str(k)] for k in keys]
    background = ~_mask(tiny_study, sid, vid, "body") & (tubes == 0)
    cal = calibrate_fluorine(
        img.data,
        [tubes == k for k in keys],
        conc,
        voxel_volume_ml=img.voxel_volume_ml,
        background=background,
    )
    lesion_labels = Volume.from_nifti(v.lesions.map_path, dtype=np.int32).data  # type: ignore[union-attr]
    res = count_cells(img.data, lesion_labels, cal, fluorine_per_cell=side["FluorinePerCell"])
    truth = _truth(tiny_study, sid, vid, "cells19F")
    label_l1 = next(r.label for r in v.lesions.table if r.lesion_id == "L1")  # type: ignore[union-attr]
    i = list(np.asarray(res["label"]).tolist()).index(label_l1)
    true_cells = float(truth[lesion_labels == label_l1].sum())
    cells, se = float(res["cells"][i]), float(res["cells_se"][i])
    assert np.isfinite(cells) and se > 0
    assert abs(cells - true_cells) <= 3 * se, (cells, se, true_cells)


def test_no_phantom_visit_is_dated_in_the_future_however_many_subjects() -> None:
    """``validate`` refuses a visit after today: subject 40's baseline was 2026-10-05."""
    import datetime as dt

    from tumorscope.phantom.generate import _subject_plan

    plan = _subject_plan(200, seed=0)
    last = max(bl + dt.timedelta(days=max(sc.visit_days)) for _, sc, bl in plan)
    assert last <= dt.date(2026, 9, 30)
    assert [bl for _, _, bl in plan[:3]] == [dt.date(2026, 1, 5), dt.date(2026, 1, 12),
                                              dt.date(2026, 1, 19)]  # fmt: skip
