"""One DICOM series → voxel data, RAS+ affine, protocol and BIDS sidecar.

:func:`read_series` sorts the frames of a :class:`~tumorscope.io.dicom.scan.DicomSeries`
into slices and measurements, builds the affine (:func:`affine_from_frames`), reads the pixels,
guesses the series kind and builds its protocol; :func:`merge_split_series` joins series that a
scanner wrote one per flip angle, echo time or inversion time.

Design decisions
----------------
* **Geometry.** DICOM patient coordinates are LPS+, tumorscope's affines RAS+ (nibabel). Voxel
  ``(i, j, k)`` is column ``i``, row ``j`` of slice ``k``; slices are sorted along the normal
  ``row direction × column direction`` and the third affine column is the mean step between
  consecutive slice positions (non-uniform steps, i.e. a missing slice, are an error).
* **Measurements.** Within a slice position, images are ordered by temporal position, b-value,
  echo time, inversion time, flip angle and time of acquisition; every slice position must hold
  the same number of images with the same parameters. What varies decides the series kind
  (:mod:`.kinds`: ``dwi``, ``VFA``, ``MEGRE``/``MESE``, ``IRT1``, ``dce``, ``dsc`` or ``bold``
  for a dynamic EPI, ``epi``, ``T2w``/``T1w``); the guess can be overridden (``suffix``).
* **Values.** Stored pixel values are kept unless the file defines a scaling that is not the
  identity (then float32): the Real World Value Mapping, else Philips' private scale slope
  ``(2005,100E)``, else the rescale slope/intercept; the sidecar names it
  (``IntensityScaling``).
* **Frame times** of dynamic series come from ``TriggerTime`` when it varies, else from the
  earliest ``AcquisitionTime`` (``FrameAcquisitionDateTime`` in enhanced objects) of each
  frame, relative to the first frame; a 2-D EPI whose images share one time (GE) is timed by
  TR (``FrameTimesSource`` says which). DICOM does not record how many frames precede the
  contrast injection: a DCE series' ``BaselineFrames`` is taken from the caller or estimated
  by :func:`tumorscope.preprocessing.dynamic.baseline_frames` (the sidecar says which, in
  ``BaselineFramesSource``); a DSC series gets none, the DSC step finding the bolus onset on
  the signal drop itself (:mod:`tumorscope.stages.dsc`). A DSC series needs its echo time
  (ΔR2* = −ln(S/S0)/TE) and flip angle (the study format's DSC sidecar): without them it is
  rejected.
* **Magnitude and phase** saved in one series (multi-echo GRE often is): the magnitude images
  are read, the others are left out and noted; so is a scanner's derived isotropic (trace)
  volume inside a DTI series (``DiffusionDirectionality`` ISOTROPIC, as Philips writes it).
* **Vendor fields** of EPI and DWI series (phase-encoding direction, slice timing, readout time,
  gradient directions) come from dcm2niix, mapped onto this grid
  (:mod:`tumorscope.io.dicom.convert`).
* **Rejected series.** A series with a missing slice, a missing measurement, unreadable images,
  or inconsistent orientation, spacing or size raises a
  :class:`~tumorscope.errors.DataError` naming the file and the tag.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ... import protocol as proto
from ...errors import DataError, Problem, ProtocolError
from ...preprocessing.dynamic import baseline_frames
from ...volume import Volume
from ..bids import SUFFIX_AXES
from .convert import vendor_fields as vendor_fields_of
from .kinds import NOT_IMPORTED, NotImported, distinct, guess_kind, is_epi
from .scan import LPS_TO_RAS, DicomFrame, DicomSeries, _float, _problem

__all__ = ["NotImported", "SeriesData", "affine_from_frames", "merge_split_series", "read_series"]

_POS_TOL_MM = 0.01
_ORI_TOL = 1e-4


@dataclass
class SeriesData:
    """One series read into memory (what :func:`read_series` returns)."""

    volume: Volume
    protocol: proto.Protocol | None
    suffix: str
    sidecar: dict[str, Any]
    reason: str
    entities: str = ""  # BIDS entities before the suffix in the file name, e.g. "ce-ferumoxytol"
    notes: list[str] = field(default_factory=list)  # what was left out, for the import report
    #: further files of the same series: the second echo of a dual-echo DSC (this one the first)
    more: list[SeriesData] = field(default_factory=list)


# --------------------------------------------------------------------------- geometry
def _normal(orientation: np.ndarray) -> np.ndarray:
    n = np.cross(orientation[:3], orientation[3:])
    return n / np.linalg.norm(n)


def affine_from_frames(
    positions: Sequence[np.ndarray],
    orientation: np.ndarray,
    spacing: tuple[float, float],
    *,
    slice_thickness: float | None = None,
    source: str | None = None,
) -> np.ndarray:
    """RAS+ affine of a stack of slices (positions already sorted along the normal).

    Parameters
    ----------
    positions : sequence of (3,) arrays
        ``ImagePositionPatient`` (LPS, mm) of each slice, in slice order.
    orientation : (6,) array
        ``ImageOrientationPatient``: row direction then column direction (LPS unit vectors).
    spacing : (float, float)
        ``PixelSpacing``: (distance between rows, distance between columns) in mm.
    slice_thickness : float, optional
        Used as the slice step of a single-slice series.

    Returns
    -------
    ndarray, shape (4, 4)
        Maps ``(column, row, slice, 1)`` to RAS+ mm.

    Raises
    ------
    DataError
        Slice steps differ by more than 1 % (a missing slice or an irregular stack).
    """
    row_dir, col_dir = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    A = np.eye(4)
    A[:3, 0] = row_dir * spacing[1]
    A[:3, 1] = col_dir * spacing[0]
    p0 = np.asarray(positions[0], dtype=float)
    if len(positions) > 1:
        steps = np.diff(np.asarray(positions, dtype=float), axis=0)
        lengths = np.linalg.norm(steps, axis=1)
        mean = float(lengths.mean())
        bad = np.flatnonzero(np.abs(lengths - mean) > max(0.01 * mean, _POS_TOL_MM))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"slice positions are not evenly spaced: step {lengths[i]:.3g} mm after slice "
                f"{i + 1} of {len(positions)} where the median step is "
                f"{float(np.median(lengths)):.3g} mm (missing slice?)",
                file=source,
                field="ImagePositionPatient",
            )
        A[:3, 2] = (np.asarray(positions[-1], dtype=float) - p0) / (len(positions) - 1)
    else:
        A[:3, 2] = _normal(np.asarray(orientation)) * (slice_thickness or 1.0)
    A[:3, 3] = p0
    return LPS_TO_RAS @ A


# --------------------------------------------------------------------------- assembling
def _sort_key(f: DicomFrame) -> tuple[float, ...]:
    def k(x: float | None) -> float:
        return -np.inf if x is None else float(x)

    return (
        k(f.temporal),
        k(f.b),
        k(f.te_ms),
        k(f.ti_ms),
        k(f.flip_deg),
        k(f.trigger_ms),
        k(f.acq_s),
        float(f.instance),
    )


def _layout(series: DicomSeries) -> tuple[list[list[DicomFrame]], np.ndarray]:
    """Frames arranged as ``[volume][slice]`` and the RAS affine; raises DataError."""
    if series.damaged:
        raise DataError(
            f"series {series.description!r} has {len(series.damaged)} unreadable image(s) and is "
            "incomplete",
            file=series.damaged[0],
            field="PixelData",
        )
    frames = series.frames
    ref = frames[0]
    name = str(ref.path.parent)
    for f in frames[1:]:
        if not np.allclose(f.orientation, ref.orientation, atol=_ORI_TOL):
            raise DataError(
                f"inconsistent orientation in series {series.description!r}: "
                f"{list(np.round(f.orientation, 4))} differs from "
                f"{list(np.round(ref.orientation, 4))} of {ref.where()}",
                file=f.where(),
                field="ImageOrientationPatient",
            )
        if (f.rows, f.cols) != (ref.rows, ref.cols):
            raise DataError(
                f"image size {f.rows}x{f.cols} differs from {ref.rows}x{ref.cols} of {ref.where()}",
                file=f.where(),
                field="Rows/Columns",
            )
        if not np.allclose(f.spacing, ref.spacing, atol=1e-4):
            raise DataError(
                f"pixel spacing {f.spacing} differs from {ref.spacing} of {ref.where()}",
                file=f.where(),
                field="PixelSpacing",
            )
    normal = _normal(ref.orientation)
    dist = np.array([float(f.position @ normal) for f in frames])
    order = np.argsort(dist, kind="stable")
    slices: list[list[DicomFrame]] = []
    slice_pos: list[np.ndarray] = []
    last = None
    for i in order:
        if last is None or dist[i] - last > _POS_TOL_MM:
            slices.append([])
            slice_pos.append(frames[i].position)
            last = dist[i]
        slices[-1].append(frames[i])
    counts = [len(s) for s in slices]
    n_vol = max(counts)
    for s, c in zip(slices, counts, strict=True):
        if c != n_vol:
            raise DataError(
                f"series {series.description!r}: the slice at "
                f"{float(s[0].position @ normal):.2f} mm has {c} image(s), other slices have "
                f"{n_vol} (missing image?)",
                file=s[0].where(),
                field="ImagePositionPatient",
            )
    for s in slices:
        s.sort(key=_sort_key)
    # same measurement parameters at every slice position
    for v in range(n_vol):
        f0 = slices[0][v]
        for s in slices[1:]:
            f = s[v]
            for attr, tag in (
                ("b", "DiffusionBValue"),
                ("te_ms", "EchoTime"),
                ("ti_ms", "InversionTime"),
                ("flip_deg", "FlipAngle"),
                ("temporal", "TemporalPositionIdentifier"),
            ):
                a, b = getattr(f0, attr), getattr(f, attr)
                if (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-3):
                    raise DataError(
                        f"series {series.description!r}: volume {v + 1} has {tag} {a} at "
                        f"{f0.where()} but {b} here (inconsistent or missing measurement)",
                        file=f.where(),
                        field=tag,
                    )
    affine = affine_from_frames(
        slice_pos,
        ref.orientation,
        ref.spacing,
        slice_thickness=_float(series.header, "SliceThickness"),
        source=name,
    )
    volumes = [[slices[k][v] for k in range(len(slices))] for v in range(n_vol)]
    return volumes, affine


def _read_pixels(volumes: list[list[DicomFrame]]) -> np.ndarray:
    import pydicom

    nv, nz = len(volumes), len(volumes[0])
    ref = volumes[0][0]
    by_file: dict[Path, list[tuple[int, int, DicomFrame]]] = defaultdict(list)
    for v in range(nv):
        for k in range(nz):
            by_file[volumes[v][k].path].append((v, k, volumes[v][k]))
    rescale = any(f.slope != 1.0 or f.intercept != 0.0 for vol in volumes for f in vol)
    out: np.ndarray | None = None
    for path, items in by_file.items():
        try:
            arr = pydicom.dcmread(path).pixel_array
        except Exception as exc:
            raise DataError(
                f"cannot decode pixel data ({type(exc).__name__}: {exc})",
                file=path,
                field="PixelData",
            ) from exc
        if out is None:
            dtype = np.float32 if rescale else arr.dtype
            out = np.zeros((ref.cols, ref.rows, nz, nv), dtype=dtype)
        # pydicom drops length-1 axes (one frame, one row): restore (frames, rows, columns)
        arr = arr.reshape(-1, ref.rows * ref.grid, ref.cols * ref.grid)
        for v, k, f in items:
            img = arr[0 if f.frame is None else f.frame]
            if f.tile is not None:  # Siemens mosaic: the slice is one tile of the image
                r, c = divmod(f.tile, f.grid)
                img = img[r * f.rows : (r + 1) * f.rows, c * f.cols : (c + 1) * f.cols]
            if rescale:
                img = img.astype(np.float32) * np.float32(f.slope) + np.float32(f.intercept)
            out[:, :, k, v] = img.T
    assert out is not None
    return out


def _frame_times(volumes: list[list[DicomFrame]], epi: bool) -> tuple[list[float], str]:
    """Frame times (s from the first frame) and where they came from (``epi``: a 2-D EPI
    series, whose every volume takes one TR)."""
    trig = [v[0].trigger_ms for v in volumes]
    if all(t is not None for t in trig) and len(distinct(trig)) == len(trig):
        t0 = float(trig[0])  # type: ignore[arg-type]
        return [(float(t) - t0) / 1e3 for t in trig], "TriggerTime"  # type: ignore[arg-type]
    times = _acquisition_times(volumes)
    tr = volumes[0][0].tr_ms
    if epi and len(distinct(times)) == 1 and len(times) > 1 and tr:
        # GE EPI time series carry one AcquisitionTime for all images and no TriggerTime:
        # a 2-D EPI volume is acquired every TR (as dcm2niix assumes for its slice timing); a
        # 3-D or non-EPI series takes longer than a TR per frame, so it stays an error
        return [i * tr / 1e3 for i in range(len(times))], (
            "RepetitionTime (the images share one AcquisitionTime)"
        )
    return times, "AcquisitionTime"


def _acquisition_times(volumes: list[list[DicomFrame]]) -> list[float]:
    acq: list[float] = []
    for v in volumes:
        times = [f.acq_s for f in v if f.acq_s is not None]
        if not times:
            raise DataError(
                "dynamic series without TriggerTime or AcquisitionTime: frame times unknown",
                file=v[0].where(),
                field="AcquisitionTime",
            )
        acq.append(min(times))
    # times of day: a series running past midnight wraps to 0 (the date is rarely per image)
    day = 0.0
    out = [0.0]
    for prev, cur in itertools.pairwise(acq):
        if cur < prev - 43200.0:  # raw time of day jumped back by more than 12 h
            day += 86400.0
        out.append(cur + day - acq[0])
    return out


def read_series(
    series: DicomSeries,
    *,
    suffix: str | None = None,
    dce_baseline_frames: int | None = None,
    keep_identifiers: bool = False,
    vendor_fields: bool = True,
    refuse_not_imported: bool = False,
) -> SeriesData:
    """Read one series: sorted voxel data, RAS+ affine, protocol and BIDS sidecar.

    Parameters
    ----------
    series : DicomSeries
        From :func:`~tumorscope.io.dicom.scan.scan_dicom`.
    suffix : str, optional
        Force the series kind (``T2w``, ``dwi``, ``VFA``, ``dce``, ``dsc``, ``MEGRE``,
        ``MESE``, ``IRT1``, ``T1w``) instead of guessing it.
    dce_baseline_frames : int, optional
        Pre-contrast frames of a dynamic series (estimated when not given).
    keep_identifiers : bool
        Put the DICOM UIDs in the sidecar (by default the sidecar carries acquisition
        fields only).
    vendor_fields : bool
        For DWI and EPI series, add phase-encoding direction, slice timing, readout time and
        gradient directions read by dcm2niix (:func:`~tumorscope.io.dicom.convert.vendor_fields`).
    refuse_not_imported : bool
        Raise :class:`NotImported` (before reading the pixels) when no ``suffix`` is given and
        the series is guessed to be of a kind in :data:`~.kinds.NOT_IMPORTED` (BOLD fMRI,
        CEST, a multi-echo time series).

    Raises
    ------
    DataError
        Inconsistent series (orientation, spacing, missing slice or measurement), naming a file
        and tag.
    ProtocolError
        The header values make an impossible protocol (e.g. one b-value only, a DSC series
        without its echo time, a dynamic role given to a multi-echo time series).
    NotImported
        With ``refuse_not_imported``: a BOLD, CEST or multi-echo time series.

    Returns
    -------
    SeriesData
        A dual-echo DSC (:mod:`.kinds`) is its first echo (``entities`` ``echo-1``) with the
        second in ``more`` (``echo-2``): two files of the study.
    """
    series, notes = _magnitude_only(series)
    series = _without_isotropic(series, notes)
    volumes, affine = _layout(series)
    guessed, reason, params = guess_kind(series, volumes)
    if refuse_not_imported and suffix is None and guessed in NOT_IMPORTED:
        raise NotImported(guessed, reason)
    if suffix is not None and suffix != guessed:
        reason = f"set by the user (guess was {guessed}: {reason})"
    suffix = suffix or guessed
    data = _read_pixels(volumes)
    opts = (dce_baseline_frames, keep_identifiers, vendor_fields)
    echoes = distinct(params["te"]) if suffix == "dsc" else []
    if len(echoes) != 2:
        return _series_data(series, volumes, params, data, affine, suffix, reason, notes, *opts)
    # a dual-echo DSC (kinds.py): one file per echo, BIDS multi-echo (io/dual_echo.py)
    at = [[v for v, t in enumerate(params["te"]) if t is not None and abs(t - te) < 1e-3]
          for te in echoes]  # fmt: skip
    if len(at[0]) != len(at[1]):
        raise DataError(
            f"series {series.description!r}: {len(at[1])} volumes at echo time {echoes[1]:g} "
            f"ms, {len(at[0])} at {echoes[0]:g} ms (missing volume?)",
            file=series.files[0],
            field="EchoTime",
        )
    parts = []
    for i, idx in enumerate(at):
        part = _series_data(
            series, [volumes[v] for v in idx], {k: [p[v] for v in idx] for k, p in params.items()},
            data[..., idx], affine, suffix, reason, notes if i == 0 else [], *opts,
        )  # fmt: skip
        part.entities = f"echo-{i + 1}"
        parts.append(part)
    parts[0].more = parts[1:]
    return parts[0]


def _series_data(
    series: DicomSeries,
    volumes: list[list[DicomFrame]],
    params: dict[str, list[float | None]],
    data: np.ndarray,
    affine: np.ndarray,
    suffix: str,
    reason: str,
    notes: list[str],
    dce_baseline_frames: int | None,
    keep_identifiers: bool,
    vendor_fields: bool,
) -> SeriesData:
    """The protocol, sidecar and volume of the (already sorted and read) ``volumes``."""
    where = str(series.files[0])
    side = _header_fields(series, reason)
    try:
        epi = is_epi(series) and series.text("MRAcquisitionType").upper() != "3D"
        protocol = _protocol(
            suffix, volumes, params, data, dce_baseline_frames, where, side, epi=epi
        )
    except ProtocolError as exc:
        raise ProtocolError(
            f"series {series.description!r} ({suffix}): {exc.message}",
            file=where,
            field=exc.field,
        ) from exc
    if vendor_fields and (suffix in ("dwi", "epi") or is_epi(series)):
        protocol = _add_vendor_fields(series, protocol, data, affine, side, notes)
    _add_acquisition_fields(side, volumes[0][0], params["te"][0])
    if keep_identifiers:
        side["SeriesInstanceUID"] = series.uid
        side["StudyInstanceUID"] = series.text("StudyInstanceUID")
        side["FrameOfReferenceUID"] = series.text("FrameOfReferenceUID")
    side = {k: v for k, v in side.items() if v is not None and v != ""}
    axis = SUFFIX_AXES.get(suffix, "measurement")
    if data.shape[3] == 1:
        vol = Volume(data[..., 0], affine, source=where)
    else:
        vol = Volume(data, affine, ("x", "y", "z", axis), source=where)
    return SeriesData(vol, protocol, suffix, side, reason, notes=notes)


def _add_vendor_fields(
    series: DicomSeries,
    protocol: proto.Protocol | None,
    data: np.ndarray,
    affine: np.ndarray,
    side: dict[str, Any],
    notes: list[str],
) -> proto.Protocol | None:
    """dcm2niix's phase encoding, slice timing and gradient directions, on our grid."""
    dwi = protocol if isinstance(protocol, proto.DiffusionProtocol) else None
    vf = vendor_fields_of(
        series.files, affine, data, bvalues=None if dwi is None else list(dwi.bvalues)
    )
    side.update(vf.sidecar)
    notes.extend(f"series {series.description!r}: {n}" for n in vf.notes)
    if dwi is not None and vf.bvecs is not None:
        bvecs = tuple((float(x), float(y), float(z)) for x, y, z in vf.bvecs)
        return dataclasses.replace(dwi, bvecs=bvecs)
    return protocol


def _magnitude_only(series: DicomSeries) -> tuple[DicomSeries, list[str]]:
    """The series without its phase/real/imaginary images (when it has magnitude images)."""
    components = {f.component for f in series.frames}
    if len(components) < 2 or "M" not in components:
        return series, []
    # e.g. a multi-echo GRE saved with magnitude and phase in one series
    left_out = sorted(components - {"M"})
    magnitude = DicomSeries(
        series.uid,
        series.header,
        [f for f in series.frames if f.component == "M"],
        series.damaged,
    )
    note = (
        f"series {series.description!r} mixes magnitude and {'/'.join(left_out)} images; "
        "only the magnitude images were imported"
    )
    return magnitude, [note]


def _without_isotropic(series: DicomSeries, notes: list[str]) -> DicomSeries:
    """A DTI series without the scanner's derived isotropic (trace) image (Philips writes it
    into the series as one more b > 0 volume, marked DiffusionDirectionality ISOTROPIC;
    dcm2niix leaves it out too)."""
    kinds = {f.directionality for f in series.frames}
    if "DIRECTIONAL" not in kinds or "ISOTROPIC" not in kinds:
        return series
    kept = [f for f in series.frames if f.directionality != "ISOTROPIC"]
    notes.append(
        f"series {series.description!r}: {len(series.frames) - len(kept)} image(s) of the "
        "scanner's derived isotropic (trace) volume left out (DiffusionDirectionality "
        "ISOTROPIC beside DIRECTIONAL volumes)"
    )
    return DicomSeries(series.uid, series.header, kept, series.damaged)


def _header_fields(series: DicomSeries, reason: str) -> dict[str, Any]:
    """Sidecar fields taken from the series header (scanner, sequence, description)."""
    h = series.header
    return {
        "Modality": "MR",
        "Manufacturer": series.text("Manufacturer"),
        "ManufacturersModelName": series.text("ManufacturerModelName"),
        "MagneticFieldStrength": _float(h, "MagneticFieldStrength"),
        "SeriesDescription": series.description,
        "SeriesNumber": int(series.text("SeriesNumber", "0") or 0),
        "ProtocolName": series.text("ProtocolName"),
        "ScanningSequence": _joined(h, "ScanningSequence"),
        "SequenceVariant": _joined(h, "SequenceVariant"),
        "SequenceName": series.text("SequenceName"),
        "SliceThickness": _float(h, "SliceThickness"),
        "ConversionSoftware": "tumorscope",
        "SeriesRoleGuess": reason,
        # from stored values to the values written: "none", the rescale, the Real World Value
        # Mapping or Philips' private scale slope (io/dicom/scan.py::_scaling)
        "IntensityScaling": " + ".join(sorted({f.scaling for f in series.frames})),
        **_source_deidentification(h),
    }


def _joined(h: Any, keyword: str) -> str:
    """A multi-valued text element as DICOM and BIDS write it (``EP\\GR``), not a list."""
    value = getattr(h, keyword, None)
    if value is None or isinstance(value, str):
        return str(value or "")
    return "\\".join(str(v) for v in value)


def _source_deidentification(h: Any) -> dict[str, Any]:
    """What the source says of its own de-identification (a site's, before tumorscope's).

    Patient Identity Removed (0012,0062), De-identification Method (0012,0063) and the codes of
    De-identification Method Code Sequence (0012,0064) as ``"SCHEME CODE Meaning"`` strings
    (strings, so that the sidecar's identifier cleaning reaches them).
    """
    out: dict[str, Any] = {}
    removed = str(getattr(h, "PatientIdentityRemoved", "") or "")
    if removed:
        out["SourcePatientIdentityRemoved"] = removed
    method = getattr(h, "DeidentificationMethod", None)
    if method:
        values = [method] if isinstance(method, str) else list(method)
        out["SourceDeidentificationMethod"] = [str(v) for v in values]
    codes = [
        f"{getattr(c, 'CodingSchemeDesignator', '')} {getattr(c, 'CodeValue', '')} "
        f"{getattr(c, 'CodeMeaning', '')}".strip()
        for c in (getattr(h, "DeidentificationMethodCodeSequence", None) or [])
    ]
    if codes:
        out["SourceDeidentificationMethodCodes"] = codes
    return out


def _protocol(
    suffix: str,
    volumes: list[list[DicomFrame]],
    params: dict[str, list[float | None]],
    data: np.ndarray,
    dce_baseline_frames: int | None,
    where: str,
    side: dict[str, Any],
    epi: bool = False,
) -> proto.Protocol | None:
    """The protocol of a series of kind ``suffix``; adds its per-volume fields to ``side``
    (``epi``: a 2-D EPI series, whose frames may be timed by TR)."""
    first = [v[0] for v in volumes]
    tr = first[0].tr_ms
    te = params["te"]
    if suffix == "dwi":
        bvals = params["b"]
        if any(b is None for b in bvals):
            raise DataError(
                "no b-value in DiffusionBValue (0018,9087) or the vendor's private tag",
                file=first[bvals.index(None)].where(),
                field="DiffusionBValue",
            )
        return proto.DiffusionProtocol(
            tuple(float(b) for b in bvals if b is not None), source=where
        )
    if suffix == "VFA":
        flips: Any = tuple(params["fa"])  # None where a header lacks it: the protocol says so
        vfa = proto.VFAProtocol(flips, tr or 0.0, source=where)
        side["FlipAngle"] = list(vfa.flip_angles_deg)
        return vfa
    if suffix in ("MEGRE", "MESE"):
        me = proto.MultiEchoProtocol(
            tuple(te),  # type: ignore[arg-type]
            tr_ms=tr,
            flip_angle_deg=first[0].flip_deg,
            source=where,
        )
        side["EchoTime"] = [t / 1e3 for t in me.echo_times_ms]
        return me
    if suffix == "IRT1":
        inversions: Any = tuple(params["ti"])
        ir = proto.InversionRecoveryProtocol(inversions, tr_ms=tr, source=where)
        side["InversionTime"] = [t / 1e3 for t in ir.inversion_times_ms]
        return ir
    if suffix in ("dce", "dsc", "bold"):
        echoes = distinct(te)
        if len(echoes) > 1:  # a multi-echo time series (kinds.py): the fits take one echo
            raise ProtocolError(
                f"the volumes have {len(echoes)} echo times "
                f"({', '.join(f'{t:g}' for t in echoes)} ms): a multi-echo time series, and "
                "the DCE fit takes one echo, DSC one or two",
                field="EchoTime",
            )
        times, source = _frame_times(volumes, epi)
        side["FrameTimesSource"] = source
        nb = 1  # DSC: the DSC step finds the bolus onset; no BaselineFrames written
        if suffix == "dsc":
            for value, tag in (
                (te[0], "EchoTime (0018,0081)"),
                (first[0].flip_deg, "FlipAngle (0018,1314)"),
            ):
                if value is None:
                    raise ProtocolError(
                        f"a DSC series needs its {tag}: not in the header", field=tag.split()[0]
                    )
        elif suffix == "dce":
            if dce_baseline_frames is None:
                nb = baseline_frames(data)
                side["BaselineFramesSource"] = "estimated from the enhancement onset"
            else:
                nb = int(dce_baseline_frames)
                side["BaselineFramesSource"] = "given at import"
        dyn = proto.DynamicProtocol(
            tuple(times), first[0].flip_deg or 0.0, tr or 0.0, nb, te_ms=te[0], source=where
        )
        side["FrameTimes"] = list(dyn.frame_times_s)
        if suffix == "dce":
            side["BaselineFrames"] = nb
        return dyn
    return None


def _add_acquisition_fields(side: dict[str, Any], first: DicomFrame, te_ms: float | None) -> None:
    """TE, TR, flip angle and TI of the first image (in seconds, BIDS), unless already set."""
    if "EchoTime" not in side and te_ms is not None:
        side["EchoTime"] = te_ms / 1e3
    if first.tr_ms is not None:
        side["RepetitionTime"] = first.tr_ms / 1e3
    if "FlipAngle" not in side and first.flip_deg is not None:
        side["FlipAngle"] = first.flip_deg
    if "InversionTime" not in side and first.ti_ms is not None:
        side["InversionTime"] = first.ti_ms / 1e3


def merge_split_series(series: Sequence[DicomSeries]) -> tuple[list[DicomSeries], list[Problem]]:
    """Merge single-volume series that are one acquisition split by parameter.

    Some scanners write a variable flip angle acquisition as one series per flip angle (or a
    multi-echo or inversion recovery acquisition as one series per TE or TI). Series are merged
    when they belong to the same patient, study and frame of reference, hold one volume each on
    the same slices (orientation, positions, matrix, spacing), share sequence name, scanning
    sequence and TR, and differ in exactly one of flip angle, TE or TI, with at least two
    distinct values. Everything else is left as it is.

    Returns
    -------
    series : list of DicomSeries
        The merged series (named after the first, by series number) and the untouched ones.
    problems : list of Problem
        One warning per merge, naming the series merged (so that the user can check it).
    """

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    groups: dict[tuple[Any, ...], list[DicomSeries]] = defaultdict(list)
    others: list[DicomSeries] = []
    for s in series:
        f = s.frames
        if not f or s.damaged:
            others.append(s)
            continue
        positions = sorted(tuple(np.round(x.position, 2)) for x in f)
        one_volume = len(set(positions)) == len(positions)
        same = len({(r(x.flip_deg), r(x.te_ms), r(x.ti_ms)) for x in f}) == 1
        if not (one_volume and same):
            others.append(s)
            continue
        key = (
            s.text("PatientID"),
            s.text("StudyInstanceUID"),
            s.text("FrameOfReferenceUID"),
            s.text("SequenceName"),
            s.text("ScanningSequence"),
            r(f[0].tr_ms),
            tuple(np.round(f[0].orientation, 4)),
            tuple(positions),
            (f[0].rows, f[0].cols),
            tuple(np.round(f[0].spacing, 4)),
        )
        groups[key].append(s)
    out = list(others)
    problems: list[Problem] = []
    for members in groups.values():
        if len(members) < 2:
            out += members
            continue
        params = [
            (r(m.frames[0].flip_deg), r(m.frames[0].te_ms), r(m.frames[0].ti_ms)) for m in members
        ]
        varying = [i for i in range(3) if len({p[i] for p in params}) > 1]
        if len(varying) != 1 or len({p[varying[0]] for p in params}) < 2:
            out += members
            continue
        members.sort(key=lambda m: int(m.text("SeriesNumber", "0") or 0))
        first = members[0]
        merged = DicomSeries(first.uid, first.header, [f for m in members for f in m.frames])
        out.append(merged)
        what = ("flip angle", "echo time", "inversion time")[varying[0]]
        names = ", ".join(f"{m.description!r} (number {m.text('SeriesNumber')})" for m in members)
        problems.append(
            _problem(
                "warning",
                first.files[0],
                "SeriesInstanceUID",
                f"merged {len(members)} series that differ only in {what}: {names}",
            )
        )
    out.sort(key=lambda s: (s.text("PatientID"), s.text("StudyDate"), s.text("StudyInstanceUID"),
                            int(s.text("SeriesNumber", "0") or 0), s.uid))  # fmt: skip
    return out, problems
