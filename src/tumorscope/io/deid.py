"""De-identification of imported studies: pseudonyms, the mapping file, identifiers in text.

By default a study written by ``tumorscope import-dicom`` names subjects ``001``, ``002``, …
and carries no patient name, birth date, patient ID, accession number or DICOM UID: sidecars
hold acquisition fields only (as the PS3.15 Basic Profile allows them, see
:mod:`tumorscope.io.dicom.profile`), ``study.yaml`` holds pseudonyms and visit dates. The link
back to the patient is written to a separate mapping file (TSV) for the site to keep; it is
never placed inside the study folder, and a later import with the same mapping file reuses the
pseudonyms (a patient's new visits join the same subject).

**Identifiers in free text** (:class:`Identifiers`). Technologists type names, IDs and dates
into series descriptions, protocol and sequence names. A *term* is a sequence of words (runs of
letters and digits, any script, lower case) and matches text as a **whole token** (not inside a
longer word: ``doe`` is not found in ``dose``), case-insensitively, with any separator between
its words or none (``Jane Doe``, ``DOE^JANE``, ``doe_jane``, ``JaneDoe``). The terms are:

* every part of the patient's family, given and middle names of at least
  :data:`MIN_NAME_PART` (2) characters, alone and the whole name in any order, accents folded
  too (``MÜLLER`` and ``MULLER``); the prefix and suffix (``Dr``, ``Jr``) are not names;
* other persons (referring, performing, reading physicians, operators): the whole name;
* IDs (Patient ID, other patient IDs, accession number): cleaned from text when at least
  :data:`MIN_ID_SCRUB` (2) characters long; the final check searches for them only from
  :data:`MIN_ID_CHECK` (3) characters, and from :data:`MIN_NUMERIC_ID_CHECK` (5) digits when
  they are all digits (shorter numbers are series numbers, years, pseudonyms like ``001``);
* institution names and addresses, whole;
* the birth date as year-month-day, day-month-year and month-day-year, with or without
  separators and leading zeros; cleaning also removes every date-like token.

:func:`find_identifiers` searches every file of a folder: JSON and YAML in their keys and
strings (numbers are not text), TSV below the header row, NIfTI images in their header text
fields and extensions (``image_headers_only``), anything else whole (gzip decompressed). The
importer runs :func:`check_no_identifiers` on the finished study, its log and its printed rows
before delivering anything.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import gzip
import io
import itertools
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..volume import atomic_write

__all__ = [
    "IDENTIFYING_KEYWORDS",
    "MAPPING_COLUMNS",
    "Identifiers",
    "PatientIdentifiers",
    "Pseudonymizer",
    "check_no_identifiers",
    "find_identifiers",
    "identifier_values",
    "identifiers_of",
    "scrub",
    "scrub_fields",
]

MAPPING_COLUMNS = (
    "subject",
    "visit",
    "file",
    "patient_id",
    "patient_name",
    "birth_date",
    "accession_number",
    "study_date",
    "study_instance_uid",
    "series_instance_uid",
)


@dataclass(frozen=True)
class PatientIdentifiers:
    """What identifies a patient in DICOM headers (never written into a default study)."""

    patient_id: str
    patient_name: str
    birth_date: str

    @property
    def key(self) -> str:
        """Stable key of the patient: the Patient ID, else name and birth date."""
        return self.patient_id or f"{self.patient_name}|{self.birth_date}"


def identifiers_of(ds: Any) -> PatientIdentifiers:
    """The patient identifiers of a pydicom dataset."""
    return PatientIdentifiers(
        str(getattr(ds, "PatientID", "") or ""),
        str(getattr(ds, "PatientName", "") or ""),
        str(getattr(ds, "PatientBirthDate", "") or ""),
    )


class Pseudonymizer:
    """Assigns pseudonymous subject ids and records the mapping.

    Parameters
    ----------
    mapping_file : path-like or None
        The site's mapping TSV. Existing rows are read (their pseudonyms are reused); new rows
        are written by :meth:`write`. None keeps the mapping in memory only.

    Examples
    --------
    >>> p = Pseudonymizer(None)
    >>> p.subject_id(PatientIdentifiers("MRN1", "DOE^JANE", "19600101"))
    '001'
    >>> p.subject_id(PatientIdentifiers("MRN2", "ROE^RICHARD", "19550505"))
    '002'
    >>> p.subject_id(PatientIdentifiers("MRN1", "DOE^JANE", "19600101"))
    '001'
    """

    def __init__(self, mapping_file: str | Path | None):
        self.path = None if mapping_file is None else Path(mapping_file)
        self.rows: list[dict[str, str]] = []
        self._ids: dict[str, str] = {}
        if self.path is not None and self.path.exists():
            self._read(self.path)

    def _read(self, path: Path) -> None:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            missing = [c for c in ("subject", "patient_id") if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(
                    f"identifier mapping lacks column(s) {', '.join(missing)}",
                    file=path,
                    field=",".join(missing),
                )
            for row in reader:
                key = row.get("patient_id") or (
                    f"{row.get('patient_name', '')}|{row.get('birth_date', '')}"
                )
                self._ids.setdefault(key, row["subject"])
                self.rows.append({c: row.get(c, "") or "" for c in MAPPING_COLUMNS})

    def subject_id(self, ident: PatientIdentifiers) -> str:
        """The pseudonym of a patient (the next free 3-digit number for a new patient)."""
        if ident.key not in self._ids:
            used = {int(s) for s in self._ids.values() if s.isdigit()}
            n = max(used, default=0) + 1
            self._ids[ident.key] = f"{n:03d}"
        return self._ids[ident.key]

    def add_series(
        self,
        ident: PatientIdentifiers,
        *,
        subject: str,
        visit: str,
        file: str,
        study_uid: str,
        series_uid: str,
        accession: str,
        study_date: str,
    ) -> None:
        """Record one imported series (its row in the mapping file)."""
        row = {
            "subject": subject,
            "visit": visit,
            "file": file,
            "patient_id": ident.patient_id,
            "patient_name": ident.patient_name,
            "birth_date": ident.birth_date,
            "accession_number": accession,
            "study_date": study_date,
            "study_instance_uid": study_uid,
            "series_instance_uid": series_uid,
        }
        # a re-import replaces the row of the same file
        self.rows = [r for r in self.rows if (r["subject"], r["file"]) != (subject, file)]
        self.rows.append(row)

    def series_uid(self, subject: str, file: str) -> str | None:
        """Series Instance UID recorded for a study file (e.g. for DICOM export)."""
        for r in self.rows:
            if r["subject"] == subject and r["file"] == file:
                return r["series_instance_uid"] or None
        return None

    def write(self) -> Path | None:
        """Write the mapping file atomically (all rows, old and new)."""
        if self.path is None:
            return None
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=MAPPING_COLUMNS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for r in sorted(self.rows, key=lambda r: (r["subject"], r["visit"], r["file"])):
            w.writerow(r)
        text = buf.getvalue()
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return self.path


# ------------------------------------------------------------------ identifiers in free text
#: shortest part of a patient's name that is cleaned and searched for (initials are not)
MIN_NAME_PART = 2
#: shortest ID (Patient ID, other IDs, accession number) cleaned from free text
MIN_ID_SCRUB = 2
#: shortest ID the final check searches for, and for IDs of digits only (fewer digits than
#: this turn up as ordinary numbers: a series number, a year, a pseudonym like ``001``)
MIN_ID_CHECK = 3
MIN_NUMERIC_ID_CHECK = 5

_B, _E = r"(?<![^\W_])", r"(?![^\W_])"  # not after / before a letter or digit: whole tokens
_SEP = r"[\W_]*"  # any separator between the words of a term, or none
_DATE = re.compile(
    _B + r"(?:(?:19|20)\d\d[-./]?(?:0[1-9]|1[0-2])[-./]?(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[-./](?:0?[1-9]|1[0-2])[-./](?:19|20)\d\d)" + _E
)


def _words(value: str) -> tuple[str, ...]:
    """The runs of letters and digits of ``value``, lower case (any script)."""
    return tuple(w.lower() for w in re.findall(r"[^\W_]+", value))


def _ascii(words: tuple[str, ...]) -> tuple[str, ...]:
    """``words`` without accents (``müller`` → ``muller``)."""
    return tuple(
        unicodedata.normalize("NFKD", w).encode("ascii", "ignore").decode() or w for w in words
    )


def _name_terms(value: str) -> set[tuple[str, ...]]:
    """Every part (≥ :data:`MIN_NAME_PART` characters) of the family, given and middle names
    of a DICOM person name (each ``=`` group), and the whole name in either order."""
    terms: set[tuple[str, ...]] = set()
    for group in str(value).split("="):
        comps = [_words(c) for c in group.split("^")[:3]]  # prefix and suffix (Dr, Jr) not
        if len(comps) == 1 and len(comps[0]) > 1:  # "Jane Doe" without ^: words are the parts
            comps = [comps[0][-1:], comps[0][:-1]]
        for variant in (lambda w: w, _ascii):
            cs = [variant(c) for c in comps if c]
            terms.update((w,) for c in cs for w in c if len(w) >= MIN_NAME_PART)
            for k in range(2, len(cs) + 1):  # the name in any order, with or without middle
                for perm in itertools.permutations(cs, k):
                    terms.add(tuple(w for c in perm for w in c))
    return terms


def _person_terms(value: str) -> set[tuple[str, ...]]:
    """Another person's name (a physician, an operator): the whole name in either order."""
    comps = [c for c in (_words(x) for x in str(value).split("=")[0].split("^")[:3]) if c]
    if not comps:
        return set()
    return {
        tuple(w for c in comps for w in c),
        tuple(w for c in [*comps[1:], comps[0]] for w in c),
    }


def _date_terms(value: str) -> set[tuple[str, ...]]:
    """A DICOM date ``YYYYMMDD`` as year-month-day, day-month-year and month-day-year."""
    v = str(value).strip()
    if not (len(v) == 8 and v.isdigit()):
        return set()
    y, m, d = v[:4], v[4:6], v[6:]
    terms: set[tuple[str, ...]] = {(y, m, d), (d, m, y), (m, d, y)}
    terms |= {(y, m.lstrip("0"), d.lstrip("0")), (d.lstrip("0"), m.lstrip("0"), y)}
    return terms


def _id_terms(value: str, *, check: bool) -> set[tuple[str, ...]]:
    """An ID, if long enough to be told from ordinary words and numbers (see module doc)."""
    words = _words(value)
    joined = "".join(words)
    if check:
        short = len(joined) < (MIN_NUMERIC_ID_CHECK if joined.isdigit() else MIN_ID_CHECK)
    else:
        short = len(joined) < MIN_ID_SCRUB
    return set() if short or not words else {words}


#: keywords holding the patient's names: every part of them is cleaned
PATIENT_NAME_KEYWORDS = (
    "PatientName",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
)
#: keywords holding other persons' names: cleaned as whole names
PERSON_NAME_KEYWORDS = (
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "PhysiciansOfRecord",
)
#: keywords holding IDs of the patient or the study
ID_KEYWORDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "MedicalRecordLocator")
#: keywords holding places and addresses: cleaned as whole phrases
PHRASE_KEYWORDS = (
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "PatientAddress",
)
#: DICOM header keywords whose values must never reach a de-identified study
IDENTIFYING_KEYWORDS = (
    *PATIENT_NAME_KEYWORDS[:1],
    *ID_KEYWORDS[:1],
    "PatientBirthDate",
    *ID_KEYWORDS[1:],
    *PATIENT_NAME_KEYWORDS[1:],
    *PHRASE_KEYWORDS,
    *PERSON_NAME_KEYWORDS,
)


def _values_of(ds: Any, keyword: str) -> list[str]:
    v = getattr(ds, keyword, None)
    if v is None or v == "":
        return []
    if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue":
        return [str(x) for x in v if str(x)]
    return [str(v)]


@dataclass(frozen=True)
class Identifiers:
    """The identifying terms of some patients, and how to clean or find them in text.

    A term is a sequence of words (letters and digits, lower case); it matches in text as a
    whole token (not inside a longer word), case-insensitively, with any separator (space,
    ``^``, ``_``, ``-``, ``,``, ``.`` …) or none between its words. Build it from DICOM headers
    with :meth:`of_headers` or from plain values with :meth:`of_values`.

    Examples
    --------
    >>> ids = Identifiers.of_values(["DOE^JANE", "MRN12345", "19610415"])
    >>> ids.scrub("t2_tse JANE-doe mrn12345 1961-04-15 (Doe)")
    't2_tse [removed] [removed] [removed] ([removed])'
    >>> ids.scrub("dose reduction, anterior")  # whole tokens only: no part of a word
    'dose reduction, anterior'
    >>> ids.search("ep2d JaneDoe") is not None
    True
    """

    terms: frozenset[tuple[str, ...]] = frozenset()

    @classmethod
    def of_headers(cls, headers: Iterable[Any], *, check: bool = False) -> Identifiers:
        """The identifiers in pydicom datasets (:data:`IDENTIFYING_KEYWORDS`, the patient's
        other IDs). ``check=True`` leaves out IDs too short to be told from ordinary numbers
        (the final check; cleaning takes them)."""
        terms: set[tuple[str, ...]] = set()
        for h in headers:
            for kw in PATIENT_NAME_KEYWORDS:
                for v in _values_of(h, kw):
                    terms |= _name_terms(v)
            for kw in PERSON_NAME_KEYWORDS:
                for v in _values_of(h, kw):
                    terms |= _person_terms(v)
            ids = [v for kw in ID_KEYWORDS for v in _values_of(h, kw)]
            for item in getattr(h, "OtherPatientIDsSequence", None) or []:
                ids += _values_of(item, "PatientID")
            for v in ids:
                terms |= _id_terms(v, check=check)
            for kw in PHRASE_KEYWORDS:
                for v in _values_of(h, kw):
                    words = _words(v)
                    if len("".join(words)) >= MIN_ID_CHECK:
                        terms.add(words)
            for v in _values_of(h, "PatientBirthDate"):
                terms |= _date_terms(v)
        return cls(frozenset(terms))

    @classmethod
    def of_values(cls, values: Iterable[str], *, check: bool = False) -> Identifiers:
        """Identifiers from plain values: with a ``^`` a patient's name (every part), eight
        digits a date ``YYYYMMDD``, anything else an ID or a phrase."""
        terms: set[tuple[str, ...]] = set()
        for v in values:
            v = str(v).strip()
            if "^" in v:
                terms |= _name_terms(v)
            elif _date_terms(v):
                terms |= _date_terms(v) | {(v,)}
            else:
                terms |= _id_terms(v, check=check)
        return cls(frozenset(terms))

    def __or__(self, other: Identifiers) -> Identifiers:
        return Identifiers(self.terms | other.terms)

    def __bool__(self) -> bool:
        return bool(self.terms)

    @functools.cached_property
    def pattern(self) -> re.Pattern[str] | None:
        """One regular expression for all terms (longest first), or None without terms."""
        if not self.terms:
            return None
        ordered = sorted(self.terms, key=lambda t: (-len("".join(t)), -len(t), t))
        alternatives = "|".join(_SEP.join(re.escape(w) for w in t) for t in ordered)
        return re.compile(f"{_B}(?:{alternatives}){_E}", re.IGNORECASE)

    def scrub(self, text: str, *, replacement: str = "[removed]", dates: bool = True) -> str:
        """``text`` with every term (and, with ``dates``, every date) replaced."""
        if self.pattern is not None:
            text = self.pattern.sub(replacement, text)
        return _DATE.sub(replacement, text) if dates else text

    def search(self, text: str) -> str | None:
        """The first term found in ``text`` (its words joined by a space), or None."""
        m = None if self.pattern is None else self.pattern.search(text)
        return None if m is None else " ".join(_words(m.group(0)))


def _as_identifiers(values: Identifiers | Iterable[str], *, check: bool = False) -> Identifiers:
    if isinstance(values, Identifiers):
        return values
    return Identifiers.of_values(values, check=check)


def scrub(text: str, values: Identifiers | Iterable[str], *, replacement: str = "[removed]") -> str:
    """``text`` with every identifier of ``values`` and every date replaced.

    Used on free-text fields (series description, protocol and sequence names, messages) that
    technologists sometimes fill with the patient's name, ID or birth date. Every part of the
    patient's name is removed as a whole token in any order, case and separator.

    Examples
    --------
    >>> scrub("t2 tse DOE JANE", ["DOE^JANE"])
    't2 tse [removed]'
    >>> scrub("JANE t2 tse; doe 2nd", ["DOE^JANE"])
    '[removed] t2 tse; [removed] 2nd'
    """
    return _as_identifiers(values).scrub(text, replacement=replacement)


def scrub_fields(fields: Mapping[str, Any], values: Identifiers | Iterable[str]) -> dict[str, Any]:
    """``fields`` with :func:`scrub` applied to every string value, strings in lists too (other
    values as they are).

    Examples
    --------
    >>> scrub_fields({"SeriesDescription": "t2 DOE JANE", "SeriesNumber": 2}, ["DOE^JANE"])
    {'SeriesDescription': 't2 [removed]', 'SeriesNumber': 2}
    """
    ids = _as_identifiers(values)

    def clean(v: Any) -> Any:
        if isinstance(v, str):
            return ids.scrub(v)
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return {k: clean(v) for k, v in fields.items()}


def identifier_values(headers: Sequence[Any]) -> list[str]:
    """The values of :data:`IDENTIFYING_KEYWORDS` in pydicom datasets (empty ones left out)."""
    values: list[str] = []
    for h in headers:
        for kw in IDENTIFYING_KEYWORDS:
            values += _values_of(h, kw)
    return values


def check_no_identifiers(
    root: str | Path, headers: Sequence[Any], *, texts: Mapping[str, str] | None = None
) -> None:
    """Refuse a de-identified study in which an identifier of ``headers`` appears.

    Every file under ``root`` (NIfTI images on their header text fields and extensions, see
    :func:`find_identifiers`) and every text of ``texts`` (e.g. the import log and what the
    command prints, by name) is searched for the identifiers of the headers
    (:meth:`Identifiers.of_headers` with ``check=True``: whole tokens, short numeric IDs left
    out).

    Raises
    ------
    DataError
        An identifier was found; names the file (relative to ``root``) or the text, not the
        value.
    """
    folder = Path(root)
    ids = Identifiers.of_headers(headers, check=True)
    for name, text in (texts or {}).items():
        if ids.search(text) is not None:
            raise DataError(
                "an identifier appears in the output; nothing was written",
                file=name,
                field="de-identification",
            )
    hits = find_identifiers(folder, ids, image_headers_only=True)
    if hits:
        path, value = hits[0]
        hint = (
            " (the study's name is the folder's unless --name gives one: a folder named after"
            " the institution or the patient puts it there)"
            if path.name == "study.yaml"
            else ""
        )
        raise DataError(
            f"an identifier ({len(value)} characters) appears in the de-identified study{hint}; "
            "nothing was written",
            file=path.relative_to(folder),
            field="de-identification",
        )


def _strings(obj: Any) -> Iterable[str]:
    """Every key and string value of parsed JSON / YAML (numbers are not text)."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str | dt.date):
        yield str(obj)


def _searchable_text(path: Path, image_headers_only: bool) -> str:
    """The text of a file where an identifier could be: JSON and YAML keys and strings (not
    numbers), TSV cells below the header, NIfTI header text fields and extensions (with
    ``image_headers_only``), the bytes of anything else (gzip decompressed)."""
    name = path.name.lower()
    if image_headers_only and name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        hdr: Any = nib.load(path).header
        fields = [hdr.get(k) for k in ("descrip", "aux_file", "intent_name", "db_name")]
        parts = [bytes(np.asarray(f).tobytes()).decode("latin-1") for f in fields if f is not None]
        parts += [e.get_content().decode("latin-1", "replace") for e in hdr.extensions
                  if isinstance(e.get_content(), bytes)]  # fmt: skip
        return "\n".join(parts)
    data = path.read_bytes()
    if name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except OSError:
            pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")
    if name.endswith(".tsv"):
        return "\n".join(text.splitlines()[1:])
    if name.endswith((".json", ".yaml", ".yml")):
        import yaml

        try:
            parsed = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError):
            return text  # not what its name says: searched whole
        return "\n".join(_strings(parsed))
    return text


def find_identifiers(
    folder: str | Path,
    values: Identifiers | Iterable[str],
    *,
    image_headers_only: bool = False,
) -> list[tuple[Path, str]]:
    """Files under ``folder`` that contain any of ``values``, as whole tokens.

    Matching is that of :class:`Identifiers` (case-insensitive, whole tokens, any separator;
    every part of a patient's name ``FAMILY^GIVEN``; dates ``YYYYMMDD`` also written
    ``YYYY-MM-DD``, ``DD.MM.YYYY``, ``MM/DD/YYYY``). JSON and YAML files are searched in their
    keys and strings, not their numbers; TSV files below their header row; gzip-compressed
    files decompressed.

    Parameters
    ----------
    folder : path-like
        Folder to search recursively.
    values : Identifiers or iterable of str
        What to look for (plain values as in :meth:`Identifiers.of_values`).
    image_headers_only : bool
        Search NIfTI images in their header text fields and extensions only, not the voxel
        bytes, which can match short values by chance.

    Returns
    -------
    list of (Path, str)
        Each file that holds an identifier, with the (longest) term found in it.
    """
    ids = _as_identifiers(values)
    hits: list[tuple[Path, str]] = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        found = ids.search(_searchable_text(path, image_headers_only))
        if found is not None:
            hits.append((path, found))
    return hits
