"""Tests of the fitting engine: LM (both backends), linear LS, grid search, chunking, status."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import FitError
from tumorscope.fitting import (
    FitStatus,
    LMOptions,
    fit_blocks,
    grid_search,
    levenberg_marquardt,
    summarize_status,
    validate_inputs,
    weighted_lls,
)
from tumorscope.fitting.engine import BlockFit
from tumorscope.fitting.grid import product_grid

B = np.array([0.0, 100.0, 300.0, 600.0, 1000.0])


def _fun(p: np.ndarray) -> np.ndarray:
    return p[:, :1] * np.exp(-np.outer(p[:, 1], B))


def _jac(p: np.ndarray) -> np.ndarray:
    e = np.exp(-np.outer(p[:, 1], B))
    return np.stack([e, -p[:, :1] * B * e], axis=-1)


def _truth(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(0.5, 2.0, n), rng.uniform(3e-4, 3e-3, n)]


LO, HI = np.array([0.0, 0.0]), np.array([np.inf, 5e-3])
SCALE = np.array([1.0, 3e-3])


try:  # the compiled solver needs numba (the 'fast' extra)
    import numba as nb

    from tumorscope.fitting._lm_numba import MODEL_SIGNATURE

    @nb.njit(MODEL_SIGNATURE, cache=True)
    def _mono_nb(p, c, f, J):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        for i in range(c.shape[0]):
            e = np.exp(-c[i] * p[1])
            f[i] = p[0] * e
            J[i, 0] = e
            J[i, 1] = -p[0] * c[i] * e

except ImportError:  # pragma: no cover
    _mono_nb = None


def _mono_kernel():  # type: ignore[no-untyped-def]
    if _mono_nb is None:
        pytest.skip("numba is not installed")
    return _mono_nb


@pytest.mark.parametrize("backend", ["numpy", "numba", "numba-serial"])
def test_lm_recovers_noise_free(backend: str) -> None:
    P = _truth(200)
    y = _fun(P)
    p0 = np.tile([1.0, 1e-3], (200, 1))
    kw = (
        {"fun": _fun, "jac": _jac}
        if backend == "numpy"
        else {"kernel": _mono_kernel(), "consts": B}
    )
    r = levenberg_marquardt(y, p0, LO, HI, scale=SCALE, backend=backend, **kw)
    np.testing.assert_allclose(r.params, P, rtol=1e-7)
    assert np.all(r.status == FitStatus.CONVERGED)
    assert r.rss.max() < 1e-20


def test_lm_backends_agree_on_noisy_data() -> None:
    """Same algorithm in numpy and numba: same solution to solver tolerance."""
    P = _truth(300, seed=1)
    y = _fun(P) + np.random.default_rng(2).normal(0, 0.02, (300, B.size))
    p0 = np.tile([1.0, 1e-3], (300, 1))
    a = levenberg_marquardt(y, p0, LO, HI, fun=_fun, jac=_jac, scale=SCALE)
    b = levenberg_marquardt(
        y, p0, LO, HI, kernel=_mono_kernel(), consts=B, scale=SCALE, backend="numba"
    )
    np.testing.assert_allclose(a.params, b.params, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(a.stderr, b.stderr, rtol=1e-4)
    np.testing.assert_array_equal(a.status, b.status)


def test_lm_bounds_and_status() -> None:
    """An upper bound below the truth: the fit sits on the bound with status AT_BOUND."""
    P = _truth(50)
    y = _fun(P)
    hi = np.array([np.inf, 2e-4])
    r = levenberg_marquardt(
        y, np.tile([1.0, 1e-4], (50, 1)), LO, hi, fun=_fun, jac=_jac, scale=SCALE
    )
    assert np.all(r.params[:, 1] <= 2e-4)
    np.testing.assert_allclose(r.params[:, 1], 2e-4)
    assert np.all(r.status == FitStatus.AT_BOUND)


def test_lm_max_iter_status() -> None:
    P = _truth(20)
    r = levenberg_marquardt(
        _fun(P),
        np.tile([1.0, 4e-3], (20, 1)),
        LO,
        HI,
        fun=_fun,
        jac=_jac,
        scale=SCALE,
        options=LMOptions(max_iter=1),
    )
    assert np.all(r.status == FitStatus.MAX_ITER)


def test_lm_stderr_matches_monte_carlo() -> None:
    """Jacobian standard errors agree with the Monte Carlo spread (within 15%, 2000 draws)."""
    rng = np.random.default_rng(3)
    n = 2000
    P = np.tile([1.0, 1e-3], (n, 1))
    y = _fun(P) + rng.normal(0, 0.01, (n, B.size))
    r = levenberg_marquardt(y, P.copy(), LO, HI, fun=_fun, jac=_jac, scale=SCALE)
    sd = r.params.std(axis=0)
    np.testing.assert_allclose(np.median(r.stderr, axis=0), sd, rtol=0.15)


def test_lm_unknown_backend_raises() -> None:
    with pytest.raises(FitError, match="unknown backend"):
        levenberg_marquardt(
            np.ones((1, 5)), np.ones((1, 2)), LO, HI, fun=_fun, jac=_jac, backend="cuda"
        )


def test_weighted_lls_matches_lstsq() -> None:
    rng = np.random.default_rng(4)
    A = np.c_[np.ones(B.size), -B]
    Y = rng.normal(size=(30, B.size))
    W = rng.uniform(0.1, 2.0, (30, B.size))
    r = weighted_lls(A, Y, W)
    for i in range(30):
        sw = np.sqrt(W[i])
        ref = np.linalg.lstsq(A * sw[:, None], Y[i] * sw, rcond=None)[0]
        np.testing.assert_allclose(r.coef[i], ref, rtol=1e-8, atol=1e-12)
    with pytest.raises(FitError):
        weighted_lls(A, Y[:, :3])
    with pytest.raises(FitError, match=">= 0"):
        weighted_lls(A, Y, -W)


def test_grid_search_finds_nearest_point() -> None:
    grid = product_grid(np.linspace(2e-4, 4e-3, 40))
    P = _truth(100)
    est = grid_search(lambda th: np.exp(-np.outer(th[:, 0], B)), _fun(P), grid)
    step = grid[1, 0] - grid[0, 0]
    assert np.all(np.abs(est[:, 1] - P[:, 1]) <= step)
    np.testing.assert_allclose(est[:, 0], P[:, 0], rtol=0.2)


def _block(y: np.ndarray) -> BlockFit:
    p0 = np.tile([1.0, 1e-3], (y.shape[0], 1))
    r = levenberg_marquardt(y, p0, LO, HI, fun=_fun, jac=_jac, scale=SCALE)
    return BlockFit(r.params, r.status, r.rss, r.stderr)


def test_fit_blocks_chunking_mask_and_invalid_are_consistent() -> None:
    P = _truth(6 * 7)
    data = _fun(P).reshape(6, 7, B.size)
    data[0, 0, 2] = np.nan
    mask = np.ones((6, 7), bool)
    mask[5] = False
    ref = fit_blocks(_block, data, mask, n_params=2, chunk_voxels=1000)
    for chunk, workers in [(1, 1), (5, 2), (13, 3)]:
        out = fit_blocks(_block, data, mask, n_params=2, chunk_voxels=chunk, n_workers=workers)
        np.testing.assert_array_equal(out.params, ref.params)
        np.testing.assert_array_equal(out.status, ref.status)
    st = ref.status.reshape(6, 7)
    assert st[0, 0] == FitStatus.INVALID_INPUT
    assert np.all(st[5] == FitStatus.NOT_FITTED)
    assert np.all(np.isnan(ref.params.reshape(6, 7, 2)[5]))
    assert ref.params.dtype == np.float32


def test_fit_blocks_fortran_order_is_a_view_with_the_same_results() -> None:
    """Fortran-ordered data (as NIfTI images are read) with ``order="auto"``: flattened in
    Fortran order without a copy of the series; every voxel's result equals the C-order fit,
    with a mask, an invalid voxel and a per-voxel input."""
    P = _truth(4 * 5 * 3)
    data_c = _fun(P).reshape(4, 5, 3, B.size)
    data_c[1, 2, 0, 3] = np.nan
    data_f = np.asfortranarray(data_c)
    mask = np.ones((4, 5, 3), bool)
    mask[3, :, 1] = False
    w = np.linspace(1.0, 2.0, 60).reshape(4, 5, 3)

    def block(y: np.ndarray, *, w: np.ndarray) -> BlockFit:
        res = _block(y)
        res.params = res.params * w[:, None]
        return res

    ref = fit_blocks(block, data_c, mask, n_params=2, chunk_voxels=7, voxel_inputs={"w": w})
    for workers in (1, 2):
        out = fit_blocks(
            block,
            data_f,
            mask,
            n_params=2,
            chunk_voxels=7,
            n_workers=workers,
            voxel_inputs={"w": w},
            order="auto",
        )
        assert ref.order == "C" and out.order == "F"
        np.testing.assert_array_equal(
            out.params.reshape(4, 5, 3, 2, order="F"), ref.params.reshape(4, 5, 3, 2)
        )
        for a, b in ((out.status, ref.status), (out.rss, ref.rss), (out.mask, ref.mask)):
            np.testing.assert_array_equal(a.reshape(4, 5, 3, order="F"), b.reshape(4, 5, 3))
        np.testing.assert_array_equal(out.counts, ref.counts)
    # C-ordered data stay in C order with "auto"
    assert fit_blocks(_block, data_c, None, n_params=2, order="auto").order == "C"


def test_validate_inputs_errors() -> None:
    with pytest.raises(FitError, match="5 b-values"):
        validate_inputs(np.ones((2, 4)), None, n_measurements=5, what="b-values")
    with pytest.raises(FitError, match="mask shape"):
        validate_inputs(np.ones((2, 3, 5)), np.ones((3, 2), bool), n_measurements=5)
    with pytest.raises(FitError, match="numeric"):
        validate_inputs(np.array([["a"] * 5]), None, n_measurements=5)


def test_summarize_status() -> None:
    st = np.array([0, 2, 2, 3, 255, 1], np.uint8)
    msg = summarize_status(st)
    assert msg is not None
    assert "2 of 5 voxels hit bounds" in msg
    assert "1 of 5 voxels hit the iteration limit" in msg
    assert summarize_status(np.array([0, 255], np.uint8)) is None
