"""Pixels of the report's map figures without matplotlib: colour maps as lookup tables, a
PNG encoder (zlib), and the tick positions of matplotlib's ``MaxNLocator``.

The figures are the same as those matplotlib drew (``figures.map_grid`` used
``colormaps["viridis"]`` with ``Normalize`` and ``MaxNLocator(3)``): the tables are
matplotlib's own 256 colours, rounded to bytes as the figures rounded them, and
:func:`colour` indexes them as ``Colormap.__call__`` does (``test_figures`` compares both with
matplotlib). Importing matplotlib costs a worker ~0.3 s and its drawing most of a report's
time, for pictures made of pixels and a few texts (``docs/report.md``).
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["colour", "lut", "max_n_ticks", "png_bytes"]

#: matplotlib 3.11's ``viridis`` (256 colours), RGB bytes: ``np.round(colormaps["viridis"](
#: np.arange(256))[:, :3] * 255)``.
_VIRIDIS = (
    "44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467481668481769"
    "48186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979472a7a472c7a"
    "472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84433d84433e85423f85"
    "4240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b"
    "3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d"
    "33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e"
    "2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e"
    "26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d"
    "21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f88"
    "1fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad81"
    "28ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc74"
    "3fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc863"
    "5ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d"
    "84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32"
    "addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21a"
    "d8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723fde725"
)


def lut(name: str) -> np.ndarray:
    """``(256, 3)`` uint8 table of a colour map: ``"viridis"`` or ``"gray"``."""
    if name == "gray":
        return np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    if name == "viridis":
        return np.frombuffer(bytes.fromhex("".join(_VIRIDIS)), dtype=np.uint8).reshape(256, 3)
    raise ValueError(f"no colour table {name!r}")


def colour(
    values: np.ndarray, lo: float, hi: float, table: np.ndarray, *, bad: int = 255
) -> np.ndarray:
    """RGB bytes of ``values`` through a colour table over ``[lo, hi]``, as matplotlib's
    ``cmap(Normalize(lo, hi)(values))`` rounded to bytes: below ``lo`` the first colour,
    above ``hi`` the last, NaN ``bad`` (white).

    Returns
    -------
    ndarray, uint8, shape ``values.shape + (3,)``
    """
    x = np.array(values, dtype=np.float64)
    n = len(table)
    x -= lo
    x /= hi - lo
    x *= n
    x[x == n] = n - 1
    nan = np.isnan(x)
    with np.errstate(invalid="ignore"):
        idx = np.clip(np.where(nan, 0, x), 0, n - 1).astype(np.intp)
    out = table[idx]
    out[nan] = bad
    return out


def png_bytes(rgb: np.ndarray, *, level: int = 1) -> bytes:
    """PNG (8-bit RGB, no filter) of a ``(rows, columns, 3)`` uint8 image, top row first;
    zlib level 1 (as the figures were written by PIL before)."""
    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = img.shape[:2]
    raw = np.zeros((h, 1 + 3 * w), dtype=np.uint8)  # filter byte 0 on every row
    raw[:, 1:] = img.reshape(h, 3 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), level))
        + chunk(b"IEND", b"")
    )


#: ``MaxNLocator``'s default steps (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) as its ``_staircase``.
_BASE = np.array([1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10])
_STEPS = np.concatenate([0.1 * _BASE[:-1], _BASE, [10 * _BASE[1]]])


def max_n_ticks(lo: float, hi: float, nbins: int) -> list[float]:
    """Tick positions of matplotlib's ``MaxNLocator(nbins).tick_values(lo, hi)`` (default
    steps; at least two ticks inside; ``lo < hi``), including the ticks just
    outside the range, as matplotlib returns them."""
    if not hi > lo:
        lo, hi = (lo - 1.0, hi + 1.0) if lo == 0 else (lo - abs(lo) * 0.001, hi + abs(hi) * 0.001)
    dv = hi - lo
    mean = (hi + lo) / 2
    offset = (
        0.0 if abs(mean) / dv < 100 else math.copysign(10 ** (math.log10(abs(mean)) // 1), mean)
    )
    scale = 10 ** (math.log10(dv / nbins) // 1)
    vmin, vmax = lo - offset, hi - offset
    steps = _STEPS * scale
    raw = (vmax - vmin) / nbins
    large = np.nonzero(steps >= raw)[0]
    istep = int(large[0]) if len(large) else len(steps) - 1
    ticks = np.zeros(0)
    for step in steps[: istep + 1][::-1]:
        step = float(step)
        # matplotlib's _Edge_integer: more slop when the offset is large against the step
        tol = (
            min(0.4999, max(1e-10, 10 ** (math.log10(abs(offset) / step) - 12)))
            if offset
            else 1e-10
        )
        best = (vmin // step) * step
        d, m = divmod(vmin - best, step)
        low = d + 1 if abs(m / step - 1) < tol else d
        d, m = divmod(vmax - best, step)
        high = d if abs(m / step) < tol else d + 1
        ticks = np.arange(low, high + 1) * step + best
        if ((ticks <= vmax) & (ticks >= vmin)).sum() >= 2:
            break
    return [float(x) for x in ticks + offset]


def tick_label(t: float, ticks: Sequence[float]) -> str:
    """A tick's text: as many decimals as the tick step needs (``0.5``; ``1.5e-03`` for small
    or large values)."""
    span = max((abs(x) for x in ticks), default=0.0)
    if span and (span < 1e-2 or span >= 1e5):
        return f"{t:.1e}"
    step = min((b - a for a, b in itertools.pairwise(ticks)), default=1.0)
    decimals = max(0, -int(np.floor(np.log10(step))) if step > 0 else 0)
    return f"{t:.{decimals}f}"
