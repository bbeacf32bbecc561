"""Find the DICOM MR series under a folder: records, header helpers, :func:`scan_dicom`.

Every file is read once (headers and the pixel-data length; pixel values are read later by
:func:`tumorscope.io.dicom.series.read_series`) and each 2-D image becomes a
:class:`DicomFrame`: a classic single-frame file gives one, an enhanced multi-frame object one
per frame (geometry and acquisition parameters from its functional groups).

Design decisions
----------------
* **Messy input.** Non-DICOM and truncated files are reported and skipped; duplicated instances
  (same SOP Instance UID) are reported and the duplicates skipped; objects that are not MR
  images, SEG or RT-STRUCT are reported and skipped. Problems are
  :class:`~tumorscope.errors.Problem` objects naming the file and the tag.
* **b-values** come from the MR Diffusion functional group, the standard ``DiffusionBValue``
  tag, or the vendor's private tag (Siemens ``(0019,100C)``, GE ``(0043,1039)`` less its
  ``10^9`` offset, Philips ``(2001,1003)``).
* **Siemens mosaic** images (``ImageType`` holding ``MOSAIC``) become one frame per tile:
  ``NumberOfImagesInMosaic`` and ``SliceNormalVector`` from the CSA image header
  ``(0029,1010)`` (read with nibabel's CSA parser), tiles of ``Rows / ceil(sqrt(n))`` pixels
  in row-major order; the position of tile ``k`` is the mosaic's ``ImagePositionPatient``
  moved to the centre offset of the first tile, plus ``k`` slice spacings along the CSA slice
  normal (which points head to foot for F>>H numbering, so both orders come out right).
* **Complex component** of an image: ``ComplexImageComponent``, else the third ``ImageType``
  value (the series reader keeps the magnitude images of a mixed series).
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError, Problem
from ...files import regular_file

__all__ = [
    "GE_BVALUE_OFFSET",
    "RTSTRUCT_STORAGE",
    "SEG_STORAGE",
    "DicomFrame",
    "DicomSeries",
    "ScanResult",
    "derived_image_type",
    "index_series",
    "lenient_values",
    "scan_dicom",
]

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_MR_STORAGE = {"1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1"}
#: PET Image Storage (classic single-frame PET; read by io/dicom/pet.py)
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
#: DICOM patient coordinates (LPS+) → tumorscope world coordinates (RAS+), and back
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: offset GE adds to the first value of (0043,1039) on many software versions
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
    #: Siemens mosaic: tile number of this slice and tiles per mosaic row (``rows``/``cols``
    #: are then the tile's size, the stored image is ``grid`` times larger each way)
    tile: int | None = None
    grid: int = 1
    #: DiffusionDirectionality (0018,9075): DIRECTIONAL, ISOTROPIC (a scanner's derived trace
    #: image inside a DTI series, as Philips writes it), NONE, BMATRIX
    directionality: str | None = None
    #: which scaling ``slope``/``intercept`` hold (see :func:`_scaling`)
    scaling: str = "none"

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


#: ImageType values (3rd value on) that name an image computed from others, not acquired
DERIVED_VALUES = frozenset(
    {"ADC", "EADC", "TRACE", "TRACEW", "FA", "COLFA", "SUB", "SUBTRACT", "SUBTRACTION", "MIP",
     "MINIP", "MNIP", "MPR", "CPR", "PROJECTION IMAGE", "CALC_BV", "EXP"}
)  # fmt: skip


def derived_image_type(header: Any) -> str | None:
    """The ``ImageType`` of a derived (computed, not acquired) image, or None.

    An image is derived when ``ImageType`` value 1 is ``DERIVED`` (PS3.3 C.7.6.1.1.2) or a
    later value names a computed image (:data:`DERIVED_VALUES`: ADC, TRACE(W), FA,
    subtraction, MIP, MPR …). Scanner maps (an ADC map, a subtraction, a MIP) are never taken
    as an acquired series.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> print(derived_image_type(NS(ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"])))
    DERIVED\\PRIMARY\\DIFFUSION\\ADC
    >>> derived_image_type(NS(ImageType=["ORIGINAL", "PRIMARY", "M", "ND"])) is None
    True
    """
    values = [str(x).strip().upper() for x in (getattr(header, "ImageType", None) or [])]
    if not values:
        return None
    if values[0] == "DERIVED" or any(v in DERIVED_VALUES for v in values[2:]):
        return "\\".join(values)
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


def _need(obj: Any, keyword: str, where: str, path: Path) -> Any:
    """A tag that must be there (DataError naming the file, the tag and the module if not)."""
    v = getattr(obj, keyword, None)
    if v is None or v == "":
        raise DataError(f"required tag is missing ({where})", file=path, field=keyword)
    return v


def _frames_from_dataset(ds: Any, path: Path) -> list[DicomFrame]:
    """The 2-D images of one MR object (raises DataError naming the missing tag)."""
    sop = str(_need(ds, "SOPInstanceUID", "SOP Common", path))
    rows = int(_need(ds, "Rows", "Image Pixel", path))
    cols = int(_need(ds, "Columns", "Image Pixel", path))
    if getattr(ds, "PerFrameFunctionalGroupsSequence", None) is None:
        frame = _classic_frame(ds, path, sop, rows, cols)
        image_type = [str(x).upper() for x in (getattr(ds, "ImageType", None) or [])]
        return _mosaic_tiles(ds, frame) if "MOSAIC" in image_type else [frame]
    return _enhanced_frames(ds, path, sop, rows, cols)


def _classic_frame(ds: Any, path: Path, sop: str, rows: int, cols: int) -> DicomFrame:
    """The image of a classic single-frame MR object."""
    ipp = _need(ds, "ImagePositionPatient", "Image Plane", path)
    iop = _need(ds, "ImageOrientationPatient", "Image Plane", path)
    ps = _need(ds, "PixelSpacing", "Image Plane", path)
    tpi = getattr(ds, "TemporalPositionIdentifier", None)
    return DicomFrame(
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
        component=_component(ds) or "M",
        directionality=_text(ds, "DiffusionDirectionality"),
        **_scaling(ds, ds, ds),
    )


#: Philips' floating-point scale slope: (2005,100E) in the block of this private creator
_PHILIPS_SCALE = (0x2005, "Philips MR Imaging DD 001", 0x0E)


def _philips_scale_slope(ds: Any) -> float | None:
    maker = str(getattr(ds, "Manufacturer", "")).upper()
    if "PHILIPS" not in maker:
        return None
    group, creator, offset = _PHILIPS_SCALE
    try:
        value = ds.private_block(group, creator)[offset].value
    except (KeyError, ValueError):
        return None
    if isinstance(value, bytes):  # implicit VR: the FL arrives as raw bytes
        value = np.frombuffer(value[:4], "<f4")[0] if len(value) >= 4 else None
    try:
        ss = float(next(iter(value)) if isinstance(value, list | tuple) else value)
    except (TypeError, ValueError, StopIteration):
        return None
    return ss if np.isfinite(ss) and ss != 0 else None


def _scaling(ds: Any, rescale: Any | None, rwvm: Any | None) -> dict[str, Any]:
    """Slope, intercept and name of the scaling from stored values to the values imported.

    In order: the Real World Value Mapping (0040,9096) when present (the standard's
    measurement values; ``rwvm`` is its sequence, or a dataset holding it); otherwise for
    Philips with a private scale slope SS (2005,100E) the floating-point value
    ``(SV × RS + RI) / (RS × SS)`` (as dcm2niix and Philips document it); otherwise the Rescale
    Slope / Intercept (0028,1053 / 0028,1052) of ``rescale``.
    """
    item = rwvm
    if item is not None and getattr(item, "RealWorldValueMappingSequence", None):
        item = item.RealWorldValueMappingSequence[0]
    if item is not None and _float(item, "RealWorldValueSlope") is not None:
        return {
            "slope": _float(item, "RealWorldValueSlope"),
            "intercept": _float(item, "RealWorldValueIntercept") or 0.0,
            "scaling": "RealWorldValueMapping (0040,9096)",
        }
    rs = 1.0 if rescale is None else (_float(rescale, "RescaleSlope") or 1.0)
    ri = 0.0 if rescale is None else (_float(rescale, "RescaleIntercept") or 0.0)
    ss = _philips_scale_slope(ds)
    if ss is not None:
        return {
            "slope": 1.0 / ss,
            "intercept": ri / (rs * ss),
            "scaling": "Philips private scale slope (2005,100E)",
        }
    name = "none" if (rs, ri) == (1.0, 0.0) else "RescaleSlope/RescaleIntercept (0028,1053/1052)"
    return {"slope": rs, "intercept": ri, "scaling": name}


def _text(ds: Any, keyword: str) -> str | None:
    value = str(getattr(ds, keyword, "") or "").strip().upper()
    return value or None


@contextmanager
def lenient_values() -> Iterator[None]:
    """Read DICOM values that break their VR's rules as they are, without pydicom's warning.

    Real headers do: a site-de-identified GE series (``dcm_qa_deident``) holds a 20-character
    Code Value (VR SH: at most 16) in its De-identification Method Code Sequence, and pydicom
    printed a ``UserWarning`` (its file and line, not the DICOM file) in the middle of the
    import's output. A value too long or with characters outside its VR's repertoire changes
    nothing tumorscope reads (it is kept as written), so the import turns pydicom's reading
    validation off while it runs (:data:`pydicom.config.settings.reading_validation_mode`,
    restored afterwards; the writing validation of the objects ``export-dicom`` writes stays
    on). Also a decorator.
    """
    from pydicom import config

    before = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    try:
        yield
    finally:
        config.settings.reading_validation_mode = before


def _csareader() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel.nicom warns that its readers are experimental
        from nibabel.nicom import csareader
    return csareader


def _csa_image_header(ds: Any, path: Path) -> dict[str, Any]:
    csareader = _csareader()
    try:
        csa = csareader.get_csa_header(ds, "image")
    except Exception as exc:  # a damaged CSA header raises nibabel's CSAReadError or others
        raise DataError(
            f"unreadable Siemens CSA image header ({type(exc).__name__}: {exc})",
            file=path,
            field="CSAImageHeaderInfo (0029,1010)",
        ) from exc
    if csa is None:
        raise DataError(
            "Siemens mosaic without a CSA image header: the slice positions are unknown",
            file=path,
            field="CSAImageHeaderInfo (0029,1010)",
        )
    return dict(csa)


def _mosaic_tiles(ds: Any, frame: DicomFrame) -> list[DicomFrame]:
    """The slices (tiles) of a Siemens mosaic image, each with its own position."""
    csareader = _csareader()

    path = frame.path
    csa = _csa_image_header(ds, path)
    try:
        n = int(csareader.get_n_mosaic(csa))
        normal = np.asarray(csareader.get_slice_normal(csa), dtype=float)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(
            f"Siemens mosaic: {type(exc).__name__} reading the CSA image header",
            file=path,
            field="NumberOfImagesInMosaic",
        ) from exc
    grid = int(np.ceil(np.sqrt(n)))
    if n < 1 or frame.rows % grid or frame.cols % grid or normal.shape != (3,):
        raise DataError(
            f"Siemens mosaic: {n} images do not tile a {frame.rows}x{frame.cols} image",
            file=path,
            field="NumberOfImagesInMosaic",
        )
    spacing = _float(ds, "SpacingBetweenSlices") or _float(ds, "SliceThickness")
    if spacing is None:
        raise DataError(
            "Siemens mosaic without SpacingBetweenSlices or SliceThickness",
            file=path,
            field="SpacingBetweenSlices",
        )
    rows, cols = frame.rows // grid, frame.cols // grid
    row_dir, col_dir = frame.orientation[:3], frame.orientation[3:]
    # ImagePositionPatient is the centre of the mosaic's first pixel: move it to the first
    # tile's first pixel (as nibabel's MosaicWrapper and dcm2niix do)
    first = (
        frame.position
        + col_dir * frame.spacing[0] * (frame.rows - rows) / 2
        + row_dir * frame.spacing[1] * (frame.cols - cols) / 2
    )
    normal = normal / np.linalg.norm(normal)
    return [
        dataclasses.replace(
            frame,
            sop_uid=f"{frame.sop_uid}#tile{k}",
            position=first + k * spacing * normal,
            rows=rows,
            cols=cols,
            tile=k,
            grid=grid,
        )
        for k in range(n)
    ]


def _enhanced_frames(ds: Any, path: Path, sop: str, rows: int, cols: int) -> list[DicomFrame]:
    """The frames of an enhanced (multi-frame) MR object, from its functional groups."""
    nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
    pfg = ds.PerFrameFunctionalGroupsSequence
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
                position=np.array(
                    [float(x) for x in _need(pos, "ImagePositionPatient", where, path)]
                ),
                orientation=np.array(
                    [float(x) for x in _need(ori, "ImageOrientationPatient", where, path)]
                ),
                spacing=tuple(float(x) for x in _need(pm, "PixelSpacing", where, path)),  # type: ignore[arg-type]
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
                component=component or "M",
                **_scaling(ds, pvt, _group(item, sfg, "RealWorldValueMappingSequence")),
                directionality=None if diff is None else _text(diff, "DiffusionDirectionality"),
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
    :func:`read_series`). Images are grouped by Series Instance UID and Series Number. Files that are not DICOM, are truncated, are not MR images, SEG or
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
    root = Path(folder)
    if not root.is_dir():
        raise DataError("DICOM folder does not exist", file=root)
    problems: list[Problem] = []
    series: dict[str, DicomSeries] = {}
    segs: list[Path] = []
    seen: dict[str, Path] = {}
    for path in _walk(root):
        ds = _read_file(path, problems)
        if ds is None:
            continue
        sop_class = str(getattr(ds, "SOPClassUID", ""))
        if sop_class in (SEG_STORAGE, RTSTRUCT_STORAGE):
            segs.append(path)
            continue
        if sop_class not in _MR_STORAGE and sop_class != PET_STORAGE:
            problems.append(
                _problem(
                    "warning",
                    path,
                    "SOPClassUID",
                    f"not an MR or PET image, SEG or RT-STRUCT object ({sop_class or 'missing'}); skipped",
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
        # one Series Instance UID under several Series Numbers (the same image saved once per
        # transfer syntax, as in dcm_qa_ts) is several series, as dcm2niix takes it
        key = f"{uid}#{getattr(ds, 'SeriesNumber', '')}"
        if key not in series:
            if "PixelData" in ds:
                del ds.PixelData
            series[key] = DicomSeries(uid, ds)
        if frames:
            series[key].frames.extend(frames)
        else:
            # the series is incomplete: it is rejected at import (a lost end slice cannot be
            # told from the positions of the others)
            series[key].damaged.append(path)
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


def _read_file(path: Path, problems: list[Problem]) -> Any | None:
    """The dataset of a file, or None (reported in ``problems``) when it is not readable DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # a named pipe among the files would block the open below forever
        regular_file(path)
        return pydicom.dcmread(path)
    except DataError as exc:
        problems.append(_problem("warning", path, "", f"{exc.message}; skipped"))
    except InvalidDicomError:
        problems.append(
            _problem("warning", path, "", "not a DICOM file (no DICM preamble); skipped")
        )
    except Exception as exc:  # pydicom raises many types for damaged files
        problems.append(
            _problem(
                "warning",
                path,
                "",
                f"cannot read DICOM file ({type(exc).__name__}: {exc}); skipped",
            )
        )
    return None


def index_series(folder: str | Path) -> dict[str, list[Path]]:
    """Series Instance UID → files, reading only that tag of each file (fast).

    Files that are not readable DICOM are ignored (use :func:`scan_dicom` to have them
    reported).
    """
    import pydicom

    index: dict[str, list[Path]] = defaultdict(list)
    for path in _walk(Path(folder)):
        try:
            regular_file(path)
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
            uid = str(ds.SeriesInstanceUID)
        except Exception:
            continue
        index[uid].append(path)
    return dict(index)
