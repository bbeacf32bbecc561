"""Import a folder of DICOM files as a tumorscope study (:func:`import_dicom`).

The importer scans the folder (:func:`~tumorscope.io.dicom.scan.scan_dicom`), reads every
series (:func:`~tumorscope.io.dicom.series.read_series`) before writing anything, groups the
series into subjects (Patient ID) and visits (``StudyDate``), and writes the BIDS-style study of
``docs/study-format.md``: NIfTI images with JSON sidecars (and ``.bval``), lesion label maps
from SEG / RT-STRUCT objects that reference an imported series, and a ``study.yaml``.

Design decisions
----------------
* **De-identified by default** (see :mod:`tumorscope.io.deid`): pseudonymous subjects, the
  identifier mapping and the import log beside the study, never inside it; sidecars follow
  the PS3.15 Basic Profile (:mod:`~tumorscope.io.dicom.profile`) and record it; every string
  written or printed (sidecars, report rows, problems, log) is cleaned of the identifiers of
  every patient in the folder, and the finished study, the log and the rows are searched for
  them before anything is delivered.
* **Not taken as acquired series:** derived images (scanner maps: ADC, trace, FA,
  subtraction, MIP) unless the user names their role, and series with burned-in annotation
  unless ``allow_burned_in``; both skipped with a warning.
* **Nothing half-written.** Every series is read and checked first; the study is written to a
  temporary folder beside ``study_dir`` and renamed into place only when complete.
* **Re-imports keep the user's edits** to ``study.yaml``: study settings, treatments and the
  flags of visits whose date is unchanged, and the ``dicom`` section (roles, baseline frames).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError, Problem, ProtocolError
from ...owned import check_outside, check_replaceable, record_files
from ...protocol import DiffusionProtocol
from ...volume import Volume, atomic_write
from ..deid import (
    Identifiers,
    PatientIdentifiers,
    Pseudonymizer,
    check_no_identifiers,
    identifiers_of,
)
from .kinds import NOT_IMPORTED_HINT, localizer
from .pet import is_pet, read_pet_series
from .profile import deidentify_sidecar
from .scan import (
    SEG_STORAGE,
    DicomSeries,
    _problem,
    derived_image_type,
    lenient_values,
    scan_dicom,
)
from .seg import read_rtstruct, read_segmentation
from .series import NotImported, SeriesData, merge_split_series, read_series

__all__ = ["ImportReport", "import_dicom"]

#: folder of a series in a visit, by suffix (the rest is ``anat``)
_FOLDER = {
    "dwi": "dwi",
    "dce": "perf",
    "dsc": "perf",
    "epi": "fmap",
    "pet": "pet",
}

#: one imported series: where it came from and what was read
_Read = tuple[DicomSeries, SeriesData]


@dataclass
class ImportReport:
    """Result of :func:`import_dicom`.

    Attributes
    ----------
    study_dir : Path
        The study written.
    log_file : Path
        The list of problems, beside the study (it names source files).
    mapping_file : Path
        The identifier mapping (pseudonym ↔ patient), kept outside the study.
    series : list of dict
        One row per series written (subject, visit, suffix, file, description, reason).
    problems : list of Problem
        Everything reported: skipped files (warnings) and rejected series (errors).
    """

    study_dir: Path
    log_file: Path
    mapping_file: Path | None
    series: list[dict[str, Any]]
    problems: list[Problem]

    @property
    def n_rejected(self) -> int:
        return sum(1 for p in self.problems if p.severity == "error")


# --------------------------------------------------------------------------- import


def _role_override(series: DicomSeries, roles: Mapping[str, str]) -> str | None:
    for pattern, suffix in roles.items():
        if pattern == series.uid or fnmatch.fnmatch(series.description.lower(), pattern.lower()):
            return suffix
    return None


def _study_date(series: DicomSeries) -> dt.date | None:
    s = series.text("StudyDate") or series.text("SeriesDate") or series.text("AcquisitionDate")
    try:
        return dt.datetime.strptime(s[:8], "%Y%m%d").date()
    except ValueError:
        return None


@lenient_values()
def import_dicom(
    dicom_dir: str | Path,
    study_dir: str | Path,
    *,
    keep_identifiers: bool = False,
    mapping_file: str | Path | None = None,
    roles: Mapping[str, str] | None = None,
    dce_baseline_frames: int | None = None,
    name: str | None = None,
    overwrite: bool = False,
    merge_split: bool = False,
    allow_burned_in: bool = False,
) -> ImportReport:
    """Import a folder of DICOM files as a tumorscope study.

    Parameters
    ----------
    dicom_dir : path-like
        Folder with DICOM files (any nesting and order; several patients/studies/series).
    study_dir : path-like
        The study folder to write (must not exist unless ``overwrite``).
    keep_identifiers : bool
        Use the DICOM Patient ID as subject id and keep UIDs in the sidecars. By default
        subjects get pseudonyms (``001``, ``002``, …) and no name, birth date, ID, accession
        number or UID enters the study.
    mapping_file : path-like, optional
        Identifier mapping (TSV, kept by the site, never inside the study). Pseudonyms already
        in it are reused, new ones appended. Default: ``<study_dir>-identifiers.tsv`` beside the
        study folder.
    roles : mapping, optional
        Series kind overrides: SeriesDescription glob pattern (case-insensitive) or Series
        Instance UID → suffix (``T2w``, ``dwi``, ``VFA``, ``dce``, ``dsc``, ``MEGRE``,
        ``MESE``, ``IRT1``, ``T1w``), optionally with BIDS entities before it (``ce-ferumoxytol_MEGRE``
        names the file ``sub-…_ses-…_ce-ferumoxytol_MEGRE``), or ``skip``. When
        ``study_dir/study.yaml`` exists, its ``dicom.roles`` are used too (the argument wins).
    dce_baseline_frames : int, optional
        Pre-contrast frames of the DCE series (estimated per series when not given; also read
        from ``dicom.dce_baseline_frames`` of an existing ``study.yaml``).
    name : str, optional
        Study name for ``study.yaml``.
    overwrite : bool
        Replace an existing study folder.
    merge_split : bool
        Merge single-volume series of one study that a scanner wrote separately for each
        flip angle, echo time or inversion time (see :func:`merge_split_series`).
    allow_burned_in : bool
        Import series with ``BurnedInAnnotation = YES`` (skipped with a warning by default:
        text in the pixels is not removed by de-identification).

    Returns
    -------
    ImportReport

    Raises
    ------
    DataError
        The folder does not exist, holds no importable series, or the study exists.
    """
    src = Path(dicom_dir)
    out = Path(study_dir)
    # the study, its log and the mapping would land among the source files, read again by the
    # next scan of that folder (sweep of 2026-12-06)
    check_outside(out, src, what="the DICOM folder", option="STUDY_DIR")
    previous = _previous_manifest(out)
    config = dict(previous.get("dicom") or {})
    if out.exists() and not overwrite:
        raise DataError("study folder exists (use overwrite=True / --overwrite)", file=out)
    if out.exists():
        _check_replaceable(out)
    all_roles = _checked_roles({**(config.get("roles") or {}), **dict(roles or {})})
    if dce_baseline_frames is None and config.get("dce_baseline_frames") is not None:
        dce_baseline_frames = int(config["dce_baseline_frames"])
    scan = scan_dicom(src)
    problems = list(scan.problems)
    series = scan.series
    if merge_split:
        series, notes = merge_split_series(series)
        problems += notes
    mapping_path = _mapping_path(mapping_file, out, keep_identifiers)
    pseudo = Pseudonymizer(None if keep_identifiers else mapping_path)
    log_path = out.parent / f"{out.name}-import-dicom.log"
    _check_log_replaceable(log_path)
    # read every series first: nothing is written before all inputs are checked
    read = _read_all(
        series, all_roles, dce_baseline_frames, keep_identifiers, problems, allow_burned_in
    )
    if not read:
        raise DataError(
            "no importable MR series found" + "".join(f"\n  {p}" for p in problems), file=src
        )
    manifest: dict[str, Any] = {"name": name or out.name, "criteria": ["recist1.1"]}
    # every patient's identifiers (rejected and skipped series too): cleaned from everything
    # written or printed, the sidecars' free text, the report rows and the problems
    ids = None if keep_identifiers else Identifiers.of_headers(s.header for s in scan.series)
    return _write_study(
        out,
        read,
        scan.segmentations,
        manifest,
        previous,
        pseudo=pseudo,
        report=ImportReport(
            out, log_path, None if keep_identifiers else mapping_path, [], problems
        ),
        keep_name=name is None,
        roles=all_roles,
        dce_baseline_frames=dce_baseline_frames,
        ids=ids,
    )


def _write_study(
    out: Path,
    read: Sequence[_Read],
    segmentations: Sequence[Path],
    manifest: dict[str, Any],
    previous: Mapping[str, Any],
    *,
    pseudo: Pseudonymizer,
    report: ImportReport,
    keep_name: bool,
    roles: Mapping[str, str],
    dce_baseline_frames: int | None,
    ids: Identifiers | None = None,
) -> ImportReport:
    """Write the series read (with their lesion maps), ``study.yaml``, the log and the
    identifier mapping; ``report`` gets the series written and every problem.

    With ``ids`` (a de-identified import) the sidecars follow the PS3.15 profile
    (:func:`~tumorscope.io.dicom.profile.deidentify_sidecar`), the report's rows and problems
    are cleaned of ``ids``, and the study, the log and the report's text are searched for the
    imported patients' identifiers before anything is delivered.
    """
    problems = report.problems
    visits, patient_of = _visits(read, problems)
    order = sorted(visits, key=lambda k: (min(visits[k]), k))
    seg_refs = _segmentation_refs(segmentations, problems)
    out.parent.mkdir(parents=True, exist_ok=True)  # the temporary folder must be beside it
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        writer = _StudyWriter(tmp, pseudo, ids, seg_refs, problems)
        for key in order:
            writer.subject(key, identifiers_of(patient_of[key].header), visits[key])
        writer.report_unused_segmentations()
        manifest["subjects"] = writer.subjects
        _carry_over(previous, manifest, keep_name=keep_name)
        _write_manifest(tmp, manifest, roles, dce_baseline_frames)
        report.series.extend(writer.written)
        if ids is not None:
            problems[:] = [_clean_problem(p, ids) for p in problems]
        # the log names source files, whose paths often hold patient IDs or accession
        # numbers: it stays beside the study, with the site's mapping, not inside it (and is
        # cleaned of the identifiers too)
        log = _LOG_HEADER + "".join(f"{p}\n" for p in problems)
        if ids is not None:
            printed = "\n".join(" ".join(map(str, r.values())) for r in report.series)
            check_no_identifiers(
                tmp,
                [patient_of[k].header for k in order],
                texts={report.log_file.name: log, "the command's output": printed},
            )
        atomic_write(report.log_file, lambda t: t.write_text(log, encoding="utf-8"))
        if ids is not None:
            pseudo.write()
        record_files(tmp, command="import-dicom")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _clean_problem(p: Problem, ids: Identifiers) -> Problem:
    """A problem with the identifiers cleaned from its file name and message."""
    return Problem(p.severity, ids.scrub(p.file, dates=False), p.field, ids.scrub(p.message))


def _mapping_path(mapping_file: str | Path | None, out: Path, keep_identifiers: bool) -> Path:
    """The identifier mapping file (default beside the study); never inside the study."""
    path = (
        Path(mapping_file)
        if mapping_file is not None
        else out.parent / f"{out.name}-identifiers.tsv"
    )
    if not keep_identifiers and _inside(path, out):
        raise DataError(
            "the identifier mapping must not be written inside the study folder", file=path
        )
    return path


#: First line of the ``study.yaml`` an import writes.
_IMPORT_HEADER = "# written by tumorscope import-dicom"


#: First line of the log an import writes beside the study (how the next import knows the
#: file at that name is its own to replace). No ordinary words: the log is searched for the
#: patients' names before it is written (a patient ONE^ALICE stopped "one a line").
_LOG_HEADER = "# tumorscope-import-dicom\n"


def _check_log_replaceable(path: Path) -> None:
    """The import's log beside the study replaces only a log an import wrote (its first line
    :data:`_LOG_HEADER`), never a user's file of that name (DataError, nothing written)."""
    if not (path.exists() or path.is_symlink()):
        return
    try:
        with open(path, "rb") as fh:
            ours = (
                path.is_file()
                and not path.is_symlink()
                and fh.read(len(_LOG_HEADER)) == (_LOG_HEADER.encode())
            )
    except OSError:
        ours = False
    if not ours:
        raise DataError(
            "the import writes its log here and this file is not one it wrote; nothing was "
            "written: move it or import into a folder of another name",
            file=path,
        )


def _check_replaceable(out: Path) -> None:
    """``overwrite`` replaces only an empty folder or a study an earlier import wrote and
    recorded (:mod:`tumorscope.owned`), with nothing added or changed in it since: never a
    folder holding a file the import did not write (a user's lesion segmentation, notes, the
    results of a run under ``derivatives/``). ``study.yaml`` may have changed: what the user
    added to it is carried over (:func:`_carry_over`)."""
    if not out.is_dir() or out.is_symlink():
        raise DataError("not a folder; nothing was replaced", file=out, field="--overwrite")
    if not any(out.iterdir()):
        return
    check_replaceable(
        out, what="a study written by import-dicom", option="--overwrite", taken_over={"study.yaml"}
    )


def _previous_manifest(out: Path) -> dict[str, Any]:
    """The ``study.yaml`` of an earlier import into ``out`` (empty when there is none)."""
    import yaml

    if not (out / "study.yaml").exists():
        return {}
    raw = yaml.safe_load((out / "study.yaml").read_text(encoding="utf-8")) or {}
    return raw if isinstance(raw, dict) else {}


def _checked_roles(roles: dict[str, Any]) -> dict[str, Any]:
    """``roles`` if every value is ``SUFFIX`` or ``entity-value_..._SUFFIX`` (DataError if not)."""
    for pattern, value in roles.items():
        *ents, kind = str(value).split("_")
        if not kind or any(not re.fullmatch(r"[A-Za-z0-9]+-[A-Za-z0-9]+", e) for e in ents):
            raise DataError(
                f"role {value!r} for {pattern!r}: expected SUFFIX or entity-value_..._SUFFIX "
                "(e.g. dce, ce-ferumoxytol_MEGRE) or skip",
                field="roles",
            )
    return roles


def _read_all(
    series: Sequence[DicomSeries],
    roles: Mapping[str, str],
    dce_baseline_frames: int | None,
    keep_identifiers: bool,
    problems: list[Problem],
    allow_burned_in: bool = False,
) -> list[_Read]:
    """Every series not skipped by a role, read; the rejected ones reported in ``problems``.

    Derived series (scanner maps) and series with burned-in annotation are skipped with a
    warning (see :func:`_excluded`).
    """
    read: list[_Read] = []
    for s in series:
        forced = _role_override(s, roles)
        if forced == "skip":
            continue
        excluded = _excluded(s, forced, allow_burned_in)
        if excluded is not None:
            problems.append(_problem("warning", s.files[0], *excluded))
            continue
        entities, _, kind = (forced or "").rpartition("_")
        try:
            if is_pet(s):  # Modality PT: Bq/mL and a BIDS-PET sidecar (io/dicom/pet.py)
                sd = read_pet_series(s, keep_identifiers=keep_identifiers)
            else:
                sd = read_series(
                    s,
                    suffix=kind or None,
                    dce_baseline_frames=dce_baseline_frames,
                    keep_identifiers=keep_identifiers,
                    refuse_not_imported=True,
                )
            for part in (sd, *sd.more):  # a dual-echo DSC: one file per echo
                part.entities = "_".join(e for e in (entities, part.entities) if e)
                read.append((s, part))
            for note in sd.notes:
                problems.append(_problem("warning", s.files[0], "ImageType", note))
        except NotImported as exc:  # BOLD, CEST, other multi-echo time series
            hint = NOT_IMPORTED_HINT[exc.kind].format(series=s.description or s.uid)
            problems.append(
                _problem(
                    "warning",
                    s.files[0],
                    "SeriesDescription",
                    f"{exc.reason}; series {s.description!r} (number {s.text('SeriesNumber')}) "
                    f"not imported ({hint})",
                )
            )
        except (DataError, ProtocolError) as exc:
            problems.append(
                _problem(
                    "error",
                    exc.file or s.files[0],
                    exc.field or "",
                    f"{exc.message}; series {s.description!r} (number {s.text('SeriesNumber')}) "
                    "not imported",
                )
            )
    return read


def _excluded(
    series: DicomSeries, forced: str | None, allow_burned_in: bool
) -> tuple[str, str] | None:
    """(tag, message) when a series must not be imported as it is, else None.

    * A **derived** image (:func:`~tumorscope.io.dicom.scan.derived_image_type`: an ADC, trace,
      FA, subtraction or MIP computed by the scanner) is never taken as an acquired series,
      unless the user names its role (``--role``), e.g. a Siemens trace-weighted DWI
      (``DERIVED\\PRIMARY\\DIFFUSION\\TRACEW``) to fit.
    * A **localizer** (scout, survey: :func:`~tumorscope.io.dicom.kinds.localizer`, by name)
      is planning images, often three planes in one series: skipped unless given a role.
    * **Burned-in annotation** (``BurnedInAnnotation = YES``: text in the pixels, which no
      header cleaning removes) is skipped unless ``allow_burned_in``.
    """
    word = None if forced is not None else localizer(series)
    if word is not None:
        return (
            "SeriesDescription",
            f"a localizer ({word!r} in {series.description!r}): planning images, not a series to "
            f"fit; series number {series.text('SeriesNumber')} skipped (give it a role with "
            "--role to import it anyway)",
        )
    image_type = derived_image_type(series.header)
    if image_type is not None and forced is None:
        return (
            "ImageType",
            f"derived image (ImageType {image_type}), a scanner map, not an acquired series; "
            f"series number {series.text('SeriesNumber')} skipped (give it a role with --role "
            "to import it anyway, e.g. a trace-weighted DWI)",
        )
    if series.text("BurnedInAnnotation").strip().upper() == "YES" and not allow_burned_in:
        return (
            "BurnedInAnnotation",
            f"burned-in annotation (text in the pixels, which de-identification cannot remove); "
            f"series number {series.text('SeriesNumber')} skipped (--allow-burned-in imports it)",
        )
    return None


def _visits(
    read: Sequence[_Read], problems: list[Problem]
) -> tuple[dict[str, dict[dt.date, list[_Read]]], dict[str, DicomSeries]]:
    """Series by patient key and study date, and the first series of each patient."""
    visits: dict[str, dict[dt.date, list[_Read]]] = defaultdict(lambda: defaultdict(list))
    patient_of: dict[str, DicomSeries] = {}
    for s, sd in read:
        key = s.text("PatientID") or f"{s.text('PatientName')}|{s.text('PatientBirthDate')}"
        date = _study_date(s)
        if date is None:
            problems.append(
                _problem(
                    "error",
                    s.files[0],
                    "StudyDate",
                    f"no valid StudyDate ({s.text('StudyDate')!r}); series {s.description!r} "
                    "not imported",
                )
            )
            continue
        visits[key][date].append((s, sd))
        patient_of.setdefault(key, s)
    return visits, patient_of


class _StudyWriter:
    """Writes the subjects, visits, series and lesion maps of an import into ``root``.

    Collects the rows of :attr:`ImportReport.series` (``written``), the ``subjects`` section
    of ``study.yaml`` and the problems met on the way.
    """

    def __init__(
        self,
        root: Path,
        pseudo: Pseudonymizer,
        ids: Identifiers | None,
        seg_refs: Mapping[Path, list[str]],
        problems: list[Problem],
    ) -> None:
        self.root = root
        self.pseudo = pseudo
        self.ids = ids  # None: the identifiers are kept (keep_identifiers)
        self.keep_identifiers = ids is None
        self.seg_refs = seg_refs
        self.problems = problems
        self.used_segs: set[Path] = set()
        self.written: list[dict[str, Any]] = []
        self.subjects: dict[str, Any] = {}

    def subject(
        self, key: str, ident: PatientIdentifiers, visits: Mapping[dt.date, list[_Read]]
    ) -> None:
        """Write one patient's visits (numbered by date) under its subject id."""
        sid = _safe_label(key) if self.keep_identifiers else self.pseudo.subject_id(ident)
        self.subjects[sid] = {"visits": {}}
        for vi, date in enumerate(sorted(visits), start=1):
            vid = f"{vi:02d}"
            self.subjects[sid]["visits"][vid] = {"date": date.isoformat()}
            self._visit(sid, vid, date, ident, visits[date])
            self.problems += _import_segmentations(
                self.seg_refs, self.used_segs, visits[date], self.root, sid, vid
            )

    def _visit(
        self, sid: str, vid: str, date: dt.date, ident: PatientIdentifiers, read: list[_Read]
    ) -> None:
        vdir = self.root / f"sub-{sid}" / f"ses-{vid}"
        used: dict[tuple[str, str], int] = defaultdict(int)
        for s, sd in read:
            description, reason = s.description, sd.reason
            if self.ids is not None:
                # the PS3.15 profile; free-text fields sometimes carry the patient's name
                sd.sidecar = deidentify_sidecar(sd.sidecar, self.ids)
                description, reason = self.ids.scrub(description), self.ids.scrub(reason)
            n_same = used[sd.entities, sd.suffix] = used[sd.entities, sd.suffix] + 1
            ent_part = f"_{sd.entities}" if sd.entities else ""
            run = "" if n_same == 1 else f"_run-{n_same}"
            stem = f"sub-{sid}_ses-{vid}{ent_part}{run}_{sd.suffix}"
            folder = vdir / _FOLDER.get(sd.suffix, "anat")
            _write_series_files(folder, stem, sd)
            rel = f"{folder.relative_to(self.root)}/{stem}.nii.gz"
            self.written.append(
                {
                    "subject": sid,
                    "visit": vid,
                    "suffix": sd.suffix,
                    "file": rel,
                    "description": description,
                    "reason": reason,
                }
            )
            if not self.keep_identifiers:
                self.pseudo.add_series(
                    ident,
                    subject=sid,
                    visit=vid,
                    file=rel,
                    study_uid=s.text("StudyInstanceUID"),
                    series_uid=s.uid,
                    accession=s.text("AccessionNumber"),
                    study_date=date.isoformat(),
                )

    def report_unused_segmentations(self) -> None:
        """A warning for each SEG / RT-STRUCT that references no imported series."""
        for path in self.seg_refs:
            if path not in self.used_segs:
                self.problems.append(
                    _problem(
                        "warning",
                        path,
                        "ReferencedSeriesSequence",
                        "the segmentation references no imported series; skipped",
                    )
                )


def _write_manifest(
    root: Path,
    manifest: dict[str, Any],
    roles: Mapping[str, str],
    dce_baseline_frames: int | None,
) -> None:
    """Write ``study.yaml`` (with the ``dicom`` section when roles or baseline frames were set)."""
    import yaml

    if roles or dce_baseline_frames is not None:
        manifest["dicom"] = {}
        if roles:
            manifest["dicom"]["roles"] = dict(roles)
        if dce_baseline_frames is not None:
            manifest["dicom"]["dce_baseline_frames"] = int(dce_baseline_frames)
    text = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)
    (root / "study.yaml").write_text(
        f"{_IMPORT_HEADER}; series kinds can be overridden with\n"
        "# dicom: {roles: {'<SeriesDescription glob>': T2w|dwi|VFA|dce|dsc|MEGRE|MESE|IRT1|skip}}\n"
        + text,
        encoding="utf-8",
    )


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished study ``tmp`` to ``out`` (replacing an old one)."""
    if out.exists():
        old = out.with_name(f".{out.name}-old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _carry_over(previous: Mapping[str, Any], manifest: dict[str, Any], *, keep_name: bool) -> None:
    """Keep what a user added to the ``study.yaml`` of an earlier import.

    Study-level settings (name, criteria, roles, dce), each subject's treatment, and visit flags
    (``baseline``, ``prebaseline``) of visits whose date is unchanged.
    """
    for key in ("name", "criteria", "roles", "dce"):
        if key in previous and (key != "name" or keep_name):
            manifest[key] = previous[key]
    old_subjects = previous.get("subjects") or {}
    if not isinstance(old_subjects, dict):
        return
    for sid, entry in manifest["subjects"].items():
        old = old_subjects.get(sid)
        if not isinstance(old, dict):
            continue
        if "treatment" in old:
            entry["treatment"] = old["treatment"]
        old_visits = old.get("visits") or {}
        for vid, visit in entry["visits"].items():
            ov = old_visits.get(vid) if isinstance(old_visits, dict) else None
            if isinstance(ov, dict) and str(ov.get("date")) == visit["date"]:
                visit.update({k: v for k, v in ov.items() if k != "date"})


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _safe_label(value: str) -> str:
    """A BIDS label from a Patient ID (alphanumerics only)."""
    label = "".join(ch for ch in value if ch.isalnum())
    if not label:
        raise DataError(f"Patient ID {value!r} has no letters or digits", field="PatientID")
    return label


def _write_series_files(folder: Path, stem: str, sd: SeriesData) -> None:
    vol = sd.volume
    data = vol.data
    dtype: Any = None
    if np.issubdtype(data.dtype, np.integer):
        lo, hi = int(data.min()), int(data.max())
        dtype = np.int16 if -32768 <= lo and hi <= 32767 else np.int32
    vol.to_nifti(folder / f"{stem}.nii.gz", dtype=dtype)
    text = json.dumps(sd.sidecar, indent=2) + "\n"
    atomic_write(folder / f"{stem}.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if isinstance(sd.protocol, DiffusionProtocol):
        bval = " ".join(f"{b:g}" for b in sd.protocol.bvalues) + "\n"
        atomic_write(folder / f"{stem}.bval", lambda tmp: tmp.write_text(bval, encoding="utf-8"))
        if sd.protocol.bvecs is not None:  # FSL/BIDS: three rows, the image's voxel frame
            rows = np.asarray(sd.protocol.bvecs, dtype=float).T
            bvec = "".join(" ".join(f"{c:.6g}" for c in row) + "\n" for row in rows)
            atomic_write(
                folder / f"{stem}.bvec", lambda tmp: tmp.write_text(bvec, encoding="utf-8")
            )


def _segmentation_refs(paths: Sequence[Path], problems: list[Problem]) -> dict[Path, list[str]]:
    import pydicom

    out: dict[Path, list[str]] = {}
    for path in paths:
        try:
            out[path] = _referenced_series(pydicom.dcmread(path, stop_before_pixels=True))
        except Exception as exc:
            problems.append(
                _problem("warning", path, "", f"cannot read ({type(exc).__name__}); skipped")
            )
    return out


def _referenced_series(ds: Any) -> list[str]:
    """Series Instance UIDs a SEG or RT-STRUCT refers to."""
    uids = [str(r.SeriesInstanceUID) for r in getattr(ds, "ReferencedSeriesSequence", []) or []]
    for f in getattr(ds, "ReferencedFrameOfReferenceSequence", []) or []:
        for st in getattr(f, "RTReferencedStudySequence", []) or []:
            for se in getattr(st, "RTReferencedSeriesSequence", []) or []:
                uids.append(str(se.SeriesInstanceUID))
    return uids


def _import_segmentations(
    segs: Mapping[Path, list[str]],
    used: set[Path],
    grids: Sequence[tuple[DicomSeries, SeriesData]],
    root: Path,
    sid: str,
    vid: str,
) -> list[Problem]:
    """Write the SEG / RT-STRUCT that references a series of this visit as its lesion map."""
    import pydicom

    problems: list[Problem] = []
    by_uid = {s.uid: sd for s, sd in grids}
    done = False
    for path, refs in segs.items():
        target = next((by_uid[u] for u in refs if u in by_uid), None)
        if target is None:
            continue
        used.add(path)
        if done:
            problems.append(
                _problem(
                    "warning",
                    path,
                    "ReferencedSeriesSequence",
                    f"a second segmentation for sub-{sid} ses-{vid}; only the first is imported",
                )
            )
            continue
        grid = target.volume if target.volume.data.ndim == 3 else target.volume.frame(0)
        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID)
        reader = read_segmentation if sop == SEG_STORAGE else read_rtstruct
        try:
            labels, rows = reader(path, grid)
        except DataError as exc:
            problems.append(_problem("error", path, exc.field or "", f"{exc.message}; skipped"))
            continue
        folder = root / "derivatives" / "lesions" / f"sub-{sid}" / f"ses-{vid}"
        _write_lesions(folder, f"sub-{sid}_ses-{vid}_lesions", labels, rows)
        done = True
    return problems


def _write_lesions(folder: Path, stem: str, labels: Volume, rows: list[dict[str, Any]]) -> None:
    labels.to_nifti(folder / f"{stem}.nii.gz", dtype=np.int16)
    lines = ["label\tlesion_id\torgan\ttarget\tnodal"]
    for r in sorted(rows, key=lambda r: r["label"]):
        lines.append(
            f"{r['label']}\t{r['lesion_id']}\t{r['organ']}\t"
            f"{str(r['target']).lower()}\t{str(r['nodal']).lower()}"
        )
    text = "\n".join(lines) + "\n"
    atomic_write(folder / f"{stem}.tsv", lambda tmp: tmp.write_text(text, encoding="utf-8"))
