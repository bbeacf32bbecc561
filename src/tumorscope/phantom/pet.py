"""Synthetic FDG PET for the phantom: uptake per lesion following the scenario, as NIfTI and DICOM.

Two pieces:

* :func:`write_pet_dicom` writes a PET series (PET Image Storage, one file per slice and
  frame) from values already in the DICOM ``Units`` (BQML, CNTS or GML), with the PET
  headers the importer reads (:mod:`tumorscope.io.dicom.pet`): the radiopharmaceutical
  sequence, Units, DecayCorrection, per-frame times, a per-slice RescaleSlope, and the
  vendor quirks (Philips' private scale factors (7053,1000)/(7053,1009) for CNTS; GE's private
  scan date-time (0009,xx0D) with a SeriesTime rewritten after the acquisition).
  :func:`stored_values` turns activity concentrations (Bq/mL, decay corrected to the scan
  start) into the values of any Units/DecayCorrection, by the rules of the importer written
  independently as the inverse (tests compare both with hand computations).
* :func:`lesion_uptake_truth` gives each lesion's SUV at a visit from the scenario: the
  lesion's viable cellularity drives uptake, and a pseudoprogressing lesion gets an
  inflammatory flare (uptake up while ADC rises and size stays) — see ``docs/pet.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..units import suvbw_factor
from ..volume import Volume
from .dicom.series import SynthStudy, _ds, _file_meta, _save, _tm, _uid, lps_affine

__all__ = [
    "PET_IMAGE_STORAGE",
    "PET_SUV",
    "PET_TRAJECTORIES",
    "PetAcquisition",
    "pet_sidecar",
    "stored_values",
    "write_pet_dicom",
    "write_pet_visit",
]

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
_VENDOR = {
    "siemens": ("SIEMENS", "Biograph mMR"),
    "ge": ("GE MEDICAL SYSTEMS", "SIGNA PET/MR"),
    "philips": ("Philips Medical Systems", "Ingenuity TF"),
}


@dataclass(frozen=True)
class PetAcquisition:
    """What the PET headers say: dose, times, units, patient size, vendor."""

    injection: dt.datetime
    scan_start: dt.datetime
    dose_bq: float = 370e6
    half_life_s: float = 6586.2
    weight_kg: float | None = 70.0
    height_m: float | None = 1.75
    sex: str = "M"
    units: str = "BQML"
    decay: str = "START"
    vendor: str = "siemens"
    #: frame starts (s after the scan start) and durations (s); one frame by default
    frame_starts_s: tuple[float, ...] = (0.0,)
    frame_durations_s: tuple[float, ...] = (600.0,)
    #: Philips CNTS: Bq/mL per count (7053,1009); written also as the SUV factor (7053,1000)
    philips_bqml_per_count: float = 2.5
    philips_write_bqml_factor: bool = True
    #: GE: SeriesTime rewritten after the acquisition; the scan start only in (0009,xx0D)
    ge_series_time_rewritten: bool = False
    #: RadiopharmaceuticalStartDateTime (else only RadiopharmaceuticalStartTime)
    full_injection_datetime: bool = True
    tracer: str = "Fluorodeoxyglucose"
    extra: dict[str, Any] = field(default_factory=dict)

    def frame_start(self, i: int) -> dt.datetime:
        return self.scan_start + dt.timedelta(seconds=self.frame_starts_s[i])

    def suv_factor(self, i: int) -> float:
        """SUVbw factor of frame ``i`` (what the importer must find)."""
        if self.weight_kg is None:
            raise DataError("no weight", field="weight_kg")
        none = self.decay == "NONE"
        return suvbw_factor(
            injected_activity_bq=self.dose_bq,
            injection_time=self.injection,
            scan_time=self.frame_start(i) if none else self.scan_start,
            half_life_s=self.half_life_s,
            weight_kg=self.weight_kg,
            decay_correction=self.decay,
            frame_duration_s=self.frame_durations_s[i] if none else None,
        )


def stored_values(bqml_start: np.ndarray, acq: PetAcquisition, frame: int = 0) -> np.ndarray:
    """Values in ``acq.units``/``acq.decay`` of activity concentrations decay corrected to the
    scan start (Bq/mL).

    ADMIN: corrected to the injection, ×2^(Δt/T½); NONE: the mean over the frame of the
    decaying activity, ×2^(−(frame start − scan start)/T½)·(1−e^{−λD})/(λD); then CNTS ÷
    Philips' factor, GML × the SUVbw factor of the frame.
    """
    lam = math.log(2.0) / acq.half_life_s
    x = np.asarray(bqml_start, dtype=np.float64)
    to_start = (acq.scan_start - acq.injection).total_seconds()
    if acq.decay == "ADMIN":
        x = x * math.exp(lam * to_start)
    elif acq.decay == "NONE":
        d = acq.frame_durations_s[frame]
        x = x * math.exp(-lam * acq.frame_starts_s[frame]) * (1 - math.exp(-lam * d)) / (lam * d)
    if acq.units == "CNTS":
        return x / acq.philips_bqml_per_count
    if acq.units == "GML":
        return x * acq.suv_factor(frame)
    return x


def write_pet_dicom(
    values: np.ndarray,
    affine: np.ndarray,
    out_dir: str | Path,
    *,
    acq: PetAcquisition,
    study: SynthStudy,
    series_number: int = 50,
    description: str = "PET WB FDG AC",
) -> list[Path]:
    """Write PET slices (values in ``acq.units``; shape (x, y, z) or (x, y, z, frame))."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    data = np.asarray(values, dtype=np.float64)
    if data.ndim == 3:
        data = data[..., None]
    nf = data.shape[3]
    if len(acq.frame_starts_s) != nf or len(acq.frame_durations_s) != nf:
        raise DataError(f"{nf} frames but {len(acq.frame_starts_s)} frame times", field="acq")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lps = lps_affine(affine)
    col = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    row = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    spacing = (float(np.linalg.norm(lps[:3, 1])), float(np.linalg.norm(lps[:3, 0])))
    thick = float(np.linalg.norm(lps[:3, 2]))
    maker, model = _VENDOR[acq.vendor]
    series_uid = _uid(study.study_uid, "pet", series_number)
    day = acq.scan_start.strftime("%Y%m%d")

    def secs(t: dt.datetime) -> float:
        return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6

    paths = []
    nz = data.shape[2]
    for f in range(nf):
        t_frame = acq.frame_start(f)
        for k in range(nz):
            img = data[:, :, k, f].T  # (rows, cols)
            peak = float(np.abs(img).max())
            slope = peak / 32000.0 if peak > 0 else 1.0
            ds = Dataset()
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.SOPClassUID = PET_IMAGE_STORAGE
            ds.SOPInstanceUID = _uid(series_uid, f, k)
            ds.file_meta = _file_meta(PET_IMAGE_STORAGE, ds.SOPInstanceUID)
            ds.Modality = "PT"
            ds.ImageType = ["ORIGINAL", "PRIMARY"]
            ds.PatientName = study.patient.name
            ds.PatientID = study.patient.patient_id
            ds.PatientBirthDate = study.patient.birth_date
            ds.PatientSex = acq.sex
            if acq.weight_kg is not None:
                ds.PatientWeight = _ds(acq.weight_kg)
            if acq.height_m is not None:
                ds.PatientSize = _ds(acq.height_m)
            ds.StudyInstanceUID = study.study_uid
            ds.StudyDate = study.date.strftime("%Y%m%d")
            ds.StudyTime = _tm(secs(acq.scan_start) - 600)
            ds.StudyID = "1"
            ds.AccessionNumber = study.accession
            ds.ReferringPhysicianName = "SMITH^JOHN"
            ds.StudyDescription = study.description
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series_number
            ds.SeriesDescription = description
            ds.SeriesDate = day
            series_t = secs(acq.scan_start) + (3600 if acq.ge_series_time_rewritten else 0)
            ds.SeriesTime = _tm(series_t)
            ds.AcquisitionDate = t_frame.strftime("%Y%m%d")
            ds.AcquisitionTime = _tm(secs(t_frame))
            ds.FrameOfReferenceUID = study.frame_of_reference_uid
            ds.PositionReferenceIndicator = ""
            ds.Manufacturer = maker
            ds.ManufacturerModelName = model
            ds.Units = acq.units
            ds.DecayCorrection = acq.decay
            ds.CorrectedImage = ["ATTN", "DECY", "SCAT"] if acq.decay != "NONE" else ["ATTN"]
            ds.AttenuationCorrectionMethod = "MR-based"
            ds.ReconstructionMethod = "OSEM3D 3i21s"
            ds.CountsSource = "EMISSION"
            ds.SeriesType = ["WHOLE BODY", "IMAGE"] if nf == 1 else ["DYNAMIC", "IMAGE"]
            ds.NumberOfSlices = nz
            ds.NumberOfTimeSlices = nf
            ds.ImageIndex = f * nz + k + 1
            ds.FrameReferenceTime = _ds(1000.0 * acq.frame_starts_s[f])
            ds.ActualFrameDuration = round(1000.0 * acq.frame_durations_s[f])
            if acq.decay != "NONE":
                ds.DecayFactor = _ds(
                    2 ** ((t_frame - acq.scan_start).total_seconds() / acq.half_life_s)
                )
            rp = Dataset()
            rp.Radiopharmaceutical = acq.tracer
            rp.RadionuclideTotalDose = _ds(acq.dose_bq)
            rp.RadionuclideHalfLife = _ds(acq.half_life_s)
            rp.RadiopharmaceuticalStartTime = _tm(secs(acq.injection))
            if acq.full_injection_datetime:
                rp.RadiopharmaceuticalStartDateTime = acq.injection.strftime("%Y%m%d") + _tm(
                    secs(acq.injection)
                )
            code = Dataset()
            code.CodeValue = "C-111A1"
            code.CodingSchemeDesignator = "SRT"
            code.CodeMeaning = "^18^Fluorine"
            rp.RadionuclideCodeSequence = DicomSequence([code])
            ds.RadiopharmaceuticalInformationSequence = DicomSequence([rp])
            ds.InstanceNumber = f * nz + k + 1
            ds.ImagePositionPatient = [_ds(float(x)) for x in (lps @ [0, 0, k, 1])[:3]]
            ds.ImageOrientationPatient = [_ds(float(x)) for x in (*col, *row)]
            ds.PixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
            ds.SliceThickness = _ds(thick)
            ds.RescaleSlope = _ds(slope)
            ds.RescaleIntercept = "0"
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.Rows, ds.Columns = int(img.shape[0]), int(img.shape[1])
            stored = np.round(img / float(ds.RescaleSlope)).astype("<i2")
            ds.PixelData = stored.tobytes()
            if acq.vendor == "philips" and acq.units == "CNTS":
                block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
                if acq.weight_kg is not None:  # SUV scale factor: counts -> SUVbw
                    block.add_new(0x00, "DS", _ds(acq.philips_bqml_per_count * acq.suv_factor(f)))
                if acq.philips_write_bqml_factor:
                    block.add_new(0x09, "DS", _ds(acq.philips_bqml_per_count))
            if acq.vendor == "ge":
                block = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
                block.add_new(0x0D, "DT", acq.scan_start.strftime("%Y%m%d%H%M%S"))
            paths.append(_save(ds, out))
    return paths


def volume_as_pet(vol: Volume) -> np.ndarray:
    """The data of a Bq/mL volume, checked finite and non-negative."""
    d = np.asarray(vol.data, dtype=np.float64)
    if not np.isfinite(d).all() or (d < 0).any():
        raise DataError("PET activity must be finite and non-negative", file=vol.source)
    return d


# ---------------------------------------------------------------------------- the phantom's PET

#: Trajectories (scenarios) whose subjects get an FDG PET at every visit.
PET_TRAJECTORIES: tuple[str, ...] = ("responder", "pseudoprogressor")

#: FDG SUVbw (g/mL) by tissue state: normal liver ≈ 2 (PERCIST's reference organ), blood pool
#: ≈ 1.6, viable untreated tumour 8; cell kill lowers uptake (responding 5, responded 2.5);
#: immune infiltration raises it (infiltrated 11: the inflammatory flare of
#: pseudoprogression, uptake up while ADC rises at stable size); progression 9 and 12;
#: necrosis 0.8; a lymph node 4. Illustrative values in the ranges FDG PET reports, chosen so
#: that the scenario's calls are unambiguous (PMR ≥ 30 % and ≥ 0.8 SUL, flare ≥ 30 %).
PET_SUV: dict[str, float] = {
    "background": 2.0,
    "untreated": 8.0,
    "responding": 5.0,
    "responded": 2.5,
    "infiltrated": 11.0,
    "progressing": 9.0,
    "aggressive": 12.0,
    "necrotic": 0.8,
    "node": 4.0,
    "blood": 1.6,
}

#: The phantom's PET acquisition: 370 MBq FDG, scan 60 min after injection, 70 kg, 1.75 m, M.
PET_DOSE_BQ = 370e6
PET_UPTAKE_S = 3600.0
PET_NOISE = 0.08  # relative SD of the voxel noise
PET_PATIENT = {"BodyWeight": 70.0, "BodyHeight": 1.75, "Sex": "M"}


def pet_sidecar(factor: float) -> dict[str, Any]:
    """The BIDS-PET sidecar of a phantom PET (what the DICOM import writes)."""
    return {
        "Modality": "PT",
        "Manufacturer": "tumorscope",
        "ManufacturersModelName": "phantom",
        "Units": "Bq/mL",
        "TracerName": "FDG",
        "TracerRadionuclide": "F18",
        "RadionuclideHalfLife": 6586.2,
        "InjectedRadioactivity": PET_DOSE_BQ / 1e6,
        "InjectedRadioactivityUnits": "MBq",
        "ModeOfAdministration": "bolus",
        "TimeZero": "09:00:00",
        "InjectionStart": 0.0,
        "ScanStart": PET_UPTAKE_S,
        "FrameTimesStart": [PET_UPTAKE_S],
        "FrameDuration": [600.0],
        "AcquisitionMode": "static",
        "DecayCorrection": "START",
        "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": PET_UPTAKE_S,
        **PET_PATIENT,
        "SUVbwFactor": [factor],
    }


def write_pet_visit(
    sdir: Path,
    tdir: Path,
    prefix: str,
    affine: np.ndarray,
    tissue: np.ndarray,
    names: list[str],
    artery: np.ndarray,
    seed: tuple[int, ...],
) -> None:
    """Write a visit's PET (Bq/mL), its liver and blood-pool masks, and the SUV truth.

    ``tissue`` indexes ``names`` (0 outside the body); ``artery`` is the blood pool. The PET
    is on the MRI grid, in the MRI's frame of reference (a simultaneous PET/MR).
    """
    suv_truth = np.zeros(tissue.shape)
    for i, nm in enumerate(names):
        if nm:
            suv_truth[tissue == i] = PET_SUV[nm]
    suv_truth[artery] = PET_SUV["blood"]
    rng = np.random.default_rng(list(seed))
    suv = suv_truth * (1.0 + PET_NOISE * rng.standard_normal(tissue.shape))
    suv = np.clip(suv, 0.0, None)
    inj = dt.datetime(2000, 1, 1, 9, 0, 0)
    factor = suvbw_factor(
        injected_activity_bq=PET_DOSE_BQ,
        injection_time=inj,
        scan_time=inj + dt.timedelta(seconds=PET_UPTAKE_S),
        half_life_s=6586.2,
        weight_kg=PET_PATIENT["BodyWeight"],  # type: ignore[arg-type]
    )
    pdir = sdir / "pet"
    Volume((suv / factor).astype(np.float32), affine).to_nifti(pdir / f"{prefix}_pet.nii.gz")
    (pdir / f"{prefix}_pet.json").write_text(
        json.dumps(pet_sidecar(factor), indent=2) + "\n", encoding="utf-8"
    )
    liver = (tissue == names.index("background")) & ~artery
    Volume(liver.astype(np.uint8), affine).to_nifti(pdir / f"{prefix}_label-liver_mask.nii.gz")
    Volume(artery.astype(np.uint8), affine).to_nifti(pdir / f"{prefix}_label-bloodpool_mask.nii.gz")
    Volume(suv_truth.astype(np.float32), affine).to_nifti(tdir / f"{prefix}_desc-SUV_truth.nii.gz")


#: How each vendor style of the phantom's DICOM writes its PET (Units, quirk)
_VENDOR_STYLE: dict[str, dict[str, Any]] = {
    "siemens": {"units": "BQML"},
    "ge": {"units": "BQML", "ge_series_time_rewritten": True},
    "philips": {"units": "CNTS"},
}


def pet_to_dicom(
    series: Any, folder: Path, study: SynthStudy, vendor: str, number: int, date: dt.date
) -> list[Path]:
    """Write a study's PET series (Bq/mL + BIDS-PET sidecar) as PET DICOM in ``vendor``'s style
    (Siemens BQML; GE BQML with the series time rewritten; Philips CNTS with its factors)."""
    side = series.sidecar
    h, m, s = (int(x) for x in str(side["TimeZero"]).split(":"))
    inj = dt.datetime.combine(date, dt.time(h, m, s)) + dt.timedelta(
        seconds=float(side.get("InjectionStart") or 0.0)
    )
    acq = PetAcquisition(
        injection=inj,
        scan_start=inj + dt.timedelta(seconds=float(side["ScanStart"])),
        dose_bq=float(side["InjectedRadioactivity"]) * 1e6,
        half_life_s=float(side["RadionuclideHalfLife"]),
        weight_kg=side.get("BodyWeight"),
        height_m=side.get("BodyHeight"),
        sex=str(side.get("Sex") or "O"),
        decay=str(side.get("DecayCorrection") or "START"),
        vendor=vendor,
        frame_durations_s=tuple(side.get("FrameDuration") or (600.0,)),
        **_VENDOR_STYLE[vendor],
    )
    vol = series.load()
    return write_pet_dicom(
        stored_values(volume_as_pet(vol), acq),
        vol.affine,
        folder,
        acq=acq,
        study=study,
        series_number=number,
    )
