"""Export results as DICOM: Parametric Map, Segmentation and Structured Report (highdicom).

Results go back where radiologists look: a PACS or a DICOM viewer. Every object references the
source series it was computed from (same Study Instance UID, Frame of Reference UID and the
source images in its references), so that a viewer places it on the right images.

* :func:`write_parametric_map`: one parameter map (float32) as a DICOM Parametric Map with a
  real-world value mapping whose unit is the UCUM code of :data:`tumorscope.units.UCUM`.
* :func:`write_seg`: a lesion label map as a binary DICOM SEG, one segment per lesion
  (segment label = lesion id; anatomic region = organ; description says ``target`` or
  ``non-target`` and ``nodal``; :func:`tumorscope.io.dicom.read_segmentation` reads them back).
* :func:`write_sr`: per-lesion measurements (volume, RECIST diameters, map statistics) and the
  response as a DICOM Comprehensive 3D SR following TID 1500 (Measurement Report), each lesion
  a volumetric ROI group referencing its segment in the SEG.
* :func:`export_visit`: all of one visit (maps given or found in a run's output folder by
  :func:`pipeline_results`, the lesion SEG, the SR), with the source images found by
  :func:`~tumorscope.io.dicom.sources.source_series_files`.

Design decisions
----------------
* The geometry of the maps and masks is taken from their own RAS+ affine (converted to LPS)
  through :class:`highdicom.Volume`, not from the ordering of the source files, so a map is
  placed correctly even when the source series holds several measurements per slice.
* **No analysis here.** Lesion sizes come from the caller (the ``export-dicom`` command
  measures them with :func:`tumorscope.lesions.geometry.measure`); this module only summarises
  the given maps inside each lesion (mean, median) and writes.
* **Identity.** highdicom copies the patient and study modules of the source images into the
  objects. :func:`export_visit` therefore gives it de-identified copies of the source images
  (PS3.15 Basic Profile, :mod:`tumorscope.io.dicom.profile`): the objects carry the
  pseudonymous subject and visit of the study, consistently replaced UIDs, the profile applied
  and no free text of the source; they are searched for the source's identity before they
  are moved into place. ``reidentify=True`` (``--reidentify MAPPING_FILE``) uses the original
  images, for the site's PACS. The ``write_*`` functions themselves take the source images
  they are given as they are.
* Codes: SNOMED CT and DCM codes where they exist (``Volume``, ``Long axis``, ``Short axis``,
  ``Mean``, ``Median``; every quantity with a DICOM code, e.g. ADC ``113041``, Ktrans
  ``126312``, T1 ``113063``: :mod:`tumorscope.io.dicom.codes`); the others use the private
  scheme ``99TUMORSCOPE`` with the tumorscope name as meaning. Response categories are NCIt
  codes (CR C4870, PR C18058, SD C18213, PD C35571) under the concept DCM 112048
  "Current Response".
* **Valid for the standard's validator.** ``dciodvfy`` reports no error on the objects (tested):
  source images lacking Type 2 patient or study attributes, or enhanced sources keeping pixel
  spacing and orientation per frame, are completed for highdicom
  (:func:`~tumorscope.io.dicom.sources._completed`, the originals unchanged); the maps' window
  is ``LINEAR_EXACT`` (widths below 1 for mm2/s), and Laterality is the source's or empty.
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from ...errors import ExportError, TumorscopeWarning
from ...owned import check_outside
from ...volume import Volume, atomic_write
from .codes import (
    ORGAN_CODES,
    PRIVATE_SCHEME,
    STATISTIC_CODES,
    code,
    default_unit,
    parameter_code,
    response_code,
    unit_code,
)
from .outfolder import check_export_folder, deliver, staging_folder
from .profile import carry_deid_marks, check_exported
from .results import _parameter_maps, drop_maps_without_sources, pipeline_results, with_run_results
from .scan import LPS_TO_RAS, DicomFrame
from .sources import _check_grid, _SourceImages, _sources, checked_visit

__all__ = [
    "LesionMeasurement",
    "export_visit",
    "pipeline_results",
    "to_highdicom_volume",
    "write_parametric_map",
    "write_seg",
    "write_sr",
]

_MANUFACTURER = "tumorscope"


def to_highdicom_volume(volume: Volume, frame_of_reference_uid: str) -> Any:
    """A 3-D tumorscope Volume (RAS+, axes x/y/z = column/row/slice) as a highdicom Volume.

    highdicom volumes index (slice, row, column) and map them to LPS+ coordinates.
    """
    import highdicom as hd

    if volume.data.ndim != 3:
        raise ExportError(
            f"expected a 3-D image, got shape {volume.shape}", file=volume.source, field="shape"
        )
    a = LPS_TO_RAS @ volume.affine  # the same flip maps RAS to LPS
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2], aff[:3, 3] = a[:3, 2], a[:3, 1], a[:3, 0], a[:3, 3]
    array = np.ascontiguousarray(np.transpose(volume.data, (2, 1, 0)))
    return hd.Volume(
        array, aff, coordinate_system="PATIENT", frame_of_reference_uid=frame_of_reference_uid
    )


def _new_instance(series_number: int) -> dict[str, Any]:
    """The identity of a new derived object (new series, first instance, tumorscope device)."""
    from pydicom.uid import generate_uid

    return {
        "series_instance_uid": generate_uid(),
        "series_number": series_number,
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
        "manufacturer": _MANUFACTURER,
        "manufacturer_model_name": "tumorscope",
        "software_versions": __version__,
        "device_serial_number": "0",
    }


def _save(ds: Any, out: Path, sources: Sequence[Any]) -> Path:
    carry_deid_marks(ds, sources[0])
    atomic_write(out, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
    return out


def write_parametric_map(
    volume: Volume,
    source_images: Sequence[Any],
    out: str | Path,
    *,
    name: str,
    unit: str | None = None,
    series_number: int = 900,
    series_description: str | None = None,
    source_geometry: Sequence[DicomFrame] | None = None,
) -> Path:
    """Write one parameter map as a DICOM Parametric Map.

    Parameters
    ----------
    volume : Volume
        3-D map in tumorscope units (e.g. ``ADC`` in mm²/s) on the grid of the source series;
        written as 32-bit float (NaN for voxels without a value is kept).
    source_images : sequence of path or pydicom Dataset
        The images of the source series (e.g. the DWI files).
    out : path-like
        File to write (atomically).
    name : str
        Parameter name (``ADC``, ``Ktrans``, ``T1`` …); labels the real-world value mapping.
    unit : str, optional
        tumorscope unit (default :data:`tumorscope.units.PARAMETER_UNITS` of ``name``), written
        as its UCUM code.
    series_number : int
        Series number of the new series.
    series_description : str, optional
        Default ``"<name> map (tumorscope)"``.
    source_geometry : sequence of DicomFrame, optional
        The slices of the source images (:func:`~tumorscope.io.dicom.sources.source_frames`
        of the originals) when ``source_images`` cannot tell them: de-identified copies of a
        Siemens mosaic lack the private header that places its tiles. Default: read from
        ``source_images``.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ExportError
        Unknown unit, image not on the source grid, or highdicom refuses the content.
    """
    import highdicom as hd

    out = Path(out)
    unit = unit or default_unit(name)
    if unit is None:
        raise ExportError(f"no unit known for map {name!r}; pass unit=", field="unit")
    sources = _sources(source_images)
    _check_grid(volume, sources, source_geometry)
    data = volume.data.astype(np.float32)
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    rwvm = hd.pm.RealWorldValueMapping(
        lut_label=name[:16],
        lut_explanation=f"{name} ({unit})"[:64],
        unit=unit_code(unit),
        value_range=(lo, hi),
        slope=1.0,
        intercept=0.0,
        quantity_definition=parameter_code(name),
    )
    vol = to_highdicom_volume(volume.with_data(data), str(sources[0].FrameOfReferenceUID))
    try:
        pm = hd.pm.ParametricMap(
            source_images=sources,
            pixel_array=vol,
            **_new_instance(series_number),
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[rwvm],
            voi_lut_transformations=[  # LINEAR_EXACT: maps in mm2/s have windows far below 1
                hd.VOILUTTransformation(
                    window_center=(lo + hi) / 2,
                    window_width=hi - lo,
                    voi_lut_function=hd.VOILUTFunctionValues.LINEAR_EXACT,
                )
            ],
            content_label=_content_label(name),
            content_description=(series_description or f"{name} map (tumorscope)")[:64],
        )
    except (ValueError, TypeError) as exc:
        raise ExportError(f"highdicom refused the parametric map: {exc}", file=out) from exc
    pm.SeriesDescription = (series_description or f"{name} map (tumorscope)")[:64]
    # General Series Laterality (Type 2C: the frames carry no Frame Laterality): the source's
    # R or L, else empty (unknown or not a paired structure)
    laterality = str(getattr(sources[0], "Laterality", "") or "")
    pm.Laterality = laterality if laterality in ("R", "L") else None
    return _save(pm, out, sources)


def _content_label(name: str) -> str:
    """A Content Label (CS: capitals, digits, ``_``, starting with a letter) for a map name."""
    label = re.sub(r"[^A-Z0-9_]", "_", name.upper())
    return (label if label[:1].isalpha() else f"MAP_{label}")[:16]


def _lesion_rows(lesions: Sequence[Any]) -> list[dict[str, Any]]:
    rows = []
    for r in lesions:
        if isinstance(r, Mapping):
            rows.append(dict(r))
        else:
            rows.append(
                {
                    "label": r.label,
                    "lesion_id": r.lesion_id,
                    "organ": r.organ,
                    "target": r.target,
                    "nodal": r.nodal,
                }
            )
    return rows


def write_seg(
    labels: Volume,
    lesions: Sequence[Any],
    source_images: Sequence[Any],
    out: str | Path,
    *,
    series_number: int = 901,
    series_description: str = "Lesions (tumorscope)",
    source_geometry: Sequence[DicomFrame] | None = None,
) -> Path:
    """Write a lesion label map as a binary DICOM Segmentation, one segment per lesion.

    Parameters
    ----------
    labels : Volume
        Integer label map (0 = background) on the source grid.
    lesions : sequence of LesionInfo or mapping
        The lesion table (``label``, ``lesion_id``, ``organ``, ``target``, ``nodal``). Segment
        numbers are 1…n in label order (DICOM requires consecutive numbers); every label
        present in the map must be in the table.
    source_images : sequence of path or pydicom Dataset
        Images of the series the lesions were drawn on.
    out : path-like
        File to write.
    source_geometry : sequence of DicomFrame, optional
        As for :func:`write_parametric_map`.

    Returns
    -------
    Path
        The SEG file written.

    Raises
    ------
    ExportError
        A label without a table row, no lesion, image off the source grid.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    out = Path(out)
    rows = sorted(_lesion_rows(lesions), key=lambda r: int(r["label"]))
    data = np.asarray(labels.data)
    present = {int(v) for v in np.unique(data) if v != 0}
    named = {int(r["label"]) for r in rows}
    if present - named:
        raise ExportError(
            f"label(s) {sorted(present - named)} are in the map but not in the lesion table",
            file=labels.source,
            field="label",
        )
    rows = [r for r in rows if int(r["label"]) in present]
    if not rows:
        raise ExportError("the label map holds no lesion", file=labels.source, field="label")
    sources = _sources(source_images)
    _check_grid(labels, sources, source_geometry)
    seg_array = np.zeros(data.shape, dtype=np.uint8)
    descriptions = []
    for n, r in enumerate(rows, start=1):
        seg_array[data == int(r["label"])] = n
        organ = str(r.get("organ", "") or "").lower()
        region = None
        if organ in ORGAN_CODES:
            region = [code(ORGAN_CODES[organ][0], "SCT", ORGAN_CODES[organ][1])]
        elif organ:
            region = [code(organ[:16], PRIVATE_SCHEME, organ)]
        words = ["target" if _truthy(r.get("target")) else "non-target"]
        if _truthy(r.get("nodal")):
            words.append("nodal")
        desc = hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=str(r["lesion_id"]),
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            tracking_id=str(r["lesion_id"]),
            tracking_uid=generate_uid(),
            anatomic_regions=region,
        )
        desc.SegmentDescription = " ".join(words)
        descriptions.append(desc)
    vol = to_highdicom_volume(labels.with_data(seg_array), str(sources[0].FrameOfReferenceUID))
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=vol,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            **_new_instance(series_number),
            omit_empty_frames=False,
        )
    except (ValueError, TypeError) as exc:
        raise ExportError(f"highdicom refused the segmentation: {exc}", file=out) from exc
    seg.SeriesDescription = series_description[:64]
    return _save(seg, out, sources)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "1", "y", "t"}
    return bool(value)


@dataclass(frozen=True)
class LesionMeasurement:
    """What the SR reports for one lesion at one visit.

    Attributes
    ----------
    lesion_id : str
        Must match a segment label of the SEG.
    volume_ml, longest_diameter_mm, short_axis_mm : float, optional
        Size (see :func:`tumorscope.lesions.geometry.measure`).
    statistics : mapping
        ``{map name: {"mean": value, "median": value, ...}}`` in the map's tumorscope unit.
    units : mapping
        Unit per map name (default :data:`tumorscope.units.PARAMETER_UNITS`).
    """

    lesion_id: str
    volume_ml: float | None = None
    longest_diameter_mm: float | None = None
    short_axis_mm: float | None = None
    statistics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)


def write_sr(
    measurements: Sequence[LesionMeasurement],
    source_images: Sequence[Any],
    seg: str | Path | Any,
    out: str | Path,
    *,
    response: str | None = None,
    criteria: str = "RECIST 1.1",
    series_number: int = 902,
    observer: str = "tumorscope",
    time_point: str | None = None,
) -> Path:
    """Write per-lesion measurements and the response as a TID 1500 Measurement Report.

    Parameters
    ----------
    measurements : sequence of LesionMeasurement
        One per lesion; each lesion id must be a segment label of ``seg``.
    source_images : sequence of path or pydicom Dataset
        Images of the series the lesions were drawn on (referenced as evidence).
    seg : path or pydicom Dataset
        The DICOM SEG holding the lesions (each measurement group references its segment).
    out : path-like
        File to write.
    response : str, optional
        Overall response at this visit, reported as a qualitative evaluation: ``CR``, ``PR``,
        ``SD``, ``PD`` (NCIt codes), ``non-CR/non-PD`` (DCM 112046) or ``NE``, the iRECIST
        categories ``iCR``, ``iPR``, ``iSD``, ``iUPD``, ``iCPD`` and the PERCIST ones ``CMR``,
        ``PMR``, ``SMD``, ``PMD`` (private scheme ``99TUMORSCOPE``). A baseline visit has none.
    criteria : str
        Criteria the response was assessed with (written into the response group's tracking
        identifier).
    time_point : str, optional
        Visit id, written as the TID 1502 time point context of every group, so that a viewer
        can line up the reports of one lesion across visits.

    Returns
    -------
    Path
        The SR file written.

    Raises
    ------
    ExportError
        A lesion id that is not a segment, an unknown response or statistic.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    out = Path(out)
    sources = _sources(source_images)
    seg_ds = pydicom.dcmread(seg) if isinstance(seg, str | Path) else seg
    segments = {str(s.SegmentLabel): s for s in seg_ds.SegmentSequence}
    source_series_uid = str(sources[0].SeriesInstanceUID)
    context_tp = None if time_point is None else hd.sr.TimePointContext(time_point=time_point)
    groups: list[Any] = []
    for m in measurements:
        if m.lesion_id not in segments:
            raise ExportError(
                f"lesion {m.lesion_id!r} is not a segment of the SEG "
                f"(segments: {', '.join(segments)})",
                field="lesion_id",
            )
        groups.append(
            _lesion_group(m, segments[m.lesion_id], seg_ds, source_series_uid, context_tp)
        )
    if response is not None:
        groups.append(_response_group(response, criteria, context_tp))
    context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(entropy_srcs=["tumorscope", __version__]), name=observer
            ),
        )
    )
    try:
        report = hd.sr.MeasurementReport(
            observation_context=context,
            procedure_reported=code("25045-6", "LN", "Unspecified body region MRI"),
            imaging_measurements=groups,
            title=codes.DCM.ImagingMeasurementReport,
        )
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*sources, seg_ds],
            content=report[0],
            series_instance_uid=generate_uid(),
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=_MANUFACTURER,
            series_description="Lesion measurements (tumorscope)",
        )
    except (ValueError, TypeError) as exc:
        raise ExportError(f"highdicom refused the structured report: {exc}", file=out) from exc
    return _save(sr, out, sources)


def _lesion_group(
    m: LesionMeasurement, segment: Any, seg_ds: Any, source_series_uid: str, context_tp: Any
) -> Any:
    """The SR group of one lesion: its segment in the SEG, its finding site and measurements."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    ref = hd.sr.ReferencedSegment(
        sop_class_uid=seg_ds.SOPClassUID,
        sop_instance_uid=seg_ds.SOPInstanceUID,
        segment_number=int(segment.SegmentNumber),
        source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=str(getattr(segment, "TrackingUID", "") or generate_uid()),
            identifier=m.lesion_id,
        ),
        referenced_segment=ref,
        finding_type=codes.SCT.Neoplasm,
        finding_sites=[
            hd.sr.FindingSite(
                anatomic_location=code(r.CodeValue, r.CodingSchemeDesignator, r.CodeMeaning)
            )
            for r in getattr(segment, "AnatomicRegionSequence", []) or []
        ]
        or None,
        time_point_context=context_tp,
        measurements=_lesion_measurements(m),
    )


def _lesion_measurements(m: LesionMeasurement) -> list[Any]:
    """The SR measurements of one lesion: its size, then each map's statistics."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    items = []
    size = (
        (m.volume_ml, code("118565006", "SCT", "Volume"), "mL"),
        (m.longest_diameter_mm, codes.SCT.LongAxis, "mm"),
        (m.short_axis_mm, codes.SCT.ShortAxis, "mm"),
    )
    for value, concept, unit in size:
        if value is not None and np.isfinite(value):
            items.append(hd.sr.Measurement(name=concept, value=float(value), unit=unit_code(unit)))
    for map_name, stats in m.statistics.items():
        map_unit = m.units.get(map_name) or default_unit(map_name)
        if map_unit is None:
            raise ExportError(f"no unit known for map {map_name!r}", field="units")
        for stat, value in stats.items():
            if stat not in STATISTIC_CODES:
                raise ExportError(
                    f"unknown statistic {stat!r}; expected one of {', '.join(STATISTIC_CODES)}",
                    field="statistics",
                )
            if value is None or not np.isfinite(value):
                continue
            items.append(
                hd.sr.Measurement(
                    name=parameter_code(map_name),
                    value=float(value),
                    unit=unit_code(map_unit),
                    derivation=code(*STATISTIC_CODES[stat]),
                )
            )
    return items


def _response_group(response: str, criteria: str, context_tp: Any) -> Any:
    """The SR group holding the overall response (a qualitative evaluation)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    value = response_code(response)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier=f"Overall response ({criteria})"[:64]
        ),
        time_point_context=context_tp,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=code("112048", "DCM", "Current Response"),
                value=value,
            )
        ],
    )


def export_visit(
    study_dir: str | Path,
    dicom_dir: str | Path,
    out_dir: str | Path,
    *,
    subject: str,
    visit: str,
    maps: Mapping[str, tuple[str | Path | Volume, str]] | None = None,
    reference: str | None = None,
    mapping_file: str | Path | None = None,
    response: str | None = None,
    criteria: str = "RECIST 1.1",
    results: str | Path | None = None,
    units: Mapping[str, str] | None = None,
    sizes: Mapping[str, Mapping[str, Any]] | None = None,
    reidentify: bool = False,
) -> list[Path]:
    """Export one visit: parameter maps, the lesion SEG and the measurement SR.

    By default the objects carry the pseudonymous identity of the imported study (the subject
    id as patient, the visit id as study ID, UIDs replaced consistently) and no free text of
    the source images: they are built on de-identified copies of the source images (PS3.15
    Basic Profile, :mod:`tumorscope.io.dicom.profile`), record the profile applied, and are
    searched for every identity of the source before they are moved into ``out_dir``.
    ``reidentify=True`` builds them on the original images instead (for the site's PACS): the
    real patient and study come back, checked against the identifier mapping.

    Parameters
    ----------
    study_dir, dicom_dir : path-like
        The imported study and the DICOM folder it was imported from.
    out_dir : path-like
        Folder for the new DICOM files (``<subject>_<visit>_<what>.dcm``): new, empty or
        written by an earlier export; only files an export wrote there are replaced
        (:mod:`~tumorscope.io.dicom.outfolder`). Created once every object is written.
    subject, visit : str
        Ids as in the study.
    maps : mapping, optional
        ``{name: (NIfTI path or Volume, source role or suffix)}``, e.g.
        ``{"ADC": ("fits/adc.nii.gz", "dwi")}``; each map references its source series.
    reference : str, optional
        Role or suffix of the series the lesions were drawn on (SEG and SR reference it);
        when given, the visit must have it. Default ``anatomical``, needed only by lesions.
    mapping_file : path-like, optional
        Identifier mapping of a de-identified study.
    response : {"CR", "PR", "SD", "PD"}, optional
        Overall response at this visit, written into the SR (a category other than those of
        :func:`~tumorscope.io.dicom.codes.response_code` is refused; without lesions there
        is no SR: a warning says so).
    criteria : str
        Name of the response criteria.
    results : path-like, optional
        Output folder of ``tumorscope run`` (see :func:`pipeline_results`): every 3-D map it
        fitted for this visit is exported (4-D maps are skipped, and so are maps of a series
        that was not imported from DICOM, with a :class:`~tumorscope.errors.TumorscopeWarning`:
        they have no source images), and its response is used
        unless ``response`` is given.
    units : mapping, optional
        Unit per map name for names without a default unit.
    sizes : mapping, optional
        ``{lesion id: {"volume_ml": …, "longest_diameter_mm": …, "short_axis_mm": …}}``, as
        :func:`tumorscope.lesions.geometry.measure` returns them, written into the SR (a lesion
        without an entry is reported without size).
    reidentify : bool
        Give the objects the real identity of the source images (needs the mapping file,
        ``mapping_file`` or ``<study_dir>-identifiers.tsv``).

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out_dir)
    check_outside(out, study_dir, what="the study", option="OUT_DIR", study=True)
    check_outside(out, dicom_dir, what="the DICOM folder", option="OUT_DIR")
    v = checked_visit(study_dir, subject, visit, reference=reference)
    if response is not None:
        _check_response(response, "--response")
        if v.lesions is None:
            warnings.warn(
                f"--response {response} not exported: the visit has no lesion map, so no SR "
                "is written",
                TumorscopeWarning,
                stacklevel=2,
            )
    sources = _SourceImages(
        study_dir, dicom_dir, subject, visit, mapping_file, reidentify=reidentify
    )
    all_maps, all_units = dict(maps or {}), dict(units or {})
    skippable: set[str] = set()  # a run's maps that are not 3-D (e.g. a time course)
    if results is not None:
        all_maps, all_units, skippable, response, criteria = with_run_results(
            results, subject, visit, all_maps, all_units, response, criteria
        )
    loaded = _parameter_maps(all_maps, skippable)
    # a run's map whose series did not come from DICOM (e.g. a CEST series added as NIfTI)
    # has no source images to reference: left out with a warning, the rest exported
    drop_maps_without_sources(loaded, all_maps, set(all_maps) - set(maps or {}), sources)
    names = {name: f"sub-{subject}_ses-{visit}_{name.replace('.', '-')}_pm.dcm" for name in loaded}
    lesion_names = [
        f"sub-{subject}_ses-{visit}_{k}.dcm" for k in ("lesions_seg", "measurements_sr")
    ]
    check_export_folder(out, [*names.values(), *(lesion_names if v.lesions is not None else [])])
    tmp = staging_folder(out)  # OUT_DIR itself is made only when everything was written
    try:
        written = [
            write_parametric_map(
                vol,
                sources(all_maps[name][1]),
                tmp / names[name],
                name=name,
                unit=all_units.get(name) or None,
                series_number=900 + n,
                source_geometry=sources.frames[all_maps[name][1]],
            )
            for n, (name, vol) in enumerate(loaded.items())
        ]
        if v.lesions is not None:
            ref = reference or "anatomical"
            written += _lesion_objects(
                [tmp / n for n in lesion_names], v.lesions, sources(ref), sources.frames[ref],
                loaded, all_units, sizes or {}, visit=visit, response=response,
                criteria=criteria,
            )  # fmt: skip
        if not reidentify:
            check_exported(written, sources.originals)
        return deliver(written, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_response(response: str, option: str) -> None:
    """An unknown response category is refused naming the option, before anything is written."""
    try:
        response_code(response)
    except ExportError as exc:
        raise ExportError(exc.message, field=option) from None


def _lesion_objects(
    paths: Sequence[Path],
    lesions: Any,
    sources: list[Any],
    geometry: Sequence[DicomFrame],
    loaded: Mapping[str, Volume],
    units: Mapping[str, str],
    sizes: Mapping[str, Mapping[str, Any]],
    *,
    visit: str,
    response: str | None,
    criteria: str,
) -> list[Path]:
    """The visit's lesion SEG and measurement SR, written to ``paths``."""
    labels = lesions.load_labels()
    table = lesions.table
    seg_path = write_seg(labels, table, sources, paths[0], source_geometry=geometry)
    measurements = _measurements(labels, table, loaded, units, sizes)
    sr_path = write_sr(
        measurements,
        sources,
        seg_path,
        paths[1],
        response=response,
        criteria=criteria,
        time_point=visit,
    )
    return [seg_path, sr_path]


def _measurements(
    labels: Volume,
    table: Sequence[Any],
    maps: Mapping[str, Volume],
    units: Mapping[str, str],
    sizes: Mapping[str, Mapping[str, Any]],
) -> list[LesionMeasurement]:
    """One :class:`LesionMeasurement` per lesion present in ``labels``: the given size and the
    mean and median of each map inside the lesion."""
    present = {int(x) for x in np.unique(labels.data) if x != 0}
    measurements = []
    for info in table:
        if info.label not in present:
            continue
        mask = labels.data == info.label
        size = sizes.get(info.lesion_id, {})
        stats: dict[str, dict[str, float]] = {}
        for name, vol in maps.items():
            if not vol.same_grid(labels):
                raise ExportError(
                    f"map {name} is not on the grid of the lesion map",
                    file=vol.source,
                    field="affine",
                )
            vals = vol.data[mask]
            vals = vals[np.isfinite(vals)]
            if vals.size:
                stats[name] = {"mean": float(vals.mean()), "median": float(np.median(vals))}
        measurements.append(
            LesionMeasurement(
                info.lesion_id,
                volume_ml=size.get("volume_ml"),
                longest_diameter_mm=size.get("longest_diameter_mm"),
                short_axis_mm=size.get("short_axis_mm"),
                statistics=stats,
                units={k: u for k, u in units.items() if k in stats and u},
            )
        )
    return measurements
