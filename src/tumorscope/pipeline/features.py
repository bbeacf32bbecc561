"""The ``features`` step: habitat fractions over time and (opt-in) radiomics with
delta-radiomics, per lesion and map, into the ``measurements`` table.

Design decisions
----------------
* **Habitats** (:func:`tumorscope.lesions.habitats.fit_habitats`, k-means on standardised
  ADC and Ktrans, 3 habitats) are fitted on the subject's own baseline lesions and applied to
  every visit, so the fractions over time are of the same habitats; a study-wide model
  (pooled baselines, :func:`tumorscope.stages.lesions.measure_study`) needs every subject at
  once and is the API's. Rows: map ``"habitat:<map1>+<map2>"``, lesion id, statistic
  ``"fraction <k>: <habitat name>"`` (unit 1). Maps on another grid than the lesion map get
  the lesion masks resampled (world coordinates, nearest neighbour).
* **Radiomics** (MIRP, IBSI-compliant, :func:`tumorscope.lesions.radiomics.
  radiomics_features`) take seconds per lesion and map, so they run only with the run option
  ``radiomics: true``, on :data:`RADIOMICS_MAPS`. Rows: map name, statistic
  ``"radiomics:<feature>"`` (value) and ``"delta:<feature>"`` (change from the subject's
  baseline, :func:`~tumorscope.lesions.radiomics.delta_radiomics`), unit "" (features carry
  mixed units; the IBSI feature name says which). Names over 64 characters (the column's
  width) are left out, and counted in the step's notes.
* The subject's table is also written as Parquet beside its other tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import layout
from . import step
from .step import Context, StepOutput, Unit, Upstream, Write

if TYPE_CHECKING:
    from ..io import Study
    from ..volume import Volume

__all__ = ["HABITAT_MAPS", "RADIOMICS_MAPS", "features_inputs", "features_path", "run_features"]

#: Maps clustered into habitats (diffusion, perfusion): the first of each group present.
HABITAT_MAPS = (("adc.ADC", "ivim.D"), ("extended_tofts.Ktrans", "tofts.Ktrans", "patlak.Ktrans"))
#: Maps whose radiomics are computed when the ``radiomics`` option is on.
RADIOMICS_MAPS = ("adc.ADC", "ivim.D", "extended_tofts.Ktrans", "extended_tofts.ve")


def features_path(out_dir: Path, subject: str) -> Path:
    """``<out>/sub-<id>/sub-<id>_features.parquet`` (:func:`tumorscope.layout.features_path`)."""
    return layout.features_path(out_dir, subject)


def features_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    """The manifest and the lesion maps (the maps come from the fit steps)."""
    visits = study.subjects[unit.subject]
    return [step._manifest_file(ctx), *(p for v in visits for p in step._lesion_files(v))]


def _masks(labels: Volume, table: Any, onto: Volume) -> dict[str, np.ndarray]:
    from ..preprocessing.registration import resample_mask

    lab = labels if labels.same_grid(onto) else resample_mask(labels, onto)
    out = {}
    for info in table:
        m = np.asarray(lab.data) == info.label
        if m.any():
            out[info.lesion_id] = m
    return out


def run_features(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Habitat fractions of every lesion at every visit; radiomics if asked (module docs)."""
    import pandas as pd

    from ..volume import atomic_write

    s = unit.subject
    subj = study.subjects[s]
    base_id = subj.baseline.id
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    per_visit = {}
    for v in subj:
        vmaps = step.maps_of_visit(ctx, upstream, s, v.id)
        if v.lesions is None:
            continue
        per_visit[v.id] = (v, vmaps)
    base = per_visit.get(base_id)
    names = (
        [next((k for k in group if k in base[1]), None) for group in HABITAT_MAPS] if base else []
    )
    if base is not None and all(names):
        rows += _habitats(s, base_id, per_visit, [str(n) for n in names], notes)
    else:
        notes.append("habitats not computed: no ADC and Ktrans maps with lesions at baseline")
    if ctx.options.get("radiomics", False):
        rows += _radiomics(s, subj, per_visit, notes)
    table = pd.DataFrame(
        rows, columns=["subject", "visit", "lesion_id", "map", "statistic", "value", "unit"]
    )
    out = features_path(ctx.out_dir, s)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: table.to_parquet(tmp, index=False))
    return StepOutput(
        files=[out],
        writes=[
            Write(
                "measurements",
                {"subject": s, "step": "features"},
                [{**r, "step": "features"} for r in rows],
            )
        ],
        notes=notes,
    )


def _habitats(
    s: str,
    base_id: str,
    per_visit: dict[str, tuple[Any, Any]],
    names: list[str],
    notes: list[str],
) -> list[dict[str, Any]]:
    from ..errors import DataError
    from ..lesions.habitats import fit_habitats
    from ..volume import Volume

    def load(vmaps: Any) -> dict[str, Volume] | None:
        if not all(n in vmaps for n in names):
            return None
        vols = {n: Volume.from_nifti(vmaps[n].path) for n in names}
        first = vols[names[0]]
        if not all(first.same_grid(x) for x in vols.values()):
            return None
        return vols

    v0, vm0 = per_visit[base_id]
    maps0 = load(vm0)
    if maps0 is None:
        notes.append(f"habitats not computed: {' and '.join(names)} not on one grid at baseline")
        return []
    ref = maps0[names[0]]
    masks0 = _masks(v0.lesions.load_labels(), v0.lesions.table, ref)
    try:
        model = fit_habitats(
            {n: m.data for n, m in maps0.items()}, masks0, map_names=names, n_habitats=3
        )
    except DataError as exc:
        notes.append(f"habitats not computed: {exc}")
        return []
    label = "habitat:" + "+".join(names)
    rows = []
    for vid, (v, vmaps) in per_visit.items():
        maps = load(vmaps)
        if maps is None:
            continue
        masks = _masks(v.lesions.load_labels(), v.lesions.table, maps[names[0]])
        if not masks:
            continue
        fr = model.fractions({n: m.data for n, m in maps.items()}, masks, visit=vid)
        for r in fr.to_dict("records"):
            stat = f"fraction {int(r['habitat'])}: {r['habitat_name']}"[:64]
            rows.append(
                {
                    "subject": s,
                    "visit": vid,
                    "lesion_id": r["lesion_id"],
                    "map": label,
                    "statistic": stat,
                    "value": float(r["fraction"]),
                    "unit": "1",
                }
            )
    return rows


def _radiomics(
    s: str, subj: Any, per_visit: dict[str, tuple[Any, Any]], notes: list[str]
) -> list[dict[str, Any]]:
    import pandas as pd

    from ..lesions.radiomics import delta_radiomics, radiomics_features
    from ..volume import Volume

    frames = []
    for vid, (v, vmaps) in per_visit.items():
        labels = v.lesions.load_labels()
        for name in RADIOMICS_MAPS:
            if name not in vmaps:
                continue
            vol = Volume.from_nifti(vmaps[name].path)
            for lid, mask in _masks(labels, v.lesions.table, vol).items():
                frames.append(
                    radiomics_features(vol, mask, map_name=name, lesion_id=lid, visit=vid)
                )
    if not frames:
        notes.append("radiomics: no lesion on a radiomics map")
        return []
    feats = pd.concat(frames, ignore_index=True)
    order = [v.id for v in subj if v.id in per_visit]
    base = subj.baseline.id if subj.baseline.id in set(feats["visit"]) else order[0]
    deltas = delta_radiomics(feats, visit_order=order, baseline=base)
    rows, skipped = [], 0
    for kind, t, col in (("radiomics", feats, "value"), ("delta", deltas, "delta")):
        for r in t.to_dict("records"):
            stat = f"{kind}:{r['feature']}"
            if len(stat) > 64:
                skipped += 1
                continue
            value = r[col]
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue  # text settings rows
            rows.append(
                {
                    "subject": s,
                    "visit": str(r["visit"]),
                    "lesion_id": str(r["lesion_id"]),
                    "map": str(r["map"]),
                    "statistic": stat,
                    "value": value,
                    "unit": "",
                }
            )
    if skipped:
        notes.append(f"radiomics: {skipped} feature names over 64 characters left out")
    return rows
