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

Design decisions
----------------
* The geometry of the maps and masks is taken from their own RAS+ affine (converted to LPS)
  through :class:`highdicom.Volume`, not from the ordering of the source files, so a map is
  placed correctly even when the source series holds several measurements per slice.
* Exported objects copy the patient and study modules from the source images (highdicom does):
  they are meant to go back to the site's PACS next to the originals. A de-identified study
  therefore needs the original DICOM (and the identifier mapping) to export.
* Codes: SNOMED CT and DCM codes where they exist (``Volume``, ``Long axis``, ``Short axis``,
  ``Mean``, ``Median``, ADC ``113041``, Ktrans ``126312``); other parameters use the private
  scheme ``99TUMORSCOPE`` with the tumorscope name as meaning. Response categories are NCIt
  codes (CR C4870, PR C18058, SD C18213, PD C35571) under the concept DCM 112048
  "Current Response".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import ExportError
from ..units import PARAMETER_UNITS, UCUM
from ..volume import Volume, atomic_write

__all__ = [
    "LesionMeasurement",
    "export_visit",
    "load_source_images",
    "pipeline_results",
    "source_series_files",
    "to_highdicom_volume",
    "write_parametric_map",
    "write_seg",
    "write_sr",
]

PRIVATE_SCHEME = "99TUMORSCOPE"
_MANUFACTURER = "tumorscope"
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

_ORGANS: dict[str, tuple[str, str]] = {
    "liver": ("10200004", "Liver"),
    "lung": ("39607008", "Lung"),
    "lymph node": ("59441001", "Lymph node"),
    "brain": ("12738006", "Brain"),
    "kidney": ("64033007", "Kidney"),
    "bone": ("272673000", "Bone"),
    "breast": ("76752008", "Breast"),
    "prostate": ("41216001", "Prostate"),
    "pancreas": ("15776009", "Pancreas"),
}
_RESPONSES: dict[str, tuple[str, str]] = {
    "CR": ("C4870", "Complete Response"),
    "PR": ("C18058", "Partial Response"),
    "SD": ("C18213", "Stable Disease"),
    "PD": ("C35571", "Progressive Disease"),
}
#: categories without an NCIt code we are sure of: private scheme, the category as code value
_OTHER_RESPONSES: dict[str, str] = {
    "NE": "Not evaluable",
    "iCR": "Immune complete response",
    "iPR": "Immune partial response",
    "iSD": "Immune stable disease",
    "iUPD": "Immune unconfirmed progressive disease",
    "iCPD": "Immune confirmed progressive disease",
    "non-CR/non-PD": "Non-CR/non-PD",
    "CMR": "Complete metabolic response",
    "PMR": "Partial metabolic response",
    "SMD": "Stable metabolic disease",
    "PMD": "Progressive metabolic disease",
}
_PARAMETER_CODES: dict[str, tuple[str, str, str]] = {
    "ADC": ("113041", "DCM", "Apparent Diffusion Coefficient"),
    "Ktrans": ("126312", "DCM", "Ktrans"),
}


def _code(value: str, scheme: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _unit_code(unit: str) -> Any:
    if unit not in UCUM:
        raise ExportError(
            f"unit {unit!r} has no UCUM code; expected one of {', '.join(UCUM)}", field="unit"
        )
    return _code(UCUM[unit], "UCUM", unit)


def _default_unit(name: str) -> str | None:
    """tumorscope unit of a map name (``T1``, or ``model.parameter``)."""
    return PARAMETER_UNITS.get(name) or PARAMETER_UNITS.get(name.split(".")[-1])


def _parameter_code(name: str) -> Any:
    """Code of a map name (``ADC``, or ``model.parameter`` as the pipeline names maps)."""
    parameter = name.split(".")[-1]
    if parameter in _PARAMETER_CODES:
        return _code(*_PARAMETER_CODES[parameter])
    return _code(name[:16], PRIVATE_SCHEME, name)


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


def to_highdicom_volume(volume: Volume, frame_of_reference_uid: str) -> Any:
    """A 3-D tumorscope Volume (RAS+, axes x/y/z = column/row/slice) as a highdicom Volume.

    highdicom volumes index (slice, row, column) and map them to LPS+ coordinates.
    """
    import highdicom as hd

    if volume.data.ndim != 3:
        raise ExportError(
            f"expected a 3-D image, got shape {volume.shape}", file=volume.source, field="shape"
        )
    a = _LPS @ volume.affine
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2], aff[:3, 3] = a[:3, 2], a[:3, 1], a[:3, 0], a[:3, 3]
    array = np.ascontiguousarray(np.transpose(volume.data, (2, 1, 0)))
    return hd.Volume(
        array, aff, coordinate_system="PATIENT", frame_of_reference_uid=frame_of_reference_uid
    )


def _sources(source_images: Sequence[Any]) -> list[Any]:
    if source_images and isinstance(source_images[0], str | Path):
        return load_source_images(source_images)
    if not source_images:
        raise ExportError("no source images given", field="source_images")
    return list(source_images)


def _check_grid(volume: Volume, sources: Sequence[Any]) -> None:
    """The image must lie in the source frame of reference, on the source slices' planes."""
    from .dicom import _frames_from_dataset

    ref = sources[0]
    try:
        frames = [
            f
            for ds in sources
            for f in _frames_from_dataset(ds, Path(str(getattr(ds, "filename", "") or "source")))
        ]
    except Exception as exc:
        raise ExportError(
            f"source image lacks geometry: {exc}", field="ImagePositionPatient"
        ) from exc
    a = _LPS @ volume.affine
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


def _save(ds: Any, out: Path) -> Path:
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
    unit = unit or _default_unit(name)
    if unit is None:
        raise ExportError(f"no unit known for map {name!r}; pass unit=", field="unit")
    sources = _sources(source_images)
    _check_grid(volume, sources)
    data = volume.data.astype(np.float32)
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    rwvm = hd.pm.RealWorldValueMapping(
        lut_label=name[:16],
        lut_explanation=f"{name} ({unit})"[:64],
        unit=_unit_code(unit),
        value_range=(lo, hi),
        slope=1.0,
        intercept=0.0,
        quantity_definition=_parameter_code(name),
    )
    vol = to_highdicom_volume(volume.with_data(data), str(sources[0].FrameOfReferenceUID))
    try:
        pm = hd.pm.ParametricMap(
            source_images=sources,
            pixel_array=vol,
            **_new_instance(series_number),
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[rwvm],
            voi_lut_transformations=[
                hd.VOILUTTransformation(window_center=(lo + hi) / 2, window_width=hi - lo)
            ],
            content_label=re.sub(r"[^A-Z0-9_]", "_", name.upper())[:16],
            content_description=(series_description or f"{name} map (tumorscope)")[:64],
        )
    except (ValueError, TypeError) as exc:
        raise ExportError(f"highdicom refused the parametric map: {exc}", file=out) from exc
    pm.SeriesDescription = (series_description or f"{name} map (tumorscope)")[:64]
    return _save(pm, out)


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

    Returns
    -------
    Path

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
    _check_grid(labels, sources)
    seg_array = np.zeros(data.shape, dtype=np.uint8)
    descriptions = []
    for n, r in enumerate(rows, start=1):
        seg_array[data == int(r["label"])] = n
        organ = str(r.get("organ", "") or "").lower()
        region = None
        if organ in _ORGANS:
            region = [_code(_ORGANS[organ][0], "SCT", _ORGANS[organ][1])]
        elif organ:
            region = [_code(organ[:16], PRIVATE_SCHEME, organ)]
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
    return _save(seg, out)


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


_STAT_CODES = {
    "mean": ("373098007", "SCT", "Mean"),
    "median": ("373099004", "SCT", "Median"),
    "std": ("386136009", "SCT", "Standard Deviation"),
    "min": ("255605001", "SCT", "Minimum"),
    "max": ("56851009", "SCT", "Maximum"),
}


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
        ``SD``, ``PD`` (NCIt codes) or ``NE``, ``non-CR/non-PD``, the iRECIST categories
        ``iCR``, ``iPR``, ``iSD``, ``iUPD``, ``iCPD`` and the PERCIST ones ``CMR``, ``PMR``,
        ``SMD``, ``PMD`` (private scheme ``99TUMORSCOPE``). A baseline visit has none.
    criteria : str
        Criteria the response was assessed with (written into the response group's tracking
        identifier).
    time_point : str, optional
        Visit id, written as the TID 1502 time point context of every group, so that a viewer
        can line up the reports of one lesion across visits.

    Returns
    -------
    Path

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
    groups: list[Any] = []
    context_tp = None if time_point is None else hd.sr.TimePointContext(time_point=time_point)
    for m in measurements:
        if m.lesion_id not in segments:
            raise ExportError(
                f"lesion {m.lesion_id!r} is not a segment of the SEG "
                f"(segments: {', '.join(segments)})",
                field="lesion_id",
            )
        s = segments[m.lesion_id]
        ref = hd.sr.ReferencedSegment(
            sop_class_uid=seg_ds.SOPClassUID,
            sop_instance_uid=seg_ds.SOPInstanceUID,
            segment_number=int(s.SegmentNumber),
            source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
        )
        items = []
        size = (
            (m.volume_ml, _code("118565006", "SCT", "Volume"), "mL"),
            (m.longest_diameter_mm, codes.SCT.LongAxis, "mm"),
            (m.short_axis_mm, codes.SCT.ShortAxis, "mm"),
        )
        for value, concept, unit in size:
            if value is not None and np.isfinite(value):
                items.append(
                    hd.sr.Measurement(name=concept, value=float(value), unit=_unit_code(unit))
                )
        for map_name, stats in m.statistics.items():
            map_unit = m.units.get(map_name) or _default_unit(map_name)
            if map_unit is None:
                raise ExportError(f"no unit known for map {map_name!r}", field="units")
            for stat, value in stats.items():
                if stat not in _STAT_CODES:
                    raise ExportError(
                        f"unknown statistic {stat!r}; expected one of {', '.join(_STAT_CODES)}",
                        field="statistics",
                    )
                if value is None or not np.isfinite(value):
                    continue
                items.append(
                    hd.sr.Measurement(
                        name=_parameter_code(map_name),
                        value=float(value),
                        unit=_unit_code(map_unit),
                        derivation=_code(*_STAT_CODES[stat]),
                    )
                )
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=str(getattr(s, "TrackingUID", "") or generate_uid()),
                    identifier=m.lesion_id,
                ),
                referenced_segment=ref,
                finding_type=codes.SCT.Neoplasm,
                finding_sites=[
                    hd.sr.FindingSite(
                        anatomic_location=_code(
                            r.CodeValue, r.CodingSchemeDesignator, r.CodeMeaning
                        )
                    )
                    for r in getattr(s, "AnatomicRegionSequence", []) or []
                ]
                or None,
                time_point_context=context_tp,
                measurements=items,
            )
        )
    if response is not None:
        if response in _RESPONSES:
            response_code, meaning, scheme = (*_RESPONSES[response], "NCIt")
        elif response in _OTHER_RESPONSES:
            response_code, meaning, scheme = response, _OTHER_RESPONSES[response], PRIVATE_SCHEME
        else:
            known = [*_RESPONSES, *_OTHER_RESPONSES]
            raise ExportError(
                f"unknown response {response!r}; expected one of {', '.join(known)}",
                field="response",
            )
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=generate_uid(), identifier=f"Overall response ({criteria})"[:64]
                ),
                time_point_context=context_tp,
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(
                        name=_code("112048", "DCM", "Current Response"),
                        value=_code(response_code, scheme, meaning),
                    )
                ],
            )
        )
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
            procedure_reported=_code("25045-6", "LN", "Unspecified body region MRI"),
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
    return _save(sr, out)


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

    ``index`` (from :func:`tumorscope.io.dicom.index_series`) saves re-reading the folder.

    Raises
    ------
    ExportError
        Unknown subject/visit/role, no UID recorded, or the series is not in ``dicom_dir``.
    """
    from .deid import Pseudonymizer
    from .dicom import index_series
    from .study import open_study

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
        mf = (
            Path(mapping_file)
            if mapping_file is not None
            else root.parent / f"{root.name}-identifiers.tsv"
        )
        if not mf.exists():
            raise ExportError(
                "the study is de-identified and the identifier mapping file is missing "
                "(needed to find the source DICOM series)",
                file=mf,
            )
        uid = Pseudonymizer(mf).series_uid(subject, ser.relpath)
    if not uid:
        raise ExportError(
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


#: the source series of the maps each pipeline fit step writes
_STEP_SOURCE = {"fit_dwi": "dwi", "fit_dce": "dce"}


def pipeline_results(
    results_dir: str | Path, *, subject: str, visit: str, criteria: str | None = None
) -> tuple[dict[str, tuple[Path, str, str]], str | None, str | None]:
    """What ``tumorscope run`` wrote for one visit: maps, and the response.

    Parameters
    ----------
    results_dir : path-like
        The run's output folder (default of the pipeline: ``STUDY/derivatives/tumorscope``).
    subject, visit : str
        Ids as in the study.
    criteria : str, optional
        Which criteria's response to take (default: the first in the assessments table).

    Returns
    -------
    maps : dict
        ``{"adc.ADC": (path, unit, source role)}`` from the visit's map indexes
        (``sub-S/ses-V/maps/*_index.json``); the source role follows the fit step (``fit_dwi``
        → ``dwi``, ``fit_dce`` → ``dce``).
    response, criteria : str or None
        From ``sub-S/sub-S_assessments.parquet`` (None when absent).
    """
    root = Path(results_dir)
    maps: dict[str, tuple[Path, str, str]] = {}
    mdir = root / f"sub-{subject}" / f"ses-{visit}" / "maps"
    for index in sorted(mdir.glob("*_index.json")):
        step = index.name[: -len("_index.json")].split("_", 2)[-1]
        try:
            entries = json.loads(index.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ExportError(f"cannot parse map index: {exc}", file=index) from exc
        for name, e in sorted(entries.items()):
            if not isinstance(e, dict) or "path" not in e:
                raise ExportError("map entry without a path", file=index, field=name)
            maps[name] = (root / e["path"], str(e.get("unit", "")), _STEP_SOURCE.get(step, step))
    response = None
    table = root / f"sub-{subject}" / f"sub-{subject}_assessments.parquet"
    if table.exists():
        import pandas as pd

        df = pd.read_parquet(table)
        df = df[(df["subject"].astype(str) == subject) & (df["visit"].astype(str) == visit)]
        if criteria is not None:
            df = df[df["criteria"] == criteria]
        if len(df):
            row = df.iloc[0]
            response = None if pd.isna(row["response"]) else str(row["response"])
            criteria = str(row["criteria"])
    return maps, response, criteria


def export_visit(
    study_dir: str | Path,
    dicom_dir: str | Path,
    out_dir: str | Path,
    *,
    subject: str,
    visit: str,
    maps: Mapping[str, tuple[str | Path | Volume, str]] | None = None,
    reference: str = "anatomical",
    mapping_file: str | Path | None = None,
    response: str | None = None,
    criteria: str = "RECIST 1.1",
    results: str | Path | None = None,
    units: Mapping[str, str] | None = None,
) -> list[Path]:
    """Export one visit: parameter maps, the lesion SEG and the measurement SR.

    Parameters
    ----------
    study_dir, dicom_dir : path-like
        The imported study and the DICOM folder it was imported from.
    out_dir : path-like
        Folder for the new DICOM files (``<subject>_<visit>_<what>.dcm``).
    subject, visit : str
        Ids as in the study.
    maps : mapping, optional
        ``{name: (NIfTI path or Volume, source role or suffix)}``, e.g.
        ``{"ADC": ("fits/adc.nii.gz", "dwi")}``; each map references its source series.
    reference : str
        Role or suffix of the series the lesions were drawn on (SEG and SR reference it).
    mapping_file : path-like, optional
        Identifier mapping of a de-identified study.
    response : {"CR", "PR", "SD", "PD"}, optional
        Overall response at this visit, written into the SR.
    criteria : str
        Name of the response criteria.
    results : path-like, optional
        Output folder of ``tumorscope run`` (see :func:`pipeline_results`): every 3-D map it
        fitted for this visit is exported (4-D maps are skipped), and its response is used
        unless ``response`` is given.
    units : mapping, optional
        Unit per map name for names without a default unit.

    Returns
    -------
    list of Path
        The files written.
    """
    from ..lesions.geometry import measure
    from .dicom import index_series
    from .study import open_study

    out = Path(out_dir)
    st = open_study(study_dir)
    v = st.subjects[subject].visits[visit]
    written: list[Path] = []
    sources_cache: dict[str, list[Any]] = {}
    index = index_series(dicom_dir)

    def sources(role: str) -> list[Any]:
        if role not in sources_cache:
            files = source_series_files(
                study_dir,
                dicom_dir,
                subject=subject,
                visit=visit,
                role=role,
                mapping_file=mapping_file,
                index=index,
            )
            sources_cache[role] = load_source_images(files)
        return sources_cache[role]

    all_maps: dict[str, tuple[str | Path | Volume, str]] = {}
    all_units = dict(units or {})
    if results is not None:
        found, run_response, run_criteria = pipeline_results(results, subject=subject, visit=visit)
        for name, (path, unit, role) in found.items():
            all_maps[name] = (path, role)
            all_units.setdefault(name, unit)
        if response is None and run_response not in (None, "baseline"):
            response, criteria = run_response, run_criteria or criteria
    all_maps.update(maps or {})
    loaded: dict[str, Volume] = {}
    for name, (img, role) in all_maps.items():
        vol = img if isinstance(img, Volume) else Volume.from_nifti(img)
        if vol.data.ndim != 3:
            if results is not None and name not in (maps or {}):
                continue  # e.g. a concentration time course: not a parameter map
            raise ExportError(f"map {name} is not 3-D (shape {vol.shape})", file=vol.source)
        loaded[name] = vol
        written.append(
            write_parametric_map(
                vol,
                sources(role),
                out / f"sub-{subject}_ses-{visit}_{name.replace('.', '-')}_pm.dcm",
                name=name,
                unit=all_units.get(name) or None,
                series_number=900 + len(written),
            )
        )
    if v.lesions is None:
        return written
    labels = v.lesions.load_labels()
    table = v.lesions.table
    seg_path = write_seg(
        labels, table, sources(reference), out / f"sub-{subject}_ses-{visit}_lesions_seg.dcm"
    )
    written.append(seg_path)
    present = {int(x) for x in np.unique(labels.data) if x != 0}
    measurements = []
    for info in table:
        if info.label not in present:
            continue
        mask = labels.data == info.label
        size = measure(mask, labels.affine, lesion=info.lesion_id)
        stats: dict[str, dict[str, float]] = {}
        for name, vol in loaded.items():
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
                volume_ml=size["volume_ml"],
                longest_diameter_mm=size["longest_diameter_mm"],
                short_axis_mm=size["short_axis_mm"],
                statistics=stats,
                units={k: u for k, u in all_units.items() if k in stats and u},
            )
        )
    written.append(
        write_sr(
            measurements,
            sources(reference),
            seg_path,
            out / f"sub-{subject}_ses-{visit}_measurements_sr.dcm",
            response=response,
            criteria=criteria,
            time_point=visit,
        )
    )
    return written
