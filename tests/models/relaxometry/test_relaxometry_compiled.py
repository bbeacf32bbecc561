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
