"""The lesion stage: lesion geometry and per-lesion map statistics, for a study or a subject.

Two entry points read lesion maps and parameter maps from files (which :mod:`tumorscope.lesions`,
the pure measuring code, never does):

* :func:`measure_subject` is the pipeline's ``measure`` step: every lesion of every visit of a
  subject (:mod:`tumorscope.lesions.geometry`) and the statistics of every fitted map in it
  (:func:`tumorscope.lesions.stats.statistics_table`), with the lesion masks moved onto a
  series' maps through its alignment when ``align`` applied one. It writes the tidy
  measurement table and the per-lesion, per-visit geometry table (Parquet) and returns their
  rows (:data:`MEASUREMENT_COLUMNS`).
* :func:`measure_study` walks a study (:func:`tumorscope.io.open_study`), measures every
  lesion of every visit, reads the parameter maps of the visit and adds their per-lesion
  statistics (:func:`tumorscope.lesions.stats.lesion_statistics`) as wide columns
  (``ADC_mean``, ``Ktrans_p90`` …), the lesion's tracking status
  (:mod:`tumorscope.lesions.tracking`) and, if asked, habitat fractions
  (:mod:`tumorscope.lesions.habitats`). :func:`study_radiomics` gives the MIRP features of
  every lesion on every map as a tidy table with delta-radiomics.

Where the maps come from (``maps``)
-----------------------------------
* ``None``: ``<study>/derivatives/tumorscope`` if it exists (the pipeline's output), else no
  maps (geometry only).
* A folder laid out like the pipeline output, ``DIR/sub-<s>/ses-<v>/[maps/]*.nii.gz``.
  File names ``…_model-<model>_<param>.nii.gz`` (with ``…_model-<model>_status.nii.gz``
  giving the fit status of that model's maps) or ``…_desc-<param>_truth.nii.gz`` (the
  phantom's ground truth, ``DIR = <study>/derivatives/truth``). A parameter fitted by two
  models (``D`` by IVIM and DKI) is named ``<model>_<param>`` (``ivim_D``).
* A callable ``(subject, visit) -> {name: Volume}`` or ``{name: (Volume, status)}``.

Grids
-----
The study format puts every image of a visit on the lesion map's grid. A map on another grid
is an error by default (``on_grid_mismatch="error"``), because a different grid may mean a
different position of the patient; with ``"resample"`` the label map is resampled onto the
map's grid in world coordinates (:func:`tumorscope.preprocessing.resample_mask`), which is
right when the scanner kept the patient's position (series of one session). Between visits,
lesions keep the ids of the lesion tables; :func:`tumorscope.lesions.tracking.track_lesions`
reports whether each is ``prebaseline``, ``baseline``, ``present``, ``new``, ``reappeared``
or ``disappeared``
(disappeared lesions get a row with ``present = False`` and NaN measures).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import DataError, TumorscopeWarning
from ..layout import VisitMap, default_out_dir
from ..lesions.geometry import GEOMETRY_KEYS, measure
from ..lesions.stats import DISTRIBUTION_STATISTICS, SUMMARY_STATISTICS, lesion_statistics
from ..volume import Volume
from .base import StageResult

if TYPE_CHECKING:
    import pandas as pd

    from ..io import Study
    from ..lesions.radiomics import RadiomicsSettings

__all__ = [
    "DEFAULT_WIDE_STATISTICS",
    "GEOMETRY_UNITS",
    "LESION_COLUMNS",
    "MEASUREMENT_COLUMNS",
    "VisitMeasureInputs",
    "discover_maps",
    "measure_study",
    "measure_subject",
    "measurement_row",
    "study_radiomics",
]

#: Identity and geometry columns of :func:`measure_study`, in order (map columns follow).
LESION_COLUMNS: tuple[str, ...] = (
    "subject",
    "visit",
    "date",
    "lesion_id",
    "organ",
    "target",
    "nodal",
    "present",
    "tracking",
    *GEOMETRY_KEYS,
)

#: Statistics of each map that become columns ``<map>_<statistic>``.
DEFAULT_WIDE_STATISTICS: tuple[str, ...] = (*DISTRIBUTION_STATISTICS, "n_valid", "n_excluded")

MapSource = str | Path | Callable[[str, str], Mapping[str, Any]] | None
GridPolicy = Literal["error", "resample"]

_MODEL_RE = re.compile(r"_model-(?P<model>[A-Za-z0-9]+)_(?P<param>.+)$")
_DESC_RE = re.compile(r"_desc-(?P<param>[A-Za-z0-9_]+?)_(?:truth|map)$")
_SKIP_PARAMS = {"status", "rss"}


def discover_maps(folder: str | Path) -> dict[str, tuple[Path, Path | None]]:
    """Parameter maps in one visit folder: ``{name: (map path, status path or None)}``.

    See the module docstring for the file names recognised; standard errors, residuals,
    masks and status images are not maps.
    """
    d = Path(folder)
    found: dict[str, list[tuple[str, Path, Path | None]]] = {}
    files = sorted(d.glob("*.nii.gz")) + sorted(d.glob("*.nii"))
    for p in files:
        stem = p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else p.stem
        m = _MODEL_RE.search(stem)
        if m:
            model, param = m["model"], m["param"]
            if param in _SKIP_PARAMS or param.endswith("_stderr"):
                continue
            status = p.with_name(
                p.name.replace(f"_model-{model}_{param}", f"_model-{model}_status")
            )
            found.setdefault(param, []).append((model, p, status if status.exists() else None))
            continue
        m = _DESC_RE.search(stem)
        if m and not stem.endswith("_mask"):
            found.setdefault(m["param"], []).append(("", p, None))
    out: dict[str, tuple[Path, Path | None]] = {}
    for param, items in found.items():
        if len(items) == 1:
            out[param] = (items[0][1], items[0][2])
        else:
            for model, p, st in items:
                out[f"{model}_{param}" if model else param] = (p, st)
    return out


def measure_study(
    study: Study | str | Path,
    maps: MapSource = None,
    *,
    statistics: Sequence[str] = DEFAULT_WIDE_STATISTICS,
    habitat_maps: Sequence[str] | None = None,
    n_habitats: int = 3,
    on_grid_mismatch: GridPolicy = "error",
) -> pd.DataFrame:
    """Per-lesion, per-visit table of a study: geometry, map statistics, tracking, habitats.

    Parameters
    ----------
    study : Study or path
        An opened study or its folder.
    maps : path, callable or None
        Where the parameter maps are (module docstring).
    statistics : sequence of str
        Statistics of :func:`tumorscope.lesions.stats.lesion_statistics` that become the
        columns ``<map>_<statistic>``.
    habitat_maps : sequence of str, optional
        Maps to cluster into habitats (e.g. ``["ADC", "Ktrans"]``); the model is fitted on the
        lesions of every subject's baseline visit and applied to every visit. Adds columns
        ``habitat_<k>_fraction`` and ``habitat_<k>_name``.
    n_habitats : int, default 3
    on_grid_mismatch : {"error", "resample"}, default "error"
        What to do when a map is not on the lesion map's grid.

    Returns
    -------
    pandas.DataFrame
        :data:`LESION_COLUMNS` then the map columns; one row per subject, visit and lesion
        (sorted by subject, visit order, lesion id). ``date`` is a ``datetime.date``.

    Raises
    ------
    DataError
        Unreadable or inconsistent inputs (named), a map on another grid with
        ``on_grid_mismatch="error"``.
    """
    import pandas as pd

    _check_measure_options(statistics, on_grid_mismatch)
    st = _open(study)
    rows: list[dict[str, Any]] = []
    hab_inputs: list[tuple[dict[str, Any], dict[str, Volume], dict[str, np.ndarray], bool]] = []
    for subject in st:
        visits = [v for v in subject if v.lesions is not None]
        tracked = _tracking(visits)
        infos_all: dict[str, Any] = {}
        for v in visits:
            for r in v.lesions.table if v.lesions is not None else ():
                infos_all.setdefault(r.lesion_id, r)
        for visit in visits:
            assert visit.lesions is not None
            labels = visit.lesions.load_labels()
            vmaps = _visit_maps(st, maps, subject.id, visit.id)
            hab_masks: dict[str, np.ndarray] = {}
            for info in visit.lesions.table:
                m = labels.data == info.label
                if not m.any():
                    continue  # not segmented at this visit: reported as disappeared below
                where = f"{info.lesion_id} at visit {visit.id} of subject {subject.id}"
                geo = measure(m, labels.affine, lesion=where)
                row = _lesion_row(subject.id, visit, info, True, geo)
                row["tracking"] = tracked.get((visit.id, info.lesion_id), "")
                for name, (vol, status) in vmaps.items():
                    mask = _mask_on(labels, info.label, vol, on_grid_mismatch, name, where)
                    s = _statistics(vol, mask, status, info.lesion_id, visit.id, name, where)
                    if habitat_maps and name == habitat_maps[0] and mask.any():
                        hab_masks[info.lesion_id] = mask
                    for k in statistics:
                        row[f"{name}_{k}"] = s[k] if mask.any() else _empty_statistic(k)
                rows.append(row)
            for lid in sorted(
                k for (vv, k), stt in tracked.items() if vv == visit.id and stt == "disappeared"
            ):
                rows.append(_lesion_row(subject.id, visit, infos_all[lid], False, None))
            if habitat_maps and all(h in vmaps for h in habitat_maps) and hab_masks:
                hab_inputs.append(
                    (
                        {"subject": subject.id, "visit": visit.id},
                        {h: vmaps[h][0] for h in habitat_maps},
                        hab_masks,
                        bool(visit.baseline),
                    )
                )
    df = pd.DataFrame(rows)
    for c in LESION_COLUMNS:
        if c not in df.columns:
            df[c] = pd.Series(dtype=object)
    if habitat_maps and rows:
        df = _add_habitats(df, hab_inputs, list(habitat_maps), n_habitats)
    return _in_visit_order(df, st)


def _check_measure_options(statistics: Sequence[str], on_grid_mismatch: str) -> None:
    unknown = [k for k in statistics if k not in SUMMARY_STATISTICS]
    if unknown:
        raise DataError(
            f"unknown statistic(s) {unknown}; choose from {list(SUMMARY_STATISTICS)}",
            field="statistics",
        )
    if on_grid_mismatch not in ("error", "resample"):
        raise DataError(
            f"on_grid_mismatch must be 'error' or 'resample', got {on_grid_mismatch!r}",
            field="on_grid_mismatch",
        )


def _tracking(visits: Sequence[Any]) -> dict[tuple[str, str], str]:
    """Tracking status of every lesion at every visit: ``{(visit, lesion id): status}``."""
    from ..lesions.tracking import VisitLabels, track_lesions

    if not visits:
        return {}
    track = track_lesions(
        [
            VisitLabels(
                v.id, v.lesions.load_labels(), ids={r.label: r.lesion_id for r in v.lesions.table}
            )
            for v in visits
        ],
        reference=next((i for i, v in enumerate(visits) if v.baseline), 0),
    )
    return {
        (str(vv), str(lid)): str(stt)
        for vv, lid, stt in zip(track["visit"], track["lesion_id"], track["status"], strict=True)
    }


def _lesion_row(
    subject: str, visit: Any, info: Any, present: bool, geo: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Identity and geometry of a lesion at a visit (NaN geometry and "disappeared" if absent)."""
    return {
        "subject": subject,
        "visit": visit.id,
        "date": visit.date,
        "lesion_id": info.lesion_id,
        "organ": info.organ,
        "target": info.target,
        "nodal": info.nodal,
        "present": present,
        "tracking": "" if present else "disappeared",
        **{k: (np.nan if geo is None else geo[k]) for k in GEOMETRY_KEYS},
    }


def _empty_statistic(statistic: str) -> float:
    """A statistic of a lesion with no voxel on a map's grid."""
    return 0.0 if statistic.startswith("n_") else np.nan


def _statistics(
    vol: Volume,
    mask: np.ndarray,
    status: np.ndarray | None,
    lesion_id: str,
    visit: str,
    name: str,
    where: str,
) -> dict[str, Any]:
    """Summary statistics of one map in one lesion (``{}`` and a warning if no voxel is left)."""
    if not mask.any():
        # a small lesion can vanish when resampled onto a coarse map grid
        warnings.warn(
            f"lesion {where}: no voxel left on the grid of map {name!r}; its statistics are NaN",
            TumorscopeWarning,
            stacklevel=3,
        )
        return {}
    stats = lesion_statistics(
        vol, mask, lesion_id=lesion_id, visit=visit, map_name=name, status=status
    )
    return dict(zip(stats["statistic"], stats["value"], strict=True))


def _in_visit_order(df: pd.DataFrame, st: Study) -> pd.DataFrame:
    """Rows by subject, visit order and lesion id; the identity columns first."""
    extra = [c for c in df.columns if c not in LESION_COLUMNS]
    order = {(s.id, v.id): i for s in st for i, v in enumerate(s)}
    if len(df):
        df = df.assign(
            _o=[order.get((s, v), 0) for s, v in zip(df["subject"], df["visit"], strict=True)]
        )
        df = df.sort_values(["subject", "_o", "lesion_id"]).drop(columns="_o")
    return df[list(LESION_COLUMNS) + extra].reset_index(drop=True)


def study_radiomics(
    study: Study | str | Path,
    maps: MapSource = None,
    *,
    map_names: Sequence[str] | None = None,
    settings: Mapping[str, RadiomicsSettings] | None = None,
    on_grid_mismatch: GridPolicy = "error",
) -> pd.DataFrame:
    """MIRP radiomics of every lesion on every map, with deltas from each subject's baseline.

    Parameters
    ----------
    study, maps, on_grid_mismatch
        As in :func:`measure_study`.
    map_names : sequence of str, optional
        Maps to use (default all).
    settings : mapping of map name to RadiomicsSettings, optional
        Per-map settings; maps not named use :func:`.radiomics.settings_for`.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject, lesion_id, map, feature, visit, value, baseline_value, delta,
        relative_delta`` (see :func:`.radiomics.delta_radiomics`).
    """
    import pandas as pd

    from ..lesions.radiomics import DELTA_COLUMNS, delta_radiomics, radiomics_features

    st = _open(study)
    out = []
    for subject in st:
        frames = []
        order = [v.id for v in subject]
        for visit in subject:
            if visit.lesions is None:
                continue
            labels = visit.lesions.load_labels()
            vmaps = _visit_maps(st, maps, subject.id, visit.id)
            for info in visit.lesions.table:
                if not (labels.data == info.label).any():
                    continue
                where = f"{info.lesion_id} at visit {visit.id} of subject {subject.id}"
                for name, (vol, _) in vmaps.items():
                    if map_names is not None and name not in map_names:
                        continue
                    mask = _mask_on(labels, info.label, vol, on_grid_mismatch, name, where)
                    frames.append(
                        radiomics_features(
                            vol,
                            mask,
                            map_name=name,
                            lesion_id=info.lesion_id,
                            visit=visit.id,
                            settings=None if settings is None else settings.get(name),
                        )
                    )
        if frames:
            base = subject.baseline.id
            present = pd.concat(frames, ignore_index=True)
            if base not in set(present["visit"]):
                base = next(v for v in order if v in set(present["visit"]))
            d = delta_radiomics(present, visit_order=order, baseline=base)
            d.insert(0, "subject", subject.id)
            out.append(d)
    if not out:
        return pd.DataFrame(columns=["subject", *DELTA_COLUMNS])
    return pd.concat(out, ignore_index=True)


# ---------------------------------------------------------------------------- internals


def _open(study: Study | str | Path) -> Study:
    if isinstance(study, str | Path):
        from ..io import open_study

        return open_study(study)
    return study


def _visit_maps(
    st: Study, maps: MapSource, subject: str, visit: str
) -> dict[str, tuple[Volume, np.ndarray | None]]:
    if callable(maps):
        got = maps(subject, visit)
        out: dict[str, tuple[Volume, np.ndarray | None]] = {}
        for k, v in got.items():
            if isinstance(v, tuple):
                out[k] = (v[0], None if v[1] is None else np.asarray(v[1]))
            elif isinstance(v, Volume):
                out[k] = (v, None)
            else:
                raise DataError(
                    f"map {k!r} must be a Volume or (Volume, status), got {type(v).__name__}",
                    field="maps",
                )
        return out
    if maps is None:
        root = default_out_dir(st.root)
        if not root.is_dir():
            return {}
    else:
        root = Path(maps)
        if not root.is_dir():
            raise DataError("maps folder does not exist", file=root)
    vdir = root / f"sub-{subject}" / f"ses-{visit}"
    found: dict[str, tuple[Path, Path | None]] = {}
    for d in (vdir, vdir / "maps"):
        if d.is_dir():
            found.update(discover_maps(d))
    result: dict[str, tuple[Volume, np.ndarray | None]] = {}
    for name, (p, status) in sorted(found.items()):
        vol = Volume.from_nifti(p)
        if vol.data.ndim != 3:
            raise DataError(f"map must be 3-D, got shape {vol.shape}", file=p)
        stat = None if status is None else Volume.from_nifti(status, dtype=np.uint8).data
        result[name] = (vol, stat)
    return result


def _mask_on(
    labels: Volume, label: int, onto: Volume, policy: GridPolicy, name: str, where: str
) -> np.ndarray:
    if labels.same_grid(onto):
        return np.asarray(labels.data == label)
    if policy == "resample":
        from ..preprocessing import resample_mask

        single = labels.with_data((labels.data == label).astype(np.int32))
        return np.asarray(resample_mask(single, onto).data == 1)
    raise DataError(
        f"map {name!r} grid {onto.spatial_shape} is not the lesion map's grid "
        f"{labels.spatial_shape} ({where}); register the series and resample "
        "(on_grid_mismatch='resample' if they share world coordinates)",
        file=onto.source,
        field=f"lesion {where}",
    )


def _add_habitats(
    df: pd.DataFrame,
    inputs: list[tuple[dict[str, Any], dict[str, Volume], dict[str, np.ndarray], bool]],
    names: list[str],
    n_habitats: int,
) -> pd.DataFrame:
    import pandas as pd

    from ..lesions.habitats import fit_habitats

    ref = [(m, k) for key, m, k, is_base in inputs if is_base and k]
    if not ref:
        raise DataError(
            "no lesion with maps at any baseline visit: cannot fit habitats", field="habitat_maps"
        )
    model = fit_habitats(
        [m for m, _ in ref], [k for _, k in ref], map_names=names, n_habitats=n_habitats
    )
    frames = []
    for key, m, k, _ in inputs:
        if not k:
            continue
        fr = model.fractions(m, k, visit=key["visit"])
        fr.insert(0, "subject", key["subject"])
        frames.append(fr)
    long = pd.concat(frames, ignore_index=True)
    wide = long.pivot_table(
        index=["subject", "visit", "lesion_id"], columns="habitat", values="fraction"
    )
    wide.columns = [f"habitat_{h}_fraction" for h in wide.columns]
    wide = wide.reset_index()
    for h, nm in enumerate(model.names):
        wide[f"habitat_{h}_name"] = nm
    return df.merge(wide, on=["subject", "visit", "lesion_id"], how="left")


# ---------------------------------------------------------------------------- one subject

#: Columns of the tidy measurement table (one row per lesion, visit, map and statistic;
#: ``map`` is "" for the lesion's geometry).
MEASUREMENT_COLUMNS = ("subject", "visit", "lesion_id", "map", "statistic", "value", "unit")

#: Units of the geometry statistics.
GEOMETRY_UNITS = {
    "volume_ml": "mL",
    "longest_diameter_mm": "mm",
    "short_axis_mm": "mm",
    "bidimensional_product_mm2": "mm2",
    "max_3d_diameter_mm": "mm",
}


def measurement_row(
    subject: str, visit: str, lesion_id: str, map_name: str, stat: str, value: Any, unit: str
) -> dict[str, Any]:
    """One row of the tidy measurement table (:data:`MEASUREMENT_COLUMNS`)."""
    val = None if value is None else float(value)
    values = (subject, visit, lesion_id, map_name, stat, val, unit)
    return dict(zip(MEASUREMENT_COLUMNS, values, strict=True))


@dataclass(frozen=True)
class VisitMeasureInputs:
    """The fitted maps of a visit and how its lesion masks reach them.

    Attributes
    ----------
    maps : mapping of str to VisitMap
        ``{"ivim.D": (path, status path or None, unit)}`` (:class:`tumorscope.layout.VisitMap`).
    series : mapping of str to str or None
        Role of the series each map was computed on (``{"ivim.D": "dwi"}``).
    alignments : mapping of str to 4x4 matrix
        Alignments to apply, by series role (reference world -> series world): the masks are
        resampled onto the maps of that series through it.
    """

    maps: Mapping[str, VisitMap] = field(default_factory=dict)
    series: Mapping[str, str | None] = field(default_factory=dict)
    alignments: Mapping[str, Any] = field(default_factory=dict)


def measure_subject(
    subject: Any,
    inputs: Mapping[str, VisitMeasureInputs],
    *,
    measurements_path: Path,
    lesion_table_path: Path,
) -> StageResult:
    """Geometry of every lesion at every visit, and statistics of every fitted map in it.

    Parameters
    ----------
    subject : tumorscope.io.Subject
        Its visits (in order) with their lesion maps and tables.
    inputs : mapping of visit id to VisitMeasureInputs
        The maps of each visit (visits without maps may be left out).
    measurements_path, lesion_table_path : Path, keyword-only
        Where the tidy table (:data:`MEASUREMENT_COLUMNS`) and the per-lesion, per-visit
        geometry table (the input of :func:`tumorscope.response.from_lesion_table`) go.

    Returns
    -------
    StageResult
        ``files``: the two tables; ``rows["measurements"]``: the tidy rows
        (:data:`MEASUREMENT_COLUMNS`); ``warnings``: log lines (masks resampled, lesions
        gone, no segmentation). No maps. A lesion with no voxel at a segmented visit (named
        by its table or seen before) measures 0 (geometry rows of zeros, ``present`` false
        in the geometry table, no map statistics): a complete response stays in the tables.
    """
    import pandas as pd

    from ..volume import atomic_write

    s = str(subject.id)
    tidy: list[dict[str, Any]] = []
    wide: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: dict[str, Any] = {}  # lesions of the earlier segmented visits, by id
    for visit in subject:
        infos, labels, masks = _visit_masks(visit)
        gone = {} if labels is None else _vanished(infos, masks, seen)
        if gone:
            notes.append(f"visit {visit.id}: no voxel of {', '.join(gone)}: measured 0 mm")
        for lid in (*masks, *gone):
            assert labels is not None
            m = masks.get(lid, np.zeros(labels.spatial_shape, bool))
            where = f"{lid} at visit {visit.id}"
            geo = measure(m, labels.affine, lesion=where, allow_empty=lid in gone)
            for k in GEOMETRY_KEYS:
                tidy.append(measurement_row(s, visit.id, lid, "", k, geo[k], GEOMETRY_UNITS[k]))
        vin = inputs.get(visit.id, VisitMeasureInputs())
        if masks and vin.maps:
            assert labels is not None
            table = _map_statistics(visit.id, vin, labels, infos, masks, notes)
            for r in table.itertuples(index=False):
                tidy.append(
                    measurement_row(
                        s,
                        visit.id,
                        str(r.lesion_id),
                        str(r.map),
                        str(r.statistic),
                        r.value,
                        str(r.unit),
                    )
                )
        wide += _lesion_rows(s, visit, {**gone, **infos}, (*masks, *gone), masks, tidy)
    if not tidy:
        notes.append(f"subject {s}: no lesion segmentation at any visit")
    frame = pd.DataFrame(tidy, columns=list(MEASUREMENT_COLUMNS))
    rframe = pd.DataFrame(wide)
    atomic_write(measurements_path, lambda tmp: frame.to_parquet(tmp, index=False))
    atomic_write(lesion_table_path, lambda tmp: rframe.to_parquet(tmp, index=False))
    return StageResult(
        files=[measurements_path, lesion_table_path],
        rows={"measurements": tidy},
        warnings=notes,
    )


def _visit_masks(visit: Any) -> tuple[dict[str, Any], Volume | None, dict[str, np.ndarray]]:
    """Lesion infos by id, the label map and the mask of every lesion segmented at a visit."""
    les = visit.lesions
    infos = {} if les is None else {r.lesion_id: r for r in les.table}
    labels = None if les is None else les.load_labels()
    masks: dict[str, np.ndarray] = {}
    for lid, info in infos.items():
        assert labels is not None
        m = labels.data == info.label
        if m.any():
            masks[lid] = m
    return infos, labels, masks


def _vanished(
    infos: Mapping[str, Any], masks: Mapping[str, np.ndarray], seen: dict[str, Any]
) -> dict[str, Any]:
    """Lesions of a segmented visit with no voxel: named by its table or seen before.

    A visit with a lesion map was read: a lesion its table names without a voxel in the map,
    or one segmented at an earlier visit and not at this one, has vanished (0 mm, RECIST
    "absent"), which is how ``assess`` reads it too (``missing="absent"``). ``seen`` is
    updated with the visit's lesions. (A visit without a lesion map was not read.)
    """
    gone = {lid: info for lid, info in {**seen, **infos}.items() if lid not in masks}
    seen.update({lid: infos[lid] for lid in masks})
    return dict(sorted(gone.items()))


def _map_statistics(
    visit: str,
    vin: VisitMeasureInputs,
    labels: Volume,
    infos: Mapping[str, Any],
    masks: Mapping[str, np.ndarray],
    notes: list[str],
) -> pd.DataFrame:
    """Statistics of every map of a visit in every lesion (``statistics_table`` rows).

    Maps are grouped by the lesion masks they are measured with: the masks as drawn, or the
    masks resampled onto the map's grid through the alignment of the map's series.
    """
    import pandas as pd

    from .._threads import map_threads
    from ..lesions.stats import statistics_table

    maps = vin.maps
    groups: dict[str | None, list[str]] = {}
    for k in maps:
        role = vin.series.get(k)
        groups.setdefault(role if role in vin.alignments else None, []).append(k)
    # every map and status map read at once, on the unit's share of the cores
    # (decompression releases the GIL); status maps by path: a model's maps share one
    status_paths = list(dict.fromkeys(p for _, p, _ in maps.values() if p is not None))
    todo: list[tuple[Any, Any]] = [(maps[k][0], np.float32) for k in maps]
    todo += [(p, np.uint8) for p in status_paths]
    got = map_threads(lambda a: Volume.from_nifti(a[0], dtype=a[1]), todo, name="tumorscope-maps")
    read_map = dict(zip(maps, got[: len(maps)], strict=True))
    read = {p: v.data for p, v in zip(status_paths, got[len(maps) :], strict=True)}
    parts = []
    for role, names in groups.items():
        vols = {k: read_map[k] for k in names}
        values = {k: v.data for k, v in vols.items()}
        status = {}
        for k in names:
            st_path = maps[k][1]
            if st_path is None:  # every voxel converged: no status array to compare
                continue
            status[k] = read[st_path]
        unit_of = {k: maps[k][2] for k in names}
        group_masks = masks
        if role is not None:
            group_masks = moved_masks(labels, infos, vols[names[0]], vin.alignments[role])
            notes.append(
                f"visit {visit}: lesion masks resampled onto the {role} maps through its alignment"
            )
        parts.append(
            statistics_table(values, group_masks, visit=visit, status=status, units=unit_of)
        )
    return pd.concat(parts, ignore_index=True)


def _lesion_rows(
    subject: str,
    visit: Any,
    infos: Mapping[str, Any],
    lesion_ids: Sequence[str],
    masks: Mapping[str, np.ndarray],
    tidy: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Rows of the per-lesion, per-visit table (the input of ``response.from_lesion_table``);
    ``present`` is false for a lesion with no voxel in ``masks`` (measured 0 mm)."""
    rows = []
    for lid in lesion_ids:
        info = infos[lid]
        geo_row = {
            r["statistic"]: r["value"]
            for r in tidy
            if r["visit"] == visit.id and r["lesion_id"] == lid and not r["map"]
        }
        rows.append(
            {
                "subject": subject,
                "visit": visit.id,
                "date": visit.date.isoformat() if visit.date else None,
                "lesion_id": lid,
                "target": bool(info.target),
                "nodal": bool(info.nodal),
                "organ": info.organ,
                "baseline": bool(visit.baseline),
                "present": lid in masks,
                **geo_row,
            }
        )
    return rows


def moved_masks(labels: Any, infos: Mapping[str, Any], onto: Any, matrix: Any) -> dict[str, Any]:
    """Lesion masks on ``onto``'s grid through an alignment (reference -> series world).

    ``resample_mask`` wants the target-world to source-world transform: from the series
    (where the map is) back to the reference (where the lesions were drawn), the inverse.
    """
    from ..preprocessing import resample_mask

    back = np.linalg.inv(np.asarray(matrix, dtype=np.float64))
    moved = resample_mask(labels, onto, transform=back).data
    out = {}
    for lid, info in infos.items():
        m = moved == info.label
        if m.any():
            out[lid] = m
    return out
