"""The phantom's shortcuts give the same numbers as the direct computations they replace.

The phantom's files must stay byte-identical when it gets faster (its seeded bytes are the
tests' truth). ``benchmarks/bench_phantom.py`` compares whole studies against the older code;
these check each shortcut against its plain form, exactly (``array_equal``, no tolerance).
"""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.phantom import cest
from tumorscope.phantom.generate import _distinct_rows, _one_blas_thread
from tumorscope.phantom.signals import dwi_signal, etofts_concentration, rician, spgr_signal


def test_rician_is_the_magnitude_of_normal_draws() -> None:
    """Bulk standard-normal draws scaled by sigma are ``rng.normal(0, sigma)``'s numbers."""
    signal = np.random.default_rng(1).uniform(0, 500, (7, 5, 3, 4))
    sigma = 12.5
    ref_rng = np.random.default_rng(42)
    n1 = ref_rng.normal(0.0, sigma, signal.shape)
    n2 = ref_rng.normal(0.0, sigma, signal.shape)
    expected = np.sqrt((signal + n1) ** 2 + n2**2)
    rng = np.random.default_rng(42)
    assert np.array_equal(rician(signal, sigma, rng), expected)
    # and the generator is left where the plain draws leave it
    assert rng.integers(2**62) == ref_rng.integers(2**62)


def test_distinct_rows_reproduce_per_voxel_signals() -> None:
    """Signals computed once per distinct voxel, then looked up, equal the per-voxel ones."""
    gen = np.random.default_rng(3)
    n = 2000
    tissue = gen.integers(1, 6, n)
    viable = gen.random(n) < 0.2
    per_tissue = gen.uniform(0.5, 2.0, (6, 4))
    s0, d, f, k = (per_tissue[tissue, j] for j in range(4))
    d = np.where(viable, d * gen.lognormal(0, 0.08, n), d)  # the viable voxels' own D
    dstar = np.full(n, 0.02)
    rows, which = _distinct_rows(tissue, viable)
    assert rows.size == np.unique(tissue[~viable]).size + viable.sum()
    b = np.array([0.0, 50, 400, 1000])
    direct = dwi_signal(b, s0, d * 1e-3, f / 10, dstar, k)
    looked_up = dwi_signal(b, s0[rows], d[rows] * 1e-3, f[rows] / 10, dstar[rows], k[rows])[which]
    assert np.array_equal(looked_up, direct)
    # the DCE chain (concentration, then SPGR) the same way
    t = np.arange(0.0, 60.0, 3.5)
    t_fine = np.arange(0.0, 62.0, 0.1)
    cp = np.exp(-(((t_fine - 10) / 5) ** 2))
    kt, ve, vp = d / 5, f / 4, k / 50
    conc = etofts_concentration(t, cp, 0.1, kt, ve, vp)
    direct = spgr_signal(s0[:, None], 1 / s0[:, None] + 4.5 * conc, 15.0, 5.0)
    conc_r = etofts_concentration(t, cp, 0.1, kt[rows], ve[rows], vp[rows])
    rows_sig = spgr_signal(s0[rows][:, None], 1 / s0[rows][:, None] + 4.5 * conc_r, 15.0, 5.0)
    assert np.array_equal(rows_sig[which], direct)


def test_cest_tables_equal_the_per_voxel_interpolation() -> None:
    """A tissue's Z values looked up by B0 level equal its spectrum interpolated per voxel."""
    x, y, _ = np.meshgrid(
        np.linspace(-60, 60, 9), np.linspace(-50, 50, 7), [0.0, 2.0], indexing="ij"
    )
    cache: dict = {}
    b0, levels, level_of = cest._b0_field(x, y, cache)
    assert levels.size == 9 * 7  # B0 varies in-plane only
    key = (1300.0, 85.0, cest.AMIDE_FRACTION["untreated"], 0.05)
    table = cest._z_table(key, levels, cache)
    spec = cest._spectrum(*key)
    direct = cest._lagrange4(spec, cest.CEST_OFFSETS_PPM[None, :] - b0.reshape(-1)[:, None])
    assert np.array_equal(table[level_of.reshape(-1)], direct)


def test_cest_series_same_with_a_shared_cache() -> None:
    shape = (6, 5, 2)
    x, y, _ = np.meshgrid(
        np.linspace(-60, 60, 6), np.linspace(-50, 50, 5), [0.0, 2.0], indexing="ij"
    )
    tissue = np.ones(shape, int)
    tissue[2:4, 1:4] = 2
    body = np.ones(shape, bool)
    params = {"T1": np.choose(tissue, [1.0, 800.0, 1300.0]).astype(float)}
    params["T2"] = np.choose(tissue, [1.0, 45.0, 85.0]).astype(float)
    m0 = np.full(shape, 30000.0)
    names = ["", "background", "untreated"]
    args = ("responder", 1, names, tissue, body, m0, params, x, y)
    cache: dict = {}
    first = cest.cest_series(*args, cache)
    again = cest.cest_series(*args, cache)  # from the tables the first call filled
    alone = cest.cest_series(*args)
    for name in first:
        assert np.array_equal(first[name][0], again[name][0], equal_nan=True)
        assert np.array_equal(first[name][0], alone[name][0], equal_nan=True)


def test_one_blas_thread_is_lifted_afterwards() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    if not blas:
        pytest.skip("no BLAS library loaded")
    before = [i["num_threads"] for i in blas]
    with _one_blas_thread():
        inside = [
            i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"
        ]
        assert all(n == 1 for n in inside)
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert after == before
