"""Perfusion as supporting evidence: "perfusion suggests treatment effect".

Under chemoradiation or immunotherapy a glioma may grow or enhance more while responding
(pseudoprogression). Relative CBV from leakage-corrected DSC-MRI separates true progression
(high rCBV) from treatment effect (low rCBV). This module flags, per visit, an **enlarging
lesion whose mean rCBV is below a threshold**. It is a pattern (a flag with its threshold and
reference), not a response call: the call stays that of the criteria (RANO 2.0 / iRANO), which
name advanced imaging as supporting evidence only (Wen et al. 2023).

Definitions (decisions where the literature is silent, written down):

* **enlarging**: the lesion's bidimensional product (longest diameter × perpendicular; its
  longest diameter when no product is measured) is at least 25 % above its own nadir (the
  smallest value at the baseline or any earlier visit) — the per-lesion form of RANO's
  progression threshold (≥ 25 % increase in the sum of products, Wen et al. 2010); a lesion
  absent at all earlier visits (new) counts as enlarging;
* **low rCBV**: the lesion's mean rCBV (the ``dsc.rCBV`` map's mean, normalised to
  normal-appearing white matter) below ``threshold`` (default 1.75);
* the flag at a visit is True when some enlarging lesion has low rCBV, False when enlarging
  lesions have rCBV measured and none is low, None (with the reason) when no lesion enlarges
  or no rCBV was measured at that visit.

The threshold: 1.75 is the rCBV (leakage-corrected, normalised to contralateral white matter)
that separated high- from low-grade gliomas in Law et al. 2003 and predicted time to
progression in Law et al. 2008; Hu et al. 2009 showed that rCBV separates recurrent
glioblastoma from treatment effect, with a threshold that depends on the normalisation and the
leakage correction. Use a threshold validated for the site's protocol (``RunOptions.
perfusion_rcbv_threshold``).

References
----------
Law M, Yang S, Wang H, et al. Glioma grading: sensitivity, specificity, and predictive values
of perfusion MR imaging and proton MR spectroscopic imaging compared with conventional MR
imaging. AJNR Am J Neuroradiol 2003;24:1989-1998.

Law M, Young RJ, Babb JS, et al. Gliomas: predicting time to progression or survival with
cerebral blood volume measurements at dynamic susceptibility-weighted contrast-enhanced
perfusion MR imaging. Radiology 2008;247:490-498. doi:10.1148/radiol.2472070898

Hu LS, Baxter LC, Smith KA, et al. Relative cerebral blood volume values to differentiate
high-grade glioma recurrence from posttreatment radiation effect: direct correlation between
image-guided tissue histopathology and localized dynamic susceptibility-weighted
contrast-enhanced perfusion MR imaging measurements. AJNR Am J Neuroradiol 2009;30:552-558.
doi:10.3174/ajnr.A1377

Wen PY, Macdonald DR, Reardon DA, et al. Updated response assessment criteria for high-grade
gliomas: Response Assessment in Neuro-Oncology Working Group. J Clin Oncol 2010;28:1963-1972.

Wen PY, van den Bent M, Youssef G, et al. RANO 2.0: update to the Response Assessment in
Neuro-Oncology criteria for high- and low-grade gliomas in adults. J Clin Oncol
2023;41:5187-5199. doi:10.1200/JCO.23.01059
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..errors import ResponseError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_RCBV_THRESHOLD", "PATTERN", "RCBV_REFERENCE", "perfusion_treatment_effect"]

PATTERN = "perfusion suggests treatment effect"
DEFAULT_RCBV_THRESHOLD = 1.75
RCBV_REFERENCE = (
    "Law et al. AJNR 2003;24:1989-1998 and Radiology 2008;247:490-498 (rCBV 1.75); "
    "Hu et al. AJNR 2009;30:552-558"
)
#: Growth from the lesion's nadir that makes it "enlarging" (RANO's 25 %).
ENLARGING_FRACTION = 0.25


def _size(row: Any) -> float:
    for key in ("bidimensional_product_mm2", "longest_diameter_mm"):
        v = row.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)) and float(v) > 0:
            return float(v)
    return 0.0


def perfusion_treatment_effect(
    lesions: pd.DataFrame,
    measurements: pd.DataFrame | None = None,
    *,
    threshold: float = DEFAULT_RCBV_THRESHOLD,
    rcbv_map: str = "dsc.rCBV",
    statistic: str = "mean",
) -> list[dict[str, Any]]:
    """The flag per subject and visit (see the module docstring).

    Parameters
    ----------
    lesions : DataFrame
        The per-lesion, per-visit table of the ``measure`` step: ``subject``, ``visit``,
        ``date``, ``lesion_id`` and the geometry columns (``bidimensional_product_mm2``,
        ``longest_diameter_mm``); it may hold the rCBV already as ``<rcbv_map>_<statistic>``.
    measurements : DataFrame, optional
        The tidy measurement table (``subject, visit, lesion_id, map, statistic, value``):
        the rows of ``rcbv_map`` and ``statistic`` give each lesion's rCBV.
    threshold : float, keyword-only
        rCBV below which an enlarging lesion suggests treatment effect (> 0).
    rcbv_map, statistic : str, keyword-only

    Returns
    -------
    list of dict
        ``subject, pattern, visit, flag, reason, details`` (``details``: threshold,
        reference, the enlarging lesions with their growth and rCBV). Empty when the table
        has no rCBV column (no DSC in the study).

    Raises
    ------
    ResponseError
        A threshold that is not a positive number, or a table without its key columns.
    """
    if not (isinstance(threshold, int | float) and math.isfinite(threshold) and threshold > 0):
        raise ResponseError(f"rCBV threshold must be a positive number, got {threshold!r}")
    missing = [c for c in ("subject", "visit", "lesion_id") if c not in lesions.columns]
    if missing:
        raise ResponseError(f"the lesion table lacks the columns {missing}")
    rcbv_column = f"{rcbv_map}_{statistic}"
    if measurements is not None and rcbv_column not in lesions.columns:
        sel = measurements[
            (measurements["map"] == rcbv_map) & (measurements["statistic"] == statistic)
        ]
        if sel.empty:
            return []
        keys = ["subject", "visit", "lesion_id"]
        vals = sel[[*keys, "value"]].rename(columns={"value": rcbv_column})
        vals = vals.astype({k: str for k in keys})
        lesions = lesions.astype({k: str for k in keys}).merge(vals, on=keys, how="left")
    if rcbv_column not in lesions.columns:
        return []
    order = ["subject", "date", "visit"] if "date" in lesions.columns else ["subject", "visit"]
    table = lesions.sort_values(order, kind="stable")
    out: list[dict[str, Any]] = []
    for subject, sub in table.groupby("subject", sort=False):
        visits = list(dict.fromkeys(sub["visit"].astype(str)))
        nadir: dict[str, float] = {}
        for i, visit in enumerate(visits):
            rows = sub[sub["visit"].astype(str) == visit]
            enlarging: list[dict[str, Any]] = []
            measured = False
            for r in rows.to_dict("records"):
                lid = str(r["lesion_id"])
                size = _size(r)
                rcbv = r.get(rcbv_column)
                has_rcbv = rcbv is not None and not math.isnan(float(rcbv))
                if i > 0 and size > 0:
                    base = nadir.get(lid)
                    growth = None if not base else size / base - 1.0
                    if (
                        base is None
                        or base == 0
                        or (growth is not None and growth >= ENLARGING_FRACTION)
                    ):
                        enlarging.append(
                            {
                                "lesion_id": lid,
                                "growth_from_nadir_pct": None if growth is None else 100 * growth,
                                "rCBV": float(rcbv) if has_rcbv else None,
                            }
                        )
                        measured |= has_rcbv
                if size > 0 or lid in nadir:
                    nadir[lid] = (
                        min(nadir.get(lid, size), size) if size > 0 else nadir.get(lid, 0.0)
                    )
            details = {
                "threshold": float(threshold),
                "reference": RCBV_REFERENCE,
                "rcbv_map": rcbv_map,
                "statistic": statistic,
                "enlarging_lesions": enlarging,
            }
            if i == 0:
                continue
            if not enlarging:
                flag, reason = None, "no lesion enlarges by 25 % or more from its nadir"
            elif not measured:
                flag, reason = None, "enlarging lesion(s) without an rCBV measurement"
            else:
                low = [e for e in enlarging if e["rCBV"] is not None and e["rCBV"] < threshold]
                flag = bool(low)
                if low:
                    reason = (
                        "; ".join(
                            f"{e['lesion_id']} enlarges with rCBV {e['rCBV']:.2f} < {threshold:g}"
                            for e in low
                        )
                        + f" ({RCBV_REFERENCE}); the response call stays the criteria's"
                    )
                else:
                    reason = (
                        f"enlarging lesion(s) with rCBV >= {threshold:g}: perfusion supports "
                        "progression"
                    )
            out.append(
                {
                    "subject": str(subject),
                    "pattern": PATTERN,
                    "visit": visit,
                    "flag": flag,
                    "reason": reason,
                    "details": details,
                }
            )
    return out
