"""DICOM codes of the export: organs, responses, parameters, statistics and units.

SNOMED CT (``SCT``) and DICOM (``DCM``) codes where they exist; response categories are NCIt
codes; anything else uses the private scheme :data:`PRIVATE_SCHEME` with the tumorscope name
as meaning. Units are UCUM codes (:data:`tumorscope.units.UCUM`).
"""

from __future__ import annotations

from typing import Any

from ...errors import ExportError
from ...units import PARAMETER_UNITS, UCUM

__all__ = [
    "ORGAN_CODES",
    "OTHER_RESPONSES",
    "PARAMETER_CODES",
    "PRIVATE_SCHEME",
    "RESPONSE_CODES",
    "STATISTIC_CODES",
    "code",
    "default_unit",
    "parameter_code",
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
#: categories without an NCIt code we are sure of: private scheme, the category as code value
OTHER_RESPONSES: dict[str, str] = {
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
PARAMETER_CODES: dict[str, tuple[str, str, str]] = {
    "ADC": ("113041", "DCM", "Apparent Diffusion Coefficient"),
    "Ktrans": ("126312", "DCM", "Ktrans"),
}


def code(value: str, scheme: str, meaning: str) -> Any:
    """A highdicom coded concept."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def unit_code(unit: str) -> Any:
    """The UCUM code of a tumorscope unit (ExportError for a unit without one)."""
    if unit not in UCUM:
        raise ExportError(
            f"unit {unit!r} has no UCUM code; expected one of {', '.join(UCUM)}", field="unit"
        )
    return code(UCUM[unit], "UCUM", unit)


def default_unit(name: str) -> str | None:
    """tumorscope unit of a map name (``T1``, or ``model.parameter``)."""
    return PARAMETER_UNITS.get(name) or PARAMETER_UNITS.get(name.split(".")[-1])


def parameter_code(name: str) -> Any:
    """Code of a map name (``ADC``, or ``model.parameter`` as the pipeline names maps)."""
    parameter = name.split(".")[-1]
    if parameter in PARAMETER_CODES:
        return code(*PARAMETER_CODES[parameter])
    return code(name[:16], PRIVATE_SCHEME, name)


STATISTIC_CODES = {
    "mean": ("373098007", "SCT", "Mean"),
    "median": ("373099004", "SCT", "Median"),
    "std": ("386136009", "SCT", "Standard Deviation"),
    "min": ("255605001", "SCT", "Minimum"),
    "max": ("56851009", "SCT", "Maximum"),
}
