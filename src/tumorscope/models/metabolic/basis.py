"""A simulated 1H (and 2H) basis set: metabolite FIDs from chemical shifts and J couplings.

**Which simulator, and why.** tumorscope simulates its own basis, density-matrix free: every
proton group is a first-order multiplet (binomial splitting by the J couplings to its
neighbours), except citrate's two strongly coupled methylene pairs, which are exact AB
quartets (line positions ``ν̄ ± ½√(Δν² + J²) ± ½J``, intensities ``1 ∓ J/√(Δν² + J²)``).
Shifts and couplings are those of Govindaraju, Young & Maudsley, NMR Biomed 2000;13:129-153
(doi:10.1002/1099-1492(200005)13:3<129::AID-NBM619>3.0.CO;2-V), rounded to 0.001 ppm / 0.1 Hz.
The basis is that of an ideal pulse-acquire (or very short TE) experiment: J evolution during
an echo time and strong coupling other than citrate's are not modelled, so this basis suits
the synthetic study and short-TE data; for long-TE clinical data, load an external basis
(LCModel ``.basis`` or FSL-MRS JSON, converted to :class:`Basis`) — the fit does not care where
its basis came from. FSL-MRS (which simulates full density-matrix bases) is not pip-installable
with its simulator, the reason for this choice.

Every metabolite FID is normalised to its number of protons at ``t = 0`` (one unit of
concentration gives ``n_H`` units of signal), so that fitted amplitudes are concentrations
relative to a water reference scaled by its two protons (:func:`~.mrs.water_scaled`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import comb
from typing import Final

import numpy as np

from ...errors import FitError

__all__ = [
    "DEUTERIUM_SHIFTS_PPM",
    "PROTON_SYSTEMS",
    "Basis",
    "Group",
    "simulate_basis",
    "singlet_basis",
]

#: Reference of the frequency axis: 0 Hz is 4.7 ppm (water), as in LCModel and FSL-MRS.
CENTER_PPM: Final[float] = 4.7


@dataclass(frozen=True)
class Group:
    """Equivalent protons: shift (ppm), count, and couplings ``(J Hz, n neighbours)``."""

    ppm: float
    n_h: int
    couplings: tuple[tuple[float, int], ...] = ()


#: Spin systems (Govindaraju 2000, first-order approximation; citrate's AB pairs handled
#: exactly by ``_ab``). Broad macromolecule/lipid signals are singlets with extra width.
PROTON_SYSTEMS: Final[dict[str, tuple[Group, ...]]] = {
    "NAA": (
        Group(2.008, 3),
        Group(4.382, 1, ((3.9, 1), (9.8, 1))),
        Group(2.486, 1, ((9.8, 1), (15.6, 1))),
        Group(2.673, 1, ((3.9, 1), (15.6, 1))),
    ),
    "Cr": (Group(3.027, 3), Group(3.913, 2)),
    "Cho": (Group(3.185, 9), Group(4.054, 2, ((3.1, 2),)), Group(3.501, 2, ((3.1, 2),))),
    "Lac": (Group(1.313, 3, ((6.9, 1),)), Group(4.097, 1, ((6.9, 3),))),
    "mI": (
        Group(3.522, 2, ((10.0, 1), (3.0, 1))),
        Group(3.614, 2, ((9.5, 2),)),
        Group(4.054, 1, ((3.0, 2),)),
        Group(3.269, 1, ((9.5, 2),)),
    ),
    "Glu": (
        Group(3.746, 1, ((6.3, 2),)),
        Group(2.075, 2, ((7.0, 3),)),
        Group(2.345, 2, ((7.5, 2),)),
    ),
    "Gln": (Group(3.753, 1, ((6.2, 2),)), Group(2.12, 2, ((7.0, 3),)), Group(2.44, 2, ((7.5, 2),))),
    "Cit": (),  # two AB pairs: see _CITRATE
    "Lip13": (Group(1.30, 2),),
    "Lip09": (Group(0.90, 3),),
}
#: Citrate's methylene AB pairs: (ppm A, ppm B, J Hz, protons) (Govindaraju 2000).
_CITRATE: Final = ((2.536, 2.694, 15.1, 2), (2.536, 2.694, 15.1, 2))
#: Extra Lorentzian width (Hz) of the broad components.
_EXTRA_WIDTH_HZ: Final[dict[str, float]] = {"Lip13": 15.0, "Lip09": 15.0}
#: 2H chemical shifts (ppm) of deuterium metabolic imaging (De Feyter et al., Sci Adv 2018;
#: 4:eaat7314, doi:10.1126/sciadv.aat7314): water, glucose, Glx, lactate; protons per site
#: are irrelevant for ratios (amplitudes are fitted per singlet).
DEUTERIUM_SHIFTS_PPM: Final[dict[str, float]] = {
    "water": 4.7,
    "glucose": 3.8,
    "Glx": 2.36,
    "lactate": 1.33,
}


@dataclass(frozen=True)
class Basis:
    """Metabolite FIDs on one acquisition grid.

    Attributes
    ----------
    names : tuple of str
    fids : ndarray of complex128, shape (n_metabolites, n_points)
    dwell_s : float
    frequency_mhz : float
        Spectrometer (Larmor) frequency of the nucleus.
    n_h : tuple of int
        Protons of each metabolite (the FID's value at t = 0).
    """

    names: tuple[str, ...]
    fids: np.ndarray
    dwell_s: float
    frequency_mhz: float
    n_h: tuple[int, ...] = field(default=())

    @property
    def n_points(self) -> int:
        return int(self.fids.shape[1])

    def time(self) -> np.ndarray:
        return np.arange(self.n_points) * self.dwell_s

    def subset(self, names: tuple[str, ...] | list[str]) -> Basis:
        idx = [self.names.index(n) for n in names]
        return Basis(
            tuple(names),
            self.fids[idx],
            self.dwell_s,
            self.frequency_mhz,
            tuple(self.n_h[i] for i in idx) if self.n_h else (),
        )


def _multiplet(group: Group) -> list[tuple[float, float]]:
    """(offset Hz from the group's shift, relative intensity) of a first-order multiplet."""
    lines = [(0.0, 1.0)]
    for j, n in group.couplings:
        pattern = [(j * (k - n / 2), comb(n, k) / 2**n) for k in range(n + 1)]
        lines = [(f + g, a * b) for f, a in lines for g, b in pattern]
    return lines


def _ab(ppm_a: float, ppm_b: float, j: float, n_h: int, f0: float) -> list[tuple[float, float]]:
    """Exact AB quartet: (frequency Hz rel. 0 ppm, intensity) summing to ``n_h``."""
    da = (ppm_a - ppm_b) * f0
    mid = 0.5 * (ppm_a + ppm_b) * f0
    d = float(np.hypot(da, j))
    s = j / d
    w = n_h / 4.0
    return [
        (mid + 0.5 * d + 0.5 * j, w * (1 - s)),
        (mid + 0.5 * d - 0.5 * j, w * (1 + s)),
        (mid - 0.5 * d + 0.5 * j, w * (1 + s)),
        (mid - 0.5 * d - 0.5 * j, w * (1 - s)),
    ]


def _lines(name: str, f0: float) -> list[tuple[float, float]]:
    """All lines of a metabolite: (frequency Hz relative to 0 ppm, intensity in protons)."""
    out: list[tuple[float, float]] = []
    if name == "Cit":
        for a, b, j, n in _CITRATE:
            out += _ab(a, b, j, n, f0)
        return out
    for g in PROTON_SYSTEMS[name]:
        out += [(g.ppm * f0 + off, g.n_h * w) for off, w in _multiplet(g)]
    return out


def _fid(lines: list[tuple[float, float]], t: np.ndarray, f0: float, width_hz: float) -> np.ndarray:
    freqs = np.array([f for f, _ in lines]) - CENTER_PPM * f0
    amps = np.array([a for _, a in lines])
    return (amps[:, None] * np.exp(2j * np.pi * freqs[:, None] * t)).sum(0) * np.exp(
        -np.pi * width_hz * t
    )


def simulate_basis(
    frequency_mhz: float,
    dwell_s: float,
    n_points: int,
    *,
    metabolites: tuple[str, ...] | None = None,
    width_hz: float = 1.0,
) -> Basis:
    """Simulate the 1H basis (pulse-acquire; see the module docstring).

    Parameters
    ----------
    frequency_mhz : float
        1H Larmor frequency (123.2 MHz at 2.89 T, 127.7 at 3 T).
    dwell_s : float
        Dwell time (1 / spectral width).
    n_points : int
    metabolites : tuple of str, optional
        Names from :data:`PROTON_SYSTEMS` (default: all).
    width_hz : float, default 1
        Intrinsic Lorentzian line width of the basis (the fit adds the data's broadening).
    """
    names = tuple(PROTON_SYSTEMS) if metabolites is None else tuple(metabolites)
    unknown = [n for n in names if n not in PROTON_SYSTEMS]
    if unknown:
        raise FitError(
            f"unknown metabolites {unknown}; known: {list(PROTON_SYSTEMS)}", field="metabolites"
        )
    if not (frequency_mhz > 0 and dwell_s > 0 and n_points >= 64):
        raise FitError("need frequency_mhz > 0, dwell_s > 0 and n_points >= 64", field="basis")
    t = np.arange(n_points) * dwell_s
    fids, n_h = [], []
    for name in names:
        lines = _lines(name, frequency_mhz)
        fids.append(_fid(lines, t, frequency_mhz, width_hz + _EXTRA_WIDTH_HZ.get(name, 0.0)))
        n_h.append(round(sum(a for _, a in lines)))
    return Basis(names, np.array(fids), float(dwell_s), float(frequency_mhz), tuple(n_h))


def singlet_basis(
    shifts_ppm: dict[str, float],
    frequency_mhz: float,
    dwell_s: float,
    n_points: int,
    *,
    width_hz: float = 1.0,
) -> Basis:
    """One unit singlet per named shift (e.g. :data:`DEUTERIUM_SHIFTS_PPM` for 2H)."""
    t = np.arange(n_points) * dwell_s
    fids = np.array(
        [_fid([(p * frequency_mhz, 1.0)], t, frequency_mhz, width_hz) for p in shifts_ppm.values()]
    )
    return Basis(
        tuple(shifts_ppm), fids, float(dwell_s), float(frequency_mhz), (1,) * len(shifts_ppm)
    )
