"""Registration between visits and series, and resampling onto another grid.

Transforms are 4×4 matrices in world (RAS+, mm) coordinates that map a point of the *fixed*
(target) space to the corresponding point of the *moving* (source) space. That is the
direction resampling needs: for each voxel of the target grid, where to read the source.

Registration is done with SimpleITK [1]_ (rigid: Euler 3-D; affine: full 12 parameters),
Mattes mutual information by default so that different contrasts (T2w against b0, say) can
be aligned, with a two-level multi-resolution pyramid and a fixed random seed for the metric
sampling so that repeated runs give the same answer. SimpleITK works in LPS coordinates;
the conversion to and from RAS is done here and never leaks out. The pipeline's rigid
registrations (:func:`register_quick`: the ``align`` and ``functional`` steps) run by
default on a compiled implementation of the same algorithm
(:mod:`tumorscope.preprocessing._rigid_numba`), SimpleITK staying one argument away.

References
----------
.. [1] Lowekamp BC, et al. The design of SimpleITK. Front Neuroinform 2013;7:45.
       doi:10.3389/fninf.2013.00045
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..errors import DataError
from ..volume import Volume

__all__ = [
    "QUICK_SAMPLES",
    "QuickRegistration",
    "Registration",
    "nearest_index",
    "register",
    "register_quick",
    "resample",
    "resample_mask",
]

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Registration:
    """Result of :func:`register`.

    Attributes
    ----------
    matrix : ndarray, shape (4, 4)
        World transform (RAS+, mm) from fixed to moving space: ``x_moving = matrix @ x_fixed``.
    kind : {"rigid", "affine"}
    metric_value : float
        Final value of the similarity metric (lower is better for SimpleITK metrics).
    stop_condition : str
        The optimiser's stopping reason.
    """

    matrix: np.ndarray
    kind: str
    metric_value: float
    stop_condition: str

    @property
    def translation_mm(self) -> np.ndarray:
        """Translation part of :attr:`matrix` (mm)."""
        return np.asarray(self.matrix[:3, 3])

    def rotation_deg(self) -> float:
        """Rotation angle of the linear part (degrees; exact for rigid transforms)."""
        lin = self.matrix[:3, :3]
        u, _, vt = np.linalg.svd(lin)
        r = u @ vt
        return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def register(
    fixed: Volume,
    moving: Volume,
    *,
    kind: Literal["rigid", "affine"] = "rigid",
    metric: Literal["mattes", "mean_squares", "correlation"] = "mattes",
    fixed_mask: Volume | None = None,
    iterations: int = 200,
    sampling: float = 0.25,
    seed: int = 1234,
    min_step: float = 1e-4,
    relaxation: float = 0.5,
) -> Registration:
    """Register ``moving`` onto ``fixed`` (rigid or affine).

    Parameters
    ----------
    fixed, moving : Volume, 3-D
        Images in their own world spaces (4-D series: pass one frame, e.g. ``vol.frame(0)``).
    kind : {"rigid", "affine"}, default "rigid"
        Transform model. Rigid (6 parameters) between visits of the same subject; affine
        (12 parameters) when the scanners' geometry calibration may differ.
    metric : {"mattes", "mean_squares", "correlation"}, default "mattes"
        Mattes mutual information (50 bins) for different contrasts; mean squares or
        normalised correlation for the same contrast.
    fixed_mask : Volume, optional
        Region of the fixed image where the metric is evaluated (same grid as ``fixed``).
    iterations : int, default 200
        Maximum iterations per resolution level.
    sampling : float, default 0.25
        Fraction of fixed voxels sampled (random, seeded) for the metric.
    seed : int, default 1234
        Seed of the metric sampling.
    min_step : float, default 1e-4
        The optimiser stops a level when its step (mm of voxel displacement: the parameter
        scales are set from physical shifts) falls below this.
    relaxation : float, default 0.5
        Factor of the step each time the gradient changes direction.

    Returns
    -------
    Registration
        ``matrix`` maps fixed world points to moving world points (RAS+, mm).

    Raises
    ------
    DataError
        If an image is not 3-D, is constant, or the mask is on another grid.
    """
    import SimpleITK as sitk

    _check_pair(fixed, moving)
    if kind not in ("rigid", "affine"):
        raise DataError(f"kind must be 'rigid' or 'affine', got {kind!r}", field="kind")
    f_img = _to_sitk(fixed, np.float32)
    m_img = _to_sitk(moving, np.float32)

    reg = sitk.ImageRegistrationMethod()
    if metric == "mattes":
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    elif metric == "mean_squares":
        reg.SetMetricAsMeanSquares()
    elif metric == "correlation":
        reg.SetMetricAsCorrelation()
    else:
        raise DataError(
            f"metric must be 'mattes', 'mean_squares' or 'correlation', got {metric!r}",
            field="metric",
        )
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(float(sampling), int(seed))
    if fixed_mask is not None:
        if not fixed.same_grid(fixed_mask):
            raise DataError("fixed_mask is not on the fixed image's grid", file=fixed_mask.source)
        reg.SetMetricFixedMask(_to_sitk(fixed_mask.astype(np.uint8), np.uint8))
    reg.SetInterpolator(sitk.sitkLinear)
    # the metric's gradient from the linear interpolator at the sampled points, not from a
    # smoothed gradient image of the whole volume computed at every level (the default,
    # which cost most of the time of a registration of a 128×128×30 image)
    reg.SetMetricUseFixedImageGradientFilter(False)
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=float(min_step),
        numberOfIterations=int(iterations),
        relaxationFactor=float(relaxation),
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    base: Any = sitk.Euler3DTransform() if kind == "rigid" else sitk.AffineTransform(3)
    init = sitk.CenteredTransformInitializer(
        f_img, m_img, base, sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg.SetInitialTransform(init, inPlace=False)
    out = reg.Execute(f_img, m_img)
    matrix = _sitk_transform_to_ras(out)
    return Registration(
        matrix=matrix,
        kind=kind,
        metric_value=float(reg.GetMetricValue()),
        stop_condition=str(reg.GetOptimizerStopConditionDescription()),
    )


#: Voxels of the fixed image sampled by :func:`register_quick` (all of a smaller image).
QUICK_SAMPLES = 5_000


def register_quick(
    fixed: Volume,
    moving: Volume,
    *,
    samples: int = QUICK_SAMPLES,
    iterations: int = 40,
    min_step: float = 1e-4,
    relaxation: float = 0.5,
    seed: int = 1234,
    backend: Literal["auto", "numba", "itk"] = "auto",
) -> Registration:
    """Rigid Mattes registration with a fixed number of sampled voxels, on one thread.

    What :func:`register` computes (rigid Euler transform about the fixed centre of mass,
    Mattes mutual information with 50 bins, linear interpolation, regular-step gradient
    descent with scales from physical shifts, shrink factors 2 then 1 with Gaussian σ = 1
    then 0 voxels) with ``samples`` voxels of ``fixed`` sampled (seeded; all of a smaller
    image) rather than a fraction of them, on one thread, so that a serial and a Dask run,
    or the same study run twice, give the same numbers. The defaults are the ``align``
    step's; the ``functional`` step asks for more samples and iterations
    (:mod:`tumorscope.pipeline.functional`).

    The default back-end (numba installed) is a compiled implementation of the same
    algorithm, :mod:`tumorscope.preprocessing._rigid_numba` (its docstring gives the
    equations and the ITK classes they follow), about 4–6× faster than SimpleITK on one thread
    and as accurate against known motions; the two differ by their random samples, i.e. by
    the sampling noise of either (a few tenths of a millimetre at most on the phantom).
    ``backend="itk"`` runs :func:`register` (SimpleITK) instead. ``benchmarks/bench_align.py``
    measures both (``docs/performance.md``, "align (session 3)", "rigid (session 4)").

    Parameters
    ----------
    fixed, moving : Volume, 3-D
    samples : int, default :data:`QUICK_SAMPLES`
    iterations, min_step, relaxation, seed
        As :func:`register`.
    backend : {"auto", "numba", "itk"}, default "auto"
        ``"auto"``: numba if installed, else SimpleITK.

    Returns
    -------
    Registration

    Raises
    ------
    DataError
        As :func:`register`; or an unknown ``backend``, or ``"numba"`` without numba.
    """
    return QuickRegistration(
        fixed,
        samples=samples,
        iterations=iterations,
        min_step=min_step,
        relaxation=relaxation,
        seed=seed,
        backend=backend,
    ).register(moving)


class QuickRegistration:
    """:func:`register_quick` of one fixed image against any number of moving images.

    The fixed image's share of the work (its checks; with the compiled back-end its centre
    of mass, the pyramid's smoothed image, the random samples and their bins) is done once
    here, not once per moving image: ``QuickRegistration(fixed, **kw).register(moving)`` is
    ``register_quick(fixed, moving, **kw)``, bit for bit (``tests/preprocessing/test_rigid.py``).
    The object is read-only after construction: :meth:`register` may run in several
    threads at once (the compiled kernels release the GIL).

    Parameters
    ----------
    fixed : Volume, 3-D
    samples, iterations, min_step, relaxation, seed, backend
        As :func:`register_quick`.

    Raises
    ------
    DataError
        As :func:`register_quick` (for the fixed image and the back-end).
    """

    def __init__(
        self,
        fixed: Volume,
        *,
        samples: int = QUICK_SAMPLES,
        iterations: int = 40,
        min_step: float = 1e-4,
        relaxation: float = 0.5,
        seed: int = 1234,
        backend: Literal["auto", "numba", "itk"] = "auto",
    ) -> None:
        if backend not in ("auto", "numba", "itk"):
            raise DataError(
                f"backend must be 'auto', 'numba' or 'itk', got {backend!r}", field="backend"
            )
        self.fixed = fixed
        self.sampling = min(1.0, samples / fixed.data.size)
        self.iterations = int(iterations)
        self.min_step = float(min_step)
        self.relaxation = float(relaxation)
        self.seed = int(seed)
        self._prepared: Any = None
        self._numba: Any = None
        if backend != "itk":
            try:
                from . import _rigid_numba
            except ImportError as exc:
                if backend == "numba":
                    raise DataError(
                        "backend 'numba' needs numba installed", field="backend"
                    ) from exc
            else:
                _check_image("fixed", fixed)
                self._numba = _rigid_numba
                self._prepared = _rigid_numba.prepare_fixed(
                    np.asarray(fixed.data),
                    np.asarray(fixed.affine, dtype=np.float64),
                    sampling=self.sampling,
                    seed=self.seed,
                )

    def register(self, moving: Volume) -> Registration:
        """Register ``moving`` onto the fixed image (:func:`register_quick`)."""
        if self._numba is not None:
            _check_image("moving", moving)
            matrix, value, stop = self._numba.register_prepared(
                self._prepared,
                np.asarray(moving.data),
                np.asarray(moving.affine, dtype=np.float64),
                iterations=self.iterations,
                min_step=self.min_step,
                relaxation=self.relaxation,
            )
            return Registration(
                matrix=matrix, kind="rigid", metric_value=value, stop_condition=f"numba: {stop}"
            )
        with itk_one_thread():
            return register(
                self.fixed,
                moving,
                kind="rigid",
                sampling=self.sampling,
                iterations=self.iterations,
                seed=self.seed,
                min_step=self.min_step,
                relaxation=self.relaxation,
            )


_itk_lock = threading.Lock()
_itk_users = 0
_itk_saved = 0


@contextmanager
def itk_one_thread() -> Iterator[None]:
    """SimpleITK's process-wide default thread count set to one inside the block.

    A registration's result depends on ITK's thread count (by ~1e-14: the metric's partial
    sums), so that a run gives the same transforms on any machine and on Dask workers the
    registrations run on one thread. The setting is the process's: blocks open at once in
    several threads (two units of a subject, :mod:`tumorscope.pipeline.execute`) share one
    save and one restore — the first to enter saves the count, the last to leave puts it
    back — instead of one thread restoring it in the middle of another's registration.
    """
    import SimpleITK as sitk

    global _itk_users, _itk_saved
    with _itk_lock:
        if _itk_users == 0:
            _itk_saved = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        _itk_users += 1
    try:
        yield
    finally:
        with _itk_lock:
            _itk_users -= 1
            if _itk_users == 0:
                sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_itk_saved)


def resample(
    volume: Volume,
    onto: Volume,
    *,
    transform: npt.ArrayLike | None = None,
    interpolation: Literal["linear", "nearest"] = "linear",
    fill: float = np.nan,
) -> Volume:
    """Resample a 3-D image onto another grid (through a registration transform).

    Parameters
    ----------
    volume : Volume, 3-D
        The image to resample (a map, an image frame).
    onto : Volume
        Defines the target grid (its shape and affine; its data are not used).
    transform : array_like, shape (4, 4), optional
        Target-world to source-world matrix (:attr:`Registration.matrix`). Identity if None.
    interpolation : {"linear", "nearest"}, default "linear"
    fill : float, default NaN
        Value of target voxels that fall outside the source image (more than half a voxel
        beyond its outer voxel centres). NaN voxels of the source (failed fits) stay NaN in
        every target voxel that interpolates from them; they are never replaced by ``fill``.

    Returns
    -------
    Volume
        float32 data on ``onto``'s grid, ``volume``'s metadata.
    """
    if volume.data.ndim != 3:
        raise DataError(f"expected a 3-D image, got shape {volume.shape}", file=volume.source)
    src = np.asarray(volume.data, dtype=np.float64)
    pts = _source_index_of_target(onto, volume, transform)
    from scipy import ndimage

    coords = pts.reshape(-1, 3).T
    order = 1 if interpolation == "linear" else 0
    if interpolation not in ("linear", "nearest"):
        raise DataError(
            f"interpolation must be 'linear' or 'nearest', got {interpolation!r}",
            field="interpolation",
        )
    # grid-aligned points (identity, integer shifts) sit exactly on source voxels: snap away
    # the rounding noise of inv(A) @ A so that no neighbour (and no NaN) leaks in with weight 0
    snapped = np.rint(coords)
    coords = np.where(np.abs(coords - snapped) < 1e-6, snapped, coords)
    if order == 0:
        coords = snapped
    # points up to half a voxel beyond the outer voxel centres take the edge values; points
    # further out get ``fill``; NaN in the source (failed fits) stays NaN where it is used
    bad = ~np.isfinite(src)
    out = ndimage.map_coordinates(np.where(bad, 0.0, src), coords, order=order, mode="nearest")
    if bad.any():
        # NaN only where a non-finite source voxel has a non-zero interpolation weight
        w = ndimage.map_coordinates(bad.astype(np.float64), coords, order=order, mode="nearest")
        out = np.where(w > 1e-9, np.nan, out)
    size = np.array(src.shape, dtype=float)[:, None]
    outside = np.any((coords < -0.5) | (coords > size - 0.5), axis=0)
    out = np.where(outside, fill, out)
    return Volume(
        out.reshape(onto.spatial_shape).astype(np.float32),
        onto.affine.copy(),
        meta=volume.meta,
        source=volume.source,
    )


def resample_mask(
    mask: Volume,
    onto: Volume,
    *,
    transform: npt.ArrayLike | None = None,
    method: Literal["nearest", "majority"] = "nearest",
    supersample: int | None = None,
) -> Volume:
    """Resample a label map (or binary mask) onto another grid, labels kept intact.

    Labels are never blended into one another: each target voxel takes one of the source
    labels (or background).

    ``method="nearest"`` (default)
        The target voxel takes the label of the source voxel containing its centre. On a
        coarser grid this samples the lesion at the target voxel centres, which keeps the
        volume unbiased (on average over lesion positions) whatever the lesion's shape.
    ``method="majority"``
        The target voxel is split into ``supersample``³ sub-voxel points, each takes the
        label of the source voxel containing it, and the voxel takes the most frequent label
        (background included, ties to the lower label): a vote over partial-volume fractions.
        Boundaries are smoother, but convex lesions shrink on grids coarse relative to their
        curvature (a voxel whose centre is just inside holds less than half lesion), by
        several percent for a 6 mm-radius lesion on 4 mm slices
        (``benchmarks/bench_lesions.py``).

    Parameters
    ----------
    mask : Volume, 3-D, integer or bool
        Label map (0 = background).
    onto : Volume
        Target grid (a parameter map).
    transform : array_like, shape (4, 4), optional
        Target-world to source-world matrix (:attr:`Registration.matrix`).
    method : {"nearest", "majority"}, default "nearest"
    supersample : int, optional
        Sub-samples per axis for ``"majority"``; default ``ceil(target voxel / source
        voxel)``, capped at 5.

    Returns
    -------
    Volume
        int32 label map on ``onto``'s grid.
    """
    if mask.data.ndim != 3:
        raise DataError(f"expected a 3-D label map, got shape {mask.shape}", file=mask.source)
    if method not in ("nearest", "majority"):
        raise DataError(f"method must be 'nearest' or 'majority', got {method!r}", field="method")
    labels = np.asarray(mask.data)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.round(labels)):
            raise DataError("label map holds non-integer values", file=mask.source)
    labels = labels.astype(np.int32)
    if method == "nearest":
        supersample = 1
    elif supersample is None:
        ratio = max(np.array(onto.voxel_sizes) / np.array(mask.voxel_sizes))
        supersample = int(min(5, max(1, np.ceil(ratio - 1e-6))))
    n = int(supersample)
    offsets = (np.arange(n) + 0.5) / n - 0.5
    sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1).reshape(-1, 3)

    tgt_aff = onto.affine
    src_inv = np.linalg.inv(mask.affine)
    t = np.eye(4) if transform is None else _check_matrix(transform)
    full = src_inv @ t @ tgt_aff  # target index -> source index
    out = np.zeros(onto.spatial_shape, np.int32)
    present = np.unique(labels)
    present = present[present != 0]
    if present.size == 0:
        return Volume(out, onto.affine.copy(), meta=mask.meta, source=mask.source)
    # restrict the work to the target box covering the source labels
    box = _target_box(labels != 0, mask.affine, onto, t)
    if box is None:
        return Volume(out, onto.affine.copy(), meta=mask.meta, source=mask.source)
    lo, hi = box
    ijk = np.stack(
        np.meshgrid(*[np.arange(lo[i], hi[i]) for i in range(3)], indexing="ij"), -1
    ).reshape(-1, 3)
    lookup = np.searchsorted(present, labels)  # dense index of each source label
    counts = np.zeros((len(ijk), present.size + 1), np.int32)
    shape = np.array(labels.shape)
    for off in sub:
        p = (ijk + off) @ full[:3, :3].T + full[:3, 3]
        q = np.rint(p).astype(np.int64)
        ok = np.all((q >= 0) & (q < shape), axis=1)
        lab = np.zeros(len(q), np.int64)
        qq = q[ok]
        hit = labels[qq[:, 0], qq[:, 1], qq[:, 2]]
        lab[ok] = np.where(hit != 0, lookup[qq[:, 0], qq[:, 1], qq[:, 2]] + 1, 0)
        np.add.at(counts, (np.arange(len(q)), lab), 1)
    winner = counts.argmax(axis=1)
    values = np.concatenate([[0], present])[winner]
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = values.reshape(tuple(hi - lo))
    return Volume(out, onto.affine.copy(), meta=mask.meta, source=mask.source)


# ---------------------------------------------------------------------------- internals


def _check_matrix(m: npt.ArrayLike) -> np.ndarray:
    a = np.asarray(m, dtype=float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise DataError(
            f"transform must be a finite 4x4 matrix, got shape {a.shape}", field="transform"
        )
    return a


def _check_pair(fixed: Volume, moving: Volume) -> None:
    """The checks of :func:`register`'s inputs shared by both back-ends."""
    _check_image("fixed", fixed)
    _check_image("moving", moving)


def _check_image(name: str, vol: Volume) -> None:
    """One image of a pair: 3-D, not constant over its finite voxels, axes orthogonal."""
    if vol.data.ndim != 3:
        raise DataError(
            f"{name} image must be 3-D, got shape {vol.shape}; pass one frame",
            file=vol.source,
        )
    data = np.asarray(vol.data)
    lo, hi = float(data.min()), float(data.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):  # NaN or infinities: the finite voxels'
        finite = data[np.isfinite(data)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if lo == hi:
        raise DataError(f"{name} image is constant: nothing to register", file=vol.source)
    lin = np.asarray(vol.affine, dtype=float)[:3, :3]
    direction = lin / np.linalg.norm(lin, axis=0)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise DataError(
            "sheared affines cannot be registered (axes not orthogonal)",
            file=vol.source,
            field="affine",
        )


def nearest_index(source: Volume, onto: Volume) -> np.ndarray | None:
    """Flat index into ``source`` of the voxel each ``onto`` voxel takes by nearest-neighbour
    resampling (-1 where it falls outside), so that many maps of one grid are moved by a
    gather (``maps.reshape(-1)[index]``): the same values as :func:`resample` with
    ``interpolation="nearest"`` map by map, which computes the coordinates of the whole target
    grid each time (a quarter of a second per map on a 128 × 128 × 30 grid).

    The source coordinates of the target voxels are :func:`resample`'s own, rounded as it
    rounds them for nearest neighbour (``np.rint``); a voxel is inside where they lie within
    half a voxel of the outer voxel centres, i.e. where the rounded index is in range: what
    :func:`resample` of an image of the flat indices returns (``tests/stages/test_metabolic.py``
    compares the two). None when the grid is too large for the indices to be exact in
    float32 (then resample map by map).
    """
    shape = source.spatial_shape
    if int(np.prod(shape)) >= 2**24:
        return None
    idx = np.rint(_source_index_of_target(onto, source, None).reshape(-1, 3))
    inside = np.all((idx >= 0) & (idx <= np.array(shape, dtype=float) - 1), axis=1)
    out = np.full(idx.shape[0], -1, np.int64)
    ijk = idx[inside].astype(np.int64)
    out[inside] = np.ravel_multi_index((ijk[:, 0], ijk[:, 1], ijk[:, 2]), shape)
    return out.reshape(onto.spatial_shape)


def _source_index_of_target(
    onto: Volume, source: Volume, transform: npt.ArrayLike | None
) -> np.ndarray:
    t = np.eye(4) if transform is None else _check_matrix(transform)
    full = np.linalg.inv(source.affine) @ t @ onto.affine
    ijk = np.indices(onto.spatial_shape).reshape(3, -1).T.astype(float)
    return np.asarray(ijk @ full[:3, :3].T + full[:3, 3])


def _target_box(
    nonzero: np.ndarray, src_affine: np.ndarray, onto: Volume, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    idx = np.argwhere(nonzero)
    lo, hi = idx.min(axis=0) - 0.5, idx.max(axis=0) + 0.5
    corners = np.array(
        [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    # source index -> source world -> target world (inverse of t) -> target index
    to_tgt = np.linalg.inv(onto.affine) @ np.linalg.inv(t) @ src_affine
    c = corners @ to_tgt[:3, :3].T + to_tgt[:3, 3]
    shape = np.array(onto.spatial_shape)
    blo = np.clip(np.floor(c.min(axis=0)).astype(int) - 1, 0, shape)
    bhi = np.clip(np.ceil(c.max(axis=0)).astype(int) + 2, 0, shape)
    if np.any(bhi <= blo):
        return None
    return blo, bhi


def _to_sitk(vol: Volume, dtype: npt.DTypeLike) -> Any:
    import SimpleITK as sitk

    data = np.asarray(vol.data, dtype=dtype)
    if np.issubdtype(np.dtype(dtype), np.floating):
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    lps = _LPS @ vol.affine
    lin = lps[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    direction = lin / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise DataError(
            "sheared affines cannot be registered (axes not orthogonal)",
            file=vol.source,
            field="affine",
        )
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(d) for d in direction.ravel()])
    img.SetOrigin([float(o) for o in lps[:3, 3]])
    return img


def _sitk_transform_to_ras(tx: Any) -> np.ndarray:
    """4×4 matrix (RAS) of a SimpleITK transform (composite of affine-like parts)."""
    import SimpleITK as sitk

    total = np.eye(4)
    parts = []
    if isinstance(tx, sitk.CompositeTransform):
        parts = [tx.GetNthTransform(i) for i in range(tx.GetNumberOfTransforms())]
    else:
        parts = [tx]
    for part in parts:
        aff = sitk.AffineTransform(3)
        # every linear transform we use (Euler, Affine) exposes matrix/center/translation
        p = _downcast(part)
        aff.SetMatrix(p.GetMatrix())
        aff.SetCenter(p.GetCenter())
        aff.SetTranslation(p.GetTranslation())
        lin = np.array(aff.GetMatrix()).reshape(3, 3)
        c = np.array(aff.GetCenter())
        tr = np.array(aff.GetTranslation())
        m = np.eye(4)
        m[:3, :3] = lin
        m[:3, 3] = tr + c - lin @ c
        # composite applies the last-added first: total = total @ m
        total = total @ m
    return np.asarray(_LPS @ total @ _LPS)


def _downcast(tx: Any) -> Any:
    import SimpleITK as sitk

    for cls in (sitk.Euler3DTransform, sitk.AffineTransform, sitk.VersorRigid3DTransform):
        try:
            return cls(tx)
        except (RuntimeError, TypeError):
            continue
    raise DataError(f"unsupported transform {tx.GetName()}", field="transform")
