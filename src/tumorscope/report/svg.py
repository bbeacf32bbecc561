"""A small SVG plotter for the report's figures: axes with ticks, lines, markers, bars, step
histograms, legends and texts, written as text from the data.

Why not matplotlib: the report's line figures are a few dozen points each, and matplotlib
spent ~0.1–0.7 s per figure creating and drawing tick objects and rasterising glyphs (plus
~0.3 s to import in every worker); here a figure is a string built in a millisecond, its text
stays text (crisp at any zoom, searchable in the SVG) and it is usually smaller than the PNG.
The look follows matplotlib's defaults (the ``tab10`` colour cycle, ticks out, 5 % margins
around the data, ``MaxNLocator`` ticks: :func:`tumorscope.report.raster.max_n_ticks`).

Every axes is a ``<g class="axes">`` carrying its pixel box (``data-box``: x, y, width,
height; y downwards) and data limits (``data-xlim``, ``data-ylim``), so a test can map the
drawn points back to the data: ``x_px = x0 + (x - xlo) / (xhi - xlo) * width``, ``y_px = y0 +
height - (y - ylo) / (yhi - ylo) * height``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np

from .raster import max_n_ticks, png_bytes, tick_label

__all__ = ["CYCLE", "Axes", "Svg"]

#: matplotlib's default colour cycle (``tab10``), C0 ... C9.
CYCLE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

_FONT = "DejaVu Sans, Verdana, Helvetica, Arial, sans-serif"
#: vertical alignment -> SVG ``dominant-baseline``
_BASELINE = {"bottom": "auto", "top": "hanging", "center": "central", "baseline": "auto"}


def _n(x: float) -> str:
    """A coordinate with two decimals at most (``12``, ``12.5``, ``12.25``)."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def text_width(text: str, size: float) -> float:
    """Estimated width (px) of a text in the report's sans-serif font."""
    return 0.58 * size * len(text)


class Svg:
    """An SVG picture of ``width`` × ``height`` pixels on white, built element by element."""

    def __init__(self, width: float, height: float) -> None:
        self.width, self.height = float(width), float(height)
        self.parts: list[str] = []

    def text(
        self,
        x: float,
        y: float,
        s: str,
        *,
        size: float = 11,
        ha: str = "center",
        va: str = "center",
        rotate: float = 0,
        colour: str = "#000",
        weight: str | None = None,
    ) -> None:
        """A text at ``(x, y)``; ``ha`` left/center/right, ``va`` bottom/center/top/baseline,
        ``rotate`` degrees counter-clockwise about the anchor."""
        anchor = {"left": "start", "center": "middle", "right": "end"}[ha]
        attrs = (
            f'x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}" text-anchor="{anchor}" '
            f'dominant-baseline="{_BASELINE[va]}"'
        )
        if rotate:
            attrs += f' transform="rotate({_n(-rotate)} {_n(x)} {_n(y)})"'
        if colour != "#000":
            attrs += f' fill="{colour}"'
        if weight:
            attrs += f' font-weight="{weight}"'
        self.parts.append(f"<text {attrs}>{escape(s)}</text>")

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        *,
        colour: str = "#000",
        width: float = 1.0,
        dash: str | None = None,
    ) -> None:
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" '
            f'stroke="{colour}" stroke-width="{_n(width)}"{d}/>'
        )

    def rect(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        *,
        fill: str = "none",
        stroke: str | None = None,
        width: float = 1.0,
        extra: str = "",
    ) -> None:
        s = f' stroke="{stroke}" stroke-width="{_n(width)}"' if stroke else ""
        self.parts.append(
            f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="{fill}"{s}'
            f"{extra}/>"
        )

    def image(self, x: float, y: float, rgb: np.ndarray) -> None:
        """An RGB uint8 image (rows top-down) at one screen pixel per image pixel."""
        h, w = rgb.shape[:2]
        uri = "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode("ascii")
        self.parts.append(
            f'<image x="{_n(x)}" y="{_n(y)}" width="{w}" height="{h}" '
            f'preserveAspectRatio="none" href="{uri}"/>'
        )

    def to_svg(self) -> str:
        w, h = _n(self.width), _n(self.height)
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" font-family="{_FONT}">'
            f'<rect width="{w}" height="{h}" fill="#fff"/>'
        )
        return head + "".join(self.parts) + "</svg>"

    def data_uri(self) -> str:
        """The picture as a ``data:image/svg+xml;base64,…`` URI (an ``<img>`` source)."""
        return "data:image/svg+xml;base64," + base64.b64encode(self.to_svg().encode()).decode(
            "ascii"
        )


@dataclass
class _Item:
    kind: str  # line, scatter, bars, hline, vline, steps, note
    x: np.ndarray
    y: np.ndarray
    colour: Any = "#000"
    label: str | None = None
    opts: dict[str, Any] = field(default_factory=dict)


class Axes:
    """Axes in a pixel box of an :class:`Svg`; the items are drawn by :meth:`draw`, which
    takes the data limits from all of them (5 % margins, as matplotlib)."""

    def __init__(self, svg: Svg, x: float, y: float, w: float, h: float) -> None:
        self.svg, self.box = svg, (x, y, w, h)
        self.items: list[_Item] = []
        self.title = self.xlabel = self.ylabel = ""
        self.categories: list[str] | None = None
        self.font = 10.0

    def plot(
        self,
        x: Sequence[float],
        y: Sequence[float],
        *,
        colour: str,
        label: str | None = None,
        width: float = 1.5,
        marker: float = 0.0,
    ) -> None:
        """A line through the points (broken at NaN), with round markers of radius
        ``marker`` px if > 0."""
        self.items.append(_Item("line", _arr(x), _arr(y), colour, label, {"w": width, "m": marker}))

    def scatter(
        self,
        x: Sequence[float],
        y: Sequence[float],
        *,
        colours: Sequence[str] | str,
        radius: float = 3.0,
        edge: str | None = "#000",
        label: str | None = None,
    ) -> None:
        self.items.append(
            _Item("scatter", _arr(x), _arr(y), colours, label, {"r": radius, "e": edge})
        )

    def bars(self, heights: Sequence[float], *, colours: Sequence[str], width: float = 0.8) -> None:
        """Bars at x = 0, 1, ... from zero, black edges."""
        h = _arr(heights)
        self.items.append(
            _Item("bars", np.arange(len(h), dtype=float), h, list(colours), None, {"w": width})
        )

    def hline(
        self, y: float, *, colour: str = "#000", width: float = 1.0, dash: str | None = None
    ) -> None:
        self.items.append(
            _Item("hline", np.zeros(0), np.array([y], float), colour, None, {"w": width, "d": dash})
        )

    def vline(
        self, x: float, *, colour: str = "#000", width: float = 1.0, dash: str | None = None
    ) -> None:
        self.items.append(
            _Item("vline", np.array([x], float), np.zeros(0), colour, None, {"w": width, "d": dash})
        )

    def steps(
        self, edges: np.ndarray, counts: np.ndarray, *, colour: str, label: str | None = None
    ) -> None:
        """A step histogram's outline (``histtype="step"``: down to zero at both ends)."""
        e, c = _arr(edges), _arr(counts)
        x = np.repeat(e, 2)
        y = np.concatenate([[0.0], np.repeat(c, 2), [0.0]])
        self.items.append(_Item("line", x, y, colour, label, {"w": 1.3, "m": 0.0, "cls": "steps"}))

    def note(self, x: float, y: float, text: str) -> None:
        """A small text 3 px right of and above a data point."""
        self.items.append(_Item("note", np.array([x], float), np.array([y], float), "#000", text))

    # ------------------------------------------------------------------ drawing

    def _limits(self) -> tuple[tuple[float, float], tuple[float, float]]:
        xs = [it.x for it in self.items if it.kind not in ("hline",)]
        ys = [it.y for it in self.items if it.kind not in ("vline",)]
        bars = [it for it in self.items if it.kind == "bars"]
        for it in bars:  # the bars whole, from zero
            ys.append(np.zeros(1))
            xs.append(np.array([-0.5, len(it.x) - 0.5]))
        return _span(xs, margin=0.0 if bars else 0.05), _span(ys, margin=0.05)

    def draw(
        self, *, legend: str | None = "best", legend_title: str | None = None, legend_cols: int = 1
    ) -> None:
        svg = self.svg
        x0, y0, w, h = self.box
        (xlo, xhi), (ylo, yhi) = self._limits()

        def px(x: np.ndarray | float) -> Any:
            return x0 + (np.asarray(x, float) - xlo) / (xhi - xlo) * w

        def py(y: np.ndarray | float) -> Any:
            return y0 + h - (np.asarray(y, float) - ylo) / (yhi - ylo) * h

        svg.parts.append(
            f'<g class="axes" data-box="{_n(x0)} {_n(y0)} {_n(w)} {_n(h)}" '
            f'data-xlim="{xlo!r} {xhi!r}" data-ylim="{ylo!r} {yhi!r}">'
        )
        clip = f"clip{len(svg.parts)}"
        svg.parts.append(
            f'<clipPath id="{clip}"><rect x="{_n(x0)}" y="{_n(y0)}" width="{_n(w)}" '
            f'height="{_n(h)}"/></clipPath><g clip-path="url(#{clip})">'
        )
        points: list[tuple[float, float]] = []  # drawn points, for the legend's place
        for it in self.items:
            if it.kind == "hline":
                svg.line(
                    x0,
                    float(py(it.y[0])),
                    x0 + w,
                    float(py(it.y[0])),
                    colour=it.colour,
                    width=it.opts["w"],
                    dash=it.opts["d"],
                )
            elif it.kind == "vline":
                svg.line(
                    float(px(it.x[0])),
                    y0,
                    float(px(it.x[0])),
                    y0 + h,
                    colour=it.colour,
                    width=it.opts["w"],
                    dash=it.opts["d"],
                )
            elif it.kind == "bars":
                half = it.opts["w"] / 2
                for i, (xv, hv) in enumerate(zip(it.x, it.y, strict=True)):
                    if not math.isfinite(hv):
                        continue
                    left, right = float(px(xv - half)), float(px(xv + half))
                    top, bottom = sorted((float(py(hv)), float(py(0.0))))
                    svg.rect(
                        left,
                        top,
                        right - left,
                        bottom - top,
                        fill=it.colour[i],
                        stroke="#000",
                        width=1.0,
                        extra=' class="bar"',
                    )
            elif it.kind == "line":
                X, Y = px(it.x), py(it.y)
                cls = it.opts.get("cls", "line")
                lab = f' data-label="{escape(it.label)}"' if it.label is not None else ""
                for seg in _segments(X, Y):
                    pts = " ".join(f"{_n(a)},{_n(b)}" for a, b in seg)
                    svg.parts.append(
                        f'<polyline class="{cls}"{lab} points="{pts}" fill="none" '
                        f'stroke="{it.colour}" stroke-width="{_n(it.opts["w"])}" '
                        'stroke-linejoin="round"/>'
                    )
                    points += seg
                if it.opts["m"]:
                    for a, b in zip(X, Y, strict=True):
                        if math.isfinite(a) and math.isfinite(b):
                            svg.parts.append(
                                f'<circle cx="{_n(a)}" cy="{_n(b)}" r="{_n(it.opts["m"])}" '
                                f'fill="{it.colour}"/>'
                            )
            elif it.kind == "scatter":
                X, Y = px(it.x), py(it.y)
                cs = [it.colour] * len(X) if isinstance(it.colour, str) else list(it.colour)
                edge = it.opts["e"]
                stroke = f' stroke="{edge}" stroke-width="0.8"' if edge else ""
                for a, b, c in zip(X, Y, cs, strict=True):
                    if math.isfinite(a) and math.isfinite(b):
                        svg.parts.append(
                            f'<circle class="marker" cx="{_n(a)}" cy="{_n(b)}" '
                            f'r="{_n(it.opts["r"])}" fill="{c}"{stroke}/>'
                        )
                        points.append((float(a), float(b)))
        svg.parts.append("</g>")  # end of the clipped data
        for it in self.items:
            if it.kind == "note" and it.label:
                svg.text(
                    float(px(it.x[0])) + 3,
                    float(py(it.y[0])) - 3,
                    it.label,
                    size=9,
                    ha="left",
                    va="bottom",
                )
        svg.rect(x0, y0, w, h, stroke="#000", width=0.8)
        f = self.font
        # ticks: matplotlib's MaxNLocator with as many bins as the axis has room for
        if self.categories is not None:
            for i, name in enumerate(self.categories):
                tx = float(px(i))
                svg.line(tx, y0 + h, tx, y0 + h + 3.5, width=0.8)
                svg.text(tx, y0 + h + 5, name, size=f, ha="right", va="center", rotate=90)
        else:
            xt = _ticks(xlo, xhi, w / (f * 6.5))
            xl, xoff = axis_labels(xt)
            for t, label in zip(xt, xl, strict=True):
                tx = float(px(t))
                svg.line(tx, y0 + h, tx, y0 + h + 3.5, width=0.8)
                svg.text(tx, y0 + h + 5, label, size=f, va="top")
            if xoff:
                svg.text(x0 + w, y0 + h + 7 + f, xoff, size=f, ha="right", va="top")
        yt = _ticks(ylo, yhi, h / (f * 3))
        yl, yoff = axis_labels(yt)
        for t, label in zip(yt, yl, strict=True):
            ty = float(py(t))
            svg.line(x0 - 3.5, ty, x0, ty, width=0.8)
            svg.text(x0 - 5, ty, label, size=f, ha="right", va="center")
        if yoff:
            svg.text(x0, y0 - 2, yoff, size=f, ha="left", va="bottom")
        if self.title:
            svg.text(x0 + w / 2, y0 - 6, self.title, size=f * 1.2, va="bottom")
        if self.xlabel:
            below = 5 + f + 4 if self.categories is None else 5 + _longest(self.categories, f) + 4
            svg.text(x0 + w / 2, y0 + h + below, self.xlabel, size=f * 1.1, va="top")
        if self.ylabel:
            left = 5 + max((text_width(label, f) for label in yl), default=0) + 5
            svg.text(x0 - left, y0 + h / 2, self.ylabel, size=f * 1.1, va="bottom", rotate=90)
        labelled = [
            it for it in self.items if it.label is not None and it.kind in ("line", "scatter")
        ]
        if legend and labelled:
            self._legend(labelled, points, legend_title, legend_cols)
        svg.parts.append("</g>")

    def _legend(
        self, items: list[_Item], points: list[tuple[float, float]], title: str | None, cols: int
    ) -> None:
        """A framed legend in the corner of the axes that hides the fewest drawn points."""
        svg, (x0, y0, w, h) = self.svg, self.box
        size = self.font * 0.85
        row = size * 1.45
        cols = max(1, min(cols, len(items)))
        nrows = math.ceil(len(items) / cols)
        col_w = 26 + max(text_width(str(it.label), size) for it in items)
        lw = cols * col_w + 6
        lh = nrows * row + 6 + (row if title else 0)
        lw = max(lw, text_width(title or "", size) + 12)
        pts = np.array(points, float).reshape(-1, 2)
        best = None
        for cx, cy in (
            (x0 + w - lw - 4, y0 + 4),
            (x0 + 4, y0 + 4),
            (x0 + w - lw - 4, y0 + h - lh - 4),
            (x0 + 4, y0 + h - lh - 4),
        ):
            inside = int(
                (
                    (pts[:, 0] >= cx)
                    & (pts[:, 0] <= cx + lw)
                    & (pts[:, 1] >= cy)
                    & (pts[:, 1] <= cy + lh)
                ).sum()
            )
            if best is None or inside < best[0]:
                best = (inside, cx, cy)
        assert best is not None
        _, lx, ly = best
        svg.parts.append('<g class="legend">')
        svg.rect(
            lx, ly, lw, lh, fill="#fff", stroke="#ccc", width=0.8, extra=' fill-opacity="0.85"'
        )
        top = ly + 3
        if title:
            svg.text(lx + lw / 2, top + row / 2, title, size=size, va="center")
            top += row
        for k, it in enumerate(items):
            cx = lx + 3 + (k % cols) * col_w
            cy = top + (k // cols) * row + row / 2
            colour = it.colour if isinstance(it.colour, str) else "#000"
            if it.kind == "line":
                svg.line(cx + 2, cy, cx + 20, cy, colour=colour, width=it.opts["w"])
                if it.opts["m"]:
                    svg.parts.append(
                        f'<circle cx="{_n(cx + 11)}" cy="{_n(cy)}" r="{_n(it.opts["m"])}" fill="{colour}"/>'
                    )
            else:
                svg.parts.append(
                    f'<circle cx="{_n(cx + 11)}" cy="{_n(cy)}" r="3" fill="{colour}"/>'
                )
            svg.text(cx + 24, cy, str(it.label), size=size, ha="left", va="center")
        svg.parts.append("</g>")


def _arr(v: Any) -> np.ndarray:
    return np.array(
        [np.nan if x is None else x for x in v] if not isinstance(v, np.ndarray) else v, dtype=float
    ).ravel()


def _span(arrays: list[np.ndarray], *, margin: float) -> tuple[float, float]:
    """Data range of the finite values with ``margin`` of it on each side (0..1 if empty)."""
    vals = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.zeros(0)
    if not vals.size:
        return 0.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    if hi <= lo:
        d = abs(lo) * 0.05 if lo else 0.05
        return lo - d, hi + d
    d = (hi - lo) * margin
    return lo - d, hi + d


def axis_labels(ticks: Sequence[float]) -> tuple[list[str], str]:
    """Tick labels of an axis and its multiplier text: as matplotlib's ``ScalarFormatter``,
    values below 1e-2 or from 1e5 up are shown as multiples of a power of ten written once at
    the end of the axis (``0.6 0.9 1.2`` and ``1e-3``)."""
    big = max((abs(t) for t in ticks), default=0.0)
    if not big or 1e-2 <= big < 1e5:
        return [tick_label(t, ticks) for t in ticks], ""
    k = math.floor(math.log10(big))
    scaled = [t / 10**k for t in ticks]
    return [tick_label(t, scaled) for t in scaled], f"1e{k}"


def _ticks(lo: float, hi: float, room: float) -> list[float]:
    nbins = int(np.clip(math.floor(room), 1, 9))
    ticks = max_n_ticks(lo, hi, nbins)
    eps = 1e-9 * (hi - lo)
    return [t for t in ticks if lo - eps <= t <= hi + eps]


def _segments(X: np.ndarray, Y: np.ndarray) -> list[list[tuple[float, float]]]:
    """The runs of finite points (a line breaks at NaN, as matplotlib's)."""
    out: list[list[tuple[float, float]]] = []
    cur: list[tuple[float, float]] = []
    for a, b in zip(X, Y, strict=True):
        if math.isfinite(a) and math.isfinite(b):
            cur.append((float(a), float(b)))
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _longest(texts: Sequence[str], size: float) -> float:
    return max((text_width(t, size) for t in texts), default=0.0)
