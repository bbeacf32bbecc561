"""Standardised uptake values: the factors that turn Bq/mL into SUVbw, SUL and SUVbsa.

The SUV normalises the activity concentration of a voxel by the injected activity per unit of
body size::

    SUVbw  = C [Bq/mL] × weight [g] / A_ref [Bq]          (g/mL)
    SUL    = C [Bq/mL] × LBM [g] / A_ref [Bq]             (g/mL, lean body mass)
    SUVbsa = C [Bq/mL] × BSA [cm²] / A_ref [Bq]           (cm²/mL)

``A_ref`` is the injected activity decayed to the time the image is decay-corrected to:

* ``DecayCorrection = "START"`` (DICOM (0054,1102), the usual case): the image is corrected to
  the start of the acquisition (``scan_time``, the series time), so the dose is decayed from
  the injection to ``scan_time``: ``A_ref = A_inj · 2^(−Δt/T½)``.
* ``"ADMIN"``: the image is corrected to the administration time; ``A_ref = A_inj``.
* ``"NONE"``: the image is not decay corrected. Each frame is then corrected to its own start
  ``scan_time`` here (the dose decayed to that time, as for START), and, when the frame
  duration is given, for the decay during the frame (the mean of an exponential over the
  frame, ``λD / (1 − e^{−λD})``), following the QIBA FDG-PET profile's SUV pseudo-code
  (QIBA UPICT/FDG-PET/CT profile, "Vendor-neutral pseudo-code for SUV calculation").

Body weight in kg is taken as grams ×1000 with a tissue density of 1 g/mL, so SUVbw is in
g/mL (1 in a uniform distribution). Lean body mass: Janmahasatian S et al., "Quantification
of lean bodyweight", Clin Pharmacokinet 2005;44:1051-1065 (the formula PERCIST 1.0 adopted
in its practical guide, O JH et al., JAMA Oncol 2016 / J Nucl Med 2016): ``LBM = 9270·W /
(6680 + 216·BMI)`` for men and ``9270·W / (8780 + 244·BMI)`` for women, W in kg, BMI in
kg/m². Body-surface area: Du Bois D, Du Bois EF, Arch Intern Med 1916;17:863-871,
``BSA [m²] = 0.007184 · W^0.425 · H[cm]^0.725``.
"""

from __future__ import annotations

import math
from typing import Final, Literal

from ...errors import DataError
from ...units import decay_factor, suvbw_factor

__all__ = [
    "F18_HALF_LIFE_S",
    "body_surface_area_m2",
    "decay_factor",
    "lean_body_mass_kg",
    "sul_factor",
    "suv_factor",
    "suvbsa_factor",
]

#: Physical half-life of fluorine-18, s (109.77 min; NIST/DDEP 109.77 ± 0.05 min).
F18_HALF_LIFE_S: Final[float] = 6586.2

DecayCorrection = Literal["START", "ADMIN", "NONE"]


def _positive(value: float, field: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise DataError(f"expected a positive finite number, got {value!r}", field=field)
    return v


#: The factor that turns Bq/mL into SUVbw (g/mL): :func:`tumorscope.units.suvbw_factor`
#: (the arithmetic lives in ``units`` because the DICOM reader in ``io`` needs it too, and
#: ``io`` may not import ``models``; START, ADMIN and NONE are described above).
suv_factor = suvbw_factor


def lean_body_mass_kg(weight_kg: float, height_m: float, sex: str) -> float:
    """Lean body mass, kg (Janmahasatian et al. 2005), as PERCIST uses for SUL.

    Parameters
    ----------
    weight_kg : float
    height_m : float
        Height in metres (DICOM PatientSize).
    sex : {"M", "F"}
        DICOM PatientSex; anything else is an error (the formula differs by sex).
    """
    w = _positive(weight_kg, "PatientWeight")
    h = _positive(height_m, "PatientSize")
    if h > 3.0:
        raise DataError(f"height {h} m is not a height in metres", field="PatientSize")
    bmi = w / (h * h)
    s = str(sex).strip().upper()[:1]
    if s == "M":
        return 9270.0 * w / (6680.0 + 216.0 * bmi)
    if s == "F":
        return 9270.0 * w / (8780.0 + 244.0 * bmi)
    raise DataError(f"sex {sex!r} is needed as M or F for the lean body mass", field="PatientSex")


def body_surface_area_m2(weight_kg: float, height_m: float) -> float:
    """Body-surface area, m² (Du Bois & Du Bois 1916)."""
    w = _positive(weight_kg, "PatientWeight")
    h = _positive(height_m, "PatientSize")
    return 0.007184 * w**0.425 * (h * 100.0) ** 0.725


def sul_factor(*, suv_bw_factor: float, weight_kg: float, height_m: float, sex: str) -> float:
    """Factor turning Bq/mL into SUL (g/mL): the SUVbw factor scaled by LBM / weight."""
    w = _positive(weight_kg, "PatientWeight")
    return _positive(suv_bw_factor, "suv_bw_factor") * lean_body_mass_kg(w, height_m, sex) / w


def suvbsa_factor(*, suv_bw_factor: float, weight_kg: float, height_m: float) -> float:
    """Factor turning Bq/mL into SUVbsa (cm²/mL): the SUVbw factor scaled by BSA / weight.

    ``SUVbsa = C × BSA[cm²] / A_ref``, so the factor is ``SUVbw factor × BSA·10⁴ / (W·10³)``.
    """
    w = _positive(weight_kg, "PatientWeight")
    bsa_cm2 = body_surface_area_m2(w, height_m) * 1e4
    return _positive(suv_bw_factor, "suv_bw_factor") * bsa_cm2 / (w * 1000.0)
