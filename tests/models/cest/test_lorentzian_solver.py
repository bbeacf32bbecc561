"""The compiled 5-pool Lorentzian solver (``_numba.lorentzian_lm``) against the generic
batched LM and the numpy backend: same start, same minima."""

from __future__ import annotations

import warnings

import numpy as np
from _cest_sim import OFFSETS, tissue

from tumorscope.fitting.lm import levenberg_marquardt
from tumorscope.fitting.uncertainty import stderr_from_jacobian
from tumorscope.models.cest import CESTLorentzian, simulate_z
from tumorscope.models.cest.lorentzian import lorentzian_jacobian, lorentzian_signal


def _noisy(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.array(
        [
            simulate_z(
                tissue(amide_f=f), OFFSETS, field_t=3.0, b1_ut=1.0, tsat_s=2.0, b0_shift_ppm=s
            )
            for f in (3e-4, 1.5e-3)
            for s in (-0.4, 0.0, 0.3)
        ]
    )
    return base[rng.integers(0, base.shape[0], n)] + rng.normal(0, 0.01, (n, OFFSETS.size))


def test_compiled_start_equals_the_numpy_start() -> None:
    y = _noisy(200, 0)
    a = CESTLorentzian(OFFSETS).initial_guess(y)
    b = CESTLorentzian(OFFSETS, backend="numpy").initial_guess(y)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


def test_compiled_fit_reaches_the_minima_of_the_generic_solvers() -> None:
    y = _noisy(300, 1)
    model = CESTLorentzian(OFFSETS)
    p0 = model.initial_guess(y)
    lo, hi = model.bounds()
    ours = model.fit_block(y)
    generic = levenberg_marquardt(
        y,
        p0,
        lo,
        hi,
        kernel=model.kernel(),
        consts=model.consts(),
        scale=model.scales(),
        options=model.lm_options,
        backend="numba",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        numpy_fit = CESTLorentzian(OFFSETS, backend="numpy").fit_block(y)
    rss = np.sum((lorentzian_signal(OFFSETS, ours.params) - y) ** 2, axis=1)
    np.testing.assert_allclose(rss, ours.rss, rtol=1e-10)
    for other in (generic.rss, numpy_fit.rss):
        close = np.abs(ours.rss - other) <= 0.01 * other
        assert np.mean(close) > 0.9
        assert np.median(ours.rss / other) < 1.0 + 1e-6
    assert np.all(ours.params >= lo) and np.all(ours.params <= hi)
    # the standard errors of the generic formula at our solution (here: one Cholesky factor;
    # rtol for the rounding of an ill-conditioned JᵀJ)
    se = stderr_from_jacobian(lorentzian_jacobian(OFFSETS, ours.params), ours.rss)
    np.testing.assert_allclose(ours.stderr, se, rtol=1e-3)
