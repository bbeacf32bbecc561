"""mRECIST for hepatocellular carcinoma: RECIST 1.1 on the viable (arterially enhancing) tumour.

Lencioni R, Llovet JM. Modified RECIST (mRECIST) assessment for hepatocellular carcinoma.
Semin Liver Dis 2010;30:52-60. doi:10.1055/s-0030-1247132

Rules implemented: the sizes are the longest diameters of the *viable* tumour, "the
arterially enhancing component" (column ``viable_diameter_mm``; 0 when no enhancement is
left). CR: "disappearance of any intratumoral arterial enhancement in all target lesions".
PR: "at least a 30% decrease in the sum of diameters of viable (enhancement in the arterial
phase) target lesions, taking as reference the baseline sum". PD: "an increase of at least
20% in the sum of the diameters of viable (enhancing) target lesions, taking as reference the
smallest sum of the diameters of viable (enhancing) target lesions recorded since treatment
started" — without RECIST 1.1's additional 5 mm. Non-target and new-lesion rules, the
overall response and NE handling are those of RECIST 1.1
(:mod:`tumorscope.response.recist`).

Not implemented: the HCC-specific eligibility of new lesions (≥1 cm with the typical
vascular pattern; a ``new`` row is taken as an unequivocal new lesion), the 20 mm short axis
for porta hepatis nodes and the cytology rules for effusions and ascites.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ResponseError
from ._core import subjects_from_table
from .recist import assess_recist

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["assess_mrecist"]


def assess_mrecist(df: pd.DataFrame, *, check_measurability: bool = True) -> list[dict[str, Any]]:
    """Score every visit with mRECIST; ``df`` is a validated table with ``viable_diameter_mm``."""
    if not np.isfinite(df["viable_diameter_mm"].to_numpy(dtype=float)).any():
        raise ResponseError(
            "mRECIST needs the viable tumour diameters: column 'viable_diameter_mm' is "
            "missing or empty",
            field="viable_diameter_mm",
        )
    t = df.copy()
    for rec in t[(t["kind"] == "target") & (t["visit_index"] == 0)].to_dict("records"):
        v = float(rec["viable_diameter_mm"])
        if not (np.isfinite(v) and v > 0):
            raise ResponseError(
                f"{rec['row']}: target lesion {rec['lesion_id']} of subject {rec['subject']} "
                "has no viable (enhancing) diameter at baseline; mRECIST target lesions show "
                "arterial enhancement",
                field="viable_diameter_mm",
            )
    t["diameter_mm"] = [
        float(v) if (k == "target" or np.isfinite(v)) else float(d)
        for k, v, d in zip(t["kind"], t["viable_diameter_mm"], t["diameter_mm"], strict=True)
    ]
    return assess_recist(
        subjects_from_table(t),
        check_measurability=check_measurability,
        pd_mm=0.0,
        criteria="mrecist",
    )
