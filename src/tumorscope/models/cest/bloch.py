"""Bloch–McConnell simulation of Z-spectra (for tests and the synthetic study).

A small, vectorised simulator of the Bloch–McConnell equations (McConnell 1958,
doi:10.1063/1.1744152) with a water pool, any number of exchanging solute pools (CEST, NOE)
and an optional semi-solid (MT) pool whose saturation is a rate (Henkelman et al. 1993,
doi:10.1002/mrm.1910290607). It plays the role of ``bmctool`` (Schuenke et al., pulseq-cest,
doi:10.1002/mrm.29164) without its Pulseq sequence files: the tests check it against
``bmctool``'s own solver and against the analytic steady state.

Conventions
-----------
* Offsets ``Δ`` in ppm from the water resonance at the nominal field; a field shift
  ``b0_shift_ppm`` moves every resonance to ``δ_i + b0_shift_ppm`` (so the water line of the
  Z-spectrum lies at ``+b0_shift_ppm``).
* ``b1_uT`` is the amplitude of the block saturation pulses (for continuous wave, the CW
  amplitude); ``rel_b1`` scales it (the B1 map). ``ω1 = γ B1`` with ``γ = 267.5153 rad/s/µT``.
* Saturation of ``tsat_s`` seconds as ``n_pulses`` block pulses at duty cycle ``duty_cycle``:
  each pulse lasts ``tsat_s * duty_cycle / n_pulses`` and is followed by a gap of
  ``tsat_s * (1 - duty_cycle) / n_pulses`` (none for CW, ``duty_cycle = 1``).
* The magnetisation starts fully relaxed (or from ``m_start``); ``Z`` is the water ``Mz`` at
  the end of saturation divided by the water ``M0`` (the readout is ideal).

The state vector is ``[Mx_w, Mx_1..n, My_w, My_1..n, Mz_w, Mz_1..n, (Mz_mt)]`` and
``dM/dt = A M + C``; over a segment of constant RF, ``M(t) = M_ss + exp(A t) (M(0) - M_ss)``
with ``M_ss = -A⁻¹ C`` (the matrix exponential from :func:`scipy.linalg.expm`, batched over
offsets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ...errors import FitError

__all__ = [
    "GAMMA_HZ_PER_T",
    "GAMMA_RAD_PER_S_PER_UT",
    "BMSystem",
    "ExchangePool",
    "MTPool",
    "bm_matrix",
    "simulate_z",
    "steady_state_z",
]

#: Proton gyromagnetic ratio / 2π in Hz/T.
GAMMA_HZ_PER_T = 42.577478518e6
#: Proton gyromagnetic ratio in rad/s/µT.
GAMMA_RAD_PER_S_PER_UT = 2 * np.pi * GAMMA_HZ_PER_T * 1e-6


@dataclass(frozen=True)
class ExchangePool:
    """A solute pool exchanging magnetisation with water.

    Parameters
    ----------
    name : str
    fraction : float
        Proton fraction relative to water (e.g. 9e-4 for amide at ~100 mM protons).
    t1_s, t2_s : float
        Relaxation times in s.
    k_hz : float
        Exchange rate from the pool to water in 1/s (``k_wi = fraction * k_hz``).
    dw_ppm : float
        Chemical shift relative to water in ppm.
    """

    name: str
    fraction: float
    t1_s: float
    t2_s: float
    k_hz: float
    dw_ppm: float

    def __post_init__(self) -> None:
        for n in ("fraction", "t1_s", "t2_s", "k_hz"):
            v = float(getattr(self, n))
            if not np.isfinite(v) or v < 0 or (n != "fraction" and n != "k_hz" and v == 0):
                raise FitError(f"pool {self.name!r}: invalid {n} = {v}", field=n)


@dataclass(frozen=True)
class MTPool:
    """Semi-solid pool (longitudinal magnetisation only).

    Parameters
    ----------
    fraction, t1_s, t2_s, k_hz, dw_ppm : float
        As for :class:`ExchangePool`; ``t2_s`` of order 10 µs.
    lineshape : {"lorentzian", "superlorentzian"}
        Absorption lineshape ``g`` (saturation rate ``ω1² π g(Δ)``).
    """

    fraction: float
    t1_s: float
    t2_s: float
    k_hz: float
    dw_ppm: float = 0.0
    lineshape: str = "lorentzian"

    def __post_init__(self) -> None:
        if self.lineshape not in ("lorentzian", "superlorentzian"):
            raise FitError(
                f"unknown lineshape {self.lineshape!r}; expected 'lorentzian' or 'superlorentzian'",
                field="lineshape",
            )

    def rate(self, omega1: np.ndarray, dw_rad: np.ndarray) -> np.ndarray:
        """Saturation rate (1/s) at RF amplitude ``omega1`` and off-resonance ``dw_rad`` (rad/s)."""
        t2 = self.t2_s
        if self.lineshape == "lorentzian":
            shape = t2 / (1.0 + (dw_rad * t2) ** 2)
        else:
            u = np.linspace(0.0, 1.0, 201)[None, :]
            d = np.asarray(dw_rad, dtype=float).reshape(-1, 1)
            c = np.abs(3 * u**2 - 1)
            # the super-Lorentzian diverges at the resonance: cap |Δ| below 1 kHz·2π
            d = np.where(np.abs(d) < 2 * np.pi * 1000, 2 * np.pi * 1000 * np.sign(d + 1e-30), d)
            g = np.sqrt(2 / np.pi) * t2 / c * np.exp(-2 * (d * t2 / c) ** 2)
            shape = (np.trapezoid(g, u, axis=1) * np.pi).reshape(np.shape(dw_rad))
        return omega1**2 * shape


@dataclass(frozen=True)
class BMSystem:
    """Water + exchanging pools + optional MT pool.

    Parameters
    ----------
    water_t1_s, water_t2_s : float
    pools : sequence of ExchangePool
    mt : MTPool, optional
    """

    water_t1_s: float
    water_t2_s: float
    pools: tuple[ExchangePool, ...] = field(default_factory=tuple)
    mt: MTPool | None = None

    @property
    def n_pools(self) -> int:
        """Number of exchanging solute pools (without water and MT)."""
        return len(self.pools)

    @property
    def size(self) -> int:
        """Length of the state vector."""
        return 3 * (self.n_pools + 1) + (1 if self.mt is not None else 0)

    def m0(self) -> np.ndarray:
        """Fully relaxed state vector."""
        n = self.n_pools
        m = np.zeros(self.size)
        m[2 * (n + 1)] = 1.0
        for i, p in enumerate(self.pools):
            m[2 * (n + 1) + 1 + i] = p.fraction
        if self.mt is not None:
            m[-1] = self.mt.fraction
        return m


def bm_matrix(
    system: BMSystem,
    offsets_ppm: npt.ArrayLike,
    *,
    field_t: float,
    b1_ut: float,
    b0_shift_ppm: float = 0.0,
    rel_b1: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The Bloch–McConnell matrix ``A`` (K, n, n) and constant ``C`` (n,) per offset.

    Parameters
    ----------
    system : BMSystem
    offsets_ppm : array_like, shape (K,)
        RF offsets from nominal water, ppm.
    field_t : float
        Main field in T.
    b1_ut : float
        RF amplitude in µT (0 for free relaxation).
    b0_shift_ppm, rel_b1 : float
        Field shift (ppm) and relative B1.
    """
    off = np.atleast_1d(np.asarray(offsets_ppm, dtype=float))
    K = off.size
    n = system.n_pools
    N = system.size
    w0 = 2 * np.pi * GAMMA_HZ_PER_T * field_t * 1e-6  # rad/s per ppm
    w1 = GAMMA_RAD_PER_S_PER_UT * b1_ut * rel_b1
    A = np.zeros((K, N, N))
    C = np.zeros(N)
    ix = np.arange(n + 1)
    iy = ix + n + 1
    iz = ix + 2 * (n + 1)
    shifts = np.array([0.0] + [p.dw_ppm for p in system.pools])
    r1 = np.array([1 / system.water_t1_s] + [1 / p.t1_s for p in system.pools])
    r2 = np.array([1 / system.water_t2_s] + [1 / p.t2_s for p in system.pools])
    m0 = np.array([1.0] + [p.fraction for p in system.pools])
    kiw = np.array([0.0] + [p.k_hz for p in system.pools])  # pool -> water
    kwi = np.array([0.0] + [p.fraction * p.k_hz for p in system.pools])  # water -> pool
    # off-resonance of each pool (rad/s): RF offset minus the pool's resonance
    omega = (off[:, None] - shifts[None, :] - b0_shift_ppm) * w0  # (K, n+1)
    for comp in (ix, iy, iz):
        r = r2 if comp is not iz else r1
        loss = r + kiw
        loss = loss.copy()
        loss[0] = r[0] + kwi.sum()
        A[:, comp, comp] = -loss
        A[:, comp[0], comp[1:]] = kiw[1:]
        A[:, comp[1:], comp[0]] = kwi[1:]
    # precession about z and RF along x
    A[:, ix, iy] = omega
    A[:, iy, ix] = -omega
    A[:, iy, iz] = w1
    A[:, iz, iy] = -w1
    C[iz] = r1 * m0
    if system.mt is not None:
        mt = system.mt
        j = N - 1
        kmw = mt.k_hz
        kwm = mt.fraction * mt.k_hz
        A[:, iz[0], iz[0]] -= kwm
        A[:, iz[0], j] = kmw
        A[:, j, iz[0]] = kwm
        dw_mt = (off - mt.dw_ppm - b0_shift_ppm) * w0
        A[:, j, j] = -(1 / mt.t1_s) - kmw - mt.rate(np.asarray(w1), dw_mt)
        C[j] = mt.fraction / mt.t1_s
    return A, C


def _check_offsets(offsets_ppm: npt.ArrayLike) -> np.ndarray:
    off = np.atleast_1d(np.asarray(offsets_ppm, dtype=float))
    if off.ndim != 1 or off.size == 0 or not np.all(np.isfinite(off)):
        raise FitError("offsets must be a non-empty 1-D array of finite ppm", field="offsets_ppm")
    return off


def simulate_z(
    system: BMSystem,
    offsets_ppm: npt.ArrayLike,
    *,
    field_t: float,
    b1_ut: float,
    tsat_s: float,
    n_pulses: int = 1,
    duty_cycle: float = 1.0,
    b0_shift_ppm: float = 0.0,
    rel_b1: float = 1.0,
    m_start: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Z-spectrum ``Mz_w(tsat) / M0_w`` at each offset (block-pulse saturation).

    Parameters
    ----------
    system : BMSystem
    offsets_ppm : array_like, shape (K,)
    field_t : float
        Main field (T).
    b1_ut : float
        Pulse amplitude (µT).
    tsat_s : float
        Saturation time including inter-pulse gaps (s).
    n_pulses : int
        Number of block pulses (1 with ``duty_cycle=1`` is continuous wave).
    duty_cycle : float
        Fraction of ``tsat_s`` with RF on, in (0, 1].
    b0_shift_ppm, rel_b1 : float
        Field shift (ppm) and relative B1.
    m_start : array_like, optional
        Starting state vector (default fully relaxed).

    Returns
    -------
    ndarray, shape (K,)
    """
    off = _check_offsets(offsets_ppm)
    if not (0 < duty_cycle <= 1) or n_pulses < 1 or tsat_s <= 0:
        raise FitError(
            f"need tsat_s > 0, n_pulses >= 1 and 0 < duty_cycle <= 1, got {tsat_s}, "
            f"{n_pulses}, {duty_cycle}",
            field="saturation",
        )
    tp = tsat_s * duty_cycle / n_pulses
    td = tsat_s * (1 - duty_cycle) / n_pulses
    A_on, C = bm_matrix(
        system, off, field_t=field_t, b1_ut=b1_ut, b0_shift_ppm=b0_shift_ppm, rel_b1=rel_b1
    )
    m = np.broadcast_to(
        system.m0() if m_start is None else np.asarray(m_start, float), (off.size, system.size)
    ).copy()
    from scipy.linalg import expm  # here: importing scipy.linalg costs ~0.3 s

    ss_on = -np.linalg.solve(A_on, np.broadcast_to(C, m.shape)[..., None])[..., 0]
    E_on = expm(A_on * tp)
    if td > 0:
        A_off, _ = bm_matrix(system, off, field_t=field_t, b1_ut=0.0, b0_shift_ppm=b0_shift_ppm)
        ss_off = -np.linalg.solve(A_off, np.broadcast_to(C, m.shape)[..., None])[..., 0]
        E_off = expm(A_off * td)
    for _ in range(n_pulses):
        m = ss_on + np.einsum("kij,kj->ki", E_on, m - ss_on)
        if td > 0:
            m = ss_off + np.einsum("kij,kj->ki", E_off, m - ss_off)
    iz = 2 * (system.n_pools + 1)
    return m[:, iz].copy()


def steady_state_z(
    system: BMSystem,
    offsets_ppm: npt.ArrayLike,
    *,
    field_t: float,
    b1_ut: float,
    b0_shift_ppm: float = 0.0,
    rel_b1: float = 1.0,
) -> np.ndarray:
    """Steady-state Z-spectrum under continuous-wave saturation: ``-A⁻¹ C`` (water ``Mz``)."""
    off = _check_offsets(offsets_ppm)
    A, C = bm_matrix(
        system, off, field_t=field_t, b1_ut=b1_ut, b0_shift_ppm=b0_shift_ppm, rel_b1=rel_b1
    )
    ss = -np.linalg.solve(A, np.broadcast_to(C, (off.size, system.size))[..., None])[..., 0]
    return ss[:, 2 * (system.n_pools + 1)].copy()
