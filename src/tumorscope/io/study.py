"""Reading a study folder: :func:`open_study` and :func:`validate_study`.

``open_study(path)`` checks the manifest and the folder structure (cheap: no image data is
read) and returns a :class:`Study` that walks subjects → visits → series and lesions lazily:
``series.load()`` reads the image, ``visit.lesions.load_labels()`` the label map.

``validate_study(path)`` goes further: it reads every image and label map, checks the
sidecars, b-value counts, grids and lesion tables, and returns every problem found (it never
stops at the first). ``tumorscope validate`` prints them.

The format is specified in ``docs/study-format.md``.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, Problem, ProtocolError, StudyError
from ..files import regular_file
from ..protocol import Protocol
from ..volume import Volume
from .bids import (
    NIFTI_SUFFIXES,
    SINGLE_VOLUME_SUFFIXES,
    SUFFIX_AXES,
    implausible_fields,
    protocol_from_sidecar,
    read_sidecar,
    sidecar_path,
    split_entities,
)
from .manifest import Manifest, SubjectEntry, Treatment, read_manifest

__all__ = [
    "LesionInfo",
    "Lesions",
    "Series",
    "Study",
    "Subject",
    "Visit",
    "data_shape",
    "echo_pair_problems",
    "grid_problems",
    "open_study",
    "validate_study",
    "validate_visit",
]

_TRUE = {"true", "yes", "1", "y", "t"}
_FALSE = {"false", "no", "0", "n", "f"}
#: Suffixes of NIfTI-MRS series (BIDS-MRS): validated by :func:`tumorscope.io.mrs.read_nifti_mrs`.
MRS_SUFFIXES = ("svs", "mrsi", "mrsref")


@dataclass(frozen=True)
class Series:
    """One image series of a visit: a file, its sidecar and protocol, read on demand."""

    role: str
    suffix: str
    path: Path
    study_root: Path = field(repr=False)

    @property
    def relpath(self) -> str:
        return _rel(self.path, self.study_root)

    @cached_property
    def sidecar(self) -> dict[str, Any]:
        return read_sidecar(self.path)

    @cached_property
    def protocol(self) -> Protocol | None:
        """The acquisition protocol (None for anatomical series)."""
        return protocol_from_sidecar(self.path, self.suffix, self.sidecar)

    def load(self) -> Volume:
        """Read the image as float32, checking it against its protocol."""
        vol = Volume.from_nifti(self.path, meta={"role": self.role, "sidecar": self.sidecar})
        proto = self.protocol
        _check_measurements(vol, proto, self.relpath, self.suffix)
        if proto is not None:
            vol = Volume(
                vol.data,
                vol.affine,
                (*vol.axes[:3], SUFFIX_AXES.get(self.suffix, "measurement")),
                vol.meta,
                vol.source,
            )
        return vol


def _check_measurements(
    vol: Volume, proto: Protocol | None, relpath: str, suffix: str | None = None
) -> None:
    """A series with a protocol is 4-D with as many volumes as the protocol lists; a series
    of :data:`~tumorscope.io.bids.SINGLE_VOLUME_SUFFIXES` is one volume (3-D, or 4-D with a
    4th axis of length 1)."""
    if suffix in SINGLE_VOLUME_SUFFIXES and vol.data.ndim == 4 and vol.data.shape[3] != 1:
        raise DataError(
            f"a {suffix} image is a single 3-D volume, this one has {vol.data.shape[3]} "
            f"volumes along its 4th axis (shape {vol.data.shape})",
            file=relpath,
            field="dim[4]",
        )
    if proto is not None and (vol.data.ndim != 4 or vol.n_measurements != proto.n_measurements):
        raise DataError(
            f"image has {vol.n_measurements} volume(s) along its 4th axis but the protocol "
            f"lists {proto.n_measurements}",
            file=relpath,
            field="dim[4]",
        )


@dataclass(frozen=True)
class LesionInfo:
    """One row of a lesion table."""

    label: int
    lesion_id: str
    organ: str
    target: bool
    nodal: bool


@dataclass(frozen=True)
class Lesions:
    """The lesion label map of a visit and its table."""

    map_path: Path
    table_path: Path
    study_root: Path = field(repr=False)

    @cached_property
    def table(self) -> tuple[LesionInfo, ...]:
        rows, problems = _read_lesion_table(self.table_path, _rel(self.table_path, self.study_root))
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise StudyError(errors, file=_rel(self.table_path, self.study_root))
        return tuple(rows)

    def load_labels(self) -> Volume:
        """The label map as an int32 Volume (0 = background)."""
        return Volume.from_nifti(self.map_path, dtype=np.int32)

    def by_label(self) -> dict[int, LesionInfo]:
        return {r.label: r for r in self.table}

    def masks(self) -> dict[str, np.ndarray]:
        """Boolean mask per lesion id."""
        labels = self.load_labels().data
        return {info.lesion_id: labels == info.label for info in self.table}


@dataclass(frozen=True)
class Visit:
    """A visit (BIDS session) of a subject."""

    subject_id: str
    id: str
    date: dt.date | None
    baseline: bool
    prebaseline: bool
    path: Path
    study: Study = field(repr=False)

    @property
    def days_on_treatment(self) -> int | None:
        """Days from the treatment start (negative before it); None if either date is unknown."""
        start = self.study.subjects[self.subject_id].treatment.start_date
        if start is None or self.date is None:
            return None
        return (self.date - start).days

    @cached_property
    def series(self) -> dict[str, Series]:
        """Series present at this visit, keyed by role."""
        found: dict[str, Series] = {}
        if not self.path.is_dir():
            return found
        patterns = {role: _parse_pattern(spec) for role, spec in self.study.manifest.roles.items()}
        for p in sorted(self.path.glob("*/*")):
            if not p.name.endswith(NIFTI_SUFFIXES):
                continue
            entities, suffix = split_entities(p)
            extra = {k: v for k, v in entities.items() if k not in ("sub", "ses")}
            for role, alternatives in patterns.items():
                if role not in found and (extra, suffix) in alternatives:
                    found[role] = Series(role, suffix, p, self.study.root)
        return found

    @cached_property
    def lesions(self) -> Lesions | None:
        """The visit's lesion map and table, or None if the visit has no segmentation."""
        d = (
            self.study.root
            / "derivatives"
            / "lesions"
            / f"sub-{self.subject_id}"
            / f"ses-{self.id}"
        )
        stem = f"sub-{self.subject_id}_ses-{self.id}_lesions"
        for suf in NIFTI_SUFFIXES:
            m = d / f"{stem}{suf}"
            if m.exists():
                return Lesions(m, d / f"{stem}.tsv", self.study.root)
        return None


@dataclass(frozen=True)
class Subject:
    """A subject with its treatment and visits (in date order)."""

    id: str
    treatment: Treatment
    visits: dict[str, Visit]

    @property
    def baseline(self) -> Visit:
        return next(v for v in self.visits.values() if v.baseline)

    def __iter__(self) -> Iterator[Visit]:
        return iter(self.visits.values())


class Study:
    """A study folder: manifest, subjects, visits, series and lesions (read lazily)."""

    def __init__(self, root: Path, manifest: Manifest):
        self.root = root
        self.manifest = manifest
        self.subjects: dict[str, Subject] = {}
        for sid, entry in manifest.subjects.items():
            self.subjects[sid] = self._subject(entry)

    def _subject(self, entry: SubjectEntry) -> Subject:
        visits = {
            v.id: Visit(
                entry.id,
                v.id,
                v.date,
                v.baseline,
                v.prebaseline,
                self.root / f"sub-{entry.id}" / f"ses-{v.id}",
                self,
            )
            for v in entry.visits
        }
        return Subject(entry.id, entry.treatment, visits)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def criteria(self) -> tuple[str, ...]:
        return self.manifest.criteria

    def __iter__(self) -> Iterator[Subject]:
        return iter(self.subjects.values())

    def __len__(self) -> int:
        return len(self.subjects)

    def visits(self) -> Iterator[Visit]:
        """Every visit of every subject."""
        for s in self:
            yield from s

    def __repr__(self) -> str:
        n = sum(len(s.visits) for s in self)
        return f"Study({str(self.root)!r}, {len(self)} subjects, {n} visits)"


def _parse_pattern(spec: str) -> list[tuple[dict[str, str], str]]:
    """``"ce-ferumoxytol_MEGRE"`` → [({"ce": "ferumoxytol"}, "MEGRE")]; alternatives are
    separated by ``|`` (``"dsc|echo-1_dsc"``: a file of either pattern)."""
    out = []
    for alt in spec.split("|"):
        parts = alt.strip().split("_")
        out.append((dict(p.split("-", 1) for p in parts[:-1] if "-" in p), parts[-1]))
    return out


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _structure_problems(root: Path, manifest: Manifest) -> list[Problem]:
    problems: list[Problem] = []
    on_disk = {p.name[4:] for p in root.glob("sub-*") if p.is_dir()}
    for sid in sorted(on_disk - set(manifest.subjects)):
        problems.append(
            Problem("error", f"sub-{sid}", "", "subject folder is not listed in study.yaml")
        )
    for sid, entry in manifest.subjects.items():
        sdir = root / f"sub-{sid}"
        if not sdir.is_dir():
            problems.append(
                Problem(
                    "error",
                    "study.yaml",
                    f"subjects.{sid}",
                    f"subject folder sub-{sid}/ is missing",
                )
            )
            continue
        declared = {v.id for v in entry.visits}
        for p in sorted(sdir.glob("ses-*")):
            if p.is_dir() and p.name[4:] not in declared:
                problems.append(
                    Problem(
                        "error",
                        _rel(p, root),
                        "",
                        f"visit folder is not listed under subjects.{sid}.visits in study.yaml",
                    )
                )
        for v in entry.visits:
            if not (sdir / f"ses-{v.id}").is_dir():
                problems.append(
                    Problem(
                        "error",
                        "study.yaml",
                        f"subjects.{sid}.visits.{v.id}",
                        f"visit folder sub-{sid}/ses-{v.id}/ is missing",
                    )
                )
    return problems


def open_study(path: str | Path) -> Study:
    """Open a study folder.

    Checks the manifest (dates, baseline, treatment) and that subject and visit folders
    match it; image data are not read (see :func:`validate_study` for the full check).

    Parameters
    ----------
    path : path-like
        The study root (the folder holding ``study.yaml``).

    Returns
    -------
    Study

    Raises
    ------
    StudyError
        With every problem found; ``exc.problems`` lists them.

    Examples
    --------
    >>> study = open_study("tumorscope-demo/study")               # doctest: +SKIP
    >>> for visit in study.visits():                              # doctest: +SKIP
    ...     dwi = visit.series["dwi"]; vol = dwi.load(); b = dwi.protocol.bvalues
    """
    root = Path(path)
    if not root.is_dir():
        raise StudyError(
            [Problem("error", str(root), "", "study folder does not exist")], file=root
        )
    manifest, problems = read_manifest(root / "study.yaml")
    if manifest is not None:
        problems += _structure_problems(root, manifest)
    errors = [p for p in problems if p.severity == "error"]
    if manifest is None or errors:
        raise StudyError(problems, file=root)
    return Study(root, manifest)


def _parse_bool(value: str, file: str, fld: str, problems: list[Problem]) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    problems.append(Problem("error", file, fld, f"expected true or false, got {value!r}"))
    return False


def _read_lesion_table(path: Path, display: str) -> tuple[list[LesionInfo], list[Problem]]:
    if not path.exists():
        return [], [
            Problem("error", display, "", "lesion table is missing (expected beside the label map)")
        ]
    try:
        regular_file(path)
    except DataError as exc:
        return [], [Problem("error", display, "", exc.message)]
    try:
        return _parse_lesion_table(path, display)
    except UnicodeDecodeError as exc:
        where = f"byte {exc.start}" if exc.start is not None else "somewhere"
        message = f"not UTF-8 text (at {where}: {exc.reason}); save the table as UTF-8"
    except (csv.Error, OSError) as exc:
        message = f"cannot read the table: {exc}"
    return [], [Problem("error", display, "", message)]


def _parse_lesion_table(path: Path, display: str) -> tuple[list[LesionInfo], list[Problem]]:
    problems: list[Problem] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        required = ["label", "lesion_id", "organ", "target", "nodal"]
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            return [], [Problem("error", display, ",".join(missing), "required column(s) missing")]
        rows: list[LesionInfo] = []
        seen_labels: set[int] = set()
        seen_ids: set[str] = set()
        for i, r in enumerate(reader, start=2):
            try:
                label = int(r["label"])
                if label < 1:
                    raise ValueError
            except (TypeError, ValueError):
                problems.append(
                    Problem(
                        "error",
                        display,
                        f"row {i}: label",
                        f"expected an integer >= 1, got {r['label']!r}",
                    )
                )
                continue
            lid = (r["lesion_id"] or "").strip()
            if not lid:
                problems.append(
                    Problem("error", display, f"row {i}: lesion_id", "lesion id is empty")
                )
                continue
            if label in seen_labels:
                problems.append(
                    Problem("error", display, f"row {i}: label", f"label {label} appears twice")
                )
            if lid in seen_ids:
                problems.append(
                    Problem(
                        "error", display, f"row {i}: lesion_id", f"lesion id {lid!r} appears twice"
                    )
                )
            seen_labels.add(label)
            seen_ids.add(lid)
            target = _parse_bool(r["target"] or "", display, f"row {i}: target", problems)
            nodal = _parse_bool(r["nodal"] or "", display, f"row {i}: nodal", problems)
            rows.append(LesionInfo(label, lid, (r["organ"] or "").strip(), target, nodal))
    return rows, problems


def validate_study(path: str | Path) -> list[Problem]:
    """Check a study completely and return every problem found.

    Reads every image (so truncated or corrupt files are found), builds every protocol from
    its sidecar, checks the 4th dimension against the protocol, checks that all series and
    the lesion map of a visit share one grid, and that every label in a map is named in its
    table.

    Returns
    -------
    list of Problem
        Errors and warnings; an empty list means the study is clean.
    """
    root = Path(path)
    if not root.is_dir():
        return [Problem("error", str(root), "", "study folder does not exist")]
    manifest, problems = read_manifest(root / "study.yaml")
    if manifest is None:
        return problems
    problems += _structure_problems(root, manifest)
    study = Study(root, manifest)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with ThreadPoolExecutor(max(1, min(4, cores or 1))) as pool:
        for visit in study.visits():
            if not visit.path.is_dir():
                continue
            problems += validate_visit(study, visit, pool=pool)
    return problems


def data_shape(header_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of an image's data as :meth:`Volume.from_nifti` shapes it from its header's
    (trailing axes of length 1 beyond the 4th dropped, a 2-D image one slice deep)."""
    shape = tuple(int(n) for n in header_shape)
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    return (*shape, 1) if len(shape) == 2 else shape


def _geometry(vol: Volume) -> Volume:
    """The grid of ``vol`` without its data (a zero-stride array of its shape)."""
    return Volume(np.broadcast_to(np.zeros((), np.uint8), vol.data.shape), vol.affine)


#: Bytes of stored image data decompressed at a time by :func:`_scan_series`.
_SCAN_CHUNK = 1 << 20


def _scan_series(series: Series) -> tuple[Volume, int]:
    """What :meth:`Series.load` checks of a series, without holding it as float32: its grid
    (:func:`_geometry`) and the number of its non-finite voxel values (after the float32
    conversion ``load`` does).

    A gzip-compressed image whose stored values are not rescaled (no ``scl_slope`` /
    ``scl_inter``) and are integers or floats is *streamed*: the same header checks as
    :meth:`tumorscope.volume.Volume.from_nifti` (declared size against the file and the
    ceiling), then every declared byte of image data decompressed, ``_SCAN_CHUNK`` bytes at a
    time, so that a truncated or corrupt stream is refused as ``load`` refuses it. An integer
    image cannot hold a non-finite value: its bytes are only decompressed; a float image's are
    converted to float32 one chunk at a time and counted. A 4-D image that
    :meth:`~tumorscope.volume.Volume.frames_from_nifti` streams is read one frame at a time
    instead, converted to float32 as that method converts it: its representative frame (the
    one ``align`` registers) is found on the way and kept for ``align``
    (:func:`tumorscope._frames.keep_frame`), which then does not read the series again.
    The geometry and the protocol are checked as ``load`` checks them (4-D, as many volumes
    as the protocol lists). Any other image (uncompressed, rescaled, complex) is loaded by
    ``load`` itself.

    Raises
    ------
    DataError
        As :meth:`Series.load` would, naming the file and the field.
    """
    from .. import _gzip
    from .._frames import KEPT_FRAME_BYTES, BrightestFrame, keep_frame
    from ..volume import (
        SPATIAL_AXES,
        _check_declared_size,
        _float32_frame,
        _image_class,
        _plain_layout,
    )

    p = series.path
    if not p.name.endswith(".gz") or not p.exists():
        return _loaded_scan(series)
    header = _check_declared_size(p, np.dtype(np.float32))
    try:
        with _gzip.open_read(p) as fh:
            img: Any = _image_class(p).from_stream(fh)
            proxy = img.dataobj
            stored = np.dtype(img.header.get_data_dtype())
            if (
                stored.kind not in "iuf"
                or float(getattr(proxy, "slope", 1.0)) != 1.0
                or float(getattr(proxy, "inter", 0.0)) != 0.0
            ):
                return _loaded_scan(series)
            shape = tuple(int(n) for n in img.header.get_data_shape())
            need = int(np.prod(shape, dtype=np.int64)) * stored.itemsize
            fh.seek(int(proxy.offset))
            plain = _plain_layout(header, p)
            frame_shape = shape[:3]
            frame_bytes = int(np.prod(frame_shape, dtype=np.int64)) * stored.itemsize
            if (
                plain is not None
                and len(plain[2]) == 4
                and int(plain[0].get_data_offset()) == int(proxy.offset)
                and 4 * frame_bytes // stored.itemsize <= KEPT_FRAME_BYTES
            ):
                # frame by frame, as align reads it (Volume.frames_from_nifti): its
                # representative frame is found here and kept for it (keep_frame)
                step = frame_bytes
                best = BrightestFrame()
                affine = plain[0].get_best_affine()
            else:
                step = max(stored.itemsize, _SCAN_CHUNK - _SCAN_CHUNK % stored.itemsize)
                best = None
            buf = np.empty(step // stored.itemsize, stored)
            view = memoryview(buf).cast("B")  # type: ignore[arg-type]

            def make() -> np.ndarray:
                """The frame in ``buf`` as frames_from_nifti makes it."""
                with np.errstate(over="ignore"):  # beyond float32: inf, as load reads it
                    return _float32_frame(buf, frame_shape)

            done, n_bad = 0, 0
            while done < need:
                want = min(step, need - done)
                got = 0
                while got < want:
                    n = fh.readinto(view[got:want])
                    if not n:
                        raise ValueError(f"image data end at byte {done + got} of {need}")
                    got += n
                if best is not None:
                    if stored.kind == "f":
                        frame = make()
                        n_bad += int(np.count_nonzero(~np.isfinite(frame)))
                        best.offer(frame, frame)
                    else:
                        best.offer_stored(buf, make)
                elif stored.kind == "f":
                    chunk = buf[: want // stored.itemsize]
                    with np.errstate(over="ignore"):  # beyond float32: inf, as load reads it
                        n_bad += int(np.count_nonzero(~np.isfinite(chunk.astype(np.float32))))
                done += want
    except DataError:
        raise
    except Exception as exc:  # nibabel and gzip raise many types for corrupt files
        raise DataError(f"cannot read NIfTI image ({type(exc).__name__}: {exc})", file=p) from exc
    shape = data_shape(shape)
    grid = Volume(np.broadcast_to(np.zeros((), np.uint8), shape), img.affine, source=str(p))
    _check_measurements(grid, series.protocol, series.relpath, series.suffix)
    if best is not None and best.frame is not None:
        keep_frame(
            p, Volume(best.frame, affine.copy(), SPATIAL_AXES, {"role": series.role}, str(p))
        )
    return grid, n_bad


def _loaded_scan(series: Series) -> tuple[Volume, int]:
    """:func:`_scan_series` by loading the series whole (the images it does not stream)."""
    vol = series.load()
    n_bad = int(np.count_nonzero(~np.isfinite(vol.data)))
    return _geometry(vol), n_bad


def validate_visit(study: Study, visit: Visit, *, pool: Executor | None = None) -> list[Problem]:
    """Every problem of one visit: sidecars, protocols, images, lesion map and table, grids.

    ``pool``: threads to read the visit's images on, all at once (decompression releases the
    GIL); the problems are the same, in the same order, as without it.
    """
    problems: list[Problem] = []
    grids: list[tuple[str, Volume]] = []
    by_role: dict[str, Volume] = {}
    scans: dict[str, Future[tuple[Volume, int]]] = {}
    if pool is not None:
        for role, series in visit.series.items():
            if series.suffix not in MRS_SUFFIXES:
                scans[role] = pool.submit(_scan_series, series)
    if not visit.series:
        problems.append(
            Problem("warning", _rel(visit.path, study.root), "", "visit has no recognised series")
        )
    for role, series in visit.series.items():
        rel = series.relpath
        if series.suffix in MRS_SUFFIXES:  # NIfTI-MRS: own checks, own (spectroscopic) grid
            from .mrs import read_nifti_mrs

            try:
                read_nifti_mrs(series.path)
            except DataError as exc:
                problems.append(Problem("error", rel, exc.field or "", exc.message))
            continue
        try:
            _ = series.protocol
        except (DataError, ProtocolError) as exc:
            problems.append(
                Problem(
                    "error",
                    _rel(Path(exc.file), study.root) if exc.file else rel,
                    exc.field or "",
                    exc.message,
                )
            )
            continue
        side_rel = _rel(sidecar_path(series.path), study.root)
        for fld, message in implausible_fields(series.sidecar):
            problems.append(Problem("warning", side_rel, fld, message))
        try:
            grid, n_bad = scans[role].result() if role in scans else _scan_series(series)
        except DataError as exc:
            problems.append(Problem("error", rel, exc.field or "", exc.message))
            continue
        if n_bad and n_bad >= grid.data.size:  # nothing to fit or show: an error, not a note
            problems.append(
                Problem("error", rel, "data", "every voxel value is non-finite (NaN or inf)")
            )
            continue
        if n_bad:  # a few NaN (a scanner's masked voxels): those voxels are left out
            problems.append(Problem("warning", rel, "data", f"{n_bad} non-finite voxel value(s)"))
        grids.append((rel, grid))  # the grid, not the data
        by_role[role] = grid
    problems += echo_pair_problems(study, visit, by_role)
    lesions = visit.lesions
    if lesions is None:
        problems.append(
            Problem(
                "warning", _rel(visit.path, study.root), "", "no lesion segmentation for this visit"
            )
        )
    else:
        lrel = _rel(lesions.map_path, study.root)
        trel = _rel(lesions.table_path, study.root)
        rows, tprob = _read_lesion_table(lesions.table_path, trel)
        problems += tprob
        try:
            labels = lesions.load_labels()
        except DataError as exc:
            problems.append(Problem("error", lrel, exc.field or "", exc.message))
        else:
            present = {int(v) for v in np.unique(labels.data) if v != 0}
            named = {r.label for r in rows}
            unreadable = any(p.field == "" for p in tprob)  # reported once, not per label
            for lab in sorted(set() if unreadable else present - named):
                problems.append(
                    Problem(
                        "error",
                        lrel,
                        f"label {lab}",
                        f"label {lab} is in the map but not named in {Path(trel).name}",
                    )
                )
            for r in rows:
                if r.label not in present and not tprob:
                    problems.append(
                        Problem(
                            "warning",
                            trel,
                            f"label {r.label}",
                            f"lesion {r.lesion_id} (label {r.label}) is not in the label map",
                        )
                    )
            grids.append((lrel, _geometry(labels)))
    return problems + grid_problems(grids)


def grid_problems(grids: list[tuple[str, Volume]]) -> list[Problem]:
    """An error for each image (name, grid) not on the grid of the first: the series and the
    lesion map of a visit must be co-registered."""
    if not grids:
        return []
    ref_name, ref = grids[0]
    return [
        Problem(
            "error",
            name,
            "affine",
            f"grid {vol.spatial_shape} differs from {ref_name} {ref.spatial_shape}; "
            "series of a visit must be co-registered",
        )
        for name, vol in grids[1:]
        if not ref.same_grid(vol)
    ]


def echo_pair_problems(study: Study, visit: Visit, grids: dict[str, Volume]) -> list[Problem]:
    """Errors of a dual-echo DSC pair (:mod:`tumorscope.io.dual_echo`): a second echo without
    the first, protocols or grids (``grids``: those read without error) that differ."""
    from .dual_echo import DSC_ROLE, ECHO2_ROLE, grid_pair_problems, protocol_pair_problems

    second = visit.series.get(ECHO2_ROLE)
    if second is None:
        return []
    first = visit.series.get(DSC_ROLE)
    if first is None:
        why = "a second DSC echo without the first (role dsc: *_dsc or *_echo-1_dsc)"
        return [Problem("error", second.relpath, "echo", why)]
    try:
        found = protocol_pair_problems(
            first.protocol,
            second.protocol,
            first_name=first.relpath,
            second_name=_rel(sidecar_path(second.path), study.root),
        )
    except (DataError, ProtocolError):  # a sidecar that cannot be read: reported above
        return []
    if DSC_ROLE in grids and ECHO2_ROLE in grids:
        a, b = grids[DSC_ROLE], grids[ECHO2_ROLE]
        n = 3 if any(fld == "FrameTimes" for _, fld, _ in found) else 4  # frames: said once
        found += grid_pair_problems(
            a.data.shape[:n], a.affine, b.data.shape[:n], b.affine,
            first_name=first.relpath, second_name=second.relpath,
        )  # fmt: skip
    return [Problem("error", f, fld, msg) for f, fld, msg in found]
