"""The Bloch–McConnell simulator against bmctool's solver (an independent, maintained
implementation: pulseq-cest, Schuenke et al. 2022) and against the analytic steady state."""

from __future__ import annotations

import numpy as np
import pytest
from _cest_sim import OFFSETS, tissue

from tumorscope.errors import FitError
from tumorscope.models.cest.bloch import (
    BMSystem,
    ExchangePool,
    MTPool,
    simulate_z,
    steady_state_z,
)


def test_one_pool_steady_state_is_the_analytic_bloch_solution() -> None:
    # Mz/M0 = R1 (R2² + Δ²) / (R1 (R2² + Δ²) + R2 ω1²) (Bloch 1946, steady state under CW)
    sysm = BMSystem(1.2, 0.05)
    off = np.linspace(-5, 5, 41)
    z = steady_state_z(sysm, off, field_t=3.0, b1_ut=1.0)
    r1, r2 = 1 / 1.2, 1 / 0.05
    dw = off * 2 * np.pi * 42.577478518 * 3.0
    w1 = 2 * np.pi * 42.577478518 * 1.0
    ref = r1 * (r2**2 + dw**2) / (r1 * (r2**2 + dw**2) + r2 * w1**2)
    np.testing.assert_allclose(z, ref, rtol=1e-10, atol=1e-12)
    # a long CW saturation reaches it
    zt = simulate_z(sysm, off, field_t=3.0, b1_ut=1.0, tsat_s=30.0)
    np.testing.assert_allclose(zt, ref, atol=1e-9)


def test_b0_shift_translates_the_spectrum() -> None:
    sysm = tissue()
    z0 = simulate_z(sysm, OFFSETS, field_t=3.0, b1_ut=1.0, tsat_s=1.0)
    z1 = simulate_z(sysm, OFFSETS + 0.4, field_t=3.0, b1_ut=1.0, tsat_s=1.0, b0_shift_ppm=0.4)
    np.testing.assert_allclose(z1, z0, atol=1e-12)


def test_pulse_train_with_gaps_saturates_less_than_cw() -> None:
    sysm = tissue()
    cw = simulate_z(sysm, [3.5], field_t=3.0, b1_ut=1.0, tsat_s=2.0)
    pulsed = simulate_z(
        sysm, [3.5], field_t=3.0, b1_ut=1.0, tsat_s=2.0, n_pulses=20, duty_cycle=0.5
    )
    assert pulsed[0] > cw[0]
    with pytest.raises(FitError, match="duty_cycle"):
        simulate_z(sysm, [3.5], field_t=3.0, b1_ut=1.0, tsat_s=2.0, duty_cycle=1.5)


def test_matches_bmctool_solver_five_pools() -> None:
    bmc = pytest.importorskip("bmctool.simulation.BlochMcConnellSolver")
    from bmctool.parameters.Parameters import Parameters

    gamma = 267.5153  # bmctool's default, rad/s/µT
    cfg = {
        "water_pool": {"f": 1.0, "t1": 1.3, "t2": 0.07},
        "cest_pool": {
            "amide": {"f": 9e-4, "t1": 1.0, "t2": 0.1, "k": 50, "dw": 3.5},
            "amine": {"f": 9e-4, "t1": 1.0, "t2": 0.1, "k": 1000, "dw": 2.0},
            "noe": {"f": 4.5e-3, "t1": 1.3, "t2": 0.005, "k": 20, "dw": -3.5},
        },
        "mt_pool": {
            "f": 0.1,
            "t1": 1.0,
            "t2": 4e-5,
            "k": 30,
            "dw": -3.0,
            "lineshape": "Lorentzian",
        },
        "b0": 3.0,
        "gamma": gamma,
        "b0_inhom": 0.0,
        "rel_b1": 1.0,
        "verbose": False,
        "reset_init_mag": True,
        "scale": 1,
        "max_pulse_samples": 100,
    }
    p = Parameters.from_dict(cfg)
    off = OFFSETS[::4]
    solver = bmc.BlochMcConnellSolver(p, off.size)
    w0 = 3.0 * gamma
    ref = []
    for o in off:
        m = p.m_vec.copy()
        solver.update_matrix(
            rf_amp=1.0 * gamma / (2 * np.pi), rf_phase=0.0, rf_freq=o * w0 / (2 * np.pi)
        )
        for _ in range(10):
            m = solver.solve_equation(m, 0.1)
        ref.append(m[p.mz_loc])
    ours = simulate_z(tissue(), off, field_t=3.0, b1_ut=1.0, tsat_s=1.0)
    # the two gyromagnetic ratios differ by 2.6e-5 (bmctool 267.5153, ours CODATA)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_mt_superlorentzian_saturates_and_bad_lineshape_raises() -> None:
    sl = BMSystem(1.3, 0.07, (), MTPool(0.1, 1.0, 1e-5, 30.0, 0.0, "superlorentzian"))
    z = simulate_z(sl, [-20.0, 20.0], field_t=3.0, b1_ut=2.0, tsat_s=2.0)
    assert 0.3 < z[0] < 0.99 and z[0] == pytest.approx(z[1], rel=1e-9)
    with pytest.raises(FitError, match="lineshape"):
        MTPool(0.1, 1.0, 1e-5, 30.0, 0.0, "gaussian")
    with pytest.raises(FitError, match="t1_s"):
        ExchangePool("x", 1e-3, 0.0, 0.1, 10.0, 1.0)
