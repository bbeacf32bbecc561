"""The study manifest, ``study.yaml``: subjects, visits, dates, treatment, roles, criteria.

See ``docs/study-format.md`` for the fields. :func:`read_manifest` never raises on content
problems: it returns the manifest it could build and a list of :class:`Problem`, so that
``tumorscope validate`` can report everything at once. A missing or unparsable file is a
problem too.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Problem

__all__ = [
    "DEFAULT_ROLES",
    "Manifest",
    "SubjectEntry",
    "Treatment",
    "VisitEntry",
    "read_manifest",
]

#: role -> file pattern: the BIDS suffix (last ``_`` part of the name before the extension),
#: optionally preceded by the entities the file must carry besides ``sub`` and ``ses``
#: (``ce-ferumoxytol_MEGRE``). A file matches when its suffix and its other entities are
#: exactly those of the pattern; ``|`` separates alternatives (a dual-echo DSC's first echo is
#: ``echo-1_dsc``, a single echo ``dsc``: :mod:`tumorscope.io.dual_echo`).
DEFAULT_ROLES: dict[str, str] = {
    "anatomical": "T2w",
    "dwi": "dwi",
    "t1_vfa": "VFA",
    "dce": "dce",
    "dsc": "dsc|echo-1_dsc",
    "dsc_echo2": "echo-2_dsc",
    "t2star": "MEGRE",
    "t2star_ferumoxytol": "ce-ferumoxytol_MEGRE",
    "t2": "MESE",
    "t1_ir": "IRT1",
    "fluorine": "19F",
    "fluorine_tubes": "19Ftubes",
    "mre": "MRE",
    "t1_molli": "MOLLI",
    "t1_molli_post": "ce-gadolinium_MOLLI",
    "t2_prep": "T2prep",
    "hp13c_pyruvate": "acq-pyruvate_hp13c",
    "hp13c_lactate": "acq-lactate_hp13c",
    "mrs": "svs",
    "mrs_water": "mrsref",
    "pet": "pet",
    "pet_liver": "label-liver_mask",
    "pet_bloodpool": "label-bloodpool_mask",
    "cest": "cest",
    "wassr": "wassr",
    "wasabi": "WASABI",
}

#: Subject and visit ids: a BIDS label (letters and digits only).
ID_PATTERN = re.compile(r"[A-Za-z0-9]+")

KNOWN_CRITERIA = ("recist1.1", "irecist", "rano", "irano", "percist", "mrecist", "choi")


@dataclass(frozen=True)
class Treatment:
    """Treatment of a subject: the agent, its start date and the end of radiotherapy.

    ``radiotherapy_end_date`` (treatment history) opens RANO 2.0's post-radiotherapy window:
    progression within 12 weeks after it needs confirmation (``tumorscope.response``).
    """

    agent: str | None
    start_date: dt.date | None
    radiotherapy_end_date: dt.date | None = None


@dataclass(frozen=True)
class VisitEntry:
    """A visit as the manifest declares it.

    ``prebaseline`` marks a scan before the baseline (e.g. a screening scan used for the
    pre-treatment tumour growth rate); such visits may be dated before the baseline.
    """

    id: str
    date: dt.date | None
    baseline: bool = False
    prebaseline: bool = False


@dataclass(frozen=True)
class SubjectEntry:
    """A subject as the manifest declares it, with its visits in date order."""

    id: str
    treatment: Treatment
    visits: tuple[VisitEntry, ...]

    @property
    def baseline(self) -> VisitEntry | None:
        for v in self.visits:
            if v.baseline:
                return v
        return None


@dataclass(frozen=True)
class Manifest:
    """Parsed ``study.yaml``."""

    name: str
    criteria: tuple[str, ...]
    roles: dict[str, str]
    subjects: dict[str, SubjectEntry]
    dce: dict[str, float] = field(default_factory=dict)
    #: the ``options:`` mapping (run options by name; checked by the pipeline's ``RunOptions``)
    options: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


#: A date as the manifest writes it (``fromisoformat`` alone also takes ``20260126``).
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


#: The earliest date a manifest may hold: clinical cross-sectional imaging began with CT in
#: 1971 (MRI in the late 1970s), so an earlier visit or treatment date is a typing error.
EARLIEST_DATE = dt.date(1971, 1, 1)


def _parse_date(
    value: Any, file: str, fld: str, problems: list[Problem], *, acquired: bool = False
) -> dt.date | None:
    """The date of a manifest field, or None with a problem: an ISO date (a YAML date or
    ``YYYY-MM-DD`` text), real, not before :data:`EARLIEST_DATE` and, for an ``acquired``
    date (a visit: its images exist), not after today (one day of margin for time zones)."""
    d = _date_of(value, file, fld, problems)
    if d is None:
        return None
    if d < EARLIEST_DATE:
        problems.append(
            Problem(
                "error",
                file,
                fld,
                f"{d} is before {EARLIEST_DATE} (before clinical CT and MRI); check the year",
            )
        )
        return None
    latest = dt.date.today() + dt.timedelta(days=1)
    if acquired and d > latest:
        problems.append(
            Problem(
                "error",
                file,
                fld,
                f"{d} is in the future (today is {dt.date.today()}): a visit's images have "
                "been acquired; check the year",
            )
        )
        return None
    return d


def _date_of(value: Any, file: str, fld: str, problems: list[Problem]) -> dt.date | None:
    if value is None:
        problems.append(Problem("error", file, fld, "date is missing (expected YYYY-MM-DD)"))
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):  # 20260126 is a number to YAML, never read as a date
        problems.append(
            Problem(
                "error",
                file,
                fld,
                f"expected an ISO date string YYYY-MM-DD (e.g. 2026-01-26), got the "
                f"{type(value).__name__} {value!r}",
            )
        )
        return None
    try:
        if not _ISO_DATE.fullmatch(value):
            raise ValueError(value)
        return dt.date.fromisoformat(value)
    except ValueError:
        problems.append(
            Problem("error", file, fld, f"{value!r} is not a real date in ISO form YYYY-MM-DD")
        )
        return None


#: The last manifests parsed in this process, by their text (:func:`_parsed`).
_PARSED: dict[str, Any] = {}
_PARSED_LOCK = threading.Lock()


def _parsed(text: str) -> Any:
    """``load_yaml(text)``, a copy of it if the same text was parsed before in this process.

    Every task of a run opens the study (a Dask worker or the serial loop, once per subject:
    :func:`tumorscope.pipeline.execute.execute_subject`), and parsing the manifest grows
    with the number of subjects (17 ms at 24 subjects, pure-Python YAML): per subject, a run
    cost grew with the square of the cohort. The same text gives the same document, so the
    last four texts' documents are kept (the text is the key: an edited manifest is parsed
    again) and each caller gets its own deep copy (they are plain dicts, lists, dates).
    Errors are not kept: a text that fails is parsed (and fails) again.
    """
    import copy

    from ._yaml import load_yaml

    with _PARSED_LOCK:
        raw = _PARSED.get(text)
    if raw is None:
        raw = load_yaml(text)
        with _PARSED_LOCK:
            _PARSED[text] = raw
            while len(_PARSED) > 4:
                del _PARSED[next(iter(_PARSED))]
    return copy.deepcopy(raw)


def read_manifest(
    path: Path, *, display_name: str = "study.yaml"
) -> tuple[Manifest | None, list[Problem]]:
    """Read and check ``study.yaml``.

    Parameters
    ----------
    path : Path
        The manifest file.
    display_name : str
        How the file is named in problems (relative to the study root).

    Returns
    -------
    manifest : Manifest or None
        None when the file is missing or cannot be parsed at all.
    problems : list of Problem
    """
    import yaml

    from ..errors import DataError
    from ..files import regular_file
    from ._yaml import MAX_YAML_BYTES, YamlLimitError

    f = display_name
    problems: list[Problem] = []
    if not path.exists():
        return None, [Problem("error", f, "", "study manifest is missing")]
    try:
        regular_file(path)
    except DataError as exc:
        return None, [Problem("error", f, "", exc.message)]
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise YamlLimitError(f"the document is longer than {MAX_YAML_BYTES} bytes")
        raw = _parsed(path.read_text(encoding="utf-8"))
    except YamlLimitError as exc:
        return None, [Problem("error", f, exc.field, exc.message)]
    except UnicodeDecodeError as exc:
        return None, [Problem("error", f, "", f"not UTF-8 text ({exc}); save it as UTF-8")]
    except (yaml.YAMLError, OSError) as exc:
        return None, [Problem("error", f, "", f"cannot parse YAML: {exc}")]
    if not isinstance(raw, dict):
        return None, [Problem("error", f, "", "expected a mapping at the top level")]

    name = str(raw.get("name", path.parent.name))
    criteria = _criteria(raw.get("criteria", ["recist1.1"]), f, problems)
    roles = dict(DEFAULT_ROLES)
    roles_raw = raw.get("roles") or {}
    if not isinstance(roles_raw, dict):
        problems.append(Problem("error", f, "roles", "expected a mapping role -> file suffix"))
    else:
        for role, suffix in roles_raw.items():
            roles[str(role)] = str(suffix)

    dce_raw = raw.get("dce") or {}
    dce: dict[str, float] = {}
    if not isinstance(dce_raw, dict):
        problems.append(Problem("error", f, "dce", "expected a mapping field -> number"))
    else:
        for k, v in dce_raw.items():
            number = _dce_default(str(k), v, f, problems)
            if number is not None:
                dce[str(k)] = number

    options_raw = raw.get("options") or {}
    options: dict[str, Any] = {}
    if isinstance(options_raw, dict):
        options = {str(k): v for k, v in options_raw.items()}
    else:
        problems.append(Problem("error", f, "options", "expected a mapping option -> value"))

    # the organ watch's site reference ranges (docs/organ-watch.md), checked here for validate
    from ..response.organs import parse_organ_reference

    problems += parse_organ_reference(raw.get("organ_reference"), f)[1]

    subjects: dict[str, SubjectEntry] = {}
    subj_raw = raw.get("subjects")
    if not isinstance(subj_raw, dict) or not subj_raw:
        problems.append(Problem("error", f, "subjects", "expected a non-empty mapping of subjects"))
        subj_raw = {}
    expected = "expected a mapping with 'visits'"
    for sid, base, entry in _entries(subj_raw, "subjects", expected, f, problems):
        if not _valid_id(sid, "subject", base, f, problems):
            continue
        subj = _subject(sid, base, entry, f, problems)
        if subj is not None:
            subjects[sid] = subj
    return Manifest(name, tuple(criteria), roles, subjects, dce, options, raw), problems


def _dce_default(key: str, value: Any, f: str, problems: list[Problem]) -> float | None:
    """One ``dce:`` default: a number (not ``true``, not text); ``hematocrit`` a fraction in
    (0, 1), ``relaxivity`` (1/(mM·s)) > 0. None (and a problem) when it is not."""
    where = f"dce.{key}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(Problem("error", f, where, f"expected a number, got {value!r}"))
        return None
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if key == "hematocrit" and not 0.0 < x < 1.0:
        problems.append(
            Problem(
                "error",
                f,
                where,
                f"expected a fraction between 0 and 1 (e.g. 0.42), got {value!r}",
            )
        )
        return None
    if key == "relaxivity" and not (math.isfinite(x) and x > 0):
        problems.append(Problem("error", f, where, f"expected a number > 0, got {value!r}"))
        return None
    if not math.isfinite(x):
        problems.append(Problem("error", f, where, f"expected a finite number, got {value!r}"))
        return None
    return x


def _valid_id(key: str, what: str, where: str, f: str, problems: list[Problem]) -> bool:
    """True when ``key`` is a BIDS label (letters and digits only); else a problem is added.

    Ids become folder and file names (``sub-<id>/ses-<id>``): a ``/``, ``..`` or ``_`` in one
    would read files outside the study or break the BIDS entities.
    """
    if ID_PATTERN.fullmatch(key):
        return True
    problems.append(
        Problem(
            "error",
            f,
            where,
            f"{what} id {key!r} is not a BIDS label: use letters and digits only "
            "(no '-', '_', '/', '.', spaces)",
        )
    )
    return False


def _flag(value: Any, where: str, f: str, problems: list[Problem]) -> bool:
    """A yes/no field: ``true`` or ``false`` (absent: false)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    problems.append(Problem("error", f, where, f"expected true or false, got {value!r}"))
    return False


def _criteria(value: Any, f: str, problems: list[Problem]) -> list[str]:
    """The known criteria of the ``criteria`` field (one name or a list); others reported."""
    criteria: list[str] = []
    if value is not None and not isinstance(value, str | list):
        problems.append(
            Problem(
                "error",
                f,
                "criteria",
                f"expected a criteria name or a list of names, got {value!r}",
            )
        )
        return criteria
    for c in [value] if isinstance(value, str) else value or []:
        c = str(c).lower()
        if c not in KNOWN_CRITERIA:
            problems.append(
                Problem(
                    "error",
                    f,
                    "criteria",
                    f"unknown criteria {c!r}; expected one of {', '.join(KNOWN_CRITERIA)}",
                )
            )
        else:
            criteria.append(c)
    return criteria


def _entries(
    raw: dict[Any, Any], prefix: str, expected: str, f: str, problems: list[Problem]
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(key, field name, entry)`` of each mapping entry; an entry that is not a mapping is
    reported (``expected`` says what it should be) and left out."""
    for key, entry in raw.items():
        key = str(key)
        where = f"{prefix}.{key}"
        if not isinstance(entry, dict):
            problems.append(Problem("error", f, where, expected))
            continue
        yield key, where, entry


def _subject(
    sid: str, base: str, entry: dict[str, Any], f: str, problems: list[Problem]
) -> SubjectEntry | None:
    """One subject of the manifest (None when it lists no visits)."""
    treatment = _treatment(entry.get("treatment"), f, f"{base}.treatment", problems)
    visits_raw = entry.get("visits")
    if not isinstance(visits_raw, dict) or not visits_raw:
        problems.append(
            Problem("error", f, f"{base}.visits", "expected a non-empty mapping of visits")
        )
        return None
    visits: list[VisitEntry] = []
    expected = "expected a mapping with 'date'"
    for vid, vfield, ventry in _entries(visits_raw, f"{base}.visits", expected, f, problems):
        if not _valid_id(vid, "visit", vfield, f, problems):
            continue
        d = _parse_date(ventry.get("date"), f, f"{vfield}.date", problems, acquired=True)
        visits.append(
            VisitEntry(
                vid,
                d,
                baseline=_flag(ventry.get("baseline"), f"{vfield}.baseline", f, problems),
                prebaseline=_flag(ventry.get("prebaseline"), f"{vfield}.prebaseline", f, problems),
            )
        )
    visits = _check_visits(visits, f, base, problems)
    subj = SubjectEntry(sid, treatment, tuple(visits))
    _check_treatment(subj, f, base, problems)
    return subj


def _treatment(value: Any, f: str, where: str, problems: list[Problem]) -> Treatment:
    """The ``treatment`` mapping (``agent``, ``start_date``, ``radiotherapy_end_date``);
    absent = nothing known."""
    if value is None:
        return Treatment(agent=None, start_date=None)
    if not isinstance(value, dict):
        problems.append(
            Problem(
                "error",
                f,
                where,
                f"expected a mapping with 'agent' and 'start_date', got {value!r}",
            )
        )
        return Treatment(agent=None, start_date=None)
    agent = value.get("agent")
    if agent is not None and not isinstance(agent, str | int | float):
        problems.append(Problem("error", f, f"{where}.agent", f"expected text, got {agent!r}"))
        agent = None
    start = None
    if value.get("start_date") is not None:
        start = _parse_date(value["start_date"], f, f"{where}.start_date", problems)
    rt_end = None
    if value.get("radiotherapy_end_date") is not None:
        rt_end = _parse_date(
            value["radiotherapy_end_date"], f, f"{where}.radiotherapy_end_date", problems
        )
    return Treatment(
        agent=None if agent is None else str(agent), start_date=start, radiotherapy_end_date=rt_end
    )


def _check_visits(
    visits: list[VisitEntry], f: str, base: str, problems: list[Problem]
) -> list[VisitEntry]:
    flagged = [v for v in visits if v.baseline]
    if len(flagged) > 1:
        problems.append(
            Problem(
                "error",
                f,
                f"{base}.visits",
                f"{len(flagged)} visits say baseline: true, expected one",
            )
        )
    if not flagged:
        # the first visit that is not a pre-baseline scan is the baseline
        for i, v in enumerate(visits):
            if not v.prebaseline:
                visits[i] = VisitEntry(v.id, v.date, baseline=True, prebaseline=False)
                break
    baseline = next((v for v in visits if v.baseline), None)
    prev: VisitEntry | None = None
    for v in visits:
        if v.date is None:
            continue
        if (
            baseline is not None
            and baseline.date is not None
            and not v.prebaseline
            and v.date < baseline.date
        ):
            problems.append(
                Problem(
                    "error",
                    f,
                    f"{base}.visits.{v.id}.date",
                    f"visit dated {v.date} is before the baseline {baseline.id} ({baseline.date})",
                )
            )
        if prev is not None and prev.date is not None and v.date <= prev.date:
            problems.append(
                Problem(
                    "error",
                    f,
                    f"{base}.visits.{v.id}.date",
                    f"visit dated {v.date} is not after the previous visit {prev.id} ({prev.date}); "
                    "list visits in date order",
                )
            )
        prev = v
    return visits


def _check_treatment(subj: SubjectEntry, f: str, base: str, problems: list[Problem]) -> None:
    start = subj.treatment.start_date
    bl = subj.baseline
    if start is None or bl is None or bl.date is None:
        return
    on_treatment = [
        v for v in subj.visits if v.date is not None and not v.baseline and not v.prebaseline
    ]
    if on_treatment and start > on_treatment[0].date:  # type: ignore[operator]
        problems.append(
            Problem(
                "error",
                f,
                f"{base}.treatment.start_date",
                f"treatment start {start} is after the first follow-up visit "
                f"{on_treatment[0].id} ({on_treatment[0].date})",
            )
        )
