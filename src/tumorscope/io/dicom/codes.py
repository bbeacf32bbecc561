"""DICOM codes of the export: organs, responses, parameters, statistics and units.

SNOMED CT (``SCT``) and DICOM (``DCM``) codes where they exist (parameters: taken from pydicom's
tables of PS3.16 by keyword, never typed in); response categories are NCIt codes; anything else
uses the private scheme :data:`PRIVATE_SCHEME` with the tumorscope name as meaning (the
parameters without a standard code, and why: :data:`PRIVATE_PARAMETERS`). Units are UCUM codes
(:data:`tumorscope.units.UCUM`).
"""

from __future__ import annotations

from typing import Any

from ...errors import ExportError
from ...units import PARAMETER_UNITS, UCUM

__all__ = [
    "DCM_RESPONSES",
    "ORGAN_CODES",
    "OTHER_RESPONSES",
    "PARAMETER_CODES",
    "PRIVATE_PARAMETERS",
    "PRIVATE_SCHEME",
    "RESPONSE_CODES",
    "STATISTIC_CODES",
    "code",
    "default_unit",
    "parameter_code",
    "response_code",
    "unit_code",
]

PRIVATE_SCHEME = "99TUMORSCOPE"

ORGAN_CODES: dict[str, tuple[str, str]] = {
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
RESPONSE_CODES: dict[str, tuple[str, str]] = {
    "CR": ("C4870", "Complete Response"),
    "PR": ("C18058", "Partial Response"),
    "SD": ("C18213", "Stable Disease"),
    "PD": ("C35571", "Progressive Disease"),
}
#: categories with a DICOM code (PS3.16 CID 6144, non-target lesion response: RECIST 1.1's
#: non-CR/non-PD is the persistence of non-target disease), by pydicom keyword
DCM_RESPONSES: dict[str, str] = {
    "non-CR/non-PD": "NonTargetLesionIncompleteResponseOrStableDisease",  # 112046
}
#: categories without a standard code we are sure of: private scheme, the category as code value
OTHER_RESPONSES: dict[str, str] = {
    "NE": "Not evaluable",
    "MR": "Minor response",  # RANO 2.0, non-enhancing disease
    "preliminary PD": "Preliminary progression, awaiting confirmation",  # RANO 2.0 / iRANO
    "iCR": "Immune complete response",
    "iPR": "Immune partial response",
    "iSD": "Immune stable disease",
    "iUPD": "Immune unconfirmed progressive disease",
    "iCPD": "Immune confirmed progressive disease",
    "CMR": "Complete metabolic response",
    "PMR": "Partial metabolic response",
    "SMD": "Stable metabolic disease",
    "PMD": "Progressive metabolic disease",
}
#: Standard code of each quantity, as the keyword of the DICOM code (``DCM``) in pydicom's code
#: tables (``pydicom.sr.codedict.codes.DCM.<keyword>``, which ship PS3.16): CID 7180 "Abstract
#: Multi-dimensional Image Model Component Semantics" holds all but the kurtosis (ADC, IVIM and
#: kurtosis models from CID 7272, tracer kinetics from CID 4107, 4108, 4109); the Apparent
#: Kurtosis Coefficient is in CID 7263 "Diffusion Model Value Types".
PARAMETER_CODES: dict[str, str] = {
    "ADC": "ApparentDiffusionCoefficient",  # 113041
    "D": "DiffusionCoefficient",  # 113289 (the model decides, see _MODEL_CODES)
    "D_star": "FastDiffusionCoefficient",  # 113292 (IVIM pseudo-diffusion)
    "f": "FastDiffusionCoefficientFraction",  # 113293 (IVIM perfusion fraction)
    "K": "ApparentKurtosisCoefficient",  # 113206
    "S0": "MRSignalIntensity",  # 110852
    "M0": "MRSignalIntensity",
    "offset": "MRSignalIntensity",
    "T1": "T1",  # 113063
    "T2": "T2",  # 113065
    "T2star": "T2Star",  # 113064
    "R1": "R1",  # 126393
    "R2": "R2",  # 126394
    "R2star": "R2Star",  # 126395
    "Ktrans": "Ktrans",  # 126312
    "kep": "Kep",  # 126313
    "ve": "Ve",  # 126314
    "vp": "Vp",  # 126331
    "C": "TracerConcentration",  # 126377
    "MTT": "MeanTransitTime",  # 113052
    "rCBV": "RelativeRegionalBloodVolume",  # 126398
    "rCBF": "RelativeRegionalBloodFlow",  # 126397
    "CBF": "AbsoluteRegionalBloodFlow",  # 126390 (DSC)
    "CBV": "AbsoluteRegionalBloodVolume",  # 126391 (DSC)
    "Tmax": "Tmax",  # 113084 (DSC)
    "SUV": "StandardizedUptakeValue",  # 126400
    "iAUC60": "IAUC60",  # 126321
    "iAUC90": "IAUC90",  # 126322
    "TTP": "TimeToPeak",  # 113069
    "arrival": "BolusArrivalTime",  # 126371
}
#: Where the model decides the quantity: (word in the model name, parameter) → keyword.
_MODEL_CODES: dict[tuple[str, str], str] = {
    ("ivim", "D"): "SlowDiffusionCoefficient",  # 113291
    ("dki", "D"): "KurtosisDiffusionCoefficient",  # 113294
    ("kurtosis", "D"): "KurtosisDiffusionCoefficient",
}
#: Quantities without a standard code (none in DICOM PS3.16, SNOMED CT or LOINC as shipped by
#: pydicom): the private scheme, with the reason (docs/dicom.md lists them).
PRIVATE_PARAMETERS: dict[str, str] = {
    "Fp": "plasma flow: DICOM codes blood flow (126390), not plasma flow",
    "PS": "permeability-surface area product: no DICOM code",
    "delay": "arrival delay of the tissue curve relative to the AIF (a fit parameter); DICOM's "
    "Bolus Arrival Time (126371) is an absolute time of the curve",
    "k": "inversion efficiency of the IR T1 fit: no code",
    "max_enhancement": "peak concentration above baseline: no code for the enhancement of a "
    "concentration curve",
    "wash_in": "initial slope of the concentration curve: DICOM's MR Perfusion Slope (122636) "
    "is of the signal and in no context group",
    "wash_out": "final slope of the concentration curve: no code",
    "curve_type": "enhancement curve type (persistent, plateau, washout): no code",
    "Fe": "apparent iron concentration from the relaxation rate change: no code",
    "dR2": "change of R2 after iron oxide: no code",
    "dR2star": "change of R2* after iron oxide: no code",
    "T1star": "apparent (Look-Locker) T1 of MOLLI: no code",
    "A": "recovered signal of the MOLLI fit: no code",
    "B_over_A": "B/A of the MOLLI fit: no code",
    "ECV": "extracellular volume fraction: no code",
    "abs_G": "magnitude of the complex shear modulus (MRE): DICOM's Elasticity (110830) is an "
    "image derivation, not this quantity",
    "phi": "phase angle of the complex shear modulus (MRE): no code",
    "G_storage": "storage modulus G' (MRE): no code",
    "G_loss": "loss modulus G'' (MRE): no code",
    "K2": "DSC leakage term of the Boxerman-Schmainda-Weisskoff correction: no code",
    "T1effect": "apparent S0 change common to both echoes of a dual-echo DSC (T1 effect of "
    "leaked contrast): no code",
}


def code(value: str, scheme: str, meaning: str) -> Any:
    """A highdicom coded concept."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


#: UCUM codes of the units the pipeline's maps use beside :data:`tumorscope.units.UCUM`: the
#: semi-quantitative DCE maps, PET's SUV normalised to body surface area, and the metabolic
#: step's percentages (every unit of a run's map indexes must have one, or ``export-dicom
#: --results`` stops: every unit of a run of every step is tested in
#: ``tests/pipeline/test_runner.py``)
_MORE_UCUM = {"mM.s": "mmol.s/L", "mM/s": "mmol/(L.s)", "cm2/mL": "cm2/mL", "%": "%"}


def unit_code(unit: str) -> Any:
    """The UCUM code of a tumorscope unit (ExportError for a unit without one)."""
    known = {**UCUM, **_MORE_UCUM}
    if unit not in known:
        raise ExportError(
            f"unit {unit!r} has no UCUM code; expected one of {', '.join(known)}", field="unit"
        )
    return code(known[unit], "UCUM", unit)


def default_unit(name: str) -> str | None:
    """tumorscope unit of a map name (``T1``, or ``model.parameter``)."""
    return PARAMETER_UNITS.get(name) or PARAMETER_UNITS.get(name.split(".")[-1])


def parameter_code(name: str) -> Any:
    """Code of a map name (``ADC``, or ``model.parameter`` as the pipeline names maps).

    The standard DICOM code of the quantity (:data:`PARAMETER_CODES`, the model deciding where
    it must: IVIM's ``D`` is the Slow Diffusion Coefficient, the kurtosis model's the Kurtosis
    Diffusion Coefficient); the private scheme :data:`PRIVATE_SCHEME` with the name as meaning
    for the others.
    """
    from pydicom.sr.codedict import codes

    model, _, parameter = name.rpartition(".")
    keyword = next(
        (kw for (word, p), kw in _MODEL_CODES.items() if p == parameter and word in model.lower()),
        PARAMETER_CODES.get(parameter),
    )
    if keyword is not None:
        c = getattr(codes.DCM, keyword)
        return code(c.value, c.scheme_designator, c.meaning)
    return code(name[:16], PRIVATE_SCHEME, name)


def response_code(response: str) -> Any:
    """Code of a response category: NCIt (CR, PR, SD, PD), DCM (non-CR/non-PD) or private."""
    from pydicom.sr.codedict import codes

    if response in RESPONSE_CODES:
        return code(RESPONSE_CODES[response][0], "NCIt", RESPONSE_CODES[response][1])
    if response in DCM_RESPONSES:
        c = getattr(codes.DCM, DCM_RESPONSES[response])
        return code(c.value, c.scheme_designator, c.meaning)
    if response in OTHER_RESPONSES:
        return code(response, PRIVATE_SCHEME, OTHER_RESPONSES[response])
    known = [*RESPONSE_CODES, *DCM_RESPONSES, *OTHER_RESPONSES]
    raise ExportError(
        f"unknown response {response!r}; expected one of {', '.join(known)}", field="response"
    )


STATISTIC_CODES = {
    "mean": ("373098007", "SCT", "Mean"),
    "median": ("373099004", "SCT", "Median"),
    "std": ("386136009", "SCT", "Standard Deviation"),
    "min": ("255605001", "SCT", "Minimum"),
    "max": ("56851009", "SCT", "Maximum"),
}
