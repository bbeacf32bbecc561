"""PET series (Modality PT) read into Bq/mL with a BIDS-PET sidecar.

:func:`read_pet_series` is the PET counterpart of :func:`~tumorscope.io.dicom.series.read_series`
(same geometry: :func:`~tumorscope.io.dicom.series._layout`, per-slice rescale applied by
:func:`~tumorscope.io.dicom.series._read_pixels`); the importer calls it for series whose
Modality is ``PT``. What it reads (DICOM PS3.3 C.8.9.1 PET Series, C.8.9.4 PET Image):

* ``Units`` (0054,1001): ``BQML`` kept as is; ``CNTS`` (Philips) multiplied by the Philips
  private Activity Concentration Scale Factor (7053,1009), or, when only the SUV Scale Factor
  (7053,1000) is there, by it divided by the SUVbw factor; ``GML`` (an image already in
  SUVbw) divided by the SUVbw factor. The image on disk is always Bq/mL (BIDS-PET ``Units``),
  the original unit is kept in ``OriginalUnits``. Any other unit is refused.
* ``DecayCorrection`` (0054,1102) ``START``/``ADMIN``/``NONE``: the data are not re-corrected
  (no implicit rescaling); ``ImageDecayCorrected`` and ``ImageDecayCorrectionTime`` record
  what the scanner did, and ``SUVbwFactor`` (g/mL per Bq/mL, one per frame) folds the right
  decay in (:func:`tumorscope.units.suvbw_factor`).
* RadiopharmaceuticalInformationSequence (0054,0016): RadionuclideTotalDose (Bq),
  RadiopharmaceuticalStartDateTime (or SeriesDate + RadiopharmaceuticalStartTime, a day
  earlier when that time is after the scan: injection before midnight), RadionuclideHalfLife,
  Radiopharmaceutical and the radionuclide code.
* Per frame (the first slice of each volume): FrameReferenceTime (0054,1300),
  ActualFrameDuration (0018,1242), AcquisitionDate/Time, DecayFactor (0054,1321).
* Scan start (the time START refers to), as the QIBA FDG-PET/CT profile's vendor-neutral SUV
  pseudo-code does it: SeriesDate/SeriesTime when not after the earliest acquisition time;
  else GE's private scan date-time (0009,xx0D of ``GEMS_PETD_01``), GE's record of the
  acquisition start when post-processing rewrote the series time; else the earliest
  AcquisitionDate/Time (with a note).
* PatientWeight (kg), PatientSize (m), PatientSex: written as ``BodyWeight``, ``BodyHeight``,
  ``Sex``. SUV needs them, so the import keeps them as PS3.15's Retain Patient
  Characteristics Option does (a decision: without them the PET cannot be quantified).

Without a weight, a BQML series is still imported (no ``SUVbwFactor``, with a note); CNTS
with only the SUV scale factor and GML need it and are refused.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np

from ...errors import DataError
from ...units import suvbw_factor
from ...volume import Volume
from .scan import DicomFrame, DicomSeries, _float, _text
from .series import SeriesData, _header_fields, _layout, _read_pixels

__all__ = ["PET_SUFFIX", "PetHeader", "is_pet", "pet_timing", "read_pet_series"]

PET_SUFFIX = "pet"
_PHILIPS = (0x7053, "Philips PET Private Group")
_GE = (0x0009, "GEMS_PETD_01")


def is_pet(series: DicomSeries) -> bool:
    """True for a PET series (Modality PT)."""
    return series.text("Modality").strip().upper() == "PT"


def _parse_da_tm(da: Any, tm: Any) -> dt.datetime | None:
    if not da or not tm:
        return None
    return _parse_dt(f"{str(da).strip()}{str(tm).strip().replace(':', '')}")


def _parse_dt(value: Any) -> dt.datetime | None:
    """DICOM DT → naive datetime (a UTC offset is dropped: every time of a series shares it)."""
    if value is None:
        return None
    s = str(value).strip()
    for sep in ("+", "-"):
        if sep in s[8:]:
            s = s[: 8 + s[8:].index(sep)]
    if len(s) < 12:
        return None
    frac = 0.0
    if "." in s:
        s, f = s.split(".", 1)
        frac = float("0." + f) if f.isdigit() else 0.0
    s = s.ljust(14, "0")
    try:
        out = dt.datetime.strptime(s[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return out + dt.timedelta(seconds=frac)


def _private(ds: Any, block: tuple[int, str], offset: int) -> Any | None:
    try:
        value = ds.private_block(block[0], block[1])[offset].value
    except (KeyError, ValueError):
        return None
    if isinstance(value, bytes):  # implicit VR: a DS/DT arrives as text bytes
        return value.decode("ascii", "replace").strip("\x00 ")
    return value


class PetHeader:
    """The PET fields of a series: dose, times, units, patient size (see the module doc)."""

    def __init__(self, series: DicomSeries, frames: list[Any]) -> None:
        h = series.header
        where = str(series.files[0])
        self.where = where
        self.notes: list[str] = []
        self.units = (_text(h, "Units") or "").strip().upper()
        if self.units not in ("BQML", "CNTS", "GML"):
            raise DataError(
                f"PET Units {self.units or 'missing'!r} cannot be turned into Bq/mL "
                "(expected BQML, CNTS or GML)",
                file=where,
                field="Units",
            )
        self.decay = (_text(h, "DecayCorrection") or "").strip().upper()
        if self.decay not in ("START", "ADMIN", "NONE"):
            raise DataError(
                f"DecayCorrection {self.decay or 'missing'!r}; expected START, ADMIN or NONE",
                file=where,
                field="DecayCorrection",
            )
        seq = getattr(h, "RadiopharmaceuticalInformationSequence", None)
        if not seq:
            raise DataError(
                "no RadiopharmaceuticalInformationSequence: dose and injection time unknown",
                file=where,
                field="RadiopharmaceuticalInformationSequence",
            )
        rp = seq[0]
        self.dose_bq = _float(rp, "RadionuclideTotalDose")
        self.half_life_s = _float(rp, "RadionuclideHalfLife")
        for name, v in (
            ("RadionuclideTotalDose", self.dose_bq),
            ("RadionuclideHalfLife", self.half_life_s),
        ):
            if v is None or not math.isfinite(v) or v <= 0:
                raise DataError(f"{name} {v!r} is missing or not positive", file=where, field=name)
        self.tracer = _text(rp, "Radiopharmaceutical") or ""
        codes = getattr(rp, "RadionuclideCodeSequence", None)
        self.radionuclide = str(getattr(codes[0], "CodeMeaning", "")) if codes else ""
        self.frames = frames
        self.scan_start = self._scan_start(h)
        self.injection = self._injection(rp, h)
        if self.injection > self.scan_start:
            raise DataError(
                f"injection {self.injection.isoformat()} is after the scan start "
                f"{self.scan_start.isoformat()}",
                file=where,
                field="RadiopharmaceuticalStartDateTime",
            )
        self.weight_kg = _float(h, "PatientWeight")
        self.height_m = _float(h, "PatientSize")
        self.sex = (_text(h, "PatientSex") or "").strip().upper() or None
        if self.weight_kg is not None and not (0 < self.weight_kg < 700):
            raise DataError(
                f"PatientWeight {self.weight_kg} kg is impossible",
                file=where,
                field="PatientWeight",
            )

    def _scan_start(self, h: Any) -> dt.datetime:
        series_dt = _parse_da_tm(_text(h, "SeriesDate"), _text(h, "SeriesTime"))
        acq = [f["acquisition"] for f in self.frames if f["acquisition"] is not None]
        first = min(acq) if acq else None
        if series_dt is not None and (first is None or series_dt <= first):
            return series_dt
        ge = _parse_dt(_private(h, _GE, 0x0D))
        if ge is not None:
            self.notes.append(
                "SeriesTime is after the acquisition: scan start from GE's private scan "
                "date-time (0009,xx0D)"
            )
            return ge
        if first is not None:
            self.notes.append(
                "SeriesTime is after the acquisition (rewritten by post-processing?): scan "
                "start taken as the earliest AcquisitionDate/Time"
            )
            return first
        raise DataError(
            "no SeriesDate/SeriesTime or AcquisitionDate/Time: scan start unknown",
            file=self.where,
            field="SeriesTime",
        )

    def _injection(self, rp: Any, h: Any) -> dt.datetime:
        full = _parse_dt(_text(rp, "RadiopharmaceuticalStartDateTime"))
        if full is not None:
            return full
        tm = _text(rp, "RadiopharmaceuticalStartTime")
        if not tm:
            raise DataError(
                "no RadiopharmaceuticalStartDateTime or RadiopharmaceuticalStartTime",
                file=self.where,
                field="RadiopharmaceuticalStartTime",
            )
        t = _parse_da_tm(self.scan_start.strftime("%Y%m%d"), tm)
        if t is None:
            raise DataError(
                f"cannot read the time {tm!r}",
                file=self.where,
                field="RadiopharmaceuticalStartTime",
            )
        if t > self.scan_start:  # injected before midnight, scanned after it
            t -= dt.timedelta(days=1)
            self.notes.append("injection taken on the day before the scan (time after scan start)")
        return t

    def suv_factors(self) -> list[float] | None:
        """SUVbw factor (g/mL per Bq/mL) of every frame, or None without a weight."""
        if self.weight_kg is None:
            return None
        out = []
        for f in self.frames:
            t = self.scan_start
            dur = None
            if self.decay == "NONE":
                t = f["start"]
                dur = f["duration_s"]
            out.append(
                suvbw_factor(
                    injected_activity_bq=float(self.dose_bq),  # type: ignore[arg-type]
                    injection_time=self.injection,
                    scan_time=t,
                    half_life_s=float(self.half_life_s),  # type: ignore[arg-type]
                    weight_kg=self.weight_kg,
                    decay_correction=self.decay,
                    frame_duration_s=dur,
                )
            )
        return out


def _frame_header(first: DicomFrame) -> dict[str, Any]:
    import pydicom

    ds = pydicom.dcmread(first.path, stop_before_pixels=True)
    acq = _parse_dt(_text(ds, "AcquisitionDateTime")) or _parse_da_tm(
        _text(ds, "AcquisitionDate") or _text(ds, "SeriesDate"), _text(ds, "AcquisitionTime")
    )
    dur_ms = _float(ds, "ActualFrameDuration")
    return {
        "acquisition": acq,
        "reference_ms": _float(ds, "FrameReferenceTime"),
        "duration_s": None if dur_ms is None else dur_ms / 1000.0,
        "decay_factor": _float(ds, "DecayFactor"),
        "philips_suv": _num(_private(ds, _PHILIPS, 0x00)),
        "philips_bqml": _num(_private(ds, _PHILIPS, 0x09)),
        "file": str(first.path),
    }


def _num(v: Any) -> float | None:
    try:
        x = float(v[0] if isinstance(v, list | tuple) else v)
    except (TypeError, ValueError, IndexError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def pet_timing(series: DicomSeries) -> PetHeader:
    """The PET header of a series (reads one header per frame)."""
    volumes, _ = _layout(series)
    return PetHeader(series, [_frame_header(v[0]) for v in volumes])


def read_pet_series(series: DicomSeries, *, keep_identifiers: bool = False) -> SeriesData:
    """Read a PET series into Bq/mL with its BIDS-PET sidecar.

    Raises
    ------
    DataError
        Unknown Units / DecayCorrection, missing dose, half-life or times, a unit that needs
        the weight without one, or a Philips CNTS image without its scale factors; the
        message names the file and the tag.
    """
    volumes, affine = _layout(series)
    frames = [_frame_header(v[0]) for v in volumes]
    hdr = PetHeader(series, frames)
    for f in frames:
        acq = f["acquisition"]
        f["start"] = acq if (acq is not None and hdr.decay == "NONE") else hdr.scan_start
        if hdr.decay == "NONE" and acq is None:
            raise DataError(
                "DecayCorrection NONE needs each frame's AcquisitionDate/Time",
                file=f["file"],
                field="AcquisitionTime",
            )
    data = _read_pixels(volumes).astype(np.float64)
    factors = hdr.suv_factors()
    scale = []
    for i, f in enumerate(frames):
        if hdr.units == "BQML":
            scale.append(1.0)
        elif hdr.units == "CNTS":
            if f["philips_bqml"] is not None:
                scale.append(f["philips_bqml"])
            elif f["philips_suv"] is not None and factors is not None:
                scale.append(f["philips_suv"] / factors[i])
            else:
                raise DataError(
                    "Units CNTS without Philips' Activity Concentration Scale Factor "
                    "(7053,1009)" + ("" if factors else " and without a weight for (7053,1000)"),
                    file=f["file"],
                    field="Units",
                )
        else:  # GML: SUVbw
            if factors is None:
                raise DataError(
                    "Units GML (an SUV image) needs PatientWeight to be turned back into Bq/mL",
                    file=f["file"],
                    field="PatientWeight",
                )
            scale.append(1.0 / factors[i])
        data[..., i] *= scale[-1]
    notes = list(hdr.notes)
    if factors is None:
        notes.append("PatientWeight missing: imported in Bq/mL without an SUV factor")
    side = _header_fields(series, "Modality PT")
    side.update(_bids_pet(hdr, frames, factors))
    if keep_identifiers:
        side["SeriesInstanceUID"] = series.uid
        side["StudyInstanceUID"] = series.text("StudyInstanceUID")
        side["FrameOfReferenceUID"] = series.text("FrameOfReferenceUID")
    side = {k: v for k, v in side.items() if v is not None and v != ""}
    arr = data.astype(np.float32)
    where = str(series.files[0])
    if arr.shape[3] == 1:
        vol = Volume(arr[..., 0], affine, source=where)
    else:
        vol = Volume(arr, affine, ("x", "y", "z", "t"), source=where)
    return SeriesData(vol, None, PET_SUFFIX, side, "Modality PT", notes=notes)


def _bids_pet(
    hdr: PetHeader, frames: list[dict[str, Any]], factors: list[float] | None
) -> dict[str, Any]:
    t0 = hdr.injection

    def rel(t: dt.datetime) -> float:
        return round((t - t0).total_seconds(), 3)

    # a frame's start: its acquisition time, else the scan start
    starts = [rel(f["acquisition"] or hdr.scan_start) for f in frames]
    corrected_to = {"START": rel(hdr.scan_start), "ADMIN": 0.0, "NONE": None}[hdr.decay]
    return {
        "Modality": "PT",
        "Units": "Bq/mL",
        "OriginalUnits": hdr.units,
        "TracerName": hdr.tracer or None,
        "TracerRadionuclide": hdr.radionuclide or None,
        "RadionuclideHalfLife": hdr.half_life_s,
        "InjectedRadioactivity": float(hdr.dose_bq) / 1e6,  # type: ignore[arg-type]
        "InjectedRadioactivityUnits": "MBq",
        "ModeOfAdministration": "bolus",
        "TimeZero": t0.strftime("%H:%M:%S"),
        "InjectionStart": 0.0,
        "ScanStart": rel(hdr.scan_start),
        "FrameTimesStart": starts,
        "FrameDuration": [f["duration_s"] for f in frames],
        "AcquisitionMode": "static" if len(frames) == 1 else "dynamic",
        "DecayCorrection": hdr.decay,
        "ImageDecayCorrected": hdr.decay != "NONE",
        "ImageDecayCorrectionTime": corrected_to,
        "DecayCorrectionFactor": [f["decay_factor"] for f in frames]
        if all(f["decay_factor"] is not None for f in frames)
        else None,
        "BodyWeight": hdr.weight_kg,
        "BodyHeight": hdr.height_m,
        "Sex": hdr.sex,
        "SUVbwFactor": factors,
    }
