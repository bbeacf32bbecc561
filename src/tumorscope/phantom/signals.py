"""Signal equations used to simulate the phantom.

These are written independently of ``tumorscope.models`` on purpose: the phantom is the
ground truth that the models are tested against, so it must not share their code.

References
----------
Le Bihan D et al. Radiology 1988;168:497 (IVIM), doi:10.1148/radiology.168.2.3393671.
Jensen JH et al. MRM 2005;53:1432 (kurtosis), doi:10.1002/mrm.20508.
Parker GJM et al. MRM 2006;56:993 (population AIF), doi:10.1002/mrm.21066.
Tofts PS et al. JMRI 1999;10:223 (extended Tofts), doi:10.1002/(SICI)1522-2586(199909)10:3<223::AID-JMRI2>3.0.CO;2-S.
Gudbjartsson H, Patz S. MRM 1995;34:910 (Rician noise), doi:10.1002/mrm.1910340618.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from .generate import PhantomConfig

__all__ = [
    "dwi_signal",
    "etofts_concentration",
    "noise_sigmas",
    "parker_blood_mM",
    "rician",
    "spgr_signal",
]


def dwi_signal(
    b: npt.ArrayLike, s0: np.ndarray, d: np.ndarray, f: np.ndarray, dstar: np.ndarray, k: np.ndarray
) -> np.ndarray:
    """IVIM with a kurtosis term in the tissue compartment.

    ``S(b) = S0 [ f exp(-b D*) + (1 - f) exp(-b D + b² D² K / 6) ]``, b in s/mm², D and D* in
    mm²/s. Parameters are arrays of shape (...,); the result has shape (..., n_b).
    """
    b = np.asarray(b, float)
    bd = b * d[..., None]
    tissue = np.exp(-bd + bd * bd * k[..., None] / 6.0)
    perf = np.exp(-b * dstar[..., None])
    return s0[..., None] * (f[..., None] * perf + (1.0 - f[..., None]) * tissue)


def spgr_signal(
    m0: npt.ArrayLike, r1_per_s: npt.ArrayLike, flip_deg: npt.ArrayLike, tr_ms: float
) -> np.ndarray:
    """Steady-state spoiled gradient echo: ``M0 sin a (1 - E1) / (1 - cos a E1)``, E1 = exp(-TR R1).

    Broadcasts ``m0``, ``r1_per_s`` and ``flip_deg`` against each other.
    """
    a = np.deg2rad(np.asarray(flip_deg, float))
    e1 = np.exp(-tr_ms * 1e-3 * np.asarray(r1_per_s, float))
    return np.asarray(m0, float) * np.sin(a) * (1.0 - e1) / (1.0 - np.cos(a) * e1)


# Parker et al. 2006, Table 1 (times in min, A in mM·min, beta and s in 1/min)
_PARKER = dict(
    A1=0.809,
    A2=0.330,
    T1=0.17046,
    T2=0.365,
    sigma1=0.0563,
    sigma2=0.132,
    alpha=1.050,
    beta=0.1685,
    s=38.078,
    tau=0.483,
)


def parker_blood_mM(t_s: np.ndarray, *, delay_s: float = 0.0) -> np.ndarray:
    """Parker population AIF (whole-blood concentration, mM) at times ``t_s`` in s.

    The curve is zero before ``delay_s`` (bolus arrival).
    """
    p = _PARKER
    tm = (np.asarray(t_s, float) - delay_s) / 60.0
    g1 = (
        p["A1"]
        / (p["sigma1"] * np.sqrt(2 * np.pi))
        * np.exp(-((tm - p["T1"]) ** 2) / (2 * p["sigma1"] ** 2))
    )
    g2 = (
        p["A2"]
        / (p["sigma2"] * np.sqrt(2 * np.pi))
        * np.exp(-((tm - p["T2"]) ** 2) / (2 * p["sigma2"] ** 2))
    )
    sig = p["alpha"] * np.exp(-p["beta"] * tm) / (1.0 + np.exp(-p["s"] * (tm - p["tau"])))
    out = g1 + g2 + sig
    return np.where(tm >= 0, out, 0.0)


def etofts_concentration(
    t_s: np.ndarray,
    cp_fine: np.ndarray,
    dt_fine: float,
    ktrans_per_min: np.ndarray,
    ve: np.ndarray,
    vp: np.ndarray,
) -> np.ndarray:
    """Extended Tofts tissue concentration sampled at ``t_s``.

    ``C(t) = vp cp(t) + Ktrans ∫ cp(τ) exp(-kep (t - τ)) dτ``, kep = Ktrans / ve. The integral is
    evaluated on a fine uniform grid (``cp_fine`` sampled every ``dt_fine`` s from t = 0) with
    the exact update for a piecewise-linear input, then sampled at ``t_s`` by linear
    interpolation.

    Parameters
    ----------
    ktrans_per_min, ve, vp : ndarray, shape (n,)
    Returns
    -------
    ndarray, shape (n, len(t_s))
    """
    kt = np.asarray(ktrans_per_min, float) / 60.0
    with np.errstate(divide="ignore", invalid="ignore"):
        kep = np.where(ve > 0, kt / np.where(ve > 0, ve, 1.0), 0.0)
    n = kt.shape[0]
    t_fine = np.arange(cp_fine.shape[0]) * dt_fine
    x = kep * dt_fine
    small = x < 1e-6
    e = np.exp(-x)
    # exact integral of a linear segment against exp(-kep (t - tau)) over one step:
    # int_0^h exp(-k(h-s)) (c0 + (c1-c0) s/h) ds = c0*w0 + c1*w1
    with np.errstate(divide="ignore", invalid="ignore"):
        w1 = np.where(small, dt_fine / 2, (x - 1 + e) / np.where(small, 1, kep * x))
        w0 = np.where(small, dt_fine / 2, (1 - e) / np.where(small, 1, kep) - w1)
    conv = np.zeros(n)
    out_fine_idx = np.clip(np.searchsorted(t_fine, t_s), 1, len(t_fine) - 1)
    needed = np.zeros(len(t_fine), bool)
    needed[out_fine_idx] = True
    needed[out_fine_idx - 1] = True
    stored: dict[int, np.ndarray] = {0: conv.copy()}
    for i in range(1, len(t_fine)):
        conv = e * conv + w0 * cp_fine[i - 1] + w1 * cp_fine[i]
        if needed[i]:
            stored[i] = conv.copy()
    res = np.empty((n, len(t_s)))
    for j, t in enumerate(t_s):
        i = out_fine_idx[j]
        a = (t - t_fine[i - 1]) / dt_fine
        a = min(max(a, 0.0), 1.0)
        c_prev = stored.get(i - 1, stored[0] if i - 1 == 0 else None)
        assert c_prev is not None
        res[:, j] = (1 - a) * c_prev + a * stored[i]
    cp_at = np.interp(t_s, t_fine, cp_fine)
    return kt[:, None] * res + vp[:, None] * cp_at[None, :]


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of SD ``sigma`` per channel."""
    # in place: the same operations in the same order as ``sqrt((signal + n1)**2 + n2**2)``
    # (the same bits), without its four temporaries. ``rng.normal(0, sigma)`` draws
    # ``0 + sigma * z`` from the same standard normal stream: drawing ``z`` in bulk and
    # scaling it gives the same numbers (up to the sign of a zero, squared away) ~1.3× faster
    out = rng.standard_normal(signal.shape)
    out *= sigma
    n2 = rng.standard_normal(signal.shape)
    n2 *= sigma
    out += signal
    np.square(out, out=out)
    np.square(n2, out=n2)
    out += n2
    return np.sqrt(out, out=out)


def noise_sigmas(cfg: PhantomConfig) -> dict[str, float]:
    """The noise SD of each series of the phantom (from the configured SNR of its tumour
    signal)."""
    from .scenarios import FLUORINE, T2STAR_MS, TISSUES

    tum = TISSUES["untreated"]
    vfa_ref = float(spgr_signal(tum.M0, 1e3 / tum.T1, cfg.vfa_flip_deg[-1], cfg.vfa_tr_ms))
    dce_ref = float(spgr_signal(tum.M0, 1e3 / tum.T1, cfg.dce_flip_deg, cfg.dce_tr_ms))
    t2w_ref = tum.M0 * np.exp(-cfg.t2w_te_ms / tum.T2) / 30.0
    megre_ref = tum.M0 / 30.0 * np.exp(-cfg.megre_te_ms[0] / T2STAR_MS["untreated"])
    return {
        "ir": tum.M0 / 30.0 / cfg.snr_ir,
        "mese": tum.M0 / 30.0 / cfg.snr_mese,
        "fluorine": FLUORINE.sigma,
        "megre": float(megre_ref / cfg.snr_megre),
        "dwi": 1000.0 / cfg.snr_dwi,
        "vfa": vfa_ref / cfg.snr_vfa,
        "dce": dce_ref / cfg.snr_dce,
        "t2w": float(t2w_ref / cfg.snr_t2w),
    }
