"""The lesion stage on the synthetic study: geometry, fitted-map statistics, tracking, CLI."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tumorscope.cli import app
from tumorscope.errors import DataError, TumorscopeWarning
from tumorscope.io import open_study
from tumorscope.lesions.tracking import VisitLabels, track_lesions
from tumorscope.stages.lesions import LESION_COLUMNS, discover_maps, measure_study
from tumorscope.volume import Volume


def _truth_lesions(root: Path) -> pd.DataFrame:
    with open(root / "derivatives" / "truth" / "lesions.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    df = pd.DataFrame(rows)
    df["n_voxels"] = df["n_voxels"].astype(int)
    return df


def _truth_subset(root: Path, dst: Path, params: tuple[str, ...]) -> Path:
    """A maps folder holding links to some of the phantom's truth maps (keeps tests fast)."""
    src = root / "derivatives" / "truth"
    for p in src.glob("sub-*/ses-*/*_truth.nii.gz"):
        if any(p.name.endswith(f"_desc-{q}_truth.nii.gz") for q in params):
            link = dst / p.relative_to(src)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(p)
    return dst


@pytest.fixture(scope="module")
def truth_maps(tiny_study, tmp_path_factory):
    return _truth_subset(tiny_study, tmp_path_factory.mktemp("truth"), ("T1", "D", "Ktrans"))


@pytest.fixture(scope="module")
def truth_table(tiny_study, truth_maps):
    return measure_study(tiny_study, maps=truth_maps)


def test_geometry_rows_and_tracking_against_truth(tiny_study, truth_table):
    df = truth_table
    assert tuple(df.columns[: len(LESION_COLUMNS)]) == LESION_COLUMNS
    truth = _truth_lesions(tiny_study)
    present = truth[truth["n_voxels"] > 0]
    got = df[df["present"]].set_index(["subject", "visit", "lesion_id"])
    assert len(got) == len(present)
    vox_ml = (
        float(
            np.prod(
                open_study(tiny_study)
                .subjects["001"]
                .visits["01"]
                .lesions.load_labels()
                .voxel_sizes
            )
        )
        / 1000
    )
    for r in present.itertuples():
        assert got.loc[(r.subject, r.visit, r.lesion_id), "volume_ml"] == pytest.approx(
            r.n_voxels * vox_ml
        )
    # new lesions are flagged at their first appearance, after the first visit
    first = present.groupby(["subject", "lesion_id"])["visit"].min()
    study = open_study(tiny_study)
    for (s, lid), v in first.items():
        status = got.loc[(s, v, lid), "tracking"]
        order = list(study.subjects[s].visits)
        base = order.index(study.subjects[s].baseline.id)
        expected = ["prebaseline", "baseline", "new"][int(np.sign(order.index(v) - base)) + 1]
        assert status == expected
    assert (got.loc[("005", "01", "L1"), "tracking"]) == "baseline"  # seen at pre-baseline 00
    # the truth maps' statistics: D of the lesions is in the phantom's tissue range
    assert df.loc[df["present"], "D_mean"].between(3e-4, 3.5e-3).all()
    assert (df.loc[df["present"], "T1_n_excluded"] == 0).all()


def test_fitted_t1_statistics_agree_with_truth(tiny_study, truth_table):
    """VFA T1 fitted from the noisy phantom series agrees per lesion with the truth map.

    The tolerance is statistical: the lesion mean of (fit - truth) must lie within 4 standard
    errors of zero, the standard error coming from the voxel-wise scatter the phantom's
    noise produces (SNR 100 on the VFA series; Rician bias is negligible there).
    """
    from tumorscope.models import VFAT1

    study = open_study(tiny_study)
    fitted: dict[tuple[str, str], dict] = {}
    for s in ("001", "004"):
        for visit in study.subjects[s]:
            series = visit.series["t1_vfa"]
            vol = series.load()
            mask = visit.lesions.load_labels().data > 0
            fit = VFAT1.from_protocol(series.protocol).fit(vol.data, mask=mask)
            fitted[(s, visit.id)] = {"T1": (Volume(fit["T1"], vol.affine), fit.status)}

    def maps(subject, visit):
        return fitted.get((subject, visit), {})

    got = measure_study(study, maps).set_index(["subject", "visit", "lesion_id"])
    ref = truth_table.set_index(["subject", "visit", "lesion_id"])
    n_checked = 0
    for key, row in got[got["present"] & got["T1_mean"].notna()].iterrows():
        n = row["T1_n_valid"]
        assert n + row["T1_n_excluded"] > 0
        if n < 3:
            continue
        se = max(row["T1_sd"], ref.loc[key, "T1_sd"], 1.0) / np.sqrt(n)
        assert (
            abs(row["T1_mean"] - ref.loc[key, "T1_mean"]) < 4 * se + 1e-3 * ref.loc[key, "T1_mean"]
        )
        assert row["T1_median"] == pytest.approx(ref.loc[key, "T1_median"], rel=0.05)
        n_checked += 1
    assert n_checked >= 12


def test_tracking_without_ids_recovers_the_truth(tiny_study):
    """Labels shuffled at every visit and ids withheld: overlap/distance matching finds them."""
    study = open_study(tiny_study)
    rng = np.random.default_rng(0)
    for subject in study:
        visits, truth_of = [], {}
        for v in subject:
            lab = v.lesions.load_labels()
            table = v.lesions.table
            perm = {
                r.label: int(x)
                for r, x in zip(table, rng.permutation(np.arange(10, 10 + len(table))), strict=True)
            }
            data = np.zeros_like(lab.data)
            for old, new in perm.items():
                data[lab.data == old] = new
                truth_of[(v.id, new)] = next(r.lesion_id for r in table if r.label == old)
            visits.append(VisitLabels(v.id, lab.with_data(data)))
        df = track_lesions(visits)
        pairs = {
            (r.lesion_id, truth_of[(r.visit, r.label)]) for r in df[df["label"] > 0].itertuples()
        }
        ours = [p[0] for p in pairs]
        theirs = [p[1] for p in pairs]
        assert len(set(ours)) == len(ours) == len(set(theirs)), (subject.id, pairs)


def test_map_on_another_grid_and_all_nan_map(tiny_study):
    study = open_study(tiny_study)
    visit = study.subjects["002"].visits["01"]
    lab = visit.lesions.load_labels()
    coarse_aff = lab.affine.copy()
    coarse_aff[:3, :3] *= 2.0
    coarse = Volume(np.full((16, 16, 3), 1.0e-3, np.float32), coarse_aff, source="adc.nii.gz")

    def other_grid(s, v):
        return {"ADC": coarse} if (s, v) == ("002", "01") else {}

    with pytest.raises(DataError, match=r"adc.nii.gz.*not the lesion map's grid.*L1 at visit 01"):
        measure_study(study, other_grid)
    with pytest.warns(TumorscopeWarning, match="L2 at visit 01.*no voxel left on the grid"):
        df = measure_study(study, other_grid, on_grid_mismatch="resample")
    row = df[(df["subject"] == "002") & (df["visit"] == "01") & (df["lesion_id"] == "L1")]
    assert float(row["ADC_mean"].iloc[0]) == pytest.approx(1.0e-3)
    assert float(row["ADC_n_valid"].iloc[0]) > 0
    with pytest.raises(DataError, match="unknown statistic"):
        measure_study(study, other_grid, statistics=["mean", "mode"])

    nan_map = lab.with_data(np.where(lab.data > 0, np.nan, 1.0).astype(np.float32))

    def all_nan(s, v):
        return {"ADC": nan_map} if (s, v) == ("002", "01") else {}

    with pytest.warns(TumorscopeWarning, match="all .* lesion voxels excluded"):
        df = measure_study(study, all_nan)
    row = df[(df["subject"] == "002") & (df["visit"] == "01")]
    assert row["ADC_mean"].isna().all() and (row["ADC_n_valid"] == 0).all()


def test_discover_maps_names(tmp_path):
    aff = np.eye(4)
    v = Volume(np.zeros((2, 2, 2), np.float32), aff)
    for name in (
        "sub-1_ses-1_model-ivim_D",
        "sub-1_ses-1_model-ivim_D_star",
        "sub-1_ses-1_model-ivim_status",
        "sub-1_ses-1_model-ivim_D_stderr",
        "sub-1_ses-1_model-dki_D",
        "sub-1_ses-1_model-dki_K",
        "sub-1_ses-1_model-ivim_rss",
        "sub-1_ses-1_desc-ve_truth",
        "sub-1_ses-1_desc-body_mask",
    ):
        v.to_nifti(tmp_path / f"{name}.nii.gz")
    found = discover_maps(tmp_path)
    assert sorted(found) == ["D_star", "K", "dki_D", "ivim_D", "ve"]
    assert found["ivim_D"][1] == tmp_path / "sub-1_ses-1_model-ivim_status.nii.gz"
    assert found["K"][1] is None


def test_cli_measure(study_copy, truth_maps, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "measure",
            str(study_copy),
            "--maps",
            str(truth_maps),
            "--out",
            str(out),
            "--format",
            "csv",
            "--habitats",
            "D,Ktrans",
        ],
    )
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "lesions.csv")
    assert {"volume_ml", "D_mean", "habitat_0_fraction", "habitat_0_name"} <= set(df.columns)
    present = df[df["present"]]
    fr = present[[c for c in df.columns if c.endswith("_fraction")]].sum(axis=1)
    assert np.allclose(fr, 1.0)
    # the table is replaced only with --overwrite (it may be the user's file)
    (out / "lesions.csv").write_text("user data")
    again = runner.invoke(app, ["measure", str(study_copy), "--maps", str(truth_maps), "--out",
                                str(out), "--format", "csv"])  # fmt: skip
    assert again.exit_code == 2 and "lesions.csv" in again.output and "--overwrite" in again.output
    assert (out / "lesions.csv").read_text() == "user data"
    assert sorted(p.name for p in out.iterdir()) == ["lesions.csv"]
    bad = runner.invoke(
        app, ["measure", str(study_copy), "--out", str(tmp_path / "bad"), "--format", "xlsx"]
    )
    assert bad.exit_code == 2 and "--format" in bad.output
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------- measure_subject


def _visit_maps(tiny_study: Path, subject: str, param: str) -> dict[str, Any]:
    from tumorscope.layout import VisitMap
    from tumorscope.stages.lesions import VisitMeasureInputs

    truth = tiny_study / "derivatives" / "truth" / f"sub-{subject}"
    out = {}
    for p in sorted(truth.glob(f"ses-*/*_desc-{param}_truth.nii.gz")):
        visit = p.parent.name.removeprefix("ses-")
        maps = {f"truth.{param}": VisitMap(p, None, "mm2/s")}
        out[visit] = VisitMeasureInputs(maps=maps, series={f"truth.{param}": "dwi"})
    return out


def test_measure_subject_rows_tables_and_aligned_masks(tiny_study, truth_table, tmp_path):
    """The pipeline's measure stage: geometry and map statistics per lesion, as measure_study."""
    from tumorscope.stages.lesions import (
        MEASUREMENT_COLUMNS,
        VisitMeasureInputs,
        measure_subject,
    )

    subject = open_study(tiny_study).subjects["001"]
    inputs = _visit_maps(tiny_study, "001", "D")
    assert inputs
    m_path, l_path = tmp_path / "m.parquet", tmp_path / "l.parquet"
    res = measure_subject(subject, inputs, measurements_path=m_path, lesion_table_path=l_path)
    rows = res.rows["measurements"]
    assert res.files == [m_path, l_path] and not res.warnings and not res.maps
    tidy = pd.read_parquet(m_path)
    assert tuple(tidy.columns) == MEASUREMENT_COLUMNS and len(tidy) == len(rows)
    ref = truth_table[(truth_table["subject"] == "001") & truth_table["present"]]
    means = tidy[(tidy["map"] == "truth.D") & (tidy["statistic"] == "mean")]
    got = means.set_index(["visit", "lesion_id"])["value"]
    want = ref.set_index(["visit", "lesion_id"])["D_mean"]
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(got.loc[want.index], want, rtol=1e-6)
    lesions = pd.read_parquet(l_path)
    assert {"subject", "visit", "lesion_id", "target", "baseline", "volume_ml"} <= set(lesions)
    vol = lesions.set_index(["visit", "lesion_id"])["volume_ml"]
    np.testing.assert_allclose(
        vol.loc[want.index], ref.set_index(["visit", "lesion_id"])["volume_ml"], rtol=1e-9
    )

    # an alignment of the map's series moves the masks: identity leaves the numbers as they are
    moved = {
        v: VisitMeasureInputs(maps=i.maps, series=i.series, alignments={"dwi": np.eye(4)})
        for v, i in inputs.items()
    }
    res2 = measure_subject(subject, moved, measurements_path=m_path, lesion_table_path=l_path)
    rows2 = res2.rows["measurements"]
    assert any("resampled onto the dwi maps" in n for n in res2.warnings)
    assert [r["value"] for r in rows2] == pytest.approx([r["value"] for r in rows], nan_ok=True)
