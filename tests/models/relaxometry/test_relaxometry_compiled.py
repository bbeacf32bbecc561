"""The compiled variable projection (numba) of T2, plain T2* and IRT1 against the numpy path.

Both run the same estimator (log grid, 1-D search, Gauss–Newton polish); the numpy path is the
reference here, and each is checked against truth in the other relaxometry tests. They must
give the same estimates to ~1e-5 relative (the numba search stops at |Δθ| ≈ 1e-6, numpy's
golden section at ~5e-6), the same status and an rss never larger than numpy's by more than
rounding.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tumorscope.errors import TumorscopeWarning
from tumorscope.models import IRT1, T2, T2Star

pytest.importorskip("numba")


def _noisy(model, n, sigma, seed):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    clean = model.signal(model.sample_parameters(n, rng=rng))
    return np.abs(clean + rng.normal(0.0, sigma, clean.shape))


@pytest.mark.parametrize(
    ("make", "sigma"),
    [
        (lambda be: T2Star(T2Star.example().echo_times_ms, floor="none", backend=be), 20.0),
        (lambda be: T2(T2.example().echo_times_ms, backend=be), 20.0),
        (lambda be: IRT1(IRT1.example().inversion_times_ms, backend=be), 20.0),
        (lambda be: IRT1(IRT1.example().inversion_times_ms, backend=be), 0.0),
        (lambda be: T2(T2.example().echo_times_ms, backend=be), 0.0),
    ],
)
def test_compiled_matches_numpy(make, sigma):  # type: ignore[no-untyped-def]
    y = _noisy(make("numpy"), 3000, sigma, seed=3)
    y[:5] = 0.0  # invalid voxels: all zero
    y[5:10, ::2] = 1e-3  # near-zero, odd shapes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        a = make("numba").fit(y)
        b = make("numpy").fit(y)
    assert a.provenance["backend"] == "numba" and b.provenance["backend"] == "numpy"
    np.testing.assert_array_equal(a.status, b.status)
    for name in a.maps:
        np.testing.assert_allclose(a[name], b[name], rtol=2e-5, atol=1e-6, equal_nan=True)
    ok = np.isfinite(b.rss)
    assert np.all(a.rss[ok] <= b.rss[ok] * (1 + 1e-5) + 1e-6)
    for name in a.stderr:
        np.testing.assert_allclose(
            a.stderr[name], b.stderr[name], rtol=1e-3, atol=1e-6, equal_nan=True
        )


def test_compiled_irt1_signed_data():
    m = IRT1(IRT1.example().inversion_times_ms, magnitude=False)
    rng = np.random.default_rng(4)
    p = m.sample_parameters(500, rng=rng)
    y = m.signal(p)
    fit = m.fit(y)
    np.testing.assert_allclose(fit["T1"], p[:, 1], rtol=1e-5)
    assert fit.provenance["backend"] == "numba"


def test_block_threads_follow_numba_threads():
    """A pipeline worker sets numba's thread count to its share of the cores; the relaxometry
    fits then use no more threads over blocks than that."""
    import numba

    m = T2(T2.example().echo_times_ms)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert m._n_workers() == 1
    finally:
        numba.set_num_threads(before)
    assert m._n_workers() == min(before, __import__("os").cpu_count() or 1)


def _generic_rician(model, y):  # type: ignore[no-untyped-def]
    """The Rician-floor fit as it ran before its compiled kernel: the numpy log-linear start,
    then the generic compiled LM (``solve_nonlinear`` with the model's per-voxel kernel)."""
    from tumorscope.models.relaxometry.decay import _loglinear_start

    sigma = model.noise_sigma
    pr0 = _loglinear_start(np.sqrt(np.maximum(y**2 - sigma**2, 0.0)), model.echo_times_ms, y)
    pr0[:, 1] = np.clip(pr0[:, 1], *model._rate_bounds)
    p0 = pr0.copy()
    p0[:, 1] = model._from_rate(pr0[:, 1])
    return model.solve_nonlinear(y, p0, backend="numba")


@pytest.mark.parametrize(
    ("make", "rates"),
    [
        # T2*: from slow decays to the noise floor within two echoes (R2* up to 1000 /s)
        (lambda: T2Star(T2Star.example().echo_times_ms, noise_sigma=20.0), (5.0, 1000.0)),
        (lambda: T2(T2.example().echo_times_ms, floor="rician", noise_sigma=20.0), (3.0, 40.0)),
    ],
)
def test_compiled_rician_matches_generic_lm(make, rates):  # type: ignore[no-untyped-def]
    """The compiled Rician-floor pass (start + LM in one kernel, the model inlined) against
    the generic LM it replaced: the same estimator, so the same statuses and the same
    estimates to the LM's own tolerance (it stops at a relative gain of 1e-8, and the start's
    sums are rounded in another order)."""
    from tumorscope.models.relaxometry.equations import t2star_rician_signal

    model = make()
    rng = np.random.default_rng(11)
    n = 4000
    r = np.exp(rng.uniform(np.log(rates[0]), np.log(rates[1]), n))
    s0 = rng.uniform(100.0, 3000.0, n)  # S0/σ from 5 to 150
    a = t2star_rician_signal(np.c_[s0, r], model.echo_times_ms, 0.0)
    y = np.abs(a + rng.normal(0, 20.0, a.shape) + 1j * rng.normal(0, 20.0, a.shape))
    y[:3] = np.abs(rng.normal(0, 20.0, (3, y.shape[1])))  # pure noise
    new = model.fit_block(y)
    old = _generic_rician(model, y)
    same = new.status == old.status
    assert same.mean() > 0.999
    ok = same & (old.status == 0)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(new.params[ok], old.params[ok], rtol=1e-6)
    np.testing.assert_allclose(new.rss[ok], old.rss[ok], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(new.stderr[ok], old.stderr[ok], rtol=1e-5)


def test_exp_plan_running_product():
    """One exponential per echo train when the spacings are multiples of a common step
    (powers of it), else one per distinct spacing, multiplied along the train: equal to the
    direct exponentials to rounding, down to the deepest decays."""
    from tumorscope.models.relaxometry._varpro_numba import exp_basis, exp_plan

    for t_ms, common in (
        ([10, 20, 30, 45, 60, 80, 100, 130, 160], 5.0),
        ([2, 5, 8, 12, 16, 20, 25, 30], 1.0),
        ([100, 250, 500, 900, 1500, 2500, 4000], 50.0),
        ([1.0], 1.0),
        ([1.0, 2.0, 2.0 + np.sqrt(2.0), 7.1], None),  # no common step: an exponential each
    ):
        t = np.asarray(t_ms, dtype=float) * 1e-3
        plan = exp_plan(t)
        steps, _which, powers, g = plan
        assert steps.size == len(set(np.round(np.diff(np.r_[0.0, t_ms]), 9)))
        if common is None:
            assert np.all(powers == 0)
        else:
            assert g == pytest.approx(common * 1e-3, rel=1e-12)
            np.testing.assert_allclose(powers * g, steps, rtol=1e-12)
        e = np.empty(t.size)
        xs = np.empty(steps.size)
        for r in (0.2, 37.0, 1000.0, 5000.0, 1e5):
            exp_basis(plan, r, e, xs)
            np.testing.assert_allclose(e, np.exp(-t * r), rtol=1e-12, atol=1e-300)
