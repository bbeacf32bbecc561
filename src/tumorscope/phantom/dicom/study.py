"""Write a whole study folder as DICOM (:func:`study_to_dicom`), and RT Structure Sets.

:func:`study_to_dicom` converts a study folder (e.g. the phantom of
:func:`tumorscope.phantom.make_study`) into a folder of DICOM files, with the lesion label maps
as DICOM SEG objects (or RT Structure Sets, :func:`write_rtstruct`), so that
import → analyse → export is tested end to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...errors import DataError
from ...volume import Volume, atomic_write
from .series import (
    _SERIES_TEXT,
    RTSTRUCT_STORAGE,
    VENDORS,
    SynthPatient,
    SynthStudy,
    _ds,
    _file_meta,
    _seq,
    _uid,
    lps_affine,
    write_series,
)

__all__ = ["study_to_dicom", "write_rtstruct"]

#: Roles of the phantom's series that are not made into DICOM: spectroscopy, 13C, and CEST
#: (its saturation offsets have no standard DICOM attribute; the importer leaves CEST out).
_NOT_DICOM = ("mrs", "hp13c", "cest", "wassr", "wasabi")


def study_to_dicom(
    study_root: str | Path,
    out_dir: str | Path,
    *,
    vendors: Sequence[str] = VENDORS,
    enhanced: Sequence[str] = (),
    segmentations: bool = True,
    segmentation_format: Literal["seg", "rtstruct"] = "seg",
) -> Path:
    """Write every series (and lesion map) of a study folder as DICOM.

    BIDS entities of a file other than ``sub``/``ses`` (e.g. ``ce-ferumoxytol``) are appended to
    the series description (``gre_me_t2star_ce-ferumoxytol``); DICOM has no place for them, so
    an import needs a role override to restore them (``{"*ce-ferumoxytol": "ce-ferumoxytol_MEGRE"}``).

    Subjects cycle through ``vendors`` (subject ``i`` is scanned on ``vendors[i % n]``); each
    subject gets a fictitious name, ID, birth date and an accession number per visit, so that
    de-identification can be checked. Lesion label maps are written as DICOM SEG objects that
    reference the visit's first series (``T2w`` when present).

    Parameters
    ----------
    study_root : path-like
        A study folder in the tumorscope format (``docs/study-format.md``).
    out_dir : path-like
        Folder to write to (files of all subjects, visits and series are mixed in it, in
        sub-folders per subject like a PACS export).
    vendors : sequence of str
        Vendor styles to cycle through.
    enhanced : sequence of str
        Series suffixes to write as Enhanced (multi-frame) MR objects.
    segmentations : bool
        Also write the lesion label maps.
    segmentation_format : {"seg", "rtstruct"}
        As DICOM SEG (:func:`tumorscope.io.dicom.export.write_seg`) or as RT Structure Sets
        (:func:`write_rtstruct`).

    Returns
    -------
    Path
        ``out_dir``.
    """
    from ...io.study import open_study

    st = open_study(study_root)
    out = Path(out_dir)
    order = ["T2w", "dwi", "VFA", "dce", "MEGRE", "MESE", "IRT1"]
    for i, subject in enumerate(st):
        vendor = vendors[i % len(vendors)]
        patient = SynthPatient(
            name=f"SYNTH^PATIENT{i + 1:03d}",
            patient_id=f"MRN{7340 + i:06d}",
            birth_date=f"19{50 + i:02d}0{1 + i % 9}1{i % 9}",
            sex="F" if i % 2 else "M",
        )
        for j, visit in enumerate(subject):
            if visit.date is None:
                raise DataError("visit has no date", file=visit.path, field="date")
            sdy = SynthStudy(
                patient=patient, date=visit.date, accession=f"ACC{90000 + 100 * i + j:08d}"
            )
            series = sorted(
                # no DICOM form here for spectroscopy (NIfTI-MRS) and hyperpolarised 13C
                (s for s in visit.series.values() if not s.role.startswith(_NOT_DICOM)),
                key=lambda s: order.index(s.suffix) if s.suffix in order else 99,
            )
            folder = out / f"{patient.patient_id}" / f"{sdy.accession}"
            first_files: list[Path] = []
            for n, s in enumerate(series, start=1):
                if s.suffix in ("pet", "mask"):  # PET Image Storage; its masks stay NIfTI
                    if s.suffix == "pet":
                        from ..pet import pet_to_dicom

                        pet_to_dicom(s, folder, sdy, vendor, n, visit.date)
                    continue
                files = _series_to_dicom(s, folder, sdy, vendor, n, enhanced=s.suffix in enhanced)
                if n == 1:
                    first_files = files
            if segmentations and visit.lesions is not None and first_files:
                from ...io.dicom.export import write_seg

                labels = visit.lesions.load_labels()
                if segmentation_format == "rtstruct":
                    write_rtstruct(labels, visit.lesions.table, first_files, folder / "rtss.dcm")
                else:
                    write_seg(
                        labels, visit.lesions.table, first_files, folder / "seg.dcm",
                        series_number=99,
                    )  # fmt: skip
    return out


def _series_to_dicom(
    s: Any, folder: Path, study: SynthStudy, vendor: str, number: int, *, enhanced: bool
) -> list[Path]:
    """Write one series of a study (a :class:`~tumorscope.io.study.Series`) as DICOM."""
    from ...io.bids import split_entities

    vol = s.load()
    vol = Volume(np.round(vol.data), vol.affine, vol.axes, vol.meta, vol.source)
    side = s.sidecar
    te = side.get("EchoTime")
    tr = side.get("RepetitionTime")
    entities, _ = split_entities(s.path)
    extra = "_".join(f"{k}-{v}" for k, v in entities.items() if k not in ("sub", "ses"))
    base_desc = _SERIES_TEXT.get(s.suffix, (s.suffix,))[0]
    return write_series(
        vol,
        folder,
        suffix=s.suffix,
        series_description=f"{base_desc}_{extra}" if extra else base_desc,
        protocol=s.protocol,
        study=study,
        vendor=vendor,
        enhanced=enhanced,
        series_number=number,
        echo_time_ms=1e3 * te if isinstance(te, int | float) else None,
        repetition_time_ms=1e3 * tr if isinstance(tr, int | float) else None,
        bvalue_tags="vendor",
    )


def _run_rectangles(mask2d: np.ndarray) -> list[list[tuple[float, float]]]:
    """Closed polygons (in voxel coordinates i, j) covering a 2-D mask exactly.

    One rectangle per run of consecutive voxels along ``i``; edges lie half-way between voxel
    centres, so the voxel centres inside the polygons are exactly the mask.
    """
    polys: list[list[tuple[float, float]]] = []
    for j in range(mask2d.shape[1]):
        col = np.concatenate([[0], mask2d[:, j].astype(np.int8), [0]])
        d = np.diff(col)
        for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1, strict=True):
            i0, i1 = float(a), float(b)
            polys.append(
                [(i0 - 0.5, j - 0.5), (i1 + 0.5, j - 0.5), (i1 + 0.5, j + 0.5), (i0 - 0.5, j + 0.5)]
            )
    return polys


#: patient and study attributes an RT Structure Set copies from its source images
_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "Manufacturer",
)  # fmt: skip


def write_rtstruct(
    labels: Volume,
    lesions: Sequence[Any],
    source_files: Sequence[str | Path],
    out: str | Path,
    *,
    series_number: int = 98,
) -> Path:
    """Write a label map as a DICOM RT Structure Set (test data for the RT-STRUCT importer).

    Each lesion is one ROI (ROI number = label, ROI name = lesion id, ROI description
    ``"target|non-target[; nodal]; <organ>"``); each slice of it is a set of closed planar
    contours (one rectangle per run of voxels, see :func:`_run_rectangles`) in LPS mm,
    referencing the source image of that slice.

    Parameters
    ----------
    labels : Volume
        Integer label map on the grid of the source series.
    lesions : sequence of LesionInfo or mapping
        Lesion table (``label``, ``lesion_id``, ``organ``, ``target``, ``nodal``).
    source_files : sequence of path
        Files of the (single-volume, classic) source series.
    out : path-like
        File to write.
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in source_files]
    first = src[0]
    A = lps_affine(labels.affine)
    inv = np.linalg.inv(A)
    by_slice: dict[int, Any] = {}  # the first image of each slice index
    for d in src:
        ipp = np.array([float(x) for x in d.ImagePositionPatient])
        by_slice.setdefault(round(float((inv[:3, :3] @ ipp)[2] + inv[2, 3])), d)
    ds = Dataset()
    for kw in _COPIED:
        if kw in first:
            setattr(ds, kw, getattr(first, kw))
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = _uid(first.SeriesInstanceUID, "rtstruct")
    ds.file_meta = _file_meta(RTSTRUCT_STORAGE, ds.SOPInstanceUID)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = _uid(first.SeriesInstanceUID, "rtstruct-series")
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "LESIONS"
    ds.StructureSetDate = first.StudyDate
    ds.StructureSetTime = first.StudyTime
    ds.ReferencedFrameOfReferenceSequence = _referenced_frame_of_reference(src)
    rois, contours, observations = DicomSequence(), DicomSequence(), DicomSequence()
    rows = [
        r if isinstance(r, dict) else {
            "label": r.label, "lesion_id": r.lesion_id, "organ": r.organ,
            "target": r.target, "nodal": r.nodal,
        }
        for r in lesions
    ]  # fmt: skip
    for r in rows:
        label = int(r["label"])
        mask = labels.data == label
        if not mask.any():
            continue
        words = ["target" if r["target"] else "non-target"]
        if r["nodal"]:
            words.append("nodal")
        if r["organ"]:
            words.append(str(r["organ"]))
        rois.append(
            _seq(
                ROINumber=label,
                ReferencedFrameOfReferenceUID=first.FrameOfReferenceUID,
                ROIName=str(r["lesion_id"]),
                ROIDescription="; ".join(words),
                ROIGenerationAlgorithm="MANUAL",
            )[0]
        )
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = label
        roi_contour.ROIDisplayColor = [255, 0, 0]
        roi_contour.ContourSequence = _contours(mask, A, by_slice)
        contours.append(roi_contour)
        observations.append(
            _seq(
                ObservationNumber=label,
                ReferencedROINumber=label,
                RTROIInterpretedType="GTV",
                ROIInterpreter="",
            )[0]
        )
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    return _save_as(ds, Path(out))


def _referenced_frame_of_reference(src: Sequence[Any]) -> Any:
    """The Referenced Frame of Reference Sequence: the source series and each of its images."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    first = src[0]
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = first.SeriesInstanceUID
    ref_series.ContourImageSequence = DicomSequence(
        [
            _seq(ReferencedSOPClassUID=d.SOPClassUID, ReferencedSOPInstanceUID=d.SOPInstanceUID)[0]
            for d in src
        ]
    )
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref_study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    ref_study.RTReferencedSeriesSequence = DicomSequence([ref_series])
    ref_for = Dataset()
    ref_for.FrameOfReferenceUID = first.FrameOfReferenceUID
    ref_for.RTReferencedStudySequence = DicomSequence([ref_study])
    return DicomSequence([ref_for])


def _contours(mask: np.ndarray, lps: np.ndarray, by_slice: dict[int, Any]) -> Any:
    """Closed planar contours (LPS mm) of a 3-D mask, each referencing the image of its slice."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    items = DicomSequence()
    for k in range(mask.shape[2]):
        for poly in _run_rectangles(mask[:, :, k]):
            pts = [lps @ np.array([i, j, k, 1.0]) for i, j in poly]
            item = Dataset()
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(pts)
            item.ContourData = [_ds(float(x)) for p in pts for x in p[:3]]
            if k in by_slice:
                item.ContourImageSequence = _seq(
                    ReferencedSOPClassUID=by_slice[k].SOPClassUID,
                    ReferencedSOPInstanceUID=by_slice[k].SOPInstanceUID,
                )
            items.append(item)
    return items


def _save_as(ds: Any, path: Path) -> Path:
    atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
    return path
