"""The immune-imaging steps: ``iron`` (ferumoxytol ΔR2*) and ``fluorine`` (19F cell counts).

Truth recovery and the report are read from the session's complete run of the two-subject
phantom (``full_run``); skipping and up-to-date re-runs use a light run on a copy of the
six-subject ``tiny_study``, where subjects 003-006 have no immune-imaging series.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tumorscope.io import open_study
from tumorscope.volume import Volume

IMMUNE = ("register", "fit_relax", "iron", "fluorine")


def _truth(study: Path, s: str, v: str, desc: str) -> np.ndarray:
    p = (
        study
        / "derivatives"
        / "truth"
        / f"sub-{s}"
        / f"ses-{v}"
        / f"sub-{s}_ses-{v}_desc-{desc}.nii.gz"
    )
    return Volume.from_nifti(p).data


def test_iron_recovers_truth_dr2star_in_lesions_of_subject_001(full_run: Any) -> None:
    """Per-lesion median ΔR2* within 3 noise-predicted standard errors of the truth median.

    The standard error of a median is ≈ 1.2533 σ/√n; σ is the robust spread (IQR/1.349) of the
    estimated ΔR2* in the lesion (it holds the fit noise of both T2* fits, the truth is
    nearly uniform per lesion). A floor of 1 /s (≈ 4 % of the 28 /s uptake) covers the
    remaining fit bias of a Rician-floor-aware T2* fit at the post-contrast noise level.
    Lesions of fewer than 5 voxels at a visit are left out (a median of 1-4 noisy voxels).
    """
    out = full_run.out_dir
    study_root = out.parent / "study"
    study = open_study(study_root)
    checked = 0
    for visit in study.subjects["001"]:
        v = visit.id
        maps = out / "sub-001" / f"ses-{v}" / "maps"
        dr = Volume.from_nifti(maps / f"sub-001_ses-{v}_iron_dR2star.nii.gz").data
        st = Volume.from_nifti(maps / f"sub-001_ses-{v}_iron_status.nii.gz", dtype=np.uint8).data
        fe = Volume.from_nifti(maps / f"sub-001_ses-{v}_iron_Fe.nii.gz").data
        truth = _truth(study_root, "001", v, "dR2star_ferumoxytol_truth")
        assert visit.lesions is not None
        labels = visit.lesions.load_labels().data
        for info in visit.lesions.table:
            m = labels == info.label
            if m.sum() < 5:
                continue
            ok = m & (st == 0) & np.isfinite(dr)
            assert ok.sum() >= 0.8 * m.sum(), f"{info.lesion_id} visit {v}: too few converged"
            est, true = float(np.median(dr[ok])), float(np.median(truth[m]))
            q1, q3 = np.percentile(dr[ok], [25, 75])
            se = 1.2533 * (q3 - q1) / 1.349 / np.sqrt(ok.sum())
            tol = max(3 * se, 1.0)
            assert abs(est - true) <= tol, (info.lesion_id, v, est, true, tol)
            # the iron map is ΔR2* over the 3 T ferumoxytol plasma r2* (55.7 /(mM s), Knobloch et al. 2018)
            np.testing.assert_allclose(fe[ok], dr[ok] / 55.7, rtol=1e-5)
            checked += 1
    assert checked >= 8


def test_iron_maps_are_measured_per_lesion(full_run: Any) -> None:
    tidy = pd.read_parquet(full_run.out_dir / "sub-001" / "sub-001_measurements.parquet")
    got = tidy[(tidy["map"] == "iron.dR2star") & (tidy["statistic"] == "median")]
    assert set(got["visit"]) == {"01", "02", "03", "04"}
    assert set(got["unit"]) == {"1/s"}
    n1 = got[(got["lesion_id"] == "N1") & (got["visit"] == "01")]["value"].iloc[0]
    assert 27.0 < n1 < 33.0  # immune-infiltrated node: truth 30 /s


def test_fluorine_count_of_lesion_l1_matches_truth(full_run: Any) -> None:
    out = full_run.out_dir
    study_root = out.parent / "study"
    t = pd.read_parquet(out / "sub-002" / "ses-02" / "sub-002_ses-02_cells19F.parquet")
    visit = open_study(study_root).subjects["002"].visits["02"]
    assert visit.lesions is not None
    truth = _truth(study_root, "002", "02", "cells19F_truth")
    by = t.set_index("lesion_id")
    l1 = by.loc["L1"]
    true_l1 = float(np.nansum(truth[visit.lesions.masks()["L1"]]))
    assert l1["status"] == "quantified"
    assert abs(l1["cells"] - true_l1) <= 3 * l1["cells_se"], (l1["cells"], true_l1, l1["cells_se"])
    # L2 holds 1e5 cells/mL: about 16 000 cells per voxel, under the detection limit
    l2 = by.loc["L2"]
    assert l2["status"] == "below detection" and np.isnan(l2["cells"])
    assert l2["cells_detection_limit"] > 0
    # and in the database, beside the map statistics
    import sqlite3

    with sqlite3.connect(out / "tumorscope.sqlite") as db:
        rows = db.execute(
            "select lesion_id, statistic, value from measurements where step='fluorine'"
        ).fetchall()
    got = {(r[0], r[1]): r[2] for r in rows}
    assert got[("L1", "cells")] == pytest.approx(l1["cells"])
    assert got[("L2", "cells")] is None


def test_report_shows_relaxometry_iron_maps_and_19f_section(full_run: Any) -> None:
    report = full_run.out_dir / "report"
    sub2 = (report / "sub-002.html").read_text()
    assert 'id="fig-relax"' in sub2 and 'id="cells19f-table"' in sub2
    assert "below detection" in sub2 and "19F cell imaging" in sub2
    sub1 = (report / "sub-001.html").read_text()
    assert 'id="fig-relax"' in sub1 and 'id="cells19f"' not in sub1
    index = (report / "index.html").read_text()
    assert "Model ?" not in index and "tumorscope ?" not in index
    assert "Model iron" in index and "Model semi-quantitative" in index


def test_immune_steps_skip_subjects_without_the_series_and_rerun_is_up_to_date(
    tiny_study: Path, tmp_path: Path
) -> None:
    from tumorscope.pipeline import run_study

    study = tmp_path / "study"
    shutil.copytree(tiny_study, study)
    kw: dict[str, Any] = {"steps": IMMUNE, "report": False}
    first = run_study(study, tmp_path / "out", **kw)
    assert not first.failed, first.failed
    iron = sorted(u for u in first.done if u.startswith("iron "))
    assert {u.split()[1].split("/")[0] for u in iron} == {"sub-001", "sub-002"}
    assert len(iron) == 8
    assert [u for u in first.done if u.startswith("fluorine ")] == ["fluorine sub-002/ses-02"]
    second = run_study(study, tmp_path / "out", **kw)
    assert not second.failed
    assert not [u for u in second.done if u.split()[0] in IMMUNE], second.done
    assert "iron sub-001/ses-01" in second.skipped and "fluorine sub-002/ses-02" in second.skipped


def test_hypoxia_classifies_only_with_thresholds(
    full_run: Any, study2: Path, tmp_path: Path
) -> None:
    """Without thresholds (the default) the step writes nothing; with them, per-lesion classes."""
    from tumorscope.pipeline import run_study

    assert not list(full_run.out_dir.rglob("*_hypoxia.parquet"))
    assert "hypoxia sub-001/ses-01" in full_run.done
    opts = {"hypoxia_r2star_per_s": 30.0, "hypoxia_ktrans_per_min": 0.2}
    res = run_study(
        study2,
        tmp_path / "out",
        steps=("register", "fit_relax", "fit_dce", "hypoxia"),
        options=opts,
        report=False,
    )
    assert not res.failed, res.failed
    t = pd.read_parquet(tmp_path / "out" / "sub-002" / "ses-02" / "sub-002_ses-02_hypoxia.parquet")
    fr = t[[c for c in t if str(c).startswith("fraction_")]].to_numpy()
    np.testing.assert_allclose(fr.sum(axis=1), 1.0)
    # infiltrated tumour: T2* 30 ms (R2* 33 /s > 30) and Ktrans 0.35 /min (> 0.2): perfused
    l1 = t.set_index("lesion_id").loc["L1"]
    assert l1["fraction_high_r2star_perfused"] > 0.5
    assert list((tmp_path / "out" / "sub-002" / "ses-02" / "maps").glob("*_hypoxia_classes.nii.gz"))
