"""The source DICOM images of a study file: find them, read them, check a grid against them.

Exported objects reference the images a result was computed from. The study records the Series
Instance UID of each imported file (in the sidecar of a study imported with
``keep_identifiers``, else in the site's identifier mapping); :func:`source_series_files` finds
that series in the DICOM folder and :func:`load_source_images` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ExportError
from ...volume import Volume
from .scan import LPS_TO_RAS, DicomFrame, _frames_from_dataset, index_series

__all__ = ["NotFromDicom", "load_source_images", "source_series_files"]


class NotFromDicom(ExportError):
    """The series has no Series Instance UID recorded (in its sidecar or the identifier
    mapping file): it was not imported from DICOM (e.g. added as NIfTI), so it has no source
    images."""


def load_source_images(files: Sequence[str | Path]) -> list[Any]:
    """Read source DICOM images (headers and pixels) for referencing.

    Multi-volume classic series are reduced to one image per slice position (the first
    measurement), which is what the derived objects reference.

    Raises
    ------
    ExportError
        A file cannot be read or the images come from several series.
    """
    import pydicom

    datasets = []
    for f in files:
        try:
            datasets.append(pydicom.dcmread(f))
        except Exception as exc:
            raise ExportError(
                f"cannot read source image ({type(exc).__name__}: {exc})", file=f
            ) from exc
    if not datasets:
        raise ExportError("no source images given", field="source_images")
    uids = {str(ds.SeriesInstanceUID) for ds in datasets}
    if len(uids) > 1:
        raise ExportError(
            f"source images come from {len(uids)} series; give the images of one series",
            field="SeriesInstanceUID",
        )
    if int(getattr(datasets[0], "NumberOfFrames", 1) or 1) > 1:
        return datasets[:1]
    by_pos: dict[tuple[float, ...], Any] = {}
    for ds in sorted(datasets, key=lambda d: int(getattr(d, "InstanceNumber", 0) or 0)):
        key = tuple(round(float(x), 3) for x in ds.ImagePositionPatient)
        by_pos.setdefault(key, ds)
    return list(by_pos.values())


def _sources(source_images: Sequence[Any]) -> list[Any]:
    """The source images as datasets that highdicom can build on (see :func:`_completed`)."""
    if source_images and isinstance(source_images[0], str | Path):
        return [_completed(ds) for ds in load_source_images(source_images)]
    if not source_images:
        raise ExportError("no source images given", field="source_images")
    return [_completed(ds) for ds in source_images]


#: Type 2 attributes of the Patient and General Study modules that highdicom copies from the
#: source into every object: present in the standard, often absent in de-identified series
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
#: functional groups highdicom reads from the shared item of a multi-frame source
_SHARED = ("PixelMeasuresSequence", "PlaneOrientationSequence")


def _completed(ds: Any) -> Any:
    """``ds``, or a copy of it completed for highdicom (the original is not changed).

    * Type 2 attributes of the patient and study (:data:`_TYPE2`) missing from the source are
      added empty, as the standard allows for Type 2.
    * An enhanced (multi-frame) source that keeps pixel spacing or orientation per frame (Siemens
      XA does) gets them in its shared functional groups, where highdicom reads them, provided
      every frame has the same (a map has one orientation and one pixel spacing).

    The copy has its own top-level elements and shared functional groups; every other element
    (the pixel data, the per-frame groups) is the source's, not copied.
    """
    from pydicom.dataset import Dataset, FileDataset
    from pydicom.sequence import Sequence as DicomSequence

    missing = [k for k in _TYPE2 if k not in ds]
    multiframe = "PerFrameFunctionalGroupsSequence" in ds
    shared = ds.get("SharedFunctionalGroupsSequence") or [Dataset()]
    lacking = [k for k in _SHARED if multiframe and k not in shared[0]]
    if not missing and not lacking:
        return ds
    if isinstance(ds, FileDataset):
        out: Any = FileDataset(ds.filename or "", {}, preamble=ds.preamble, file_meta=ds.file_meta)
    else:
        out = Dataset()
        out.file_meta = getattr(ds, "file_meta", Dataset())
    for elem in ds:
        out.add(elem)
    for keyword in missing:
        setattr(out, keyword, None)
    if lacking:
        item = Dataset()
        for elem in shared[0]:
            item.add(elem)
        for keyword in lacking:
            item.add(_common_group(ds, keyword))
        del out.SharedFunctionalGroupsSequence
        out.SharedFunctionalGroupsSequence = DicomSequence([item])
    return out


def _common_group(ds: Any, keyword: str) -> Any:
    """The functional group ``keyword`` that every frame of ``ds`` has the same of (numbers
    within 1e-4: scanners write the same cosines with different roundings)."""
    values = [_group_numbers(fg, keyword) for fg in ds.PerFrameFunctionalGroupsSequence]
    first = values[0]
    if first is None or any(
        v is None or v.shape != first.shape or not np.allclose(v, first, rtol=0, atol=1e-4)
        for v in values
    ):
        raise ExportError(
            f"the frames of the source image differ in {keyword} (or lack it); a map needs "
            "one grid",
            file=getattr(ds, "filename", None),
            field=keyword,
        )
    return ds.PerFrameFunctionalGroupsSequence[0][keyword]


def _group_numbers(frame: Any, keyword: str) -> np.ndarray | None:
    """The numbers of a frame's functional group (pixel spacing, cosines …), None if absent."""
    group = frame.get(keyword)
    if not group:
        return None
    numbers = []
    for elem in group[0]:
        if elem.VR in ("DS", "FD", "FL", "IS", "US", "SS", "UL", "SL") and elem.VM > 0:
            value = elem.value
            numbers += [float(x) for x in (value if elem.VM > 1 else [value])]
    return np.array(numbers)


def source_frames(images: Sequence[Any]) -> list[DicomFrame]:
    """The slices of source images, each with its position and orientation (the tiles of a
    Siemens mosaic placed by its private CSA image header, which de-identified copies lack:
    take the geometry of the originals).

    Raises
    ------
    ExportError
        An image without the geometry (naming the file and the tag).
    """
    try:
        return [
            f
            for ds in images
            for f in _frames_from_dataset(ds, Path(str(getattr(ds, "filename", "") or "source")))
        ]
    except Exception as exc:
        raise ExportError(
            f"source image lacks geometry: {exc}", field="ImagePositionPatient"
        ) from exc


def _check_grid(
    volume: Volume, sources: Sequence[Any], frames: Sequence[DicomFrame] | None = None
) -> None:
    """The image must lie in the source frame of reference, on the source slices' planes
    (``frames``: the slices of ``sources``, default :func:`source_frames` of them)."""
    ref = sources[0]
    if frames is None:
        frames = source_frames(sources)
    a = LPS_TO_RAS @ volume.affine  # the same flip maps RAS to LPS
    row_dir = a[:3, 0] / np.linalg.norm(a[:3, 0])
    if not np.allclose(row_dir, frames[0].orientation[:3], atol=1e-3):
        raise ExportError(
            "the image's row direction differs from the source images' ImageOrientationPatient; "
            "resample the result onto the source grid first",
            file=volume.source,
            field="ImageOrientationPatient",
        )
    inv = np.linalg.inv(a)
    for f in frames:
        idx = inv[:3, :3] @ f.position + inv[:3, 3]
        if np.abs(idx - np.round(idx)).max() > 0.01:
            raise ExportError(
                f"source image at {np.round(f.position, 2).tolist()} mm is not on a slice of the "
                "image grid; resample the result onto the source grid first",
                file=getattr(ref, "filename", None),
                field="ImagePositionPatient",
            )


def source_series_files(
    study_dir: str | Path,
    dicom_dir: str | Path,
    *,
    subject: str,
    visit: str,
    role: str,
    mapping_file: str | Path | None = None,
    index: Mapping[str, list[Path]] | None = None,
) -> list[Path]:
    """The DICOM files of the series an imported study file came from.

    The Series Instance UID is read from the sidecar (studies imported with
    ``keep_identifiers``) or from the identifier mapping file (default
    ``<study_dir>-identifiers.tsv``), then the series is looked up in ``dicom_dir``.

    ``index`` (from :func:`~tumorscope.io.dicom.scan.index_series`) saves re-reading the folder.

    Raises
    ------
    ExportError
        Unknown subject/visit/role, no UID recorded, or the series is not in ``dicom_dir``.
    """
    from ..deid import Pseudonymizer
    from ..study import open_study

    root = Path(study_dir)
    st = open_study(root)
    if subject not in st.subjects:
        raise ExportError(f"no subject {subject!r} in the study", file=root, field="subject")
    visits = st.subjects[subject].visits
    if visit not in visits:
        raise ExportError(f"no visit {visit!r} for subject {subject}", file=root, field="visit")
    series = visits[visit].series
    if role not in series:
        by_suffix = {s.suffix: s for s in series.values()}
        if role not in by_suffix:
            raise ExportError(
                f"visit {subject}/{visit} has no series {role!r} (has {', '.join(series)})",
                file=root,
                field="role",
            )
        ser = by_suffix[role]
    else:
        ser = series[role]
    uid = ser.sidecar.get("SeriesInstanceUID")
    if not uid:
        mf = _mapping_file(root, mapping_file)
        if not mf.exists():
            raise ExportError(
                "the study is de-identified and the identifier mapping file is missing "
                "(needed to find the source DICOM series)",
                file=mf,
            )
        uid = Pseudonymizer(mf).series_uid(subject, ser.relpath)
    if not uid:
        raise NotFromDicom(
            "no Series Instance UID recorded for this file",
            file=ser.relpath,
            field="SeriesInstanceUID",
        )
    files = (index if index is not None else index_series(dicom_dir)).get(uid)
    if files:
        return sorted(files)
    raise ExportError(
        f"source series {uid} is not in the DICOM folder", file=dicom_dir, field="SeriesInstanceUID"
    )


def checked_visit(
    study_dir: str | Path, subject: str, visit: str, *, reference: str | None = None
) -> Any:
    """The study's visit ``subject``/``visit`` to export, checked before anything is written.

    Raises
    ------
    ExportError
        An unknown subject or visit (naming the option, ``--subject`` or ``--visit``, and
        listing what the study has), or a ``reference`` series the visit does not have
        (``--reference``, listing its series).
    """
    from ..study import open_study

    root = Path(study_dir)
    subjects = open_study(root).subjects
    if subject not in subjects:
        raise ExportError(
            f"no subject {subject!r} in the study (subjects: {', '.join(subjects) or 'none'})",
            file=root,
            field="--subject",
        )
    visits = subjects[subject].visits
    if visit not in visits:
        raise ExportError(
            f"no visit {visit!r} for subject {subject} (visits: {', '.join(visits) or 'none'})",
            file=root,
            field="--visit",
        )
    v = visits[visit]
    series = v.series
    if reference is not None and reference not in {*series, *(s.suffix for s in series.values())}:
        raise ExportError(
            f"visit {subject}/{visit} has no series {reference!r} to reference (roles: "
            f"{', '.join(series) or 'none'}; suffixes: "
            f"{', '.join(sorted({s.suffix for s in series.values()})) or 'none'})",
            file=root,
            field="--reference",
        )
    return v


def _mapping_file(study_dir: str | Path, mapping_file: str | Path | None) -> Path:
    root = Path(study_dir)
    return (
        Path(mapping_file)
        if mapping_file is not None
        else root.parent / f"{root.name}-identifiers.tsv"
    )


class _SourceImages:
    """The source images of a visit's series by role, each series read once.

    By default the images are de-identified copies (PS3.15 Basic Profile, the study's
    pseudonymous subject as patient, see :func:`~tumorscope.io.dicom.profile.deidentify_dataset`),
    so that objects built on them carry no identity of the source. With ``reidentify`` they are
    the originals, whose patient must be the one the mapping file names for the subject.
    ``originals`` keeps every original read (for the check of what was written), ``frames``
    the geometry of each role's originals (:func:`source_frames`: a de-identified copy of a
    Siemens mosaic has lost the private header that places its tiles).
    """

    def __init__(
        self,
        study_dir: str | Path,
        dicom_dir: str | Path,
        subject: str,
        visit: str,
        mapping_file: str | Path | None,
        *,
        reidentify: bool = False,
    ) -> None:
        self.study_dir, self.dicom_dir = study_dir, dicom_dir
        self.subject, self.visit, self.mapping_file = subject, visit, mapping_file
        self.reidentify = reidentify
        self.index = index_series(dicom_dir)
        self.cache: dict[str, list[Any]] = {}
        self.frames: dict[str, list[DicomFrame]] = {}
        self.originals: list[Any] = []
        self.patient_ids: set[str] | None = None
        if reidentify:
            self.patient_ids = self._mapped_patient_ids()

    def _mapped_patient_ids(self) -> set[str]:
        """The patient IDs the mapping file records for the subject (re-identification)."""
        from ..deid import Pseudonymizer

        mf = _mapping_file(self.study_dir, self.mapping_file)
        if not mf.exists():
            raise ExportError(
                "re-identification needs the identifier mapping file of the import", file=mf
            )
        ids = {r["patient_id"] for r in Pseudonymizer(mf).rows if r["subject"] == self.subject}
        if not ids:
            raise ExportError(
                f"the mapping file has no row for subject {self.subject}", file=mf, field="subject"
            )
        return ids

    def __call__(self, role: str) -> list[Any]:
        from ..deid import Identifiers
        from .profile import deidentify_dataset

        if role not in self.cache:
            files = source_series_files(
                self.study_dir,
                self.dicom_dir,
                subject=self.subject,
                visit=self.visit,
                role=role,
                mapping_file=self.mapping_file,
                index=self.index,
            )
            images = load_source_images(files)
            self.frames[role] = source_frames(images)
            self.originals += images
            if self.patient_ids is not None:
                found = str(getattr(images[0], "PatientID", "") or "")
                if found not in self.patient_ids:
                    raise ExportError(
                        f"the source series belongs to another patient than the mapping file "
                        f"names for subject {self.subject}; not re-identified",
                        file=files[0],
                        field="PatientID",
                    )
                self.cache[role] = images
            else:
                ids = Identifiers.of_headers(images[:1])
                self.cache[role] = [
                    deidentify_dataset(ds, patient=self.subject, study_id=self.visit, ids=ids)
                    for ds in images
                ]
        return self.cache[role]
