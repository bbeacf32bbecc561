"""De-identification of imported studies: pseudonymous subject ids and the site's mapping file.

By default a study written by ``tumorscope import-dicom`` names subjects ``001``, ``002``, …
and carries no patient name, birth date, patient ID, accession number or DICOM UID: sidecars
hold acquisition fields only, ``study.yaml`` holds pseudonyms and visit dates. The link back
to the patient is written to a separate mapping file (TSV) for the site to keep; it is never
placed inside the study folder, and a later import with the same mapping file reuses the
pseudonyms (a patient's new visits join the same subject).

What remains in the study: visit dates (response criteria need the intervals), the scanner's
manufacturer, model and field strength, series descriptions, and the images themselves (which
for head scans can show a face; defacing is out of scope).

:func:`find_identifiers` searches every file of a folder (gzip-compressed files are searched
decompressed) for given strings. The importer runs it on the finished study before moving it
into place (text files whole, NIfTI files on their header and extensions, where text lives) and
refuses to deliver a study in which an identifier of an imported patient is found
(:func:`check_no_identifiers`, with the header values of :func:`identifier_values`); the tests
run it on every file.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..volume import atomic_write

__all__ = [
    "IDENTIFYING_KEYWORDS",
    "MAPPING_COLUMNS",
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

#: DICOM header keywords whose values must never reach a de-identified study
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
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


def _needles(values: Iterable[str]) -> set[str]:
    """The strings to look for: each value, person names with ``^`` as space or comma (the
    empty components dropped), dates ``YYYYMMDD`` also as ``YYYY-MM-DD``."""
    needles: set[str] = set()
    for v in values:
        v = str(v).strip()
        if len(v) < 3:
            continue
        needles.add(v)
        if "^" in v:
            parts = [p for p in v.split("^") if p]
            needles.update({" ".join(parts), ", ".join(parts)})
        if len(v) == 8 and v.isdigit():
            needles.add(f"{v[:4]}-{v[4:6]}-{v[6:]}")
    return needles


def scrub(text: str, values: Iterable[str], *, replacement: str = "[removed]") -> str:
    """``text`` with every identifier of ``values`` (and its variants) replaced.

    Used on free-text header fields (series description, protocol name) that technologists
    sometimes fill with the patient's name.

    Examples
    --------
    >>> scrub("t2 tse DOE JANE", ["DOE^JANE"])
    't2 tse [removed]'
    """
    import re

    for n in sorted(_needles(values), key=lambda n: (-len(n), n)):
        text = re.sub(re.escape(n), replacement, text, flags=re.IGNORECASE)
    return text


def scrub_fields(fields: Mapping[str, Any], values: Iterable[str]) -> dict[str, Any]:
    """``fields`` with :func:`scrub` applied to every string value (other values as they are).

    Examples
    --------
    >>> scrub_fields({"SeriesDescription": "t2 DOE JANE", "SeriesNumber": 2}, ["DOE^JANE"])
    {'SeriesDescription': 't2 [removed]', 'SeriesNumber': 2}
    """
    found = list(values)
    return {k: scrub(v, found) if isinstance(v, str) else v for k, v in fields.items()}


def identifier_values(headers: Sequence[Any]) -> list[str]:
    """The values of :data:`IDENTIFYING_KEYWORDS` in pydicom datasets (empty ones left out)."""
    values: list[str] = []
    for h in headers:
        for kw in IDENTIFYING_KEYWORDS:
            v = getattr(h, kw, None)
            if v:
                values.append(str(v))
    return values


def check_no_identifiers(root: str | Path, headers: Sequence[Any]) -> None:
    """Refuse a de-identified study in which an identifier of ``headers`` appears.

    Every file under ``root`` is searched (NIfTI images on their header and extensions only,
    see :func:`find_identifiers`) for the :func:`identifier_values` of the headers.

    Raises
    ------
    DataError
        An identifier was found; names the file (relative to ``root``), not the value.
    """
    folder = Path(root)
    hits = find_identifiers(folder, identifier_values(headers), image_headers_only=True)
    if hits:
        path, value = hits[0]
        raise DataError(
            f"an identifier ({len(value)} characters) appears in the de-identified study; "
            "nothing was written",
            file=path.relative_to(folder),
            field="de-identification",
        )


def find_identifiers(
    folder: str | Path, values: Iterable[str], *, image_headers_only: bool = False
) -> list[tuple[Path, str]]:
    """Files under ``folder`` that contain any of ``values`` (case-insensitive).

    Gzip-compressed files (``.gz``, e.g. NIfTI images with their header text fields) are
    searched after decompression. Person names are also searched with the ``^`` replaced by a
    space and by a comma, and dates ``YYYYMMDD`` also as ``YYYY-MM-DD``.

    Parameters
    ----------
    folder : path-like
        Folder to search recursively.
    values : iterable of str
        Identifiers (values shorter than 3 characters are ignored).
    image_headers_only : bool
        Search only the first 64 KiB (header and extensions) of NIfTI images, not the voxel
        bytes, which can match short values by chance.

    Returns
    -------
    list of (Path, str)
        Each file that holds an identifier, with the longest value found in it.
    """
    needles = _needles(values)
    # longest first: each file is reported once, with the most specific value found
    encoded = [(n, n.lower().encode("utf-8")) for n in sorted(needles, key=lambda n: (-len(n), n))]
    hits: list[tuple[Path, str]] = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        is_image = path.name.endswith((".nii", ".nii.gz"))
        if image_headers_only and is_image:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rb") as fh:
                data = fh.read(65536)
        else:
            data = path.read_bytes()
            if path.suffix == ".gz":
                try:
                    data = gzip.decompress(data)
                except OSError:
                    pass
        low = data.lower()
        for n, b in encoded:
            if b in low:
                hits.append((path, n))
                break
    return hits
