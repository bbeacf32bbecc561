"""The fused DTI fast path (numba, ``"wls"``/``"ols"``/``"nlls"``) gives the engine path's
results.

The fast path reads C- or F-ordered float32/float64 data in place and writes the maps, the
standard errors, the status and the derived maps (closed-form eigenvalues where accurate)
directly; the engine path fits blocks with the same kernel and derives the maps afterwards
(Jacobi rotations). Both must agree voxel by voxel, including invalid input and masks. For
``"nlls"`` the fast path runs the engine's Levenberg–Marquardt steps with the model inlined
(sums over the measurements reassociated): the same optimum to far below the solver's
tolerance, held here to 1e-6 relative (the float32 maps agree to their last bits).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tumorscope.fitting import FitStatus
from tumorscope.models.base import FitInput, Model
from tumorscope.models.diffusion import DTI

pytest.importorskip("numba")


def _data(dtype: type, order: str) -> tuple[DTI, np.ndarray]:
    model = DTI.example()
    rng = np.random.default_rng(5)
    p = model.sample_parameters(12 * 10 * 9, rng=rng)
    p[:40, 1:] *= rng.uniform(-0.5, 0.3, (40, 1))  # some tensors not positive definite
    p[40:60, [2, 4, 5]] = 0.0  # isotropic / degenerate eigenvalues (Jacobi fallback)
    p[40:60, 1] = p[40:60, 3] = p[40:60, 6] = 1e-3
    s = model.signal(p)
    y = np.abs(s + rng.normal(0, 1, s.shape) * p[:, :1] / 30).reshape(12, 10, 9, -1)
    y[0, 0, 0] = np.nan
    y[0, 0, 1, 3] = np.inf
    y[0, 0, 2, 5] = -4.0
    y[0, 0, 3] = 0.0
    y[0, 0, 4, 0] = 0.0
    return model, np.asarray(y, dtype=dtype, order=order)


@pytest.mark.parametrize("method", ["wls", "ols", "nlls"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("masked", [False, True])
def test_fast_path_matches_engine(method: str, dtype: type, order: str, masked: bool) -> None:
    ex, y = _data(dtype, order)
    model = DTI(ex.b, bvecs=ex.g, method=method, backend="numba")
    mask = np.random.default_rng(1).random(y.shape[:-1]) > 0.3 if masked else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = model.fit(y, mask, chunk_voxels=97)
        ref = Model._fit_validated(model, FitInput(np.ascontiguousarray(y), mask, None, {}))
    np.testing.assert_array_equal(fast.status, ref.status)
    # NaN, inf, negative, all zero: invalid; a zero at b = 0 only: valid (as the engine)
    fitted = np.ones(5, bool) if mask is None else mask[0, 0, :5]
    expect = np.where(fitted, FitStatus.INVALID_INPUT, FitStatus.NOT_FITTED)
    np.testing.assert_array_equal(fast.status[0, 0, :4], expect[:4])
    assert fast.status[0, 0, 4] != FitStatus.INVALID_INPUT
    if method == "nlls":  # positive definite by construction (the non-PD WLS starts refitted)
        assert not (fast.status == FitStatus.AT_BOUND).any()
        _assert_close(fast.rss, ref.rss, 1e-6)
        for name in model.parameter_names:
            _assert_close(fast.maps[name], ref.maps[name], 1e-6)
            _assert_close(fast.stderr[name], ref.stderr[name], 1e-6)
    else:
        assert (fast.status == FitStatus.AT_BOUND).any()
        np.testing.assert_array_equal(fast.rss, ref.rss)
        for name in model.parameter_names:
            np.testing.assert_array_equal(fast.maps[name], ref.maps[name])
            np.testing.assert_array_equal(fast.stderr[name], ref.stderr[name])
    for name in ("FA", "MD", "AD", "RD", "V1_x", "V1_y", "V1_z"):
        a, b = fast.maps[name], ref.maps[name]
        assert a.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        # closed form against Jacobi rotations: float32 rounding
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-9, equal_nan=True)


def _assert_close(a: np.ndarray, b: np.ndarray, rtol: float) -> None:
    """Equal NaNs, else relative to each map's largest magnitude (the tensor's off-diagonal
    elements pass through zero)."""
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    scale = float(np.nanmax(np.abs(b))) if np.isfinite(b).any() else 1.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, equal_nan=True)


def test_nlls_numpy_backend_matches_compiled() -> None:
    """The numpy Levenberg–Marquardt (backend "numpy") and the fused compiled fit reach the
    same optimum of the signal least squares (independent implementations of the solver)."""
    ex, y = _data(np.float64, "C")
    y = y.reshape(-1, y.shape[-1])[60:400]  # valid, positive-definite voxels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = DTI(ex.b, bvecs=ex.g, method="nlls", backend="numba").fit(y)
        ref = DTI(ex.b, bvecs=ex.g, method="nlls", backend="numpy").fit(y)
    np.testing.assert_array_equal(fast.status, ref.status)
    for name in ("S0", "Dxx", "Dxy", "Dyy", "Dxz", "Dyz", "Dzz", "FA", "MD"):
        _assert_close(fast.maps[name], ref.maps[name], 1e-5)
    _assert_close(fast.rss, ref.rss, 1e-6)


def test_compiled_nlls_stderr_matches_numpy() -> None:
    """The compiled standard errors of the NLLS fit equal ``stderr_from_jacobian``'s."""
    from tumorscope.fitting.uncertainty import stderr_from_jacobian
    from tumorscope.models.diffusion import _tensor_numba

    model = DTI.example()
    rng = np.random.default_rng(2)
    p = model.sample_parameters(500, rng=rng)
    p[0] = np.nan
    p[1, 0] = 0.0  # S0 = 0: JᵀJ singular
    rss = rng.uniform(1.0, 10.0, 500)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = stderr_from_jacobian(model.jacobian(p), rss)
    out = np.empty_like(p)
    _tensor_numba.dti_stderr(p, np.ascontiguousarray(model.X[:, 1:]), rss, out)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, rtol=1e-10)


def test_compiled_kurtosis_maps_match_numpy() -> None:
    """MK, AK, RK by the eigenframe tables (compiled) equal the numpy quadrature."""
    from tumorscope.models.diffusion import DKITensor
    from tumorscope.models.diffusion.tensor import eigen, kurtosis_maps, kurtosis_maps_fast

    model = DKITensor.example()
    p = model.sample_parameters(400, rng=np.random.default_rng(4))
    p[0, 1:7] = np.nan  # NaN tensor
    p[1, 1:7] = [1e-3, 0.0, 1e-3, 0.0, 0.0, 1e-7]  # an eigenvalue below MIN_KURTOSIS_EVAL
    evals, evecs = eigen(p[:, 1:7])
    fast = kurtosis_maps_fast(evals, evecs, p[:, 7:], backend="numba")
    ref = kurtosis_maps(evals, evecs, p[:, 7:])
    for key in ("MK", "AK", "RK"):
        np.testing.assert_allclose(fast[key], ref[key], rtol=0, atol=1e-12)
        assert np.isnan(fast[key][0]) and fast[key][1] == 0.0


@pytest.mark.parametrize("max_iter", [1, 2])
def test_nlls_iteration_limit_as_engine(max_iter: int) -> None:
    """With few trial steps allowed, the tile's voxels stop where the engine's do (status
    MAX_ITER for most, the parameters of the last accepted step)."""
    from tumorscope.fitting.lm import LMOptions

    ex, y = _data(np.float32, "C")
    model = DTI(ex.b, bvecs=ex.g, method="nlls", backend="numba")
    model.lm_options = LMOptions(max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = model.fit(y)
        ref = Model._fit_validated(model, FitInput(np.ascontiguousarray(y), None, None, {}))
    np.testing.assert_array_equal(fast.status, ref.status)
    assert (fast.status == FitStatus.MAX_ITER).mean() > 0.5
    for name in model.parameter_names:
        _assert_close(fast.maps[name], ref.maps[name], 1e-6)
