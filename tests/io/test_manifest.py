"""The study manifest: what study.yaml declares, and problems that name the file and field."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tumorscope.io.manifest import DEFAULT_ROLES, read_manifest

GOOD = """
name: trial
criteria: [RECIST1.1, irecist]
roles: {anatomical: T1w}
dce: {hematocrit: 0.42}
subjects:
  "001":
    treatment: {agent: nivolumab, start_date: 2026-01-09}
    visits:
      "00": {date: 2025-12-20, prebaseline: true}
      "01": {date: 2026-01-05}
      "02": {date: "2026-02-02"}
  "002":
    visits:
      "01": {date: 2026-01-07, prebaseline: true}
      "02": {date: 2026-02-04, baseline: true}
"""


def _read(tmp_path: Path, text: str) -> tuple:
    (tmp_path / "study.yaml").write_text(text)
    return read_manifest(tmp_path / "study.yaml", display_name="study.yaml")


def test_a_good_manifest(tmp_path: Path) -> None:
    m, problems = _read(tmp_path, GOOD)
    assert problems == []
    assert m.name == "trial" and m.criteria == ("recist1.1", "irecist")
    assert m.roles == {**DEFAULT_ROLES, "anatomical": "T1w"}
    assert m.dce == {"hematocrit": 0.42}
    s1 = m.subjects["001"]
    assert (s1.treatment.agent, s1.treatment.start_date) == ("nivolumab", dt.date(2026, 1, 9))
    assert [(v.id, v.date, v.baseline, v.prebaseline) for v in s1.visits] == [
        ("00", dt.date(2025, 12, 20), False, True),
        ("01", dt.date(2026, 1, 5), True, False),  # the first visit that is not pre-baseline
        ("02", dt.date(2026, 2, 2), False, False),
    ]
    assert s1.baseline.id == "01" and m.subjects["002"].baseline.id == "02"


def test_defaults_name_and_criteria(tmp_path: Path) -> None:
    m, problems = _read(tmp_path, 'subjects: {"1": {visits: {"1": {date: 2026-01-01}}}}')
    assert problems == []
    assert m.name == tmp_path.name and m.criteria == ("recist1.1",)
    assert m.roles == DEFAULT_ROLES and m.dce == {}
    assert list(m.subjects) == ["1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "study manifest is missing"),
        ("subjects: [unclosed", "cannot parse YAML"),
        ("- a list\n", "expected a mapping at the top level"),
    ],
)
def test_unreadable_manifests(tmp_path: Path, text: str | None, message: str) -> None:
    if text is None:
        m, problems = read_manifest(tmp_path / "study.yaml", display_name="my/study.yaml")
    else:
        (tmp_path / "study.yaml").write_text(text)
        m, problems = read_manifest(tmp_path / "study.yaml", display_name="my/study.yaml")
    assert m is None
    ((p),) = problems
    assert p.severity == "error" and p.file == "my/study.yaml" and message in p.message


BAD = """
criteria: [recist1.1, made-up]
roles: [T2w]
dce: {hematocrit: lots}
subjects:
  "001": not a mapping
  "002": {visits: {}}
  "003":
    treatment: {start_date: "2026-02-30"}
    visits:
      "01": {date: 2026-01-05, baseline: true}
      "02": {date: 2026-01-01, baseline: true}
      "03": just a date
      "04": {}
  "004":
    treatment: {start_date: 2026-03-01}
    visits:
      "01": {date: 2026-01-05}
      "02": {date: 2026-02-01}
"""


def test_every_problem_is_reported_with_file_and_field(tmp_path: Path) -> None:
    m, problems = _read(tmp_path, BAD)
    assert m is not None
    assert all(p.file == "study.yaml" and p.severity == "error" for p in problems)
    found: dict[str, str] = {}
    for p in problems:
        found[p.field] = f"{found.get(p.field, '')} | {p.message}"
    expected = {
        "criteria": "unknown criteria 'made-up'",
        "roles": "expected a mapping role -> file suffix",
        "dce.hematocrit": "expected a number, got 'lots'",
        "subjects.001": "expected a mapping with 'visits'",
        "subjects.002.visits": "expected a non-empty mapping of visits",
        "subjects.003.treatment.start_date": "'2026-02-30' is not a real date",
        "subjects.003.visits": "2 visits say baseline: true, expected one",
        "subjects.003.visits.02.date": "is before the baseline 01 (2026-01-05) | visit dated "
        "2026-01-01 is not after the previous visit 01",
        "subjects.003.visits.03": "expected a mapping with 'date'",
        "subjects.003.visits.04.date": "date is missing (expected YYYY-MM-DD)",
        "subjects.004.treatment.start_date": "is after the first follow-up visit 02",
    }
    assert set(found) == set(expected), found
    for fld, text in expected.items():
        assert text in found[fld], (fld, found[fld])
    assert sorted(m.subjects) == ["003", "004"]


def test_an_empty_subjects_section_is_a_problem(tmp_path: Path) -> None:
    m, problems = _read(tmp_path, "name: x\nsubjects: {}\n")
    assert m is not None and m.subjects == {}
    assert [(p.field, p.message) for p in problems] == [
        ("subjects", "expected a non-empty mapping of subjects")
    ]


def test_a_manifest_read_again_is_parsed_once_and_each_reader_gets_its_own_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tumorscope.io import _yaml, manifest

    calls: list[str] = []
    real = _yaml.load_yaml

    def counted(text: str) -> object:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(_yaml, "load_yaml", counted)
    monkeypatch.setattr(manifest, "_PARSED", {})
    a, _ = _read(tmp_path, GOOD)
    b, _ = _read(tmp_path, GOOD)
    assert len(calls) == 1 and a == b
    a.raw["subjects"]["001"]["visits"].clear()  # a reader changing its copy
    a.roles["anatomical"] = "changed"
    c, problems = _read(tmp_path, GOOD)
    assert problems == [] and c == b and len(calls) == 1
    # an edited manifest is parsed again, and what it says is read
    d, _ = _read(tmp_path, GOOD.replace("name: trial", "name: other"))
    assert len(calls) == 2 and d.name == "other"
    # a text that fails is not kept: it fails again, with its problem
    for _ in range(2):
        m, problems = _read(tmp_path, "subjects: [unclosed")
        assert m is None and "cannot parse YAML" in problems[0].message
    assert len(calls) == 4


@pytest.mark.parametrize(
    ("date", "message"),
    [
        ("20260126", "expected an ISO date string YYYY-MM-DD (e.g. 2026-01-26), got the int"),
        ("2026.5", "got the float 2026.5"),
        ("true", "got the bool True"),
        ('"20260126"', "'20260126' is not a real date in ISO form YYYY-MM-DD"),
    ],
)
def test_a_date_that_is_not_an_iso_date_is_never_guessed(
    tmp_path: Path, date: str, message: str
) -> None:
    """An integer ``20260126`` was read as 2026-01-26; an ISO date, unquoted (a YAML date) or
    quoted (text), is still read."""
    text = 'subjects: {"1": {visits: {"1": {date: 2026-01-05}, "2": {date: DATE}}}}'
    m, problems = _read(tmp_path, text.replace("DATE", date))
    assert [p.field for p in problems] == ["subjects.1.visits.2.date"]
    assert message in problems[0].message
    m, problems = _read(tmp_path, text.replace("DATE", '"2026-01-26"'))
    assert problems == [] and m.subjects["1"].visits[1].date == dt.date(2026, 1, 26)


def test_visit_dates_after_today_or_before_1971_are_errors(tmp_path: Path) -> None:
    """2099-03-30 and 1850-01-05 were accepted (validate 0, run 0)."""
    today = dt.date.today()
    text = f"""
subjects:
  "1":
    treatment: {{start_date: 1850-01-09}}
    visits:
      "1": {{date: 1850-01-05}}
      "2": {{date: {today.isoformat()}}}
      "3": {{date: 2099-03-30}}
"""
    m, problems = _read(tmp_path, text)
    got = {p.field: p.message for p in problems}
    assert set(got) == {
        "subjects.1.treatment.start_date",
        "subjects.1.visits.1.date",
        "subjects.1.visits.3.date",
    }
    assert "before 1971-01-01" in got["subjects.1.visits.1.date"]
    assert "before 1971-01-01" in got["subjects.1.treatment.start_date"]
    assert f"2099-03-30 is in the future (today is {today})" in got["subjects.1.visits.3.date"]
    assert m.subjects["1"].visits[1].date == today  # today itself is a visit date


@pytest.mark.parametrize(
    ("dce", "field", "message"),
    [
        ("{hematocrit: 4.2}", "dce.hematocrit", "a fraction between 0 and 1"),  # was accepted
        ("{hematocrit: 0}", "dce.hematocrit", "a fraction between 0 and 1"),
        ("{hematocrit: true}", "dce.hematocrit", "expected a number, got True"),
        ('{hematocrit: "0.42"}', "dce.hematocrit", "expected a number, got '0.42'"),
        ("{relaxivity: -4.5}", "dce.relaxivity", "expected a number > 0"),
    ],
)
def test_dce_defaults_are_numbers_in_range(
    tmp_path: Path, dce: str, field: str, message: str
) -> None:
    m, problems = _read(tmp_path, GOOD.replace("dce: {hematocrit: 0.42}", f"dce: {dce}"))
    assert [p.field for p in problems] == [field]
    assert message in problems[0].message
    assert m.dce == {}
