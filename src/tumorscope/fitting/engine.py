"""The fitting engine: validation, masks, chunks, executors.

:func:`fit_blocks` turns a data array of any spatial shape into ``(n_voxels, n_measurements)``
float64 blocks of at most ``chunk_voxels`` masked voxels, drops the voxels whose data are
unusable (status ``INVALID_INPUT``), hands the rest to a block solver and scatters the results
back. Memory is bounded by the chunk size: only one block per worker is converted to float64
at a time.

Executors. A block solver compiled with ``numba.prange`` already uses every core, so blocks are
processed one after the other (``n_workers=1``). Pure numpy solvers run blocks in a thread
pool (numpy releases the GIL inside its kernels). The measured choice is documented in
``docs/fitting.md``.

Determinism. No solver uses random numbers; a voxel's result depends only on its own data, so
results are identical whatever the chunk size, the number of workers or the mask.

Memory order. Images read from NIfTI are Fortran-ordered (``(X, Y, Z, m)`` with ``X``
fastest): flattening them voxel-major in C order copies the whole series (0.45 s for the
large phantom's DCE concentration). With ``order="auto"`` such data are flattened in Fortran
order instead (a view), the blocks gather only their own voxels, and the flat results say so
(:attr:`FlatFit.order`): the caller reshapes them with that order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import FitError
from . import progress
from .status import FitStatus

__all__ = ["DEFAULT_CHUNK_VOXELS", "BlockFit", "FlatFit", "fit_blocks", "validate_inputs"]

#: Default number of voxels per block (about 10 MB of float64 data for 20 measurements).
DEFAULT_CHUNK_VOXELS = 65536


@dataclass
class BlockFit:
    """What a block solver returns for ``n`` valid voxels.

    Attributes
    ----------
    params : ndarray, shape (n, p)
    status : ndarray of uint8, shape (n,)
    rss : ndarray, shape (n,)
    stderr : ndarray, shape (n, p), optional
    """

    params: np.ndarray
    status: np.ndarray
    rss: np.ndarray
    stderr: np.ndarray | None = None


@dataclass
class FlatFit:
    """Results scattered onto all voxels (flattened spatial axes, float32 maps).

    Attributes
    ----------
    params, stderr : ndarray, shape (V, p), float32, NaN where not fitted
    status : ndarray of uint8, shape (V,)
    rss : ndarray, shape (V,), float32
    mask : ndarray of bool, shape (V,)
    counts : ndarray of int64, shape (256,)
        Number of voxels per status code (counted in the blocks, in parallel).
    order : {"C", "F"}
        How the spatial axes were flattened: reshape the flat arrays with this order.
    """

    params: np.ndarray
    stderr: np.ndarray
    status: np.ndarray
    rss: np.ndarray
    mask: np.ndarray
    counts: np.ndarray
    order: Literal["C", "F"] = "C"


def validate_inputs(
    data: object, mask: object, *, n_measurements: int, what: str = "measurements"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check data and mask shapes before any work.

    Parameters
    ----------
    data : array_like, shape (..., m)
        Measurements on the last axis.
    mask : array_like of bool, shape data.shape[:-1], optional
    n_measurements : int
        Expected ``m`` (from the protocol).
    what : str
        Name of the measurement axis for messages ("b-values", "frames" ...).

    Returns
    -------
    data : ndarray
        As given (no copy) when already an ndarray of numbers.
    mask : ndarray of bool or None

    Raises
    ------
    FitError
        Non-numeric data, a last axis that disagrees with the protocol, a mask of another shape.
    """
    arr = np.asarray(data)
    if arr.dtype.kind not in "biuf":
        raise FitError(f"expected numeric data, got dtype {arr.dtype}", field="data")
    if arr.ndim < 1 or arr.shape[-1] != n_measurements:
        got = arr.shape[-1] if arr.ndim else 0
        raise FitError(
            f"the last axis of the data has {got} values but the protocol has "
            f"{n_measurements} {what} (data shape {arr.shape})",
            field="data",
        )
    if mask is None:
        return arr, None
    m = np.asarray(mask)
    if m.shape != arr.shape[:-1]:
        raise FitError(
            f"mask shape {m.shape} does not match the data's spatial shape {arr.shape[:-1]}",
            field="mask",
        )
    if m.dtype != np.bool_:
        if m.dtype.kind not in "biuf" or not np.all(np.isfinite(m)):
            raise FitError(f"mask must be boolean or numeric, got dtype {m.dtype}", field="mask")
        m = m != 0
    return arr, m


def _default_invalid(y: np.ndarray, **inputs: np.ndarray) -> np.ndarray:
    bad = ~np.all(np.isfinite(y), axis=1)
    for v in inputs.values():
        bad |= ~np.isfinite(v)
    return bad


def fit_blocks(
    block_fn: Callable[..., BlockFit],
    data: np.ndarray,
    mask: np.ndarray | None,
    *,
    n_params: int,
    invalid_fn: Callable[..., np.ndarray] | None = _default_invalid,
    chunk_voxels: int | None = None,
    n_workers: int = 1,
    native_dtype: bool = False,
    voxel_inputs: Mapping[str, np.ndarray] | None = None,
    order: Literal["C", "auto"] = "C",
) -> FlatFit:
    """Fit all masked voxels block by block.

    Parameters
    ----------
    block_fn : callable
        ``block_fn(y (n, m) float64, **inputs) -> BlockFit`` for ``n`` valid voxels, with
        ``inputs`` the block's rows of ``voxel_inputs`` (none when there are none).
    data : ndarray, shape (..., m)
        Already validated by :func:`validate_inputs`.
    mask : ndarray of bool, shape data.shape[:-1], or None
    n_params : int
    invalid_fn : callable or None, optional
        ``invalid_fn(y (n, m), **inputs) -> (n,) bool``: voxels not to fit (status
        ``INVALID_INPUT``).
        Default: any non-finite value. ``None``: every voxel goes to ``block_fn``, which then
        reports invalid voxels itself (status ``INVALID_INPUT``, NaN parameters); fused
        kernels use this to validate in the same pass as they fit.
    chunk_voxels : int, optional
        Voxels per block. Default :data:`DEFAULT_CHUNK_VOXELS`, or less with several workers
        so that each gets at least 4 blocks (dynamic load balance on a shared machine).
    n_workers : int, default 1
        Blocks processed concurrently in a thread pool.
    native_dtype : bool, default False
        Hand float32 data to ``block_fn`` as float32 (float64 otherwise; other dtypes are
        always converted to float64).
    voxel_inputs : mapping of str to ndarray, optional
        Per-voxel inputs of the model (e.g. ``{"b1": map}``), each of shape
        ``data.shape[:-1]``: handed to ``invalid_fn`` and ``block_fn`` as keyword arguments,
        block by block (float64 rows of the same voxels as ``y``).
    order : {"C", "auto"}, default "C"
        How the spatial axes are flattened: ``"C"`` always (a copy of Fortran-ordered data);
        ``"auto"``: in Fortran order when the data are Fortran- and not C-contiguous (a view;
        :attr:`FlatFit.order` is then ``"F"``). The voxels' results are the same; only the
        blocks' composition differs.

    Returns
    -------
    FlatFit
    """
    m = data.shape[-1]
    fo: Literal["C", "F"] = (
        "F"
        if order == "auto"
        and data.ndim > 2
        and data.flags.f_contiguous
        and not data.flags.c_contiguous
        else "C"
    )
    flat = data.reshape(-1, m, order=fo)
    V = flat.shape[0]
    if chunk_voxels is not None and int(chunk_voxels) < 1:
        raise FitError(f"must be >= 1, got {chunk_voxels}", field="chunk_voxels")
    if n_workers < 1:
        raise FitError(f"must be >= 1, got {n_workers}", field="n_workers")
    block_dtype = (
        data.dtype if native_dtype and data.dtype in (np.float32, np.float64) else np.float64
    )
    flat_inputs = {k: np.asarray(v).reshape(-1, order=fo) for k, v in (voxel_inputs or {}).items()}
    for k, v in flat_inputs.items():
        if v.size != V:
            raise FitError(f"expected one value per voxel ({V}), got {v.size}", field=k)
    out = _Outputs.allocate(V, n_params, None if mask is None else mask.reshape(-1, order=fo))
    n_fit = V if out.index is None else out.index.size
    chunk = _chunk_size(chunk_voxels, n_workers, n_fit)
    n_chunks = math.ceil(n_fit / chunk) if n_fit else 0
    block_counts = np.zeros((max(n_chunks, 1), 256), dtype=np.int64)
    progress.report("planned", n_chunks)

    def one(c: int) -> None:
        lo, hi = c * chunk, min((c + 1) * chunk, n_fit)
        sel: slice | np.ndarray = slice(lo, hi) if out.index is None else out.index[lo:hi]
        # one C-ordered copy of the block's rows (a gather when the flat view is F-ordered)
        y = np.array(flat[sel], dtype=block_dtype, order="C")
        extra = {k: np.asarray(v[sel], dtype=np.float64) for k, v in flat_inputs.items()}
        if invalid_fn is None:
            good = np.ones(y.shape[0], dtype=bool)
        else:
            good = ~np.asarray(invalid_fn(y, **extra), dtype=bool)
        st = out.store(sel, _solve_valid(block_fn, y, good, extra, n_params))
        block_counts[c] = np.bincount(st, minlength=256)
        progress.report("done", 1)

    if n_workers == 1 or n_chunks <= 1:
        for c in range(n_chunks):
            one(c)
    else:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            list(pool.map(one, range(n_chunks)))
    counts = block_counts.sum(axis=0)
    counts[FitStatus.NOT_FITTED] += V - n_fit
    return FlatFit(out.params, out.stderr, out.status, out.rss, out.fmask, counts, fo)


def _chunk_size(chunk_voxels: int | None, n_workers: int, n_fit: int) -> int:
    """Voxels per block: as asked, else the default, or less with several workers so that each
    gets at least 4 blocks (never tiny ones)."""
    if chunk_voxels is not None:
        return int(chunk_voxels)
    if n_workers > 1:
        return min(DEFAULT_CHUNK_VOXELS, max(1024, math.ceil(n_fit / (4 * n_workers))))
    return DEFAULT_CHUNK_VOXELS


def _solve(
    block_fn: Callable[..., BlockFit], y: np.ndarray, extra: dict[str, np.ndarray]
) -> BlockFit:
    """``block_fn`` on a block of valid voxels; failed voxels carry no numbers."""
    res = block_fn(np.ascontiguousarray(y), **extra)
    failed = res.status == FitStatus.FAILED
    if failed.any():
        res.params[failed] = np.nan
        if res.stderr is not None:
            res.stderr[failed] = np.nan
    return res


def _solve_valid(
    block_fn: Callable[..., BlockFit],
    y: np.ndarray,
    good: np.ndarray,
    extra: dict[str, np.ndarray],
    n_params: int,
) -> BlockFit:
    """The block's results: ``block_fn`` on the ``good`` voxels, ``INVALID_INPUT`` and NaN for
    the others."""
    if np.all(good):
        res = _solve(block_fn, y, extra)
        res.status = np.asarray(res.status, dtype=np.uint8)
        return res
    n = y.shape[0]
    out = BlockFit(
        np.full((n, n_params), np.nan),
        np.full(n, FitStatus.INVALID_INPUT, dtype=np.uint8),
        np.full(n, np.nan),
        np.full((n, n_params), np.nan),
    )
    if good.any():
        res = _solve(block_fn, y[good], {k: v[good] for k, v in extra.items()})
        out.params[good] = res.params
        out.status[good] = res.status
        out.rss[good] = res.rss
        if res.stderr is not None:
            assert out.stderr is not None
            out.stderr[good] = res.stderr
    return out


@dataclass
class _Outputs:
    """The flat float32 maps every block writes its voxels into."""

    params: np.ndarray
    stderr: np.ndarray
    rss: np.ndarray
    status: np.ndarray
    fmask: np.ndarray
    index: np.ndarray | None

    @classmethod
    def allocate(cls, V: int, n_params: int, mask: np.ndarray | None) -> _Outputs:
        """Outputs of ``V`` voxels; ``mask`` is flat (the engine's voxel order)."""

        # every fitted voxel is written by its block; only voxels outside the mask need a fill
        def arr(shape: tuple[int, ...]) -> np.ndarray:
            if mask is None:
                return np.empty(shape, dtype=np.float32)
            return np.full(shape, np.nan, dtype=np.float32)

        status = np.full(V, FitStatus.NOT_FITTED, dtype=np.uint8)
        if mask is None:
            fmask, index = np.ones(V, dtype=bool), None
        else:
            fmask = mask.reshape(-1)
            index = np.flatnonzero(fmask)
        return cls(arr((V, n_params)), arr((V, n_params)), arr((V,)), status, fmask, index)

    def store(self, sel: slice | np.ndarray, res: BlockFit) -> np.ndarray:
        """Write a block's results at ``sel``; return its status codes."""
        self.params[sel] = res.params
        self.status[sel] = res.status
        self.rss[sel] = res.rss
        self.stderr[sel] = np.nan if res.stderr is None else res.stderr
        return np.asarray(res.status, dtype=np.uint8)
