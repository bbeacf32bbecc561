"""The organ-watch steps end to end on the tiny phantom: ``fit_mre``, ``fit_cardiac``,
``organ_watch``.

The phantom's ``stable`` subject (006) develops myocarditis at visit 03 (myocardial T1
1000 → 1120 ms, T2 50 → 60 ms, ECV 0.25 → 0.35, normal again at 04) and the ``mixed``
subject (004) hepatitis (liver stiffness 2.0 → 2.05 → 3.2 → 3.6 kPa); the truth is in
``phantom/organs.py`` (``ORGAN_EVENTS``) and the study's ``organ_reference`` gives the site
normal values. Subjects without organ series are not touched by the steps.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tumorscope.phantom.organs import ORGAN_EVENTS
from tumorscope.pipeline import run_study

STEPS = ("register", "fit_mre", "fit_cardiac", "organ_watch")


@pytest.fixture(scope="module")
def organ_run(tiny_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("organs")
    study = root / "study"
    shutil.copytree(tiny_study, study)
    summary = run_study(study, root / "out", steps=STEPS, report=False)
    assert not summary.failed, summary
    return root / "out"


def _rows(out: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(out / "tumorscope.sqlite")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_flags_follow_the_phantom_events(organ_run: Path) -> None:
    flags = {
        (s, p, v): f
        for s, p, v, f in _rows(organ_run, "select subject, pattern, visit, flag from patterns")
    }
    myo = {v: f for (s, p, v), f in flags.items() if s == "006" and p == "myocarditis_lake_louise"}
    assert myo == {"01": 0, "02": 0, "03": 1, "04": 0}
    hep = {v: f for (s, p, v), f in flags.items() if s == "004" and p == "hepatitis_stiffness"}
    assert hep == {"01": 0, "02": 0, "03": 1, "04": 1}
    # the other subject of each has no event
    assert not any(f for (s, p, _), f in flags.items() if s == "004" and p.startswith("myocard"))
    assert not any(f for (s, p, _), f in flags.items() if s == "006" and p.startswith("hepat"))
    # subjects without organ series: no organ rows at all
    assert not any(s in ("001", "002", "003", "005") for s, _, _ in flags)


def test_organ_values_recover_truth(organ_run: Path) -> None:
    rows = _rows(
        organ_run,
        "select subject, visit, lesion_id, map, value from measurements "
        "where step = 'organ_watch' and statistic = 'mean'",
    )
    got = {(s, v, o, m): x for s, v, o, m, x in rows}
    for sid, traj in (("004", "mixed"), ("006", "stable")):
        ev = ORGAN_EVENTS[traj]
        for i, v in enumerate(("01", "02", "03", "04")):
            assert got[(sid, v, "liver", "abs_G")] == pytest.approx(ev.liver_kpa[i], rel=0.05)
            assert got[(sid, v, "myocardium", "ECV")] == pytest.approx(ev.myo_ecv[i], abs=0.03)
            assert got[(sid, v, "myocardium", "T2")] == pytest.approx(ev.myo_t2_ms[i], rel=0.03)
            assert got[(sid, v, "myocardium", "T1")] == pytest.approx(ev.myo_t1_ms[i], rel=0.06)
    z = _rows(
        organ_run,
        "select value from measurements where subject = '006' and visit = '03' and "
        "lesion_id = 'myocardium' and map = 'T2' and statistic = 'z'",
    )
    assert z and z[0][0] > 2.0
    # liver T1 has no reference in the phantom's study.yaml: no z-score, and a note
    assert not _rows(
        organ_run,
        "select 1 from measurements where lesion_id = 'liver' and map = 'T1' and statistic = 'z'",
    )
    doc = json.loads((organ_run / "sub-006" / "sub-006_organs.json").read_text())
    assert any("liver.T1" in n for n in doc["notes"])


def test_maps_are_indexed_for_the_measure_step(organ_run: Path) -> None:
    sql = "select distinct model || '.' || parameter from maps where subject = '004'"
    maps = {r[0] for r in _rows(organ_run, sql)}
    assert {"mre.abs_G", "mre.phi", "molli.T1", "molli_post.T1", "t2prep.T2"} <= maps
