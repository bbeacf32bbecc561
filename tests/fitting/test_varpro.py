"""Variable projection: closed-form projection and the 1-D log search recover exact optima."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.fitting import gauss_newton_polish, project, varpro_log

TE = np.array([5.0, 10.0, 20.0, 40.0, 80.0, 160.0]) * 1e-3


def _decay(rate: np.ndarray) -> np.ndarray:
    return np.exp(-TE[None, :] * rate[:, None])[..., None]


def _decay_offset(rate: np.ndarray) -> np.ndarray:
    e = np.exp(-TE[None, :] * rate[:, None])
    return np.stack([e, np.ones_like(e)], axis=-1)


def test_project_one_and_two_columns_match_lstsq() -> None:
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((5, 6, 2))
    y = rng.standard_normal((5, 6))
    coef, rss = project(basis, y, nonneg=False)
    for i in range(5):
        c, r, *_ = np.linalg.lstsq(basis[i], y[i], rcond=None)
        np.testing.assert_allclose(coef[i], c, rtol=1e-10)
        np.testing.assert_allclose(rss[i], r[0], rtol=1e-10)
    c1, r1 = project(basis[..., :1], y, nonneg=False)
    for i in range(5):
        c, r, *_ = np.linalg.lstsq(basis[i, :, :1], y[i], rcond=None)
        np.testing.assert_allclose(c1[i], c, rtol=1e-10)
        np.testing.assert_allclose(r1[i], r[0], rtol=1e-10)


def test_project_nonneg_amplitude() -> None:
    basis = np.ones((1, 4, 1))
    y = -np.ones((1, 4))
    coef, rss = project(basis, y, nonneg=True)
    assert coef[0, 0] == 0.0 and rss[0] == pytest.approx(4.0)
    # two columns: a negative amplitude falls back to the second column alone
    basis2 = np.stack([np.linspace(1, 0, 4), np.ones(4)], axis=-1)[None]
    y2 = (3.0 - 2.0 * np.linspace(1, 0, 4))[None]
    coef2, _ = project(basis2, y2, nonneg=True)
    assert coef2[0, 0] == 0.0 and coef2[0, 1] == pytest.approx(y2.mean())


@pytest.mark.parametrize("offset", [False, True])
def test_varpro_log_finds_the_exact_optimum(offset: bool) -> None:
    """Noise-free decays: the search alone gets ~1e-5 relative, two Gauss–Newton steps < 1e-6."""
    rng = np.random.default_rng(1)
    rate = rng.uniform(2.0, 500.0, 200)
    s0 = rng.uniform(100.0, 1000.0, 200)
    y = s0[:, None] * np.exp(-TE[None, :] * rate[:, None]) + (30.0 if offset else 0.0)
    basis = _decay_offset if offset else _decay
    x, coef, rss, at_bound = varpro_log(basis, y, 0.2, 1000.0)
    assert not at_bound.any()
    np.testing.assert_allclose(x, rate, rtol=1e-4)
    p = np.column_stack([coef[:, 0], x, *([coef[:, 1]] if offset else [])])

    def fun(q: np.ndarray) -> np.ndarray:
        e = q[:, :1] * np.exp(-TE[None, :] * q[:, 1:2])
        return e + q[:, 2:3] if offset else e

    def jac(q: np.ndarray) -> np.ndarray:
        e = np.exp(-TE[None, :] * q[:, 1:2])
        cols = [e, -TE[None, :] * q[:, :1] * e] + ([np.ones_like(e)] if offset else [])
        return np.stack(cols, axis=-1)

    pol, rss2 = gauss_newton_polish(p, y, fun, jac, rss)
    assert np.all(rss2 <= rss)
    np.testing.assert_allclose(pol[:, 1], rate, rtol=1e-6)
    np.testing.assert_allclose(pol[:, 0], s0, rtol=1e-6)


def test_varpro_log_flags_optima_beyond_the_bounds() -> None:
    y = np.exp(-TE * 5000.0)[None] * 100.0
    _, _, _, at_bound = varpro_log(_decay, y, 0.2, 1000.0)
    assert at_bound[0]
