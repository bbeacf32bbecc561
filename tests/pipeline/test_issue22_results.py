"""What issue 22 puts in the database, on the complete run of the phantom (``full_run``):
best overall response per criterion with RECIST 1.1 stopping at PD, the RECIST/iRECIST
disagreement of the pseudoprogressor (subject 002) with its reason, every hyperprogression
definition, pseudoprogression candidates, the functional maps and habitat fractions; and the
``radiomics`` run option."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.pipeline.options import RunOptions
from tumorscope.response.patterns import HYPERPROGRESSION_DEFINITIONS
from tumorscope.study import open_store


@pytest.fixture(scope="module")
def tables(full_run: Any) -> dict[str, Any]:
    store = open_store(full_run.db_url)
    try:
        return {t: store.read_table(t) for t in ("assessments", "patterns", "measurements")}
    finally:
        store.close()


def test_pseudoprogressor_is_recist_pd_and_irecist_ipr(tables: dict[str, Any]) -> None:
    p = tables["patterns"]
    p2 = p[p["subject"] == "002"].set_index("pattern")
    assert p2.loc["best response recist1.1", "details"]["best_response"] == "PD"
    assert p2.loc["best response irecist", "details"]["best_response"] in ("iPR", "iCR")
    row = p2.loc["disagreement recist1.1/irecist"]
    assert bool(row["flag"]) and "pseudoprogression: iUPD at visit 02" in row["reason"]
    a = tables["assessments"]
    rec = a[(a["subject"] == "002") & (a["criteria"] == "recist1.1")].set_index("visit")
    assert rec.loc["02", "response"] == "PD"
    later = rec.loc[[v for v in rec.index if v > "02"]]
    assert len(later) and (later["response"] == "after PD").all()
    assert all(d.get("rescored_response") for d in later["details"])
    # the responder: both criteria agree
    p1 = p[p["subject"] == "001"].set_index("pattern")
    assert not bool(p1.loc["disagreement recist1.1/irecist", "flag"])


def test_every_hyperprogression_definition_has_a_row(tables: dict[str, Any]) -> None:
    p = tables["patterns"]
    for subject in set(p["subject"]):
        names = set(p[p["subject"] == subject]["pattern"])
        expected = {"hyperprogression"} | {
            f"hyperprogression {d}" for d in HYPERPROGRESSION_DEFINITIONS if d != "champiat"
        }
        assert expected <= names, (subject, expected - names)
    kato = p[p["pattern"] == "hyperprogression kato"]
    assert kato["flag"].isna().all() and kato["reason"].str.contains("not evaluable").all()


def test_candidates_functional_maps_and_habitats(tables: dict[str, Any]) -> None:
    p = tables["patterns"]
    cand = p[p["pattern"].str.startswith("pseudoprogression candidate")]
    assert len(cand) and cand["reason"].str.contains("grew").all()
    m = tables["measurements"]
    f = m[(m["step"] == "functional") & (m["map"] == "fdm:adc.ADC")]
    wide = f.pivot_table(
        index=["subject", "visit", "lesion_id"], columns="statistic", values="value"
    )
    total = wide[["increased_fraction", "decreased_fraction", "unchanged_fraction"]].sum(axis=1)
    assert np.allclose(total, 1.0)
    assert np.allclose(wide["threshold"], 0.55e-3)  # no test-retest visits: Moffat's value
    assert {"delta_mean", "delta_call"} <= set(m[m["step"] == "functional"]["statistic"])
    h = m[(m["step"] == "features") & m["map"].str.startswith("habitat:")]
    sums = h.groupby(["subject", "visit", "lesion_id"])["value"].sum()
    assert len(sums) and np.allclose(sums.dropna(), 1.0)
    assert not m["statistic"].str.startswith("radiomics:").any()  # opt-in, off by default


@pytest.mark.parametrize("value", [True, False])
def test_radiomics_option(value: bool) -> None:
    assert RunOptions(radiomics=value).radiomics is value


@pytest.mark.parametrize("value", ["maybe", "yes", "false", 1])
def test_radiomics_option_rejects_other_values(value: object) -> None:
    """Options are typed like the rest of study.yaml: a flag is a YAML boolean, never a
    string read as one (docs/pipeline.md; the same rule as ``align_skip_same_geometry``)."""
    with pytest.raises(DataError, match="true or false") as exc:
        RunOptions(radiomics=value)  # type: ignore[arg-type]
    assert exc.value.field == "radiomics"


def test_pages_show_best_response_disagreement_viewer_and_habitats(full_run: Any) -> None:
    report = full_run.out_dir / "report"
    index = report / "index.html"
    text = index.read_text()
    assert 'id="criteria-disagreement"' in text
    assert "sub-002: recist1.1 best PD (visit 02) but irecist best" in text
    assert "best response (recist1.1)" in text and "last response" not in text
    page = (report / "sub-002.html").read_text()
    for anchor in ("criteria-disagreement", "best-table", "viewer-frame", "habitats-table"):
        assert f'id="{anchor}"' in page, anchor
    assert 'src="sub-002_viewer.html"' in page
    assert (report / "viewer" / "sub-002.js").stat().st_size > 0
    assert (report / "static" / "niivue" / "niivue.umd.js").exists()
    viewer = (report / "sub-002_viewer.html").read_text()
    assert (
        'src="static/niivue/niivue.umd.js"' in viewer and ", registered to baseline</h2>" in viewer
    )
