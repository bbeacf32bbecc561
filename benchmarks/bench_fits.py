"""The fit steps of a visit, before/after in one run: where the relaxometry and cardiac models
are fitted (the whole volume against the body, run option ``relax_region``), how the
``measure`` step computes the lesion statistics of every map, and the ``features`` step's
k-means on one thread.

On one visit of a phantom study (``--study``, e.g. the large phantom's one-visit copy; it is
only read), in this process, alternating the two variants ``--repeats`` times:

* ``fit_relax``: :func:`tumorscope.stages.relaxometry.fit_relaxometry` on the visit's T2*,
  T2 and IR T1 series with ``region="all"`` (as before) and ``region="body"`` (the default
  now), maps written to a temporary folder; the maps inside the body are checked equal;
* ``fit_cardiac``: :func:`tumorscope.stages.cardiac.fit_cardiac_visit` the same way, on the
  first visit with MOLLI series of ``--cardiac-study`` (the default-size phantom has them at
  subject 006), if given;
* ``measure``: the statistics of every map just written in every lesion of the visit,
  :func:`tumorscope.lesions.stats.statistics_table` (each map's validity once, each lesion's
  voxels gathered by index, one table) against the former per-lesion, per-map
  :func:`~tumorscope.lesions.stats.lesion_statistics` calls concatenated (what
  ``statistics_table`` did); the two tables are checked equal.

* ``features``: the habitat k-means of the step (3 clusters, ``n_init=10``) on 11,188
  standardised voxels of 2 maps (the large visit's lesion voxels; synthetic clusters here)
  with scikit-learn's thread pools as they come (every core) and limited to one thread (what
  :func:`tumorscope.lesions.habitats.fit_habitats` does now); the centroids are compared.

It prints the best time of each variant, the ratio, and the load average before and after.
Run::

    python benchmarks/bench_fits.py --study PATH [--cardiac-study PATH] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _best(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    """Best wall time of each function, the variants alternating."""
    best = {k: np.inf for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def _print(step: str, best: dict[str, float], before: str, after: str, extra: str = "") -> None:
    print(
        f"{step:<12} {before} {best[before]:7.3f} s   {after} {best[after]:7.3f} s   "
        f"ratio {best[before] / best[after]:5.2f}x  {extra}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True, type=Path)
    ap.add_argument("--cardiac-study", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import pandas as pd

    from tumorscope.errors import TumorscopeWarning
    from tumorscope.io import open_study
    from tumorscope.lesions.stats import lesion_statistics, statistics_table
    from tumorscope.stages.base import SeriesInput
    from tumorscope.stages.cardiac import CARDIAC_ROLES, fit_cardiac_visit
    from tumorscope.stages.relaxometry import (
        RELAXOMETRY_ROLES,
        RelaxometryOptions,
        fit_relaxometry,
    )
    from tumorscope.volume import Volume

    warnings.simplefilter("ignore", TumorscopeWarning)
    warnings.simplefilter("ignore", UserWarning)
    print(f"load average at start: {_load()}")
    study = open_study(args.study)
    subject = next(iter(study.subjects.values()))
    visit = next(iter(subject))
    series = {r: SeriesInput.of(s) for r, s in visit.series.items() if r in RELAXOMETRY_ROLES}
    tmp = Path(tempfile.mkdtemp(prefix="bench_fits_"))
    results: dict[str, Any] = {}

    def relax(region: str) -> None:
        results[region] = fit_relaxometry(
            series,
            out_dir=tmp / region,
            prefix="p_",
            options=RelaxometryOptions(region=region),
        )

    shape = next(iter(series.values())).load().spatial_shape
    relax("body")  # warm up: compiled kernels loaded, imports done
    best = _best({"all": lambda: relax("all"), "body": lambda: relax("body")}, args.repeats)
    n_body = {m.series: int(np.asarray(m.fit.mask).sum()) for m in results["body"].maps}
    for a, b in zip(results["all"].maps, results["body"].maps, strict=True):
        va, vb = np.asarray(a.fit[a.parameter]), np.asarray(b.fit[b.parameter])
        inside = np.asarray(b.fit.mask, dtype=bool)
        assert np.array_equal(va[inside], vb[inside], equal_nan=True), b.name
    _print(
        "fit_relax",
        best,
        "all",
        "body",
        f"{shape}, body voxels {n_body}, {len(results['body'].maps)} maps (equal in the body)",
    )

    if args.cardiac_study is not None:
        cstudy = open_study(args.cardiac_study)
        cvisit = next(v for s in cstudy.subjects.values() for v in s if "t1_molli" in v.series)
        cseries = {r: SeriesInput.of(s) for r, s in cvisit.series.items() if r in CARDIAC_ROLES}

        def cardiac(region: str) -> None:
            results[f"c_{region}"] = fit_cardiac_visit(
                cseries, out_dir=tmp / f"c_{region}", prefix="p_", region=region
            )

        cardiac("body")
        best = _best({"all": lambda: cardiac("all"), "body": lambda: cardiac("body")}, args.repeats)
        _print(
            "fit_cardiac",
            best,
            "all",
            "body",
            f"sub-{cvisit.subject_id} ses-{cvisit.id}: {sorted(cseries)}",
        )

    # measure: every map written by the body fit, in every lesion of the visit
    assert visit.lesions is not None
    labels = visit.lesions.load_labels()
    masks = {
        r.lesion_id: np.asarray(labels.data) == r.label
        for r in visit.lesions.table
        if (np.asarray(labels.data) == r.label).any()
    }
    maps = {m.name: Volume.from_nifti(m.path).data for m in results["body"].maps}
    status = {
        m.name: Volume.from_nifti(m.status, dtype=np.uint8).data for m in results["body"].maps
    }
    tables: dict[str, pd.DataFrame] = {}

    def per_lesion() -> None:
        tables["per_lesion"] = pd.concat(
            [
                lesion_statistics(maps[n], m, lesion_id=lid, map_name=n, status=status[n])
                for lid, m in masks.items()
                for n in maps
            ],
            ignore_index=True,
        )

    def one_table() -> None:
        tables["table"] = statistics_table(maps, masks, status=status)

    best = _best({"per_lesion": per_lesion, "table": one_table}, max(args.repeats, 3))
    pd.testing.assert_frame_equal(tables["per_lesion"], tables["table"])
    _print(
        "measure",
        best,
        "per_lesion",
        "table",
        f"{len(masks)} lesions x {len(maps)} maps (tables equal)",
    )
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    z = np.concatenate(
        [rng.normal(c, 0.7, (3729, 2)) for c in ((0.0, 0.0), (2.0, 1.0), (-1.0, 2.0))]
    )
    centres: dict[str, np.ndarray] = {}

    def kmeans(threads: int | None) -> None:
        with threadpool_limits(limits=threads):
            km = KMeans(n_clusters=3, n_init=10, random_state=0).fit(z)
        centres[str(threads)] = np.asarray(km.cluster_centers_)

    best = _best({"cores": lambda: kmeans(None), "one": lambda: kmeans(1)}, 3)
    diff = float(np.abs(centres["None"] - centres["1"]).max())
    _print("features", best, "cores", "one", f"k-means, centroids differ by {diff:.1e}")
    print(f"load average at end: {_load()}")


if __name__ == "__main__":
    main()
