"""Import DICOM MR series into a tumorscope study.

:func:`import_dicom` walks a folder of DICOM files (any order, any nesting, several patients,
studies and series mixed), groups the images into series, sorts slices and measurements, builds
the voxel-to-world affine and writes the BIDS-style study of ``docs/study-format.md``: NIfTI
images with JSON sidecars (and ``.bval``), lesion label maps from DICOM SEG objects, and a
``study.yaml`` with pseudonymous subjects and visits dated from ``StudyDate``.

The lower-level pieces are public too: :func:`scan_dicom` (files → series, with every problem
found), :func:`read_series` (one series → :class:`~tumorscope.volume.Volume`, protocol and
sidecar) and :func:`read_segmentation` (DICOM SEG → label map on a given grid).

Design decisions (see also ``docs/dicom.md``)
---------------------------------------------
* **pydicom, not dcm2niix.** Both were compared on the synthetic series (``docs/dicom.md``):
  the affines and voxel values agree, but dcm2niix runs as a subprocess, reports problems as
  free text on stdout, drops the private GE b-value offset handling into heuristics we cannot
  test, and writes its own file names and sidecars that would have to be parsed back. Reading
  with pydicom keeps every decision (sorting, timing, b-values, rejection of bad series) in
  tested Python, with errors that name the file and the tag.
* **Geometry.** DICOM patient coordinates are LPS+, tumorscope's affines RAS+ (nibabel). Voxel
  ``(i, j, k)`` is column ``i``, row ``j`` of slice ``k``; slices are sorted along the normal
  ``row direction × column direction`` and the third affine column is the mean step between
  consecutive slice positions (non-uniform steps, i.e. a missing slice, are an error).
* **Measurements.** Within a slice position, images are ordered by temporal position, b-value,
  echo time, inversion time, flip angle and time of acquisition; every slice position must hold
  the same number of images with the same parameters. The parameter that varies decides the
  series kind (b → ``dwi``, flip angle → ``VFA``, TE → ``MEGRE``/``MESE``, TI → ``IRT1``,
  time → ``dce``); a single volume is ``T2w`` when TE ≥ 60 ms or the description says T2, and
  ``T1w`` otherwise. The guess can be overridden (``roles`` option, or ``dicom.roles`` in an
  existing ``study.yaml``).
* **Values.** Stored pixel values are kept; the DICOM rescale slope/intercept, which is part of
  what the file defines, is applied only when it is not the identity (then the data become
  float32). Vendor-private scalings (Philips ``(2005,100E)``) are not applied.
* **Frame times** of dynamic series come from ``TriggerTime`` when it varies, else from the
  earliest ``AcquisitionTime`` (``FrameAcquisitionDateTime`` in enhanced objects) of each
  frame, relative to the first frame. DICOM does not record how many frames precede the
  contrast injection: ``BaselineFrames`` is taken from the caller or estimated from the
  enhancement of the brightest-enhancing voxels (the sidecar says which, in
  ``BaselineFramesSource``).
* **Magnitude and phase** saved in one series (multi-echo GRE often is): the magnitude images
  are imported (``ComplexImageComponent``, else the third ``ImageType`` value), the others are
  left out and reported.
* **Messy input.** Non-DICOM and truncated files are reported and skipped; duplicated instances
  (same SOP Instance UID) are reported and the duplicates skipped; a series with a missing
  slice, a missing measurement or inconsistent orientation, spacing or size is reported and
  rejected; everything else imports. Problems are :class:`~tumorscope.errors.Problem` objects
  naming the file and the tag.
* **Atomic output.** The study is written to a temporary folder beside ``study_dir`` and renamed
  into place only when complete.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import itertools
import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, Problem, ProtocolError
from ..protocol import (
    DiffusionProtocol,
    DynamicProtocol,
    InversionRecoveryProtocol,
    MultiEchoProtocol,
    Protocol,
    VFAProtocol,
)
from ..volume import Volume, atomic_write
from .bids import SUFFIX_AXES

__all__ = [
    "DicomFrame",
    "DicomSeries",
    "ImportReport",
    "ScanResult",
    "SeriesData",
    "affine_from_frames",
    "import_dicom",
    "index_series",
    "merge_split_series",
    "read_rtstruct",
    "read_segmentation",
    "read_series",
    "scan_dicom",
]

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_MR_STORAGE = {"1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1"}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_POS_TOL_MM = 0.01
_ORI_TOL = 1e-4
GE_BVALUE_OFFSET = 1_000_000_000


# --------------------------------------------------------------------------- records
@dataclass
class DicomFrame:
    """One 2-D image: a classic single-frame file or one frame of a multi-frame object."""

    path: Path
    frame: int | None
    sop_uid: str
    position: np.ndarray
    orientation: np.ndarray
    spacing: tuple[float, float]
    rows: int
    cols: int
    instance: int = 0
    b: float | None = None
    te_ms: float | None = None
    tr_ms: float | None = None
    flip_deg: float | None = None
    ti_ms: float | None = None
    temporal: int | None = None
    trigger_ms: float | None = None
    acq_s: float | None = None
    slope: float = 1.0
    intercept: float = 0.0
    component: str = "M"  # M(agnitude), P(hase), R(eal), I(maginary)

    def where(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} (frame {self.frame + 1})"


@dataclass
class DicomSeries:
    """The images of one Series Instance UID and the header fields shared by them."""

    uid: str
    header: Any  # pydicom Dataset of the first file, without pixel data
    frames: list[DicomFrame] = field(default_factory=list)
    damaged: list[Path] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return sorted({f.path for f in self.frames} | set(self.damaged))

    def text(self, keyword: str, default: str = "") -> str:
        value = getattr(self.header, keyword, None)
        return default if value is None else str(value)

    @property
    def description(self) -> str:
        return self.text("SeriesDescription") or self.text("ProtocolName")


@dataclass
class ScanResult:
    """What :func:`scan_dicom` found: image series, segmentation objects and problems."""

    series: list[DicomSeries]
    segmentations: list[Path]
    problems: list[Problem]


@dataclass
class SeriesData:
    """One series read into memory (what :func:`read_series` returns)."""

    volume: Volume
    protocol: Protocol | None
    suffix: str
    sidecar: dict[str, Any]
    reason: str
    entities: str = ""  # BIDS entities before the suffix in the file name, e.g. "ce-ferumoxytol"
    notes: list[str] = field(default_factory=list)  # what was left out, for the import report


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


# --------------------------------------------------------------------------- header helpers
def _float(ds: Any, keyword: str) -> float | None:
    v = getattr(ds, keyword, None)
    if v is None or v == "":
        return None
    try:
        if isinstance(v, list | tuple) or (hasattr(v, "__len__") and not isinstance(v, str)):
            v = next(iter(v))
        return float(v)
    except (TypeError, ValueError, IndexError):
        return None


def _tm_seconds(value: Any) -> float | None:
    """DICOM TM (``HHMMSS.FFFFFF``, or with colons) → seconds since midnight."""
    if value is None:
        return None
    s = str(value).strip().replace(":", "")
    if len(s) < 2:
        return None
    try:
        h = int(s[0:2])
        m = int(s[2:4]) if len(s) >= 4 else 0
        sec = float(s[4:]) if len(s) > 4 else 0.0
    except ValueError:
        return None
    return 3600.0 * h + 60.0 * m + sec


def _dt_seconds(value: Any) -> float | None:
    """DICOM DT (``YYYYMMDDHHMMSS.FFFFFF``) → seconds since midnight of its date."""
    if value is None:
        return None
    s = str(value).strip()
    if len(s) < 10:
        return None
    return _tm_seconds(s[8:].split("+")[0].split("-")[0])


def _private_b(ds: Any) -> float | None:
    """b-value from the vendor's private tag, or None."""
    maker = str(getattr(ds, "Manufacturer", "")).upper()
    candidates: list[tuple[int, str, int]] = []
    if "SIEMENS" in maker:
        candidates = [(0x0019, "SIEMENS MR HEADER", 0x0C)]
    elif "GE" in maker.split() or maker.startswith("GE "):
        candidates = [(0x0043, "GEMS_PARM_01", 0x39)]
    elif "PHILIPS" in maker:
        candidates = [(0x2001, "Philips Imaging DD 001", 0x03)]
    for group, creator, offset in candidates:
        try:
            block = ds.private_block(group, creator)
            elem = block[offset]
        except (KeyError, ValueError):
            continue
        value = elem.value
        if value is None or value == "":
            continue
        if isinstance(value, bytes):
            # implicit VR files: private elements arrive as raw bytes
            try:
                value = value.decode("ascii").strip("\x00 ").split("\\")
            except UnicodeDecodeError:
                value = np.frombuffer(value[:4], "<f4").tolist()
        first = (
            next(iter(value))
            if isinstance(value, list | tuple)
            or (hasattr(value, "__iter__") and not isinstance(value, str))
            else value
        )
        b = float(first)
        if "GE" in maker.split() or maker.startswith("GE "):
            # GE adds 10^9 to the b-value on many software versions (dcm2niix does the same fix)
            b = b % GE_BVALUE_OFFSET
        return b
    return None


def _b_value(ds: Any, item: Any | None = None) -> float | None:
    """b-value: the MR Diffusion functional group, the standard tag, then the private tags."""
    if item is not None:
        seq = getattr(item, "MRDiffusionSequence", None)
        if seq:
            return _float(seq[0], "DiffusionBValue")
    b = _float(ds, "DiffusionBValue")
    if b is not None:
        return b
    return _private_b(ds)


_COMPONENTS = {"M": "M", "MAGNITUDE": "M", "P": "P", "PHASE": "P", "R": "R", "REAL": "R",
               "I": "I", "IMAGINARY": "I"}  # fmt: skip


def _component(obj: Any) -> str | None:
    """Complex component of an image: ComplexImageComponent, else the 3rd ImageType value."""
    cic = getattr(obj, "ComplexImageComponent", None)
    if cic:
        return _COMPONENTS.get(str(cic).upper())
    image_type = getattr(obj, "ImageType", None) or getattr(obj, "FrameType", None)
    if image_type is not None and len(image_type) > 2:
        return _COMPONENTS.get(str(image_type[2]).upper())
    return None


def _group(item: Any, shared: Any, name: str) -> Any | None:
    for src in (item, shared):
        if src is not None:
            seq = getattr(src, name, None)
            if seq:
                return seq[0]
    return None


def _problem(severity: str, file: object, fld: str, message: str) -> Problem:
    return Problem(severity, str(file), fld, message)  # type: ignore[arg-type]


def _check_pixel_length(ds: Any, path: Path) -> str | None:
    """A message if the pixel data are shorter than the header says (truncated file)."""
    if "PixelData" not in ds:
        return "no pixel data"
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and ts.is_compressed:
        return None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    try:
        expected = (
            int(ds.Rows)
            * int(ds.Columns)
            * frames
            * int(getattr(ds, "SamplesPerPixel", 1))
            * (int(ds.BitsAllocated) // 8)
        )
    except (AttributeError, TypeError, ValueError):
        return "Rows, Columns or BitsAllocated missing"
    got = len(ds.PixelData)
    if got < expected:
        return f"pixel data hold {got} bytes, the header needs {expected} (truncated file?)"
    return None


def _frames_from_dataset(ds: Any, path: Path) -> list[DicomFrame]:
    """The 2-D images of one MR object (raises DataError naming the missing tag)."""

    def need(obj: Any, keyword: str, where: str) -> Any:
        v = getattr(obj, keyword, None)
        if v is None or v == "":
            raise DataError(f"required tag is missing ({where})", file=path, field=keyword)
        return v

    sop = str(need(ds, "SOPInstanceUID", "SOP Common"))
    rows, cols = int(need(ds, "Rows", "Image Pixel")), int(need(ds, "Columns", "Image Pixel"))
    nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
    pfg = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if pfg is None:
        ipp = need(ds, "ImagePositionPatient", "Image Plane")
        iop = need(ds, "ImageOrientationPatient", "Image Plane")
        ps = need(ds, "PixelSpacing", "Image Plane")
        tpi = getattr(ds, "TemporalPositionIdentifier", None)
        return [
            DicomFrame(
                path=path,
                frame=None,
                sop_uid=sop,
                position=np.array([float(x) for x in ipp]),
                orientation=np.array([float(x) for x in iop]),
                spacing=(float(ps[0]), float(ps[1])),
                rows=rows,
                cols=cols,
                instance=int(getattr(ds, "InstanceNumber", 0) or 0),
                b=_b_value(ds),
                te_ms=_float(ds, "EchoTime"),
                tr_ms=_float(ds, "RepetitionTime"),
                flip_deg=_float(ds, "FlipAngle"),
                ti_ms=_float(ds, "InversionTime"),
                temporal=None if tpi in (None, "") else int(tpi),
                trigger_ms=_float(ds, "TriggerTime"),
                acq_s=_tm_seconds(getattr(ds, "AcquisitionTime", None))
                if getattr(ds, "AcquisitionTime", None)
                else _tm_seconds(getattr(ds, "ContentTime", None)),
                slope=_float(ds, "RescaleSlope") or 1.0,
                intercept=_float(ds, "RescaleIntercept") or 0.0,
                component=_component(ds) or "M",
            )
        ]
    sfg = (getattr(ds, "SharedFunctionalGroupsSequence", None) or [None])[0]
    if len(pfg) != nframes:
        raise DataError(
            f"{len(pfg)} per-frame functional groups for {nframes} frames",
            file=path,
            field="PerFrameFunctionalGroupsSequence",
        )
    out: list[DicomFrame] = []
    for n, item in enumerate(pfg):
        where = f"frame {n + 1}"
        pos = _group(item, sfg, "PlanePositionSequence")
        ori = _group(item, sfg, "PlaneOrientationSequence")
        pm = _group(item, sfg, "PixelMeasuresSequence")
        if pos is None or ori is None or pm is None:
            missing = next(
                k
                for k, v in (
                    ("PlanePositionSequence", pos),
                    ("PlaneOrientationSequence", ori),
                    ("PixelMeasuresSequence", pm),
                )
                if v is None
            )
            raise DataError(f"functional group is missing ({where})", file=path, field=missing)
        content = _group(item, None, "FrameContentSequence")
        timing = _group(item, sfg, "MRTimingAndRelatedParametersSequence")
        echo = _group(item, sfg, "MREchoSequence")
        modifier = _group(item, sfg, "MRModifierSequence")
        cardiac = _group(item, sfg, "CardiacSynchronizationSequence")
        pvt = _group(item, sfg, "PixelValueTransformationSequence")
        ti = None if modifier is None else _float(modifier, "InversionTimes")
        diff = _group(item, sfg, "MRDiffusionSequence")
        frame_type = _group(item, sfg, "MRImageFrameTypeSequence")
        component = (None if frame_type is None else _component(frame_type)) or _component(ds)
        out.append(
            DicomFrame(
                path=path,
                frame=n,
                sop_uid=f"{sop}#{n}",
                position=np.array([float(x) for x in need(pos, "ImagePositionPatient", where)]),
                orientation=np.array(
                    [float(x) for x in need(ori, "ImageOrientationPatient", where)]
                ),
                spacing=tuple(float(x) for x in need(pm, "PixelSpacing", where)),  # type: ignore[arg-type]
                rows=rows,
                cols=cols,
                instance=n,
                b=None if diff is None else _float(diff, "DiffusionBValue"),
                te_ms=None if echo is None else _float(echo, "EffectiveEchoTime"),
                tr_ms=None if timing is None else _float(timing, "RepetitionTime"),
                flip_deg=None if timing is None else _float(timing, "FlipAngle"),
                ti_ms=ti,
                temporal=None
                if content is None or getattr(content, "TemporalPositionIndex", None) is None
                else int(content.TemporalPositionIndex),
                trigger_ms=None
                if cardiac is None
                else _float(cardiac, "NominalCardiacTriggerDelayTime"),
                acq_s=None
                if content is None
                else _dt_seconds(getattr(content, "FrameAcquisitionDateTime", None)),
                slope=1.0 if pvt is None else (_float(pvt, "RescaleSlope") or 1.0),
                intercept=0.0 if pvt is None else (_float(pvt, "RescaleIntercept") or 0.0),
                component=component or "M",
            )
        )
    return out


# --------------------------------------------------------------------------- scanning
def _walk(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def scan_dicom(folder: str | Path) -> ScanResult:
    """Find and group the DICOM MR series and segmentations under a folder.

    Every file is read (headers and pixel-data length; pixel values are read later by
    :func:`read_series`). Files that are not DICOM, are truncated, are not MR images, SEG or
    RT-STRUCT objects, or miss a geometry tag are reported and skipped; instances seen twice
    (same SOP Instance UID) are reported and the copies skipped.

    Parameters
    ----------
    folder : path-like
        Folder to walk recursively (file names and order do not matter).

    Returns
    -------
    ScanResult
        Series (grouped by Series Instance UID), SEG/RT-STRUCT files, and problems.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(folder)
    if not root.is_dir():
        raise DataError("DICOM folder does not exist", file=root)
    problems: list[Problem] = []
    series: dict[str, DicomSeries] = {}
    segs: list[Path] = []
    seen: dict[str, Path] = {}
    for path in _walk(root):
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            problems.append(
                _problem("warning", path, "", "not a DICOM file (no DICM preamble); skipped")
            )
            continue
        except Exception as exc:  # pydicom raises many types for damaged files
            problems.append(
                _problem(
                    "warning",
                    path,
                    "",
                    f"cannot read DICOM file ({type(exc).__name__}: {exc}); skipped",
                )
            )
            continue
        sop_class = str(getattr(ds, "SOPClassUID", ""))
        if sop_class in (SEG_STORAGE, RTSTRUCT_STORAGE):
            segs.append(path)
            continue
        if sop_class not in _MR_STORAGE:
            problems.append(
                _problem(
                    "warning",
                    path,
                    "SOPClassUID",
                    f"not an MR image, SEG or RT-STRUCT object ({sop_class or 'missing'}); skipped",
                )
            )
            continue
        sop = str(getattr(ds, "SOPInstanceUID", ""))
        if sop in seen:
            problems.append(
                _problem(
                    "warning",
                    path,
                    "SOPInstanceUID",
                    f"duplicate of {seen[sop]} (same SOP Instance UID); skipped",
                )
            )
            continue
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
        if not uid:
            problems.append(
                _problem("warning", path, "SeriesInstanceUID", "tag is missing; skipped")
            )
            continue
        seen[sop] = path
        message = _check_pixel_length(ds, path)
        frames: list[DicomFrame] = []
        if message is not None:
            problems.append(_problem("warning", path, "PixelData", f"{message}; skipped"))
        else:
            try:
                frames = _frames_from_dataset(ds, path)
            except DataError as exc:
                problems.append(
                    _problem("warning", path, exc.field or "", f"{exc.message}; skipped")
                )
        if uid not in series:
            if "PixelData" in ds:
                del ds.PixelData
            series[uid] = DicomSeries(uid, ds)
        if frames:
            series[uid].frames.extend(frames)
        else:
            # the series is incomplete: it is rejected at import (a lost end slice cannot be
            # told from the positions of the others)
            series[uid].damaged.append(path)
    ordered = sorted(
        series.values(),
        key=lambda s: (
            s.text("PatientID"),
            s.text("StudyDate"),
            s.text("StudyInstanceUID"),
            int(s.text("SeriesNumber", "0") or 0),
            s.uid,
        ),
    )
    return ScanResult(ordered, segs, problems)


def index_series(folder: str | Path) -> dict[str, list[Path]]:
    """Series Instance UID → files, reading only that tag of each file (fast).

    Files that are not readable DICOM are ignored (use :func:`scan_dicom` to have them
    reported).
    """
    import pydicom

    index: dict[str, list[Path]] = defaultdict(list)
    for path in _walk(Path(folder)):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
            uid = str(ds.SeriesInstanceUID)
        except Exception:
            continue
        index[uid].append(path)
    return dict(index)


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
    return _LPS_TO_RAS @ A


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


def _distinct(values: Sequence[float | None]) -> list[float]:
    """Distinct values (to 1e-6), None ignored."""
    return sorted({round(float(v), 6) for v in values if v is not None})


def _layout(series: DicomSeries) -> tuple[list[list[DicomFrame]], np.ndarray]:
    """Frames arranged as ``[volume][slice]`` and the RAS affine; raises DataError."""
    image_type = [str(x).upper() for x in (getattr(series.header, "ImageType", None) or [])]
    if "MOSAIC" in image_type:
        # Siemens mosaic: one image holds a tile of slices, whose positions live in the private
        # CSA header; read as is it would be one wrong slice
        raise DataError(
            f"series {series.description!r} holds Siemens mosaic images, which are not supported; "
            "export it from the scanner without mosaic (or as enhanced MR)",
            file=series.files[0],
            field="ImageType",
        )
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
                f"{list(np.round(f.orientation, 4))} differs from {list(np.round(ref.orientation, 4))} "
                f"of {ref.where()}",
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
                f"series {series.description!r}: the slice at {float(s[0].position @ normal):.2f} mm "
                f"has {c} image(s), other slices have {n_vol} (missing image?)",
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
        arr = arr.reshape(-1, ref.rows, ref.cols)
        for v, k, f in items:
            img = arr[0 if f.frame is None else f.frame]
            if rescale:
                img = img.astype(np.float32) * np.float32(f.slope) + np.float32(f.intercept)
            out[:, :, k, v] = img.T
    assert out is not None
    return out


def _estimate_baseline(data: np.ndarray) -> int:
    """Frames before contrast arrival, from the 0.5 % most enhancing voxels.

    The curve is the mean over the voxels with the largest (peak − first frame) enhancement;
    arrival is the first frame rising above 10 % of that peak enhancement.
    """
    flat = data.reshape(-1, data.shape[-1]).astype(np.float64)
    enh = flat.max(axis=1) - flat[:, 0]
    n = max(1, int(0.005 * flat.shape[0]))
    top = np.argsort(enh)[-n:]
    curve = flat[top].mean(axis=0)
    base = curve[0]
    peak = curve.max()
    if peak <= base:
        return 1
    above = np.flatnonzero(curve > base + 0.1 * (peak - base))
    nb = int(above[0]) if above.size else 1
    return int(min(max(nb, 1), data.shape[-1] - 1))


def _guess(
    series: DicomSeries, volumes: list[list[DicomFrame]]
) -> tuple[str, str, dict[str, list[float | None]]]:
    """(suffix, reason, per-volume parameters)."""
    first = [v[0] for v in volumes]
    params: dict[str, list[float | None]] = {
        "b": [f.b for f in first],
        "te": [f.te_ms for f in first],
        "ti": [f.ti_ms for f in first],
        "fa": [f.flip_deg for f in first],
    }
    n = len(volumes)
    desc = series.description.lower()
    scanning = series.text("ScanningSequence").upper()
    if n > 1:
        if len(_distinct(params["b"])) >= 2:
            return "dwi", f"{len(_distinct(params['b']))} distinct b-values", params
        if len(_distinct(params["te"])) >= 2:
            if "SE" in scanning and "GR" not in scanning:
                return "MESE", "several echo times, spin echo", params
            return "MEGRE", "several echo times, gradient echo", params
        if len(_distinct(params["ti"])) >= 2:
            return "IRT1", "several inversion times", params
        if len(_distinct(params["fa"])) >= 2:
            return "VFA", "several flip angles", params
        return "dce", f"{n} repeated volumes (dynamic series)", params
    te = first[0].te_ms
    if "t2" in desc or (te is not None and te >= 60):
        return "T2w", f"single volume, TE {te} ms", params
    return "T1w", f"single volume, TE {te} ms", params


def _frame_times(volumes: list[list[DicomFrame]]) -> list[float]:
    trig = [v[0].trigger_ms for v in volumes]
    if all(t is not None for t in trig) and len(_distinct(trig)) == len(trig):
        t0 = float(trig[0])  # type: ignore[arg-type]
        return [(float(t) - t0) / 1e3 for t in trig]  # type: ignore[arg-type]
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
) -> SeriesData:
    """Read one series: sorted voxel data, RAS+ affine, protocol and BIDS sidecar.

    Parameters
    ----------
    series : DicomSeries
        From :func:`scan_dicom`.
    suffix : str, optional
        Force the series kind (``T2w``, ``dwi``, ``VFA``, ``dce``, ``MEGRE``, ``MESE``,
        ``IRT1``, ``T1w``) instead of guessing it.
    dce_baseline_frames : int, optional
        Pre-contrast frames of a dynamic series (estimated when not given).
    keep_identifiers : bool
        Put the DICOM UIDs in the sidecar (by default the sidecar carries acquisition
        fields only).

    Raises
    ------
    DataError
        Inconsistent series (orientation, spacing, missing slice or measurement), naming a file
        and tag.
    ProtocolError
        The header values make an impossible protocol (e.g. one b-value only).
    """
    notes: list[str] = []
    components = {f.component for f in series.frames}
    if len(components) > 1 and "M" in components:
        # e.g. a multi-echo GRE saved with magnitude and phase in one series
        left_out = sorted(components - {"M"})
        series = DicomSeries(
            series.uid,
            series.header,
            [f for f in series.frames if f.component == "M"],
            series.damaged,
        )
        notes.append(
            f"series {series.description!r} mixes magnitude and {'/'.join(left_out)} images; "
            "only the magnitude images were imported"
        )
    volumes, affine = _layout(series)
    guessed, reason, params = _guess(series, volumes)
    if suffix is not None and suffix != guessed:
        reason = f"set by the user (guess was {guessed}: {reason})"
    suffix = suffix or guessed
    data = _read_pixels(volumes)
    where = str(series.files[0])
    h = series.header
    side: dict[str, Any] = {
        "Modality": "MR",
        "Manufacturer": series.text("Manufacturer"),
        "ManufacturersModelName": series.text("ManufacturerModelName"),
        "MagneticFieldStrength": _float(h, "MagneticFieldStrength"),
        "SeriesDescription": series.description,
        "SeriesNumber": int(series.text("SeriesNumber", "0") or 0),
        "ProtocolName": series.text("ProtocolName"),
        "ScanningSequence": series.text("ScanningSequence"),
        "SequenceVariant": series.text("SequenceVariant"),
        "SequenceName": series.text("SequenceName"),
        "SliceThickness": _float(h, "SliceThickness"),
        "ConversionSoftware": "tumorscope",
        "SeriesRoleGuess": reason,
    }
    first = [v[0] for v in volumes]
    tr = first[0].tr_ms
    te = params["te"]
    protocol: Protocol | None = None
    try:
        if suffix == "dwi":
            bvals = params["b"]
            if any(b is None for b in bvals):
                raise DataError(
                    "no b-value in DiffusionBValue (0018,9087) or the vendor's private tag",
                    file=first[bvals.index(None)].where(),
                    field="DiffusionBValue",
                )
            protocol = DiffusionProtocol(tuple(float(b) for b in bvals), source=where)  # type: ignore[arg-type]
        elif suffix == "VFA":
            protocol = VFAProtocol(tuple(params["fa"]), tr or 0.0, source=where)  # type: ignore[arg-type]
            side["FlipAngle"] = list(protocol.flip_angles_deg)
        elif suffix in ("MEGRE", "MESE"):
            protocol = MultiEchoProtocol(
                tuple(te),  # type: ignore[arg-type]
                tr_ms=tr,
                flip_angle_deg=first[0].flip_deg,
                source=where,
            )
            side["EchoTime"] = [t / 1e3 for t in protocol.echo_times_ms]
        elif suffix == "IRT1":
            protocol = InversionRecoveryProtocol(tuple(params["ti"]), tr_ms=tr, source=where)  # type: ignore[arg-type]
            side["InversionTime"] = [t / 1e3 for t in protocol.inversion_times_ms]
        elif suffix == "dce":
            times = _frame_times(volumes)
            if dce_baseline_frames is None:
                nb = _estimate_baseline(data)
                side["BaselineFramesSource"] = "estimated from the enhancement onset"
            else:
                nb = int(dce_baseline_frames)
                side["BaselineFramesSource"] = "given at import"
            protocol = DynamicProtocol(
                tuple(times), first[0].flip_deg or 0.0, tr or 0.0, nb, te_ms=te[0], source=where
            )
            side["FrameTimes"] = list(protocol.frame_times_s)
            side["BaselineFrames"] = nb
    except ProtocolError as exc:
        raise ProtocolError(
            f"series {series.description!r} ({suffix}): {exc.message}",
            file=where,
            field=exc.field,
        ) from exc
    if "EchoTime" not in side and te[0] is not None:
        side["EchoTime"] = te[0] / 1e3
    if tr is not None:
        side["RepetitionTime"] = tr / 1e3
    if "FlipAngle" not in side and first[0].flip_deg is not None:
        side["FlipAngle"] = first[0].flip_deg
    if "InversionTime" not in side and first[0].ti_ms is not None:
        side["InversionTime"] = first[0].ti_ms / 1e3
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


# --------------------------------------------------------------------------- segmentations
def _read_object(path: Path, sop_class: str, what: str) -> Any:
    """Read a DICOM file that must be of one SOP class (DataError naming the file if not)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DataError(f"cannot read {what} ({type(exc).__name__}: {exc})", file=path) from exc
    if str(getattr(ds, "SOPClassUID", "")) != sop_class:
        raise DataError(f"not {what} object", file=path, field="SOPClassUID")
    return ds


def _grid_index(grid: Volume, position_lps: np.ndarray) -> np.ndarray:
    ras = _LPS_TO_RAS[:3, :3] @ position_lps
    inv = np.linalg.inv(grid.affine)
    return inv[:3, :3] @ ras + inv[:3, 3]


def read_segmentation(path: str | Path, grid: Volume) -> tuple[Volume, list[dict[str, Any]]]:
    """A DICOM SEG object as an integer label map on ``grid``.

    Each segment becomes one label (its segment number). The SEG frames must lie on the
    slices of ``grid`` with the same in-plane geometry (no resampling is done).

    Parameters
    ----------
    path : path-like
        DICOM SEG file (binary or fractional; fractional values ≥ half the maximum count).
    grid : Volume
        The image the segmentation was drawn on (e.g. the imported series it references).

    Returns
    -------
    labels : Volume
        int32 label map (0 = background).
    rows : list of dict
        One per segment: ``label``, ``lesion_id`` (SegmentLabel), ``organ`` (anatomic region),
        ``target`` and ``nodal`` (from the SegmentDescription words ``target``/``non-target``
        and ``nodal``, or an anatomic region "lymph node").

    Raises
    ------
    DataError
        Frames off the grid, overlapping segments, or missing tags (naming the file and tag).
    """

    p = Path(path)
    ds = _read_object(p, SEG_STORAGE, "a DICOM Segmentation")
    segments = getattr(ds, "SegmentSequence", None)
    if not segments:
        raise DataError("no segments", file=p, field="SegmentSequence")
    arr = ds.pixel_array
    if arr.ndim == 2:
        arr = arr[None]
    if str(getattr(ds, "SegmentationType", "BINARY")) == "FRACTIONAL":
        arr = arr >= (int(getattr(ds, "MaximumFractionalValue", 255)) + 1) // 2
    frames = _frames_from_dataset(ds, p)
    labels = np.zeros(grid.spatial_shape, dtype=np.int32)
    sfg = (getattr(ds, "SharedFunctionalGroupsSequence", None) or [None])[0]
    for n, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ident = _group(item, sfg, "SegmentIdentificationSequence")
        if ident is None:
            raise DataError(
                f"frame {n + 1} has no segment number",
                file=p,
                field="SegmentIdentificationSequence",
            )
        seg_no = int(ident.ReferencedSegmentNumber)
        f = frames[n]
        idx = _grid_index(grid, f.position)
        k = round(idx[2])
        expected_cols = grid.affine[:3, 0] / np.linalg.norm(grid.affine[:3, 0])
        row_dir_ras = _LPS_TO_RAS[:3, :3] @ f.orientation[:3]
        if (
            np.abs(idx[:2]).max() > 0.01
            or abs(idx[2] - k) > 0.01
            or not 0 <= k < grid.spatial_shape[2]
            or (f.rows, f.cols) != (grid.spatial_shape[1], grid.spatial_shape[0])
            or not np.allclose(row_dir_ras, expected_cols, atol=1e-3)
        ):
            raise DataError(
                f"frame {n + 1} (segment {seg_no}) does not lie on a slice of the image grid "
                f"{grid.spatial_shape}; resampling segmentations is not supported",
                file=p,
                field="PlanePositionSequence",
            )
        mask = arr[n].T.astype(bool)
        clash = mask & (labels[:, :, k] != 0) & (labels[:, :, k] != seg_no)
        if clash.any():
            other = int(labels[:, :, k][clash][0])
            raise DataError(
                f"segments {other} and {seg_no} overlap on slice {k + 1}; a label map needs "
                "disjoint lesions",
                file=p,
                field="SegmentSequence",
            )
        labels[:, :, k][mask] = seg_no
    rows: list[dict[str, Any]] = []
    for seg in segments:
        num = int(seg.SegmentNumber)
        desc = str(getattr(seg, "SegmentDescription", "") or "").lower()
        organ = ""
        region = getattr(seg, "AnatomicRegionSequence", None)
        if region:
            organ = str(region[0].CodeMeaning).lower()
        words = desc.replace(",", " ").split()
        rows.append(
            {
                "label": num,
                "lesion_id": str(seg.SegmentLabel),
                "organ": organ,
                "target": "target" in words,
                "nodal": "nodal" in words or organ == "lymph node",
            }
        )
    return Volume(labels, grid.affine.copy(), source=str(p)), rows


def _points_in_polygon(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: which points (px, py) lie inside the closed polygon (N, 2)."""
    inside = np.zeros(px.shape, dtype=bool)
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for a, b, c, d in zip(x0, y0, x1, y1, strict=True):
        if b == d:
            continue
        crosses = (b > py) != (d > py)
        xs = a + (py - b) * (c - a) / (d - b)
        inside ^= crosses & (px < xs)
    return inside


def _rt_rows(ds: Any) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for roi in getattr(ds, "StructureSetROISequence", []) or []:
        num = int(roi.ROINumber)
        words = [
            w.strip().lower() for w in str(getattr(roi, "ROIDescription", "") or "").split(";")
        ]
        flags = {"target", "non-target", "nodal"}
        organ = next((w for w in words if w and w not in flags), "")
        rows[num] = {
            "label": num,
            "lesion_id": str(getattr(roi, "ROIName", "") or f"ROI{num}"),
            "organ": organ,
            "target": "target" in words,
            "nodal": "nodal" in words or organ == "lymph node",
        }
    return rows


def read_rtstruct(path: str | Path, grid: Volume) -> tuple[Volume, list[dict[str, Any]]]:
    """A DICOM RT Structure Set as an integer label map on ``grid``.

    Each ROI with closed planar contours becomes one label (its ROI number); a voxel belongs to
    a ROI when its centre lies inside the ROI's contours on its slice, with the even-odd rule
    across the contours of one slice (so a contour inside another is a hole, the usual
    convention). Contours must lie on slices of ``grid`` (no resampling).

    Parameters
    ----------
    path : path-like
        RT Structure Set file.
    grid : Volume
        The image the contours were drawn on.

    Returns
    -------
    labels : Volume
        int32 label map.
    rows : list of dict
        One per ROI drawn: ``label`` (ROI number), ``lesion_id`` (ROI name), ``organ``,
        ``target`` and ``nodal`` (from ROI Description words separated by ``;``: ``target`` or
        ``non-target``, ``nodal``, and the organ).

    Raises
    ------
    DataError
        Contours off the slices of the grid, overlapping ROIs, missing sequences.
    """

    p = Path(path)
    ds = _read_object(p, RTSTRUCT_STORAGE, "an RT Structure Set")
    contours = getattr(ds, "ROIContourSequence", None)
    if not contours:
        raise DataError("no contours", file=p, field="ROIContourSequence")
    meta = _rt_rows(ds)
    inv = np.linalg.inv(grid.affine) @ _LPS_TO_RAS
    nx, ny, nz = grid.spatial_shape
    labels = np.zeros(grid.spatial_shape, dtype=np.int32)
    rows: list[dict[str, Any]] = []
    for roi in contours:
        num = int(roi.ReferencedROINumber)
        mask = np.zeros(grid.spatial_shape, dtype=bool)
        for n, item in enumerate(getattr(roi, "ContourSequence", []) or []):
            if str(getattr(item, "ContourGeometricType", "")) != "CLOSED_PLANAR":
                continue
            pts = np.asarray([float(x) for x in item.ContourData]).reshape(-1, 3)
            idx = (inv[:3, :3] @ pts.T + inv[:3, 3:4]).T
            k = round(float(idx[0, 2]))
            if np.abs(idx[:, 2] - k).max() > 0.01 or not 0 <= k < nz:
                raise DataError(
                    f"ROI {num} contour {n + 1} does not lie on a slice of the image grid "
                    f"{grid.spatial_shape}; resampling structures is not supported",
                    file=p,
                    field="ContourData",
                )
            lo = np.clip(np.floor(idx[:, :2].min(axis=0)).astype(int), 0, [nx - 1, ny - 1])
            hi = np.clip(np.ceil(idx[:, :2].max(axis=0)).astype(int), 0, [nx - 1, ny - 1])
            ii, jj = np.meshgrid(
                np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij"
            )
            inside = _points_in_polygon(ii.astype(float), jj.astype(float), idx[:, :2])
            mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, k] ^= inside
        if not mask.any():
            continue
        clash = mask & (labels != 0)
        if clash.any():
            raise DataError(
                f"ROIs {int(labels[clash][0])} and {num} overlap; a label map needs disjoint "
                "lesions",
                file=p,
                field="ROIContourSequence",
            )
        labels[mask] = num
        rows.append(meta.get(num, {"label": num, "lesion_id": f"ROI{num}", "organ": "",
                                   "target": False, "nodal": False}))  # fmt: skip
    return Volume(labels, grid.affine.copy(), source=str(p)), rows


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


# --------------------------------------------------------------------------- import
_FOLDER = {
    "dwi": "dwi",
    "dce": "perf",
}


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
        Instance UID → suffix (``T2w``, ``dwi``, ``VFA``, ``dce``, ``MEGRE``, ``MESE``,
        ``IRT1``, ``T1w``), optionally with BIDS entities before it (``ce-ferumoxytol_MEGRE``
        names the file ``sub-…_ses-…_ce-ferumoxytol_MEGRE``), or ``skip``. When ``study_dir/study.yaml`` exists, its ``dicom.roles``
        are used too (the argument wins).
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

    Returns
    -------
    ImportReport

    Raises
    ------
    DataError
        The folder does not exist, holds no importable series, or the study exists.
    """
    import yaml

    from .deid import Pseudonymizer, identifiers_of, scrub

    src = Path(dicom_dir)
    out = Path(study_dir)
    config: dict[str, Any] = {}
    previous: dict[str, Any] = {}
    if (out / "study.yaml").exists():
        raw = yaml.safe_load((out / "study.yaml").read_text(encoding="utf-8")) or {}
        previous = raw if isinstance(raw, dict) else {}
        config = dict(previous.get("dicom") or {})
    if out.exists() and not overwrite:
        raise DataError("study folder exists (use overwrite=True / --overwrite)", file=out)
    all_roles = {**(config.get("roles") or {}), **dict(roles or {})}
    for pattern, value in all_roles.items():
        *ents, kind = str(value).split("_")
        if not kind or any(not re.fullmatch(r"[A-Za-z0-9]+-[A-Za-z0-9]+", e) for e in ents):
            raise DataError(
                f"role {value!r} for {pattern!r}: expected SUFFIX or entity-value_..._SUFFIX "
                "(e.g. dce, ce-ferumoxytol_MEGRE) or skip",
                field="roles",
            )
    if dce_baseline_frames is None and config.get("dce_baseline_frames") is not None:
        dce_baseline_frames = int(config["dce_baseline_frames"])
    scan = scan_dicom(src)
    problems = list(scan.problems)
    if merge_split:
        merged, notes = merge_split_series(scan.series)
        scan = ScanResult(merged, scan.segmentations, scan.problems)
        problems += notes
    mapping_path = (
        Path(mapping_file)
        if mapping_file is not None
        else out.parent / f"{out.name}-identifiers.tsv"
    )
    pseudo = Pseudonymizer(None if keep_identifiers else mapping_path)
    log_path = out.parent / f"{out.name}-import-dicom.log"
    if not keep_identifiers and _inside(mapping_path, out):
        raise DataError(
            "the identifier mapping must not be written inside the study folder",
            file=mapping_path,
        )

    # read every series first: nothing is written before all inputs are checked
    read: list[tuple[DicomSeries, SeriesData]] = []
    for s in scan.series:
        forced = _role_override(s, all_roles)
        if forced == "skip":
            continue
        entities, _, kind = (forced or "").rpartition("_")
        try:
            sd = read_series(
                s,
                suffix=kind or None,
                dce_baseline_frames=dce_baseline_frames,
                keep_identifiers=keep_identifiers,
            )
            sd.entities = entities
            read.append((s, sd))
            for note in sd.notes:
                problems.append(_problem("warning", s.files[0], "ImageType", note))
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
    if not read:
        raise DataError(
            "no importable MR series found" + "".join(f"\n  {p}" for p in problems), file=src
        )

    # subjects and visits
    visits: dict[str, dict[dt.date, list[tuple[DicomSeries, SeriesData]]]] = defaultdict(
        lambda: defaultdict(list)
    )
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
    order = sorted(visits, key=lambda k: (min(visits[k]), k))
    seg_refs = _segmentation_refs(scan.segmentations, problems)
    used_segs: set[Path] = set()
    out.parent.mkdir(parents=True, exist_ok=True)  # the temporary folder must be beside it
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    written: list[dict[str, Any]] = []
    manifest_subjects: dict[str, Any] = {}
    try:
        for key in order:
            ident = identifiers_of(patient_of[key].header)
            sid = _safe_label(key) if keep_identifiers else pseudo.subject_id(ident)
            manifest_subjects[sid] = {"visits": {}}
            for vi, date in enumerate(sorted(visits[key]), start=1):
                vid = f"{vi:02d}"
                manifest_subjects[sid]["visits"][vid] = {"date": date.isoformat()}
                vdir = tmp / f"sub-{sid}" / f"ses-{vid}"
                used: dict[tuple[str, str], int] = defaultdict(int)
                grids: list[tuple[DicomSeries, SeriesData]] = []
                for s, sd in visits[key][date]:
                    if not keep_identifiers:
                        # free-text fields sometimes carry the patient's name
                        ids = _identifier_values([s.header])
                        for k, v in sd.sidecar.items():
                            if isinstance(v, str):
                                sd.sidecar[k] = scrub(v, ids)
                    n_same = used[sd.entities, sd.suffix] = used[sd.entities, sd.suffix] + 1
                    ent_part = f"_{sd.entities}" if sd.entities else ""
                    run = "" if n_same == 1 else f"_run-{n_same}"
                    stem = f"sub-{sid}_ses-{vid}{ent_part}{run}_{sd.suffix}"
                    folder = vdir / _FOLDER.get(sd.suffix, "anat")
                    _write_series_files(folder, stem, sd)
                    grids.append((s, sd))
                    rel = f"{folder.relative_to(tmp)}/{stem}.nii.gz"
                    written.append(
                        {
                            "subject": sid,
                            "visit": vid,
                            "suffix": sd.suffix,
                            "file": rel,
                            "description": s.description,
                            "reason": sd.reason,
                        }
                    )
                    if not keep_identifiers:
                        pseudo.add_series(
                            ident,
                            subject=sid,
                            visit=vid,
                            file=rel,
                            study_uid=s.text("StudyInstanceUID"),
                            series_uid=s.uid,
                            accession=s.text("AccessionNumber"),
                            study_date=date.isoformat(),
                        )
                problems += _import_segmentations(seg_refs, used_segs, grids, tmp, sid, vid)
        for path in seg_refs:
            if path not in used_segs:
                problems.append(
                    _problem(
                        "warning",
                        path,
                        "ReferencedSeriesSequence",
                        "the segmentation references no imported series; skipped",
                    )
                )
        manifest: dict[str, Any] = {
            "name": name or out.name,
            "criteria": ["recist1.1"],
            "subjects": manifest_subjects,
        }
        _carry_over(previous, manifest, keep_name=name is None)
        if all_roles or dce_baseline_frames is not None:
            manifest["dicom"] = {}
            if all_roles:
                manifest["dicom"]["roles"] = all_roles
            if dce_baseline_frames is not None:
                manifest["dicom"]["dce_baseline_frames"] = int(dce_baseline_frames)
        text = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)
        (tmp / "study.yaml").write_text(
            "# written by tumorscope import-dicom; series kinds can be overridden with\n"
            "# dicom: {roles: {'<SeriesDescription glob>': T2w|dwi|VFA|dce|MEGRE|MESE|IRT1|skip}}\n"
            + text,
            encoding="utf-8",
        )
        report = ImportReport(
            out, log_path, None if keep_identifiers else mapping_path, written, problems
        )
        # the log names source files, whose paths often hold patient IDs or accession
        # numbers: it stays beside the study, with the site's mapping, not inside it
        log = "".join(f"{p}\n" for p in problems)
        atomic_write(log_path, lambda t: t.write_text(log, encoding="utf-8"))
        if not keep_identifiers:
            _check_no_identifiers(tmp, [patient_of[k].header for k in order])
            pseudo.write()
        if out.exists():
            old = out.with_name(f".{out.name}-old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


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


_IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
)


def _identifier_values(headers: Sequence[Any]) -> list[str]:
    values: list[str] = []
    for h in headers:
        for kw in _IDENTIFYING:
            v = getattr(h, kw, None)
            if v:
                values.append(str(v))
    return values


def _check_no_identifiers(root: Path, headers: Sequence[Any]) -> None:
    """Refuse a de-identified study in which a patient identifier appears."""
    from .deid import find_identifiers

    values = _identifier_values(headers)
    hits = find_identifiers(root, values, image_headers_only=True)
    if hits:
        path, value = hits[0]
        raise DataError(
            f"an identifier ({len(value)} characters) appears in the de-identified study; "
            "nothing was written",
            file=path.relative_to(root),
            field="de-identification",
        )


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
