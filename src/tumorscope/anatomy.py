"""Standard anatomical nomenclature shared by models and criteria (imports nothing)."""

from __future__ import annotations

__all__ = ["AHA_SEGMENTS"]

#: AHA 17-segment model, segments 1-16 (Cerqueira et al., Circulation 2002): number → name;
#: shared by the cardiac segment means (models) and the organ-watch reasons (response).
AHA_SEGMENTS: dict[int, str] = {
    1: "basal anterior",
    2: "basal anteroseptal",
    3: "basal inferoseptal",
    4: "basal inferior",
    5: "basal inferolateral",
    6: "basal anterolateral",
    7: "mid anterior",
    8: "mid anteroseptal",
    9: "mid inferoseptal",
    10: "mid inferior",
    11: "mid inferolateral",
    12: "mid anterolateral",
    13: "apical anterior",
    14: "apical septal",
    15: "apical inferior",
    16: "apical lateral",
}
