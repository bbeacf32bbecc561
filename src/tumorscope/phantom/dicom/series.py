"""Write one synthetic DICOM MR series from a volume (:func:`write_series`).

A :class:`~tumorscope.volume.Volume` and its acquisition protocol become an MR series in the
style of one vendor, either as classic single-frame MR Image Storage objects (one file per slice
and measurement) or as one Enhanced MR Image Storage object (multi-frame, functional groups).

Design decisions
----------------
* **Geometry.** The volume's affine is RAS+ (nibabel); DICOM patient coordinates are LPS+.
  Voxel ``(i, j, k)`` is written as column ``i``, row ``j`` of the ``k``-th slice, so
  ``ImageOrientationPatient`` is the LPS direction of the first and second affine columns,
  ``PixelSpacing`` is ``[row spacing (|col 2|), column spacing (|col 1|)]`` and
  ``ImagePositionPatient`` of slice ``k`` is ``A_lps @ (0, 0, k, 1)``.
* **Values.** Pixel data are written exactly as given: integer data only (like scanner data),
  unsigned 16-bit when all values are >= 0, signed otherwise, no rescale slope/intercept.
  Non-integral data are refused rather than silently quantised.
* **Vendor styles** differ where real scanners differ, so that the importer is exercised on
  each: manufacturer and model names; where the b-value lives (Siemens ``(0019,100C)``, GE
  ``(0043,1039)`` whose first value carries the well-known ``+ 1 000 000 000`` offset, Philips
  ``(2001,1003)``, and/or the standard ``DiffusionBValue (0018,9087)``); and how dynamic frames
  are timed (Siemens: ``AcquisitionTime`` only; GE: ``TriggerTime``; Philips:
  ``TemporalPositionIdentifier`` plus ``TriggerTime``).
* **File names** are hashes of the SOP Instance UID, so nothing can be learned from their
  order; UIDs are derived deterministically from the inputs, so the same call writes the same
  bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ... import protocol as proto
from ...errors import DataError
from ...volume import Volume, atomic_write

__all__ = ["VENDORS", "SynthPatient", "SynthStudy", "lps_affine", "oblique_affine", "write_series"]

Vendor = Literal["siemens", "ge", "philips"]
VENDORS: tuple[str, ...] = ("siemens", "ge", "philips")

_VENDOR_INFO: dict[str, dict[str, str]] = {
    "siemens": {"Manufacturer": "SIEMENS", "ManufacturerModelName": "MAGNETOM Skyra"},
    "ge": {"Manufacturer": "GE MEDICAL SYSTEMS", "ManufacturerModelName": "SIGNA Premier"},
    "philips": {"Manufacturer": "Philips Medical Systems", "ManufacturerModelName": "Ingenia"},
}
_PRIVATE_CREATOR = {
    "siemens": (0x0019, "SIEMENS MR HEADER"),
    "ge": (0x0043, "GEMS_PARM_01"),
    "philips": (0x2001, "Philips Imaging DD 001"),
}
#: offset GE adds to the first value of (0043,1039) on many software versions
GE_BVALUE_OFFSET = 1_000_000_000

_SERIES_TEXT = {
    "T2w": ("t2_tse_tra", "SE", "T2 weighted axial"),
    "T1w": ("t1_vibe_tra", "GR", "T1 weighted axial"),
    "dwi": ("ep2d_diff_tra", "EP", "Diffusion weighted"),
    "VFA": ("t1_vibe_vfa", "GR", "Variable flip angle"),
    "dce": ("t1_vibe_dyn", "GR", "DCE dynamic"),
    "dsc": ("ep2d_perf", "EP", "DSC perfusion"),
    "MEGRE": ("gre_me_t2star", "GR", "Multi-echo GRE"),
    "MESE": ("se_mc_t2", "SE", "Multi-echo SE"),
    "IRT1": ("tse_ir_t1map", "IR", "Inversion recovery"),
}

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


@dataclass(frozen=True)
class SynthPatient:
    """The (fictitious) identity written into a synthetic series."""

    name: str = "DOE^JANE"
    patient_id: str = "PAT0001"
    birth_date: str = "19610415"
    sex: str = "F"


@dataclass(frozen=True)
class SynthStudy:
    """A synthetic imaging study (one visit): patient, date, accession number, UIDs.

    UIDs default to values derived deterministically from the patient and the date.
    """

    patient: SynthPatient = field(default_factory=SynthPatient)
    date: dt.date = dt.date(2026, 1, 5)
    time: dt.time = dt.time(9, 30, 0)
    accession: str = "ACC0001"
    description: str = "MR abdomen with contrast"
    institution: str = "Synthetic General Hospital"
    field_strength_t: float = 3.0
    study_uid: str = ""
    frame_of_reference_uid: str = ""

    def __post_init__(self) -> None:
        key = f"{self.patient.patient_id}|{self.date.isoformat()}|{self.accession}"
        if not self.study_uid:
            object.__setattr__(self, "study_uid", _uid(key, "study"))
        if not self.frame_of_reference_uid:
            object.__setattr__(self, "frame_of_reference_uid", _uid(key, "for"))


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def lps_affine(ras_affine: np.ndarray) -> np.ndarray:
    """RAS+ voxel-to-world affine → the LPS+ affine of DICOM (flip the first two world axes)."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(ras_affine, dtype=float)


def oblique_affine(
    *,
    angles_deg: tuple[float, float, float] = (10.0, -20.0, 30.0),
    voxel_mm: tuple[float, float, float] = (1.5, 2.0, 4.0),
    origin_mm: tuple[float, float, float] = (-20.0, 15.0, 30.0),
) -> np.ndarray:
    """A RAS+ affine rotated about x, y and z (in that order), with anisotropic voxels.

    Test series written on it exercise every sign and axis of the LPS/RAS conversion.
    """
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rz @ ry @ rx @ np.diag(voxel_mm)
    a[:3, 3] = origin_mm
    return a


def _ds(value: float) -> str:
    """A DICOM DS string (at most 16 characters) for a float."""
    for digits in range(12, 4, -1):
        s = f"{value:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{value:.4g}"


def _tm(seconds: float) -> str:
    """Seconds since midnight → DICOM TM ``HHMMSS.FFFFFF`` (past midnight wraps, as on a
    scanner)."""
    us = round(seconds * 1e6) % 86_400_000_000
    h, rem = divmod(us, 3_600_000_000)
    m, rem = divmod(rem, 60_000_000)
    s, us = divmod(rem, 1_000_000)
    return f"{h:02d}{m:02d}{s:02d}.{us:06d}"


@dataclass(frozen=True)
class _VolumeParams:
    """Acquisition parameters of one volume (4th-axis index) of a series."""

    te_ms: float | None
    tr_ms: float | None
    flip_deg: float | None
    ti_ms: float | None
    b: float | None
    time_s: float | None
    temporal_index: int | None
    echo_number: int


def _volume_params(
    suffix: str,
    protocol: proto.Protocol | None,
    n: int,
    *,
    te_ms: float | None,
    tr_ms: float | None,
) -> list[_VolumeParams]:
    p = protocol
    out: list[_VolumeParams] = []
    for v in range(n):
        kw: dict[str, Any] = {
            "te_ms": te_ms,
            "tr_ms": tr_ms,
            "flip_deg": None,
            "ti_ms": None,
            "b": None,
            "time_s": None,
            "temporal_index": None,
            "echo_number": 1,
        }
        if isinstance(p, proto.DiffusionProtocol):
            kw["b"] = p.bvalues[v]
        elif isinstance(p, proto.VFAProtocol):
            kw["flip_deg"], kw["tr_ms"] = p.flip_angles_deg[v], p.tr_ms
        elif isinstance(p, proto.DynamicProtocol):
            kw.update(
                flip_deg=p.flip_angle_deg,
                tr_ms=p.tr_ms,
                time_s=p.frame_times_s[v],
                temporal_index=v + 1,
                te_ms=p.te_ms if p.te_ms is not None else te_ms,
            )
        elif isinstance(p, proto.MultiEchoProtocol):
            kw.update(
                te_ms=p.echo_times_ms[v],
                tr_ms=p.tr_ms,
                flip_deg=p.flip_angle_deg,
                echo_number=v + 1,
            )
        elif isinstance(p, proto.InversionRecoveryProtocol):
            kw.update(ti_ms=p.inversion_times_ms[v], tr_ms=p.tr_ms)
        out.append(_VolumeParams(**kw))
    return out


def _check_inputs(volume: Volume, suffix: str, protocol: proto.Protocol | None) -> np.ndarray:
    data = volume.data
    if data.ndim == 3:
        data = data[..., None]
    if protocol is not None and protocol.n_measurements != data.shape[3]:
        raise DataError(
            f"volume has {data.shape[3]} measurement(s) but the protocol lists "
            f"{protocol.n_measurements}",
            file=volume.source,
            field="protocol",
        )
    if protocol is None and data.shape[3] != 1:
        raise DataError(
            f"a {data.shape[3]}-volume series needs a protocol", file=volume.source, field=suffix
        )
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        raise DataError(
            "synthetic DICOM holds integer pixel data only (like scanner data); round first",
            file=volume.source,
            field="data",
        )
    lo, hi = float(data.min()), float(data.max())
    if lo < -32768 or hi > 65535 or (lo < 0 and hi > 32767):
        raise DataError(
            f"values {lo:g}..{hi:g} do not fit 16 bits", file=volume.source, field="data"
        )
    return data


def _base_dataset(
    study: SynthStudy,
    vendor: str,
    *,
    suffix: str,
    series_uid: str,
    series_number: int,
    description: str,
) -> Any:
    from pydicom.dataset import Dataset

    seq_name, scanning_seq, _ = _SERIES_TEXT.get(suffix, ("sequence", "GR", suffix))
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = "MR"
    ds.PatientName = study.patient.name
    ds.PatientID = study.patient.patient_id
    ds.PatientBirthDate = study.patient.birth_date
    ds.PatientSex = study.patient.sex
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.date.strftime("%Y%m%d")
    t0 = study.time.hour * 3600 + study.time.minute * 60 + study.time.second
    ds.StudyTime = _tm(t0)
    ds.StudyID = "1"
    ds.AccessionNumber = study.accession
    ds.StudyDescription = study.description
    ds.ReferringPhysicianName = "SMITH^JOHN"
    ds.InstitutionName = study.institution
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = _tm(t0 + 60 * series_number)
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.BodyPartExamined = "ABDOMEN"
    for k, v in _VENDOR_INFO[vendor].items():
        setattr(ds, k, v)
    ds.SoftwareVersions = "tumorscope-synth"
    ds.DeviceSerialNumber = "12345"
    ds.StationName = "SYNTHMR01"
    ds.MagneticFieldStrength = _ds(study.field_strength_t)
    ds.ImagingFrequency = _ds(42.577478 * study.field_strength_t)
    ds.ImagedNucleus = "1H"
    ds.ScanningSequence = scanning_seq
    ds.SequenceVariant = "SP" if scanning_seq == "GR" else "SK"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D" if scanning_seq == "GR" else "2D"
    ds.SequenceName = seq_name
    ds.ProtocolName = seq_name
    return ds


def _set_pixels(ds: Any, frames: np.ndarray) -> None:
    signed = bool(frames.min() < 0)
    arr = frames.astype(np.int16 if signed else np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.Rows = int(arr.shape[-2])
    ds.Columns = int(arr.shape[-1])
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def _add_private_b(ds: Any, vendor: str, b: float) -> None:
    group, creator = _PRIVATE_CREATOR[vendor]
    block = ds.private_block(group, creator, create=True)
    if vendor == "siemens":
        block.add_new(0x0C, "IS", str(round(b)))
    elif vendor == "ge":
        block.add_new(0x39, "IS", [str(round(b) + GE_BVALUE_OFFSET), "8", "0", "0"])
    else:
        block.add_new(0x03, "FL", float(b))


def write_series(
    volume: Volume,
    out_dir: str | Path,
    *,
    suffix: str,
    protocol: proto.Protocol | None = None,
    study: SynthStudy | None = None,
    vendor: str = "siemens",
    enhanced: bool = False,
    series_number: int = 1,
    series_description: str | None = None,
    bvalue_tags: Literal["vendor", "standard", "both"] = "both",
    echo_time_ms: float | None = None,
    repetition_time_ms: float | None = None,
) -> list[Path]:
    """Write a volume as a DICOM MR series in the style of one vendor.

    Parameters
    ----------
    volume : Volume
        3-D or 4-D image (RAS+ affine) holding integer values (scanner-like data).
    out_dir : path-like
        Folder the files are written to (created if needed); file names are hashes.
    suffix : str
        Series kind as in the study format: ``T2w``, ``dwi``, ``VFA``, ``dce``, ``MEGRE``,
        ``MESE``, ``IRT1`` (sets sequence names and which fields are written).
    protocol : Protocol, optional
        Acquisition protocol of a 4-D series (b-values, flip angles, frame times, echo times,
        inversion times are written per volume). Required for 4-D volumes.
    study : SynthStudy, optional
        Patient and study identity, date and UIDs (default: a fictitious patient).
    vendor : {"siemens", "ge", "philips"}
        Header style (manufacturer, private b-value tag, dynamic timing tags).
    enhanced : bool
        Write one Enhanced MR Image object (multi-frame) instead of one file per slice.
    series_number : int
        Series number (also seeds the series UID).
    series_description : str, optional
        Default: the vendor-neutral sequence name of ``suffix``.
    bvalue_tags : {"vendor", "standard", "both"}
        Where b-values are written: the vendor's private tag, ``DiffusionBValue (0018,9087)``
        or both. Enhanced objects always carry the standard MR Diffusion functional group.
    echo_time_ms, repetition_time_ms : float, optional
        TE and TR of series whose protocol does not hold them (e.g. ``T2w``).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    DataError
        Non-integer or out-of-range data, or a protocol that does not match the 4th axis.
    """
    if vendor not in VENDORS:
        raise DataError(f"unknown vendor {vendor!r}; expected one of {VENDORS}", field="vendor")
    if bvalue_tags not in ("vendor", "standard", "both"):
        raise DataError(
            f"bvalue_tags must be 'vendor', 'standard' or 'both', got {bvalue_tags!r}",
            field="bvalue_tags",
        )
    study = study or SynthStudy()
    data = _check_inputs(volume, suffix, protocol)
    _nx, _ny, nz, nv = data.shape
    params = _volume_params(suffix, protocol, nv, te_ms=echo_time_ms, tr_ms=repetition_time_ms)
    series_uid = _uid(study.study_uid, series_number, suffix, "series")
    description = series_description or _SERIES_TEXT.get(suffix, (suffix,))[0]
    A = lps_affine(volume.affine)
    col_sp, row_sp, _ = (float(np.linalg.norm(A[:3, c])) for c in range(3))
    iop = [*(A[:3, 0] / col_sp), *(A[:3, 1] / row_sp)]
    normal = np.cross(A[:3, 0], A[:3, 1])
    normal /= np.linalg.norm(normal)
    slice_gap = float(abs(A[:3, 2] @ normal))
    positions = [A @ np.array([0.0, 0.0, k, 1.0]) for k in range(nz)]
    plane = _Plane(iop, positions, (row_sp, col_sp), slice_gap, normal)
    out = Path(out_dir)
    base = _base_dataset(
        study,
        vendor,
        suffix=suffix,
        series_uid=series_uid,
        series_number=series_number,
        description=description,
    )
    t_series = study.time.hour * 3600 + study.time.minute * 60 + 60.0 * series_number
    series = _Series(base, data, out, vendor, params, plane, t_series)
    if enhanced:
        return [_write_enhanced(series)]
    return _write_classic(series, bvalue_tags=bvalue_tags, suffix=suffix)


def _file_meta(sop_class: str, sop_uid: str) -> Any:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta: Any = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = "TUMORSCOPE"
    return meta


def _save(ds: Any, out: Path) -> Path:
    name = hashlib.sha1(str(ds.SOPInstanceUID).encode()).hexdigest()[:16] + ".dcm"
    path = out / name

    def _w(tmp: Path) -> None:
        ds.save_as(tmp, enforce_file_format=True)

    atomic_write(path, _w)
    return path


@dataclass(frozen=True)
class _Plane:
    """Slice geometry in DICOM terms (LPS)."""

    iop: list[float]
    positions: list[np.ndarray]
    spacing: tuple[float, float]  # (row spacing, column spacing)
    slice_gap: float
    normal: np.ndarray


@dataclass(frozen=True)
class _Series:
    """What both writers need: the shared header, the data and where and how to write them."""

    base: Any  # pydicom Dataset with the patient, study, series and equipment modules
    data: np.ndarray  # (x, y, z, volume)
    out: Path
    vendor: str
    params: list[_VolumeParams]
    plane: _Plane
    t_series: float  # series start, seconds since midnight


def _write_classic(series: _Series, *, bvalue_tags: str, suffix: str) -> list[Path]:
    import copy

    base, data, out, vendor = series.base, series.data, series.out, series.vendor
    params, plane, t_series = series.params, series.plane, series.t_series
    nz, nv = data.shape[2], data.shape[3]
    paths: list[Path] = []
    instance = 0
    n_temporal = sum(1 for p in params if p.temporal_index is not None)
    for v, p in enumerate(params):
        for k in range(nz):
            instance += 1
            ds = copy.deepcopy(base)
            ds.SOPClassUID = MR_IMAGE_STORAGE
            ds.SOPInstanceUID = _uid(base.SeriesInstanceUID, v, k)
            ds.file_meta = _file_meta(MR_IMAGE_STORAGE, ds.SOPInstanceUID)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION" if p.b is not None else "M", "ND"]
            ds.InstanceNumber = instance
            ds.AcquisitionNumber = v + 1
            # slices of one volume are acquired 10 ms apart; volumes follow the protocol time
            t_vol = p.time_s if p.time_s is not None else 2.0 * v
            t_acq = t_series + t_vol + 0.01 * k
            ds.AcquisitionDate = base.StudyDate
            ds.AcquisitionTime = _tm(t_acq)
            ds.ContentDate = base.StudyDate
            ds.ContentTime = _tm(t_acq)
            ds.ImagePositionPatient = [_ds(float(x)) for x in plane.positions[k][:3]]
            ds.ImageOrientationPatient = [_ds(float(x)) for x in plane.iop]
            ds.SliceLocation = _ds(float(plane.positions[k][:3] @ plane.normal))
            ds.PixelSpacing = [_ds(plane.spacing[0]), _ds(plane.spacing[1])]
            ds.SliceThickness = _ds(plane.slice_gap)
            ds.SpacingBetweenSlices = _ds(plane.slice_gap)
            if p.tr_ms is not None:
                ds.RepetitionTime = _ds(p.tr_ms)
            if p.te_ms is not None:
                ds.EchoTime = _ds(p.te_ms)
            if p.flip_deg is not None:
                ds.FlipAngle = _ds(p.flip_deg)
            if p.ti_ms is not None:
                ds.InversionTime = _ds(p.ti_ms)
            ds.EchoNumbers = p.echo_number
            if suffix in ("MEGRE", "MESE"):
                ds.EchoTrainLength = nv
            if p.temporal_index is not None:
                # vendors time dynamics differently; the importer must cope with each
                if vendor in ("ge", "philips"):
                    ds.TriggerTime = _ds(1e3 * float(p.time_s or 0.0))
                if vendor == "philips":
                    ds.TemporalPositionIdentifier = p.temporal_index
                    ds.NumberOfTemporalPositions = n_temporal
            if p.b is not None:
                if bvalue_tags in ("standard", "both"):
                    ds.add_new(0x00189087, "FD", float(p.b))
                    ds.add_new(0x00189075, "CS", "ISOTROPIC" if p.b > 0 else "NONE")
                if bvalue_tags in ("vendor", "both"):
                    _add_private_b(ds, vendor, p.b)
            _set_pixels(ds, data[:, :, k, v].T)
            paths.append(_save(ds, out))
    return paths


def _seq(**items: Any) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    for k, v in items.items():
        setattr(item, k, v)
    return DicomSequence([item])


def _write_enhanced(series: _Series) -> Path:
    from pydicom.sequence import Sequence as DicomSequence

    data, params, base = series.data, series.params, series.base
    nz = data.shape[2]
    ds = base
    ds.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.SOPInstanceUID = _uid(base.SeriesInstanceUID, "enhanced")
    ds.file_meta = _file_meta(ENHANCED_MR_IMAGE_STORAGE, ds.SOPInstanceUID)
    _enhanced_modules(ds, series)
    per_frame = DicomSequence()
    frames = []
    # frames are stored volume-major but in reverse slice order, so that the importer has to
    # sort them by position (as it must for Philips objects stored in acquisition order)
    for v, p in enumerate(params):
        for k in reversed(range(nz)):
            per_frame.append(_frame_groups(series, p, v, k))
            frames.append(data[:, :, k, v].T)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    _set_pixels(ds, np.stack(frames))
    return _save(ds, series.out)


def _enhanced_modules(ds: Any, series: _Series) -> None:
    """The Enhanced MR image and multi-frame modules, dimensions and shared functional groups."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    base, plane, t_series = series.base, series.plane, series.t_series
    nz, nv = series.data.shape[2], series.data.shape[3]
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.ContentDate = base.StudyDate
    ds.ContentTime = _tm(t_series)
    ds.AcquisitionDateTime = base.StudyDate + _tm(t_series)
    ds.NumberOfFrames = nz * nv
    ds.ContentQualification = "RESEARCH"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = base.MagneticFieldStrength
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    # the MR Pulse Sequence module: Enhanced MR objects have no ScanningSequence /
    # SequenceVariant (the importer reads the echo type and EPI from these)
    scanning = str(base.ScanningSequence)
    del ds.ScanningSequence, ds.SequenceVariant
    ds.PulseSequenceName = base.SequenceName
    ds.EchoPulseSequence = "GRADIENT" if scanning in ("GR", "EP") else "SPIN"
    ds.EchoPlanarPulseSequence = "YES" if scanning == "EP" else "NO"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "DIFFUSION" if series.params[0].b is not None else "UNKNOWN"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    dim_org_uid = _uid(base.SeriesInstanceUID, "dimorg")
    ds.DimensionOrganizationSequence = _seq(DimensionOrganizationUID=dim_org_uid)
    dims = DicomSequence()
    for pointer, group_ptr, desc in (
        (0x00200032, 0x00209113, "Image Position"),
        (0x00209128, 0x00209111, "Temporal Position Index"),
    ):
        item = Dataset()
        item.DimensionOrganizationUID = dim_org_uid
        item.DimensionIndexPointer = pointer
        item.FunctionalGroupPointer = group_ptr
        item.DimensionDescriptionLabel = desc
        dims.append(item)
    ds.DimensionIndexSequence = dims
    shared = Dataset()
    shared.PixelMeasuresSequence = _seq(
        PixelSpacing=[_ds(plane.spacing[0]), _ds(plane.spacing[1])],
        SliceThickness=_ds(plane.slice_gap),
        SpacingBetweenSlices=_ds(plane.slice_gap),
    )
    shared.PlaneOrientationSequence = _seq(
        ImageOrientationPatient=[_ds(float(x)) for x in plane.iop]
    )
    shared.PixelValueTransformationSequence = _seq(
        RescaleIntercept="0", RescaleSlope="1", RescaleType="US"
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])


def _frame_groups(series: _Series, p: _VolumeParams, v: int, k: int) -> Any:
    """The per-frame functional groups of slice ``k`` of volume ``v``."""
    from pydicom.dataset import Dataset

    base, plane, t_series = series.base, series.plane, series.t_series
    fg = Dataset()
    t_vol = p.time_s if p.time_s is not None else 2.0 * v
    fg.FrameContentSequence = _seq(
        FrameAcquisitionDateTime=base.StudyDate + _tm(t_series + t_vol + 0.01 * k),
        StackID="1",
        InStackPositionNumber=k + 1,
        TemporalPositionIndex=v + 1,
        DimensionIndexValues=[k + 1, v + 1],
        FrameAcquisitionNumber=v + 1,
    )
    fg.PlanePositionSequence = _seq(
        ImagePositionPatient=[_ds(float(x)) for x in plane.positions[k][:3]]
    )
    timing: dict[str, Any] = {}
    if p.tr_ms is not None:
        timing["RepetitionTime"] = _ds(p.tr_ms)
    if p.flip_deg is not None:
        timing["FlipAngle"] = _ds(p.flip_deg)
    if timing:
        fg.MRTimingAndRelatedParametersSequence = _seq(**timing)
    if p.te_ms is not None:
        fg.MREchoSequence = _seq(EffectiveEchoTime=float(p.te_ms))
    if p.ti_ms is not None:
        fg.MRModifierSequence = _seq(InversionRecovery="YES", InversionTimes=[float(p.ti_ms)])
    if p.b is not None:
        fg.MRDiffusionSequence = _seq(
            DiffusionBValue=float(p.b),
            DiffusionDirectionality="ISOTROPIC" if p.b > 0 else "NONE",
        )
    if p.temporal_index is not None and series.vendor in ("ge", "philips"):
        fg.CardiacSynchronizationSequence = _seq(
            NominalCardiacTriggerDelayTime=1e3 * float(p.time_s or 0.0)
        )
    return fg
