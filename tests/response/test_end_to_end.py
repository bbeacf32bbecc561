"""End to end on the synthetic study: lesion masks → geometry and map statistics
(:func:`tumorscope.stages.lesions.measure_study`) → measurement table → criteria and patterns.

The maps are the phantom's ground-truth maps; the same chain runs on fitted maps once the
pipeline writes them (``measure_study(study)`` picks ``derivatives/tumorscope``). The
trajectory each subject was built with is read from ``derivatives/truth/trajectories.tsv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tumorscope.response import assess, best_overall_response, from_lesion_table
from tumorscope.response.functional import functional_change
from tumorscope.response.patterns import hyperprogression, mixed_response, pseudoprogression


@pytest.fixture(scope="module")
def chain(tiny_study: Path):
    from tumorscope.io import open_study
    from tumorscope.stages.lesions import measure_study

    study = open_study(tiny_study)
    lesions = measure_study(study, tiny_study / "derivatives" / "truth")
    baseline = {s.id: s.baseline.id for s in study}
    table = from_lesion_table(lesions, baseline=baseline)
    traj = pd.read_csv(
        tiny_study / "derivatives" / "truth" / "trajectories.tsv", sep="\t", dtype=str
    )
    by_traj = dict(zip(traj["trajectory"], traj["subject"], strict=False))
    return table, assess(table, criteria="irecist"), by_traj


def test_trajectories_are_recovered(chain):
    table, r, subject = chain
    bor = best_overall_response(r).set_index("subject")["best_response"]
    pp = pseudoprogression(r).set_index("subject")["pseudoprogression"]
    assert bor[subject["responder"]] == "iPR"
    assert not pp[subject["responder"]]
    assert bool(pp[subject["pseudoprogressor"]])
    assert bor[subject["progressor"]] == "iCPD" and not pp[subject["progressor"]]
    stable = r[(r["subject"] == subject["stable"]) & (r["days_from_baseline"] > 0)]
    assert set(stable["response"]) == {"iSD"}
    mixed = mixed_response(table)
    m = mixed[(mixed["subject"] == subject["mixed"]) & mixed["mixed"]]
    assert len(m) >= 1 and m["shrinking"].iloc[0] == "L1" and m["growing"].iloc[0] == "L2"
    assert not mixed[mixed["subject"] != subject["mixed"]]["mixed"].any()
    hpd = hyperprogression(table).set_index("subject")["hyperprogression"]
    assert bool(hpd[subject["hyperprogressor"]])
    assert hpd.drop(subject["hyperprogressor"]).isna().all()  # no pre-baseline scan


def test_new_lesions_are_found(chain):
    _, r, subject = chain
    for traj in ("progressor", "hyperprogressor"):
        rows = r[(r["subject"] == subject[traj]) & r["new_lesions"]]
        assert "NEW1" in ",".join(rows["new_lesion_ids"])
    assert not r[r["subject"] == subject["responder"]]["new_lesions"].any()


def test_functional_response_precedes_size_response(chain):
    """The responder's diffusion rises at the first follow-up, before its size meets PR."""
    table, r, subject = chain
    s = subject["responder"]
    fc = functional_change(table, statistic="D_mean", rc_pct=15.0)
    first = fc[(fc["subject"] == s) & (fc["lesion_id"] == "L1")].iloc[0]
    assert first["call"] == "increase"
    assert r[(r["subject"] == s) & (r["visit"] == first["visit"])]["response"].iloc[0] == "iSD"


def test_assess_command_over_a_study(tiny_study: Path, tmp_path: Path):
    """``tumorscope assess STUDY`` measures the lesions from the masks and scores them."""
    from typer.testing import CliRunner

    from tumorscope.cli import app

    res = CliRunner().invoke(
        app, ["assess", str(tiny_study), "--criteria", "recist1.1", "--out", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    out = pd.read_csv(tmp_path / "measurements_recist1.1.csv", dtype=str)
    assert set(out["response"]) >= {"baseline", "PR", "PD", "SD"}
    assert (tmp_path / "measurements.csv").is_file()
    assert not (tiny_study / "derivatives" / "response").exists()
