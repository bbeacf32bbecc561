"""Tissue states and lesion trajectories of the synthetic study.

The tissue states (:data:`TISSUES`) and the lesion trajectories (:data:`SCENARIOS`) are data,
``scenarios.yaml`` beside this module, loaded into the dataclasses below. Every number here
and there is a ground truth the tests and the demo rely on. Values are typical of
published tumour and liver measurements at 1.5–3 T (diffusion: Koh & Collins, AJR 2007,
doi:10.2214/AJR.06.1403; IVIM: Le Bihan, Radiology 2019, doi:10.1148/radiol.2019181773;
DCE: O'Connor et al., Nat Rev Clin Oncol 2012, doi:10.1038/nrclinonc.2011.215).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FERUMOXYTOL_DR2STAR",
    "FLUORINE",
    "SCENARIOS",
    "T2STAR_MS",
    "TISSUES",
    "LesionSpec",
    "Scenario",
    "Tissue",
]


@dataclass(frozen=True)
class Tissue:
    """Parameters of one tissue state (units as in docs/architecture.md)."""

    D: float  # mm²/s
    f: float  # 1
    D_star: float  # mm²/s
    K: float  # 1
    S0: float  # a.u., DWI b=0 signal
    T1: float  # ms
    T2: float  # ms
    M0: float  # a.u., proton density for VFA/DCE
    Ktrans: float  # 1/min
    ve: float  # 1
    vp: float  # 1


#: T2* (ms) of each tissue state at 3 T for the multi-echo gradient echo series. Hypoxic,
#: cellular tumour has a higher R2* (BOLD: deoxyhaemoglobin), treated and necrotic tissue a
#: lower one (values after Li et al., Radiology 2011, doi:10.1148/radiol.11101891).
T2STAR_MS: dict[str, float] = {
    "background": 25.0,
    "untreated": 28.0,
    "responding": 35.0,
    "responded": 45.0,
    "infiltrated": 30.0,
    "progressing": 26.0,
    "aggressive": 22.0,
    "necrotic": 55.0,
    "node": 40.0,
    "blood": 60.0,
}

#: ΔR2* (1/s) 24 h after ferumoxytol (5 mg Fe/kg): iron taken up by tumour-associated
#: macrophages, Kupffer cells in the liver-like background, and a blood-pool residue
#: (plasma half-life ~15 h). Macrophage-rich states (immune infiltration, responding tumour,
#: lymph node) take up most (after Aghighi et al., Clin Cancer Res 2018,
#: doi:10.1158/1078-0432.CCR-17-2257; Daldrup-Link et al., Clin Cancer Res 2011,
#: doi:10.1158/1078-0432.CCR-10-3420).
FERUMOXYTOL_DR2STAR: dict[str, float] = {
    "background": 40.0,
    "untreated": 6.0,
    "responding": 22.0,
    "responded": 18.0,
    "infiltrated": 28.0,
    "progressing": 5.0,
    "aggressive": 4.0,
    "necrotic": 2.0,
    "node": 30.0,
    "blood": 15.0,
}


#: 19F cell tracking in one subject (PFC-labelled T cells injected before visit 02): cell
#: density in each lesion (cells/mL), 19F atoms per cell, and the reference tubes
#: (centre x, y in mm, radius mm, 19F concentration in mM of atoms). After Srinivas et al.,
#: MRM 2007, doi:10.1002/mrm.21288 (calibration with reference tubes).
@dataclass(frozen=True)
class FluorineSpec:
    """Settings of the 19F cell-tracking acquisition of the phantom."""

    trajectory: str
    visit_index: int
    cells_per_ml: dict[str, float]
    fluorine_per_cell: float
    tubes: tuple[tuple[float, float, float, float], ...]  # (x mm, y mm, radius mm, 19F mM)
    signal_per_mM: float  # image signal per mM of 19F atoms in a voxel (full voxel)
    sigma: float


FLUORINE = FluorineSpec(
    trajectory="pseudoprogressor",
    visit_index=1,
    cells_per_ml={"L1": 8.0e5, "L2": 1.0e5},
    fluorine_per_cell=2.0e12,
    tubes=((54.0, -54.0, 5.0, 5.0), (-54.0, -54.0, 5.0, 10.0), (54.0, 54.0, 5.0, 20.0)),
    signal_per_mM=100.0,
    sigma=20.0,
)


@dataclass(frozen=True)
class LesionSpec:
    """A lesion: where it is, its shape, and per-visit scale and tissue state.

    ``scales`` and ``states`` have one entry per visit of the scenario (``None`` scale: the
    lesion is absent at that visit, e.g. before a new lesion appears). ``radii_mm`` are the
    ellipsoid semi-axes at scale 1; the ellipsoid is rotated by ``angle_deg`` in the axial
    plane. Lesions with a baseline in-plane radius of at least 12 mm have a necrotic core of
    half their radii.
    """

    lesion_id: str
    organ: str
    role: str  # "target", "non-target" or "new"
    nodal: bool
    centre_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    angle_deg: float
    scales: tuple[float | None, ...]
    states: tuple[str, ...]
    necrotic_core: bool = True


@dataclass(frozen=True)
class Scenario:
    """A subject: its trajectory label, visit days (from baseline) and lesions."""

    trajectory: str
    visit_days: tuple[int, ...]
    lesions: tuple[LesionSpec, ...]
    baseline_index: int = 0
    notes: str = ""
    treatment_agent: str = "pembrolizumab"
    aif_delay_s: float = 20.0
    extra: dict[str, str] = field(default_factory=dict)


def _lesion(row: list[Any]) -> LesionSpec:
    lid, organ, role, nodal, centre, radii, angle, scales, states, core = row
    return LesionSpec(
        str(lid),
        str(organ),
        str(role),
        bool(nodal),
        tuple(float(x) for x in centre),  # type: ignore[arg-type]
        tuple(float(x) for x in radii),  # type: ignore[arg-type]
        float(angle),
        tuple(None if x is None else float(x) for x in scales),
        tuple(str(x) for x in states),
        necrotic_core=bool(core),
    )


def _load() -> tuple[dict[str, Tissue], tuple[Scenario, ...]]:
    """The tissue states and scenarios of ``scenarios.yaml`` (data beside this module: one
    row per tissue state, one per lesion)."""
    import yaml

    doc = yaml.safe_load((Path(__file__).with_name("scenarios.yaml")).read_text("utf-8"))
    tissues = {str(k): Tissue(*(float(x) for x in row)) for k, row in doc["tissues"].items()}
    out = []
    for e in doc["scenarios"]:
        out.append(
            Scenario(
                str(e["trajectory"]),
                tuple(int(d) for d in e["visit_days"]),
                tuple(_lesion(row) for row in e["lesions"]),
                baseline_index=int(e.get("baseline_index", 0)),
                notes=str(e.get("notes", "")),
                treatment_agent=str(e.get("treatment_agent", "pembrolizumab")),
                aif_delay_s=float(e.get("aif_delay_s", 20.0)),
                extra={str(k): str(v) for k, v in (e.get("extra") or {}).items()},
            )
        )
    return tissues, tuple(out)


#: The tissue states (``scenarios.yaml``): background parenchyma, tumour before, during and
#: after response or progression, necrotic core, lymph node and arterial blood.
TISSUES: dict[str, Tissue]
#: The six subjects of the synthetic study (``scenarios.yaml``): responder, pseudoprogressor,
#: progressor, mixed, hyperprogressor, stable.
SCENARIOS: tuple[Scenario, ...]
TISSUES, SCENARIOS = _load()
