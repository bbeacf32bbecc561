"""DSC end to end on the phantom's brain subjects: fit_dsc → measure → assess flags the
pseudoprogression (growing, low rCBV) and not the true progression (growing, high rCBV); the
brain subjects leave the body subjects' files unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from tumorscope import _gzip
from tumorscope.phantom.generate import make_study
from tumorscope.pipeline import run_study
from tumorscope.response.perfusion import PATTERN


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_study(
        tmp_path_factory.mktemp("dsc") / "study", size="tiny", n_subjects=1, brain_subjects=2
    )


def _contents(p: Path) -> bytes:
    if not p.name.endswith(".gz"):
        return p.read_bytes()
    with _gzip.open_read(p) as fh:
        return fh.read()


def _digests(root: Path, subject: str) -> dict[str, str]:
    """sha256 of each file of ``subject``: of the decompressed contents for ``.gz`` files.

    "Unchanged" means the same data and headers. One CI run (2026-12-05) saw one mostly-zero
    phantom image (``arteryfraction_truth``) of 202 with other compressed bytes than the same
    image written by another visit, never reproduced locally (see ``tumorscope._gzip``).
    """
    return {
        str(p.relative_to(root)): hashlib.sha256(_contents(p)).hexdigest()
        for p in sorted(root.rglob(f"*sub-{subject}*"))
        if p.is_file()
    }


def test_brain_subjects_do_not_change_the_body_subjects(study: Path, tmp_path: Path) -> None:
    plain = make_study(tmp_path / "plain", size="tiny", n_subjects=1)
    assert _digests(plain, "001") == _digests(study, "001")
    assert not list(plain.rglob("*_dsc.nii.gz"))
    assert len(list(study.rglob("*_dsc.nii.gz"))) == 6  # 2 subjects x 3 visits


def test_pipeline_flags_pseudoprogression_by_perfusion(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_study(
        study,
        out,
        steps=("register", "align", "fit_dsc", "measure", "assess", "report_subject"),
        report=True,
    )
    assert not res.failed, res.failed
    tidy = pd.concat(pd.read_parquet(p) for p in out.glob("sub-00*/sub-00*_measurements.parquet"))
    rcbv = tidy[(tidy["map"] == "dsc.rCBV") & (tidy["statistic"] == "mean")]
    got = {(r.subject, r.visit): r.value for r in rcbv.itertuples()}
    truth = {("002", v): 3.0 for v in ("01", "02", "03")}  # glioma_progression
    truth |= {("003", "01"): 3.0, ("003", "02"): 0.9, ("003", "03"): 0.9}  # pseudoprogression
    for key, want in truth.items():
        assert got[key] == pytest.approx(want, rel=0.2), key
    pat = pd.read_parquet(out / "tables" / "patterns.parquet")
    perf = pat[pat["pattern"] == PATTERN].set_index(["subject", "visit"])["flag"]
    assert perf[("003", "02")] == True  # noqa: E712
    assert perf[("002", "02")] == False  # noqa: E712
    assert "001" not in set(pat[pat["pattern"] == PATTERN]["subject"])  # no DSC: no row
    # the report's DSC section: rCBV/K2 maps and the rCBV trajectory, for DSC subjects only
    page = (out / "report" / "sub-003.html").read_text()
    assert 'id="fig-dsc-maps"' in page and 'id="fig-dsc-trajectory"' in page
    assert 'id="dsc"' not in (out / "report" / "sub-001.html").read_text()


def test_dsc_run_options_are_checked() -> None:
    from tumorscope.errors import DataError
    from tumorscope.pipeline.options import RunOptions

    assert RunOptions().perfusion_rcbv_threshold == 1.75
    assert RunOptions(dsc_method="CSVD").dsc_method == "csvd"
    with pytest.raises(DataError, match="dsc_method"):
        RunOptions(dsc_method="fft")
    with pytest.raises(DataError, match="dsc_leakage"):
        RunOptions(dsc_leakage="strong")
    with pytest.raises(DataError, match="perfusion_rcbv_threshold"):
        RunOptions(perfusion_rcbv_threshold=-1)


def test_the_fit_dsc_step_uses_the_second_echo_of_a_dual_echo_visit(tmp_path: Path) -> None:
    """A brain subject with dual-echo DSC (``phantom --dsc-dual-echo``): ``fit_dsc`` reads the
    ``dsc_echo2`` series (stage JSON, T1effect map, the second echo among its inputs), align
    leaves the second echo with the first, and the rCBV of the glioma is measured."""
    import json

    from tumorscope.pipeline.steps import STEPS

    de = make_study(
        tmp_path / "de", size="tiny", n_subjects=1, brain_subjects=1, dsc_dual_echo=True
    )
    out = tmp_path / "out"
    res = run_study(de, out, steps=("register", "align", "fit_dsc", "measure"))
    assert not res.failed, res.failed
    maps = out / "sub-002" / "ses-01" / "maps"
    stage = json.loads(next(maps.glob("*dsc_stage.json")).read_text())
    assert stage["dual_echo"]["echo_times_ms"] == [30.0, 60.0]
    assert any(k.startswith("echo2_") for k in stage["inputs"])
    assert list(maps.glob("*dsc_T1effect.nii.gz"))
    step = next(s for s in STEPS if s.name == "fit_dsc")
    assert step.version == "2"
    align = pd.read_parquet(out / "tables" / "alignments.parquet")
    row = align[(align["subject"] == "002") & (align["series"] == "dsc_echo2")]
    assert set(row["status"]) == {"skipped"}
    tidy = pd.read_parquet(next(out.glob("sub-002/sub-002_measurements.parquet")))
    rcbv = tidy[(tidy["map"] == "dsc.rCBV") & (tidy["statistic"] == "mean")]
    got = {r.visit: r.value for r in rcbv.itertuples()}
    # glioma_progression, rCBV 3: measured 2.43, 3.25, 2.74, the single echo's tolerance
    # (test_pipeline_flags_pseudoprogression_by_perfusion). At the phantom's S0/σ = 100 the dual-echo ΔR2* is about
    # twice as noisy as one echo's and 12-15 % of the reference voxels' CBV are <= 0: averaged
    # with the others (rcbv.reference_mean); the mean of the positive ones alone read 20-25 %
    # high (2.00, 2.56, 2.23): docs/dsc.md, "Dual echo"
    for v in ("01", "02", "03"):
        assert got[v] == pytest.approx(3.0, rel=0.2), got
