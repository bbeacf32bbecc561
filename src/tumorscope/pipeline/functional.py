"""The ``functional`` step: functional diffusion maps and parametric response maps on
registered follow-ups, thresholds from repeatability, lesion-level change beyond it.

For each follow-up visit of a subject, the visit's anatomical image is registered onto the
baseline's (rigid, Mattes mutual information: :func:`tumorscope.preprocessing.registration.
register_quick` with :data:`_REGISTRATION`, once per visit), and the follow-up's map and
lesion labels are resampled through that transform onto the baseline map's grid (linear for
the map, nearest for the labels; once per visit and map). Only the maps used are read (the
first diffusion and perfusion map of the baseline). Each voxel inside
a lesion at both visits is then "increased", "decreased" or "unchanged" beyond the map's
threshold (:func:`tumorscope.response.functional.parametric_response_map`; Moffat et al.
2005, doi:10.1073/pnas.0501532102; Galbán et al. 2009, doi:10.1038/nm.1919), per lesion and
for all lesions together; with both a diffusion and a perfusion map, the joint map of the two
too (:func:`~tumorscope.response.functional.joint_response_map`).

Thresholds (design decisions)
-----------------------------
* **Test–retest visits first.** Two visits of the subject before treatment (the baseline and
  a pre-baseline visit) at most :data:`RETEST_MAX_DAYS` days apart are a test–retest pair:
  the retest is registered onto the test like a follow-up, and the threshold of each map is
  its voxel-wise repeatability coefficient RC = 2.77·wSD of the voxel differences inside the
  lesions (:func:`tumorscope.response.functional.repeatability`, QIBA terms: Raunig et al.
  2015, doi:10.1177/0962280214537344).
* **Else a published value for the tissue**, where one exists: for ADC (and the diffusion
  coefficient D of IVIM/DKI) 0.55e-3 mm²/s, the 95 % limit of agreement of repeated ADC in
  contralateral brain (Moffat et al. 2005), the value the fDM was defined with. Its tissue is
  named in the report. For Ktrans no voxel-wise value is published that would transfer
  between scanners and models, so without test–retest visits no Ktrans map is computed and
  the reason is recorded.
* **Lesion-level change** of the map's mean (ΔADC, ΔKtrans) from baseline is judged against
  the same RC (:func:`tumorscope.response.functional.functional_change` with ``rc``). For the
  published voxel-wise value this is conservative: the RC of a mean over many voxels is
  smaller than a voxel's, so a change called here is real, while a smaller real change may be
  called "no change".
* Motion between the series of one visit is not corrected here (the ``align`` step reports
  it); the registration is between the visits' anatomical images.

Rows go to ``measurements`` (``step="functional"``): per lesion (``lesion_id``, or ``"all"``
for every lesion together) and map name ``"fdm:<map>"`` (statistics ``increased_fraction``,
``decreased_fraction``, ``unchanged_fraction`` (unit 1), ``n_voxels``, ``threshold`` (the
map's unit)) and ``"prm:<map1>+<map2>"`` (one ``fraction`` statistic per class), and under
the map's own name ``delta_mean`` (map unit), ``delta_mean_pct`` (%) and ``delta_call``
(+1 increase, −1 decrease, 0 no change beyond the RC). The label maps are written with
:func:`tumorscope.files.write_map`, the subject's table as Parquet, the thresholds, their
sources and the registration of each follow-up (4×4, baseline world to the visit's world) in a
JSON file beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import layout
from ..errors import DataError
from . import step
from .step import Context, StepOutput, Unit, Upstream, Write

if TYPE_CHECKING:
    from ..io import Study
    from ..volume import Volume

__all__ = [
    "DIFFUSION_MAPS",
    "PERFUSION_MAPS",
    "PUBLISHED_RC",
    "RETEST_MAX_DAYS",
    "functional_inputs",
    "functional_table_path",
    "run_functional",
]

#: Maps a functional diffusion map is made of, in order of preference.
DIFFUSION_MAPS = ("adc.ADC", "ivim.D", "dki.D")
#: Perfusion maps of a parametric response map, in order of preference.
PERFUSION_MAPS = ("extended_tofts.Ktrans", "tofts.Ktrans", "patlak.Ktrans", "2cxm.Ktrans")
#: Longest interval (days) between two pre-treatment visits taken as test and retest.
RETEST_MAX_DAYS = 7
#: Published voxel-wise repeatability coefficients: parameter -> (value, unit, source).
PUBLISHED_RC: dict[str, tuple[float, str, str]] = {
    p: (
        0.55e-3,
        "mm²/s",
        "95 % limit of agreement of repeated ADC in contralateral brain (Moffat et al. 2005, "
        "doi:10.1073/pnas.0501532102)",
    )
    for p in ("ADC", "D")
}


#: The registration of a visit's anatomical image onto the baseline's
#: (:func:`tumorscope.preprocessing.registration.register_quick`): 10 000 sampled voxels,
#: at most 100 iterations per level, stopped at a 0.001 mm step, the step multiplied by 0.7
#: at each turn. Against known rigid motions as accurate as the earlier 25 % of the voxels
#: and 200 iterations to within 0.1 mm, at about a third of the time
#: (``benchmarks/bench_align.py``, ``docs/performance.md`` "align (session 3)").
_REGISTRATION: dict[str, Any] = {
    "samples": 10_000,
    "iterations": 100,
    "min_step": 1e-3,
    "relaxation": 0.7,
}


def functional_table_path(out_dir: Path, subject: str) -> Path:
    """``<out>/sub-<id>/functional/sub-<id>_functional.parquet``
    (:func:`tumorscope.layout.functional_path`)."""
    return layout.functional_path(out_dir, subject)


def _label_map_path(out_dir: Path, subject: str, visit: str, name: str) -> Path:
    safe = name.replace(":", "-").replace("+", "-").replace(".", "")
    return (
        layout.subject_dir(out_dir, subject)
        / "functional"
        / f"sub-{subject}_ses-{visit}_{safe}.nii.gz"
    )


def functional_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    """The manifest, the anatomical images and lesion maps of every visit (the maps come from
    the fit steps, whose output hashes join the input hash)."""
    files = [step._manifest_file(ctx)]
    for v in study.subjects[unit.subject]:
        if "anatomical" in v.series:
            files.append(v.series["anatomical"].path)
        files += step._lesion_files(v)
    return files


@dataclass
class _Visit:
    id: str
    days: int | None
    anat: Volume | None
    labels: Volume | None
    maps: dict[str, Volume]
    units: dict[str, str]
    ids: dict[str, int]  # lesion id -> label at this visit
    # (map, labels) of this visit on the baseline map's grid, by map name (``_onto``)
    moved: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _load(ctx: Context, upstream: Upstream, subject: str, v: Any, wanted: list[str]) -> _Visit:
    from ..volume import Volume

    vmaps = step.maps_of_visit(ctx, upstream, subject, v.id)
    maps = {k: Volume.from_nifti(vmaps[k].path) for k in wanted if k in vmaps}
    units = {k: vmaps[k].unit for k in maps}
    anat = v.series["anatomical"].load() if "anatomical" in v.series else None
    if anat is not None and anat.data.ndim == 4:
        anat = anat.frame(0)
    labels = v.lesions.load_labels() if v.lesions is not None else None
    ids = {i.lesion_id: lab for lab, i in v.lesions.by_label().items()} if v.lesions else {}
    return _Visit(v.id, v.days_on_treatment, anat, labels, maps, units, ids)


def _onto(
    base: _Visit, other: _Visit, name: str, cache: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, str]:
    """``other``'s map ``name`` and lesion labels on ``base``'s map grid, through the
    registration of the anatomical images (identity when either has none)."""
    from ..preprocessing.registration import register_quick, resample, resample_mask

    grid = base.maps[name]
    matrix = None
    how = "same grid, not registered (no anatomical image)"
    if base.anat is not None and other.anat is not None:
        if other.id not in cache:  # one registration per follow-up
            # on one thread (the same study run twice gives the same files); the matrix
            # rounded to 1e-6 as ``align`` stores it
            m = register_quick(base.anat, other.anat, **_REGISTRATION).matrix
            cache[other.id] = np.round(np.asarray(m, float), 6)
        matrix = cache[other.id]
        how = "registered (rigid, anatomical images)"
    if other.labels is None:
        raise DataError(f"visit {other.id} has no lesion map", field="lesions")
    # the map and the labels moved once per (visit, map): the thresholds, the fDM and the
    # joint map of a follow-up ask for the same ones
    key = f"{base.id}\0{name}"
    if key not in other.moved:
        moved = resample(other.maps[name], grid, transform=matrix).data
        labels = resample_mask(other.labels, grid, transform=matrix).data
        other.moved[key] = (np.asarray(moved, float), np.asarray(labels))
    return (*other.moved[key], how)


def _labels_on(grid: Volume, labels: Volume) -> np.ndarray:
    from ..preprocessing.registration import resample_mask

    if grid.same_grid(labels):
        return np.asarray(labels.data)
    return np.asarray(resample_mask(labels, grid).data)


def _thresholds(
    subj: Any,
    visits: Mapping[str, _Visit],
    names: list[str],
    notes: list[str],
    cache: dict[str, np.ndarray],
) -> dict[str, tuple[float, str]]:
    """Threshold of each map (its unit) and where it comes from (module docstring)."""
    from ..response.functional import repeatability

    out: dict[str, tuple[float, str]] = {}
    base = visits[subj.baseline.id]
    retest = [
        v
        for v in subj
        if v.prebaseline
        and v.id in visits
        and base.days is not None
        and v.days_on_treatment is not None
        and abs(base.days - v.days_on_treatment) <= RETEST_MAX_DAYS
    ]
    for name in names:
        if retest and name in visits[retest[-1].id].maps and name in base.maps:
            test = visits[retest[-1].id]
            if test.labels is not None and base.labels is not None:
                moved, lab, _ = _onto(base, test, name, cache)
                inside = (_labels_on(base.maps[name], base.labels) > 0) & (lab > 0)
                a, b = np.asarray(base.maps[name].data, float)[inside], moved[inside]
                ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
                if ok.sum() >= 2:
                    r = repeatability(a[ok], b[ok], method="rms")
                    out[name] = (
                        r.rc,
                        f"test–retest visits {test.id} and {base.id}: voxel RC 2.77·wSD over "
                        f"{int(ok.sum())} lesion voxels",
                    )
                    continue
        pub = PUBLISHED_RC.get(name.split(".")[-1])
        if pub is not None:
            out[name] = (pub[0], f"published: {pub[2]}")
        else:
            notes.append(
                f"{name}: no functional map (no test–retest visits, no published voxel-wise "
                "repeatability for it)"
            )
    return out


def run_functional(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """fDM/PRM and lesion-level change of every follow-up against baseline (module docs)."""
    import pandas as pd

    from ..files import write_map
    from ..response.functional import joint_response_map, parametric_response_map
    from ..volume import atomic_write

    s = unit.subject
    subj = study.subjects[s]
    base_id = subj.baseline.id
    # only the maps used: the first diffusion and perfusion map of the baseline's
    index = step.maps_of_visit(ctx, upstream, s, base_id)
    wanted = [
        k
        for group in (DIFFUSION_MAPS, PERFUSION_MAPS)
        for k in [next((k for k in group if k in index), None)]
        if k is not None
    ]
    visits = {v.id: _load(ctx, upstream, s, v, wanted) for v in subj}
    base = visits[base_id]
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    files: list[Path] = []
    names = [
        next((k for k in group if k in base.maps), None)
        for group in (DIFFUSION_MAPS, PERFUSION_MAPS)
    ]
    present = [k for k in names if k is not None]
    if base.labels is None or not present:
        notes.append("functional maps not computed: no lesion map or no ADC/Ktrans map at baseline")
    cache: dict[str, np.ndarray] = {}
    thr = (
        _thresholds(subj, visits, present, notes, cache)
        if present and base.labels is not None
        else {}
    )
    after_base = [
        v for v in subj if not v.prebaseline and v.id != base_id and visits[v.id].labels is not None
    ]
    for v in after_base:
        fu = visits[v.id]
        moved: dict[str, np.ndarray] = {}
        for name in [k for k in present if k in thr and k in fu.maps]:
            grid = base.maps[name]
            arr, lab, how = _onto(base, fu, name, cache)
            b_lab = _labels_on(grid, base.labels)  # type: ignore[arg-type]
            moved[name] = arr
            rc, source = thr[name]
            unit_ = base.units.get(name, "")
            both = sorted(set(base.ids) & set(fu.ids))
            for lesion, mask in [("all", (b_lab > 0) & (lab > 0))] + [
                (lid, (b_lab == base.ids[lid]) & (lab == fu.ids[lid])) for lid in both
            ]:
                if not mask.any():
                    continue
                try:
                    rm = parametric_response_map(
                        grid.data, arr, mask, threshold=rc, name=name.split(".")[-1]
                    )
                except DataError as exc:  # nothing finite in this lesion
                    notes.append(f"visit {v.id} lesion {lesion} {name}: {exc}")
                    continue
                fr = dict(
                    zip(("unchanged", "increased", "decreased"), rm.fractions.values(), strict=True)
                )
                for stat, value, u in (
                    ("increased_fraction", fr["increased"], "1"),
                    ("decreased_fraction", fr["decreased"], "1"),
                    ("unchanged_fraction", fr["unchanged"], "1"),
                    ("n_voxels", float(rm.n_voxels), ""),
                    ("threshold", rc, unit_),
                ):
                    rows.append(_row(s, v.id, lesion, f"fdm:{name}", stat, value, u))
                if lesion == "all":
                    path = _label_map_path(ctx.out_dir, s, v.id, f"fdm:{name}")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    files += write_map(
                        path,
                        rm.labels.astype(np.uint8),
                        grid.affine,
                        units="1",
                        description=(
                            f"functional map of {name}, visit {v.id} against {base_id}: "
                            f"{json.dumps(rm.legend)}; threshold {rc:.4g} {unit_} ({source}); "
                            f"{how}"
                        ),
                        provenance={
                            "module": "tumorscope.pipeline.functional",
                            "threshold": rc,
                            "threshold_source": source,
                            "registration": how,
                        },
                    )
            rows += _lesion_change(s, v.id, base, fu, arr, lab, name, rc, unit_)
        if len(moved) == 2 and all(k in thr for k in moved):
            d, p = list(moved)
            if base.maps[d].same_grid(base.maps[p]):
                b_lab = _labels_on(base.maps[d], base.labels)  # type: ignore[arg-type]
                _, lab, _ = _onto(base, fu, d, cache)
                mask = (b_lab > 0) & (lab > 0)
                if mask.any():
                    jm = joint_response_map(
                        {d: base.maps[d].data, p: base.maps[p].data},
                        {d: moved[d], p: moved[p]},
                        mask,
                        thresholds={d: thr[d][0], p: thr[p][0]},
                    )
                    for cls, f in jm.fractions.items():
                        rows.append(_row(s, v.id, "all", f"prm:{d}+{p}", cls[:64], f, "1"))
    table = pd.DataFrame(
        rows, columns=["subject", "visit", "lesion_id", "map", "statistic", "value", "unit"]
    )
    meta = {name: {"threshold": t[0], "source": t[1]} for name, t in thr.items()}
    table.attrs["thresholds"] = meta
    out = functional_table_path(ctx.out_dir, s)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: table.to_parquet(tmp, index=False))
    sources = out.with_suffix(".json")
    # the registrations (baseline world -> visit world, RAS mm), for the report's viewer
    registrations = {v: np.asarray(m).tolist() for v, m in cache.items()}
    doc = {"thresholds": meta, "notes": notes, "baseline": base_id, "registrations": registrations}
    atomic_write(sources, lambda tmp: tmp.write_text(json.dumps(doc)))
    db_rows = [{**r, "step": "functional"} for r in rows]
    return StepOutput(
        files=[out, sources, *files],
        writes=[Write("measurements", {"subject": s, "step": "functional"}, db_rows)],
        notes=notes,
    )


def _row(
    s: str, visit: str, lesion: str, map_: str, stat: str, value: float, unit: str
) -> dict[str, Any]:
    return {
        "subject": s,
        "visit": visit,
        "lesion_id": lesion,
        "map": map_,
        "statistic": stat,
        "value": float(value),
        "unit": unit,
    }


def _lesion_change(
    s: str,
    visit: str,
    base: _Visit,
    fu: _Visit,
    moved: np.ndarray,
    labels: np.ndarray,
    name: str,
    rc: float,
    unit: str,
) -> list[dict[str, Any]]:
    """ΔADC / ΔKtrans of each lesion's mean from baseline, judged against ``rc``."""
    import pandas as pd

    from ..response.functional import functional_change

    grid = base.maps[name]
    b_lab = _labels_on(grid, base.labels)  # type: ignore[arg-type]
    recs = []
    for lid in sorted(set(base.ids) & set(fu.ids)):
        b = np.asarray(grid.data, float)[b_lab == base.ids[lid]]
        f = moved[labels == fu.ids[lid]]
        for vis, vals, idx in (("b", b, 0), ("f", f, 1)):
            vals = vals[np.isfinite(vals)]
            recs.append(
                {
                    "subject": s,
                    "visit": vis,
                    "date": pd.Timestamp("2000-01-01") + pd.Timedelta(days=idx),
                    "lesion_id": lid,
                    "mean": float(vals.mean()) if vals.size else np.nan,
                }
            )
    if not recs:
        return []
    ch = functional_change(pd.DataFrame(recs), statistic="mean", rc=rc)
    rows = []
    for r in ch.to_dict("records"):
        call = {"increase": 1.0, "decrease": -1.0, "no change": 0.0}.get(r["call"], np.nan)
        rows += [
            _row(s, visit, r["lesion_id"], name, "delta_mean", r["change"], unit),
            _row(s, visit, r["lesion_id"], name, "delta_mean_pct", r["change_pct"], "%"),
            _row(s, visit, r["lesion_id"], name, "delta_call", call, ""),
        ]
    return rows
