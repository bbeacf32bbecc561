"""Tumour habitats: voxel clusters on several co-registered maps, followed over visits.

The cluster model is fitted once, on the voxels of all lesions at a reference visit (the
baseline by default), and then applied unchanged to later visits, so that a change in a
lesion's habitat fractions means a change in the tissue, not in the clustering [1]_.

Steps
-----
1. Features: the chosen maps (e.g. ``ADC`` and ``Ktrans``) at each lesion voxel; voxels with a
   non-finite value in any map (failed fits) are left out and counted.
2. Standardisation: each map is z-scored with the mean and SD of the reference voxels.
   Strictly positive maps that span more than a decade (``Ktrans``, ``Fp`` …) can be
   log-transformed first (``log_maps``).
3. Clustering: k-means (k-means++ start, ``n_init=10``, fixed seed) or a Gaussian mixture
   (scikit-learn) on the standardised features.
4. Names: each habitat is named from its centroid. Per map, the centroid's position within
   the span of all centroids decides: upper third "high", lower third "low", otherwise
   "intermediate" (naming is relative to the other habitats of the model, which is what a
   reader compares; a lone habitat is named from its z-score). The word is the biology the
   map stands for. Low ADC reads
   "high cellularity" (cellularity is inversely related to ADC), high Ktrans "high
   perfusion" and so on (:data:`DESCRIPTORS`); maps without a descriptor keep their name
   ("high T2").

References
----------
.. [1] O'Connor JPB, et al. Imaging intratumor heterogeneity: role in therapy response,
       resistance, and clinical outcome. Clin Cancer Res 2015;21:249-257.
       doi:10.1158/1078-0432.CCR-14-0990
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import DataError
from ..volume import Volume

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DESCRIPTORS", "HABITAT_COLUMNS", "HabitatModel", "fit_habitats"]

#: Map name → (biological descriptor, sign): sign −1 means a low value reads "high".
DESCRIPTORS: dict[str, tuple[str, int]] = {
    "ADC": ("cellularity", -1),
    "D": ("cellularity", -1),
    "Ktrans": ("perfusion", 1),
    "Fp": ("perfusion", 1),
    "rCBF": ("perfusion", 1),
    "f": ("perfusion fraction", 1),
    "vp": ("vascularity", 1),
    "rCBV": ("vascularity", 1),
    "ve": ("extracellular space", 1),
    "kep": ("washout", 1),
    "K": ("microstructural complexity", 1),
    "SUV": ("metabolism", 1),
}

#: Columns of :meth:`HabitatModel.fractions`.
HABITAT_COLUMNS: tuple[str, ...] = (
    "lesion_id",
    "visit",
    "habitat",
    "habitat_name",
    "fraction",
    "n_voxels",
    "n_excluded",
)

MapsLike = Mapping[str, Volume | npt.ArrayLike]


@dataclass(frozen=True)
class HabitatModel:
    """A fitted habitat model (from :func:`fit_habitats`); apply it to any visit.

    Attributes
    ----------
    maps : tuple of str
        Map names, in feature order.
    log_maps : tuple of str
        Maps log-transformed before standardisation.
    mean, scale : ndarray, shape (n_maps,)
        Standardisation fitted on the reference voxels.
    centroids : ndarray, shape (n_habitats, n_maps)
        Cluster centres in standardised units (z-scores).
    names : tuple of str
        Habitat names from the centroids, e.g. ``"high cellularity, high perfusion"``.
    """

    maps: tuple[str, ...]
    log_maps: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    centroids: np.ndarray
    names: tuple[str, ...]
    estimator: Any = field(repr=False)

    @property
    def n_habitats(self) -> int:
        return int(self.centroids.shape[0])

    def centroids_in_map_units(self) -> np.ndarray:
        """Centroids back in the maps' own units, shape (n_habitats, n_maps)."""
        c = self.centroids * self.scale + self.mean
        for j, name in enumerate(self.maps):
            if name in self.log_maps:
                c[:, j] = np.exp(c[:, j])
        return np.asarray(c)

    def predict(self, maps: MapsLike, mask: Volume | npt.ArrayLike) -> np.ndarray:
        """Habitat index of every voxel (−1 outside the mask or where a map is invalid).

        Parameters
        ----------
        maps : mapping of str to Volume or array, shape (X, Y, Z)
            At least the model's maps, on one grid.
        mask : Volume or array of bool, shape (X, Y, Z)

        Returns
        -------
        ndarray of int, shape (X, Y, Z)
        """
        m = _mask_array(mask)
        feats, ok = _features(maps, m, self.maps, self.log_maps)
        out = np.full(m.shape, -1, dtype=np.int64)
        if ok.any():
            z = (feats[ok] - self.mean) / self.scale
            with _one_thread():
                out[tuple(np.argwhere(m)[ok].T)] = self.estimator.predict(z)
        return out

    def fractions(
        self,
        maps: MapsLike,
        masks: Mapping[str, Volume | npt.ArrayLike],
        *,
        visit: str = "",
    ) -> pd.DataFrame:
        """Per-lesion fraction of each habitat at one visit (tidy table).

        Fractions are over the lesion's valid voxels (they sum to 1 per lesion);
        ``n_excluded`` counts voxels left out because a map was not finite there. A lesion
        with no valid voxel gets NaN fractions.
        """
        import pandas as pd

        rows = []
        for lesion_id, mask in masks.items():
            m = _mask_array(mask)
            if not m.any():
                raise DataError("lesion mask is empty", field=f"lesion {lesion_id}, visit {visit}")
            lab = self.predict(maps, m)[m]
            n_ok = int((lab >= 0).sum())
            for h in range(self.n_habitats):
                frac = float((lab == h).sum() / n_ok) if n_ok else np.nan
                rows.append(
                    dict(
                        lesion_id=str(lesion_id),
                        visit=visit,
                        habitat=h,
                        habitat_name=self.names[h],
                        fraction=frac,
                        n_voxels=n_ok,
                        n_excluded=int(m.sum()) - n_ok,
                    )
                )
        return pd.DataFrame(rows, columns=list(HABITAT_COLUMNS))


def fit_habitats(
    maps: MapsLike | Sequence[MapsLike],
    masks: Mapping[str, Volume | npt.ArrayLike] | Sequence[Mapping[str, Volume | npt.ArrayLike]],
    *,
    map_names: Sequence[str] | None = None,
    n_habitats: int = 3,
    method: Literal["kmeans", "gmm"] = "kmeans",
    log_maps: Sequence[str] = (),
    random_state: int = 0,
) -> HabitatModel:
    """Fit the habitat model on the reference visit's lesion voxels.

    Parameters
    ----------
    maps : mapping of str to Volume or array, or a sequence of them
        Maps of the reference visit (one mapping), or of several subjects' reference visits
        (a sequence, paired with ``masks``), each mapping on one grid.
    masks : mapping of lesion id to mask, or a sequence of them
        The lesions whose voxels are pooled.
    map_names : sequence of str, optional
        Maps to use (default: all keys of the first mapping, sorted). At least one.
    n_habitats : int, default 3
    method : {"kmeans", "gmm"}, default "kmeans"
    log_maps : sequence of str, default ()
        Maps to log-transform before standardisation (values must be > 0).
    random_state : int, default 0

    Returns
    -------
    HabitatModel

    Raises
    ------
    DataError
        If fewer valid voxels than habitats, a map is missing or constant, or a log map is
        not positive.
    """
    maps_list = [maps] if isinstance(maps, Mapping) else list(maps)
    masks_list = [masks] if isinstance(masks, Mapping) else list(masks)
    if len(maps_list) != len(masks_list):
        raise DataError(f"{len(maps_list)} map sets but {len(masks_list)} mask sets", field="masks")
    if not maps_list:
        raise DataError("no maps given", field="maps")
    names = tuple(sorted(maps_list[0]) if map_names is None else map_names)
    if not names:
        raise DataError("at least one map is needed", field="map_names")
    logs = tuple(n for n in names if n in set(log_maps))
    if n_habitats < 1:
        raise DataError(f"n_habitats must be >= 1, got {n_habitats}", field="n_habitats")
    blocks = []
    for mp, mk in zip(maps_list, masks_list, strict=True):
        for mask in mk.values():
            m = _mask_array(mask)
            feats, ok = _features(mp, m, names, logs)
            blocks.append(feats[ok])
    x = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, len(names)))
    if len(x) < max(n_habitats, 2):
        raise DataError(
            f"{len(x)} valid lesion voxels at the reference visit; need at least "
            f"{max(n_habitats, 2)} for {n_habitats} habitats",
            field="masks",
        )
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    const = scale <= 1e-9 * np.maximum(np.abs(mean), 1e-300)
    flat = [names[j] for j in range(len(names)) if const[j]]
    if flat:
        raise DataError(f"map(s) {flat} are constant in the reference lesions", field="maps")
    z = (x - mean) / scale
    if method == "kmeans":
        from sklearn.cluster import KMeans

        with _one_thread():
            est: Any = KMeans(n_clusters=n_habitats, n_init=10, random_state=random_state)
            est.fit(z)
        centroids = np.asarray(est.cluster_centers_)
    elif method == "gmm":
        from sklearn.mixture import GaussianMixture

        with _one_thread():
            est = GaussianMixture(n_components=n_habitats, random_state=random_state).fit(z)
        centroids = np.asarray(est.means_)
    else:
        raise DataError(f"method must be 'kmeans' or 'gmm', got {method!r}", field="method")
    return HabitatModel(
        maps=names,
        log_maps=logs,
        mean=mean,
        scale=scale,
        centroids=centroids,
        names=_names(centroids, names),
        estimator=est,
    )


# ---------------------------------------------------------------------------- internals


def _one_thread() -> contextlib.AbstractContextManager[Any]:
    """scikit-learn's OpenMP (and BLAS) pools on one thread for the clustering.

    A few thousand lesion voxels in 2-3 dimensions are too few to share: with a second
    thread k-means took 3-8x longer whenever the other core was busy (a shared machine, the
    pipeline's other worker; ``docs/performance.md``), and the centroids agree to 1e-15
    either way. Without threadpoolctl (installed with scikit-learn) nothing is limited.

    The thread pools are found once per process (:func:`_pools`), not at every call.
    """
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency of scikit-learn
        return contextlib.nullcontext()
    return _pools().limit(limits=1)


@functools.cache
def _pools() -> Any:
    """threadpoolctl's controller of the process's thread pools, made once.

    ``threadpool_limits`` makes a new one at each call, which reads ``/proc/self/maps`` and
    inspects every loaded library: ~5 ms, half the ``features`` step's CPU time when every
    lesion's prediction was limited on its own. It is first made after scikit-learn is
    imported (a fit or a prediction), so its OpenMP and BLAS libraries are among those found.
    """
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _mask_array(mask: Volume | npt.ArrayLike) -> np.ndarray:
    m = np.asarray(mask.data if isinstance(mask, Volume) else mask).astype(bool)
    if m.ndim != 3:
        raise DataError(f"expected a 3-D mask, got shape {m.shape}", field="mask")
    return m


def _features(
    maps: MapsLike, m: np.ndarray, names: Sequence[str], logs: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    cols = []
    grid: Volume | None = None
    for name in names:
        if name not in maps:
            raise DataError(f"map {name!r} is missing (have {sorted(maps)})", field="maps")
        v = maps[name]
        if isinstance(v, Volume):
            if grid is not None and not grid.same_grid(v):
                raise DataError(
                    f"map {name!r} is not on the grid of map {names[0]!r}; the maps of a "
                    "habitat model must be co-registered (see tumorscope.preprocessing)",
                    file=v.source,
                    field="maps",
                )
            grid = grid or v
        arr = np.asarray(v.data if isinstance(v, Volume) else v, dtype=np.float64)
        if arr.shape != m.shape:
            raise DataError(
                f"map {name!r} shape {arr.shape} does not match the mask {m.shape}",
                field="maps",
            )
        col = arr[m]
        if name in logs:
            with np.errstate(divide="ignore", invalid="ignore"):
                col = np.where(col > 0, np.log(np.where(col > 0, col, 1.0)), np.nan)
        cols.append(col)
    feats = np.stack(cols, axis=1) if cols else np.zeros((int(m.sum()), 0))
    ok = np.all(np.isfinite(feats), axis=1)
    return feats, ok


def _level(t: float) -> str:
    if t > 2 / 3:
        return "high"
    if t < 1 / 3:
        return "low"
    return "intermediate"


def _names(centroids: np.ndarray, maps: Sequence[str]) -> tuple[str, ...]:
    # position of each centroid within the span of the centroids, per map (0 lowest, 1 highest);
    # with one habitat (no span) the z-score decides: above the reference mean is "high"
    lo, hi = centroids.min(axis=0), centroids.max(axis=0)
    span = hi - lo
    out: list[str] = []
    for c in centroids:
        parts = []
        for j, name in enumerate(maps):
            word, sign = DESCRIPTORS.get(name, (name, 1))
            if span[j] > 0:
                t = (float(c[j]) - lo[j]) / span[j]
            else:
                t = 1.0 if c[j] > 0.5 else (0.0 if c[j] < -0.5 else 0.5)
            parts.append(f"{_level(t if sign > 0 else 1.0 - t)} {word}")
        out.append(", ".join(parts))
    # identical names (e.g. two "intermediate" clusters) get a number
    final = []
    for i, n in enumerate(out):
        final.append(n if out.count(n) == 1 else f"{n} ({out[: i + 1].count(n)})")
    return tuple(final)
