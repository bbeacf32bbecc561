"""Lesion identity across visits.

Rules, in order:

1. **Ids given.** If a visit's label map comes with ids (the lesion table of the study
   format), those ids are kept: a lesion is the same lesion when it has the same id.
2. **Overlap.** Otherwise each lesion of the visit is compared with every lesion seen so far
   (at its most recent appearance), after both are brought into the reference visit's space
   (baseline by default) with the registration transforms. Pairs are assigned one-to-one
   (Hungarian algorithm on 1 − Dice) and accepted when Dice ≥ ``min_dice``.
3. **Centroid distance.** Lesions still unmatched are assigned one-to-one by the distance
   between centroids (mm, reference space), accepted up to ``max_distance_mm``.
4. **New** lesions get fresh ids (``new_prefix`` + number); known lesions absent at a visit
   are reported with status ``disappeared`` (and become ``reappeared`` if matched later).

Matching against every lesion seen so far, not only the previous visit, lets a lesion that
vanished at one visit (complete response, or missed) keep its id when it comes back, which is
what iRECIST and RANO need to tell new lesions from recurrences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..errors import DataError
from ..volume import Volume

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TRACKING_COLUMNS", "VisitLabels", "track_lesions"]

#: Columns of the table :func:`track_lesions` returns.
TRACKING_COLUMNS: tuple[str, ...] = (
    "visit",
    "label",
    "lesion_id",
    "status",
    "matched_by",
    "dice",
    "distance_mm",
)


@dataclass(frozen=True)
class VisitLabels:
    """The lesion label map of one visit, with optional ids and registration.

    Attributes
    ----------
    visit : str
        Visit id.
    labels : Volume
        Integer label map (0 = background).
    ids : mapping of int to str, optional
        Lesion id of each label (from the lesion table); None when unknown.
    to_reference : ndarray, shape (4, 4), optional
        World transform from the reference visit's space to this visit's space (the
        :attr:`tumorscope.preprocessing.Registration.matrix` of registering this visit onto
        the reference). Identity (already aligned) when None.
    """

    visit: str
    labels: Volume
    ids: Mapping[int, str] | None = None
    to_reference: npt.ArrayLike | None = None


def track_lesions(
    visits: Sequence[VisitLabels],
    *,
    reference: int = 0,
    min_dice: float = 0.1,
    max_distance_mm: float = 15.0,
    new_prefix: str = "L",
) -> pd.DataFrame:
    """Give every lesion of every visit a stable id.

    Parameters
    ----------
    visits : sequence of VisitLabels
        In chronological order.
    reference : int, default 0
        Index of the baseline visit: its space is the common space, its lesions have status
        ``baseline`` and those of earlier (pre-baseline) visits ``prebaseline``.
    min_dice : float, default 0.1
        Smallest Dice overlap (in the reference space) accepted as the same lesion.
    max_distance_mm : float, default 15.0
        Largest centroid distance (mm) accepted as the same lesion when lesions do not overlap.
    new_prefix : str, default "L"
        Prefix of generated ids (``L1``, ``L2`` …); generated ids never collide with given ids.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TRACKING_COLUMNS`: one row per lesion per visit, with ``status`` in
        ``prebaseline``, ``baseline``, ``present``, ``new`` (never seen at an earlier visit),
        ``reappeared`` or ``disappeared`` (then ``label`` is 0), and ``matched_by`` in ``id``,
        ``overlap``, ``distance`` or ``""`` (a fresh id).

    Raises
    ------
    DataError
        If a label map is not integer 3-D, the ids name a label absent from the map or give
        one id twice.
    """
    import pandas as pd
    from scipy.optimize import linear_sum_assignment

    from ..preprocessing import resample_mask

    if not visits:
        return pd.DataFrame(columns=list(TRACKING_COLUMNS))
    if not 0 <= reference < len(visits):
        raise DataError(
            f"reference index {reference} outside 0..{len(visits) - 1}", field="reference"
        )
    ref_grid = visits[reference].labels
    given = {i for v in visits if v.ids for i in v.ids.values()}
    counter = _Counter(new_prefix, given)
    # last appearance of every known lesion: id -> (mask in reference space, centroid)
    known: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ever_absent: set[str] = set()
    rows: list[dict[str, object]] = []
    for n, v in enumerate(visits):
        lab = _labels(v)
        t = None if v.to_reference is None else np.asarray(v.to_reference, dtype=float)
        in_ref = (
            lab
            if (t is None and lab.same_grid(ref_grid))
            else resample_mask(lab, ref_grid, transform=t)
        )
        present = [int(x) for x in np.unique(lab.data) if x != 0]
        masks = {k: in_ref.data == k for k in present}
        cents = {k: _centroid_ref(lab, k, t) for k in present}
        assigned: dict[int, tuple[str, str, float, float]] = {}
        if v.ids is not None:
            _check_ids(v, present)
            for k in present:
                lid = v.ids[k]
                d, dist = _compare(masks[k], cents[k], known.get(lid))
                assigned[k] = (lid, "id", d, dist)
        else:
            cand = list(known)
            todo = list(present)
            if cand and todo:
                dice = np.array([[_dice(masks[k], known[c][0]) for c in cand] for k in todo])
                r, c = linear_sum_assignment(1.0 - dice)
                for i, j in zip(r, c, strict=True):
                    if dice[i, j] >= min_dice:
                        k = todo[i]
                        dist_kc = float(np.linalg.norm(cents[k] - known[cand[j]][1]))
                        assigned[k] = (cand[j], "overlap", float(dice[i, j]), dist_kc)
            taken = {a[0] for a in assigned.values()}
            cand = [c for c in known if c not in taken]
            todo = [k for k in present if k not in assigned]
            if cand and todo:
                dmat = np.array(
                    [[np.linalg.norm(cents[k] - known[c][1]) for c in cand] for k in todo]
                )
                r, c = linear_sum_assignment(dmat)
                for i, j in zip(r, c, strict=True):
                    if dmat[i, j] <= max_distance_mm:
                        k = todo[i]
                        d = _dice(masks[k], known[cand[j]][0])
                        assigned[k] = (cand[j], "distance", d, float(dmat[i, j]))
            for k in present:
                if k not in assigned:
                    assigned[k] = (counter.next(), "", np.nan, np.nan)
        seen_now = set()
        for k in present:
            lid, how, d, dist = assigned[k]
            if n < reference:
                status = "prebaseline"
            elif n == reference:
                status = "baseline"
            elif lid not in known:
                status = "new"
            elif lid in ever_absent:
                status = "reappeared"
            else:
                status = "present"
            rows.append(
                dict(
                    visit=v.visit,
                    label=k,
                    lesion_id=lid,
                    status=status,
                    matched_by=how,
                    dice=d,
                    distance_mm=dist,
                )
            )
            known[lid] = (masks[k], cents[k])
            seen_now.add(lid)
            ever_absent.discard(lid)
        for lid in known:
            if lid not in seen_now:
                rows.append(
                    dict(
                        visit=v.visit,
                        label=0,
                        lesion_id=lid,
                        status="disappeared",
                        matched_by="",
                        dice=np.nan,
                        distance_mm=np.nan,
                    )
                )
                ever_absent.add(lid)
    return pd.DataFrame(rows, columns=list(TRACKING_COLUMNS))


# ---------------------------------------------------------------------------- internals


class _Counter:
    def __init__(self, prefix: str, taken: set[str]):
        self.prefix, self.taken, self.n = prefix, set(taken), 0

    def next(self) -> str:
        while True:
            self.n += 1
            lid = f"{self.prefix}{self.n}"
            if lid not in self.taken:
                self.taken.add(lid)
                return lid


def _labels(v: VisitLabels) -> Volume:
    lab = v.labels
    if lab.data.ndim != 3:
        raise DataError(
            f"label map must be 3-D, got shape {lab.shape}",
            file=lab.source,
            field=f"visit {v.visit}",
        )
    if lab.data.dtype.kind not in "iub":
        raise DataError(
            f"label map must be integer, got {lab.data.dtype}",
            file=lab.source,
            field=f"visit {v.visit}",
        )
    return lab


def _check_ids(v: VisitLabels, present: list[int]) -> None:
    assert v.ids is not None
    missing = [k for k in present if k not in v.ids]
    if missing:
        raise DataError(
            f"label(s) {missing} have no lesion id", file=v.labels.source, field=f"visit {v.visit}"
        )
    ids = [v.ids[k] for k in present]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise DataError(
            f"lesion id(s) {dup} given to more than one label",
            file=v.labels.source,
            field=f"visit {v.visit}",
        )


def _centroid_ref(lab: Volume, k: int, t: np.ndarray | None) -> np.ndarray:
    ijk = np.argwhere(lab.data == k).mean(axis=0)
    world = lab.affine[:3, :3] @ ijk + lab.affine[:3, 3]
    if t is None:
        return np.asarray(world)
    inv = np.linalg.inv(t)  # visit world -> reference world
    return np.asarray(inv[:3, :3] @ world + inv[:3, 3])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 0.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def _compare(
    mask: np.ndarray, cent: np.ndarray, prev: tuple[np.ndarray, np.ndarray] | None
) -> tuple[float, float]:
    if prev is None:
        return np.nan, np.nan
    return _dice(mask, prev[0]), float(np.linalg.norm(cent - prev[1]))
