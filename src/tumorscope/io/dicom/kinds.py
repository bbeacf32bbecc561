"""What kind of series a DICOM series is: :func:`guess_kind`.

The parameter that varies between the volumes of a series names it: b → ``dwi``, flip angle →
``VFA``, TE → ``MEGRE``/``MESE`` (spin echo from ``ScanningSequence``, or ``EchoPulseSequence`` in
Enhanced MR objects), TI → ``IRT1``, time →
``dce``; an EPI of 1–2 volumes → ``epi`` (a distortion-correction reference); a single volume
is ``T2w`` when TE ≥ 60 ms or the description says T2, and ``T1w`` otherwise.

**Dynamic EPI** (≥ 3 volumes in time, nothing else varying) is T2*-weighted: DSC perfusion
or BOLD fMRI, never DCE (a T1-weighted spoiled gradient echo). It is ``dsc`` when the header
names a contrast agent (``ContrastBolusAgent``), when its description or protocol name says
perfusion (perf, DSC, PWI, CBV, bolus), or when its TR is short enough to sample a first
pass (≤ :data:`DSC_MAX_TR_MS`); it is ``bold`` (not a series tumorscope fits: the importer
leaves it out with a warning, :data:`NOT_IMPORTED`) when the name says BOLD, fMRI, resting
state or task without a contrast agent, or when its TR is longer. The reason is in the
sidecar and the importer's output; ``--role`` overrides it either way.

**Localizers** (a SeriesDescription or ProtocolName saying localizer, scout, survey,
tri-pilot, "loc" or "pilot": :func:`localizer`) are planning images, often three orthogonal
planes in one series; the importer leaves them out with a warning instead of rejecting them as
a series of mixed orientation (which made every real exam's import exit 1).

**CEST** (a time series named CEST, APT, Z-spectrum, WASSR, WASABI or saturation transfer) is
``cest``, not imported: its saturation offsets are in no standard DICOM attribute (vendors
keep them in private sequence parameters), and without them it would have been read as DCE.

**Multi-echo time series** (several echo times, each of them repeated) with exactly two echo
times, as many volumes at each, that are EPI and DSC by the rules of a single-echo dynamic EPI
(contrast agent, perfusion words, short TR) are a **dual-echo DSC** (``dsc``):
:func:`.series.read_series` splits them into the two echoes (``echo-1``, ``echo-2``;
:mod:`tumorscope.io.dual_echo`). Any other (a multi-echo BOLD, a dual-echo DCE, three or more
echoes) is ``multiecho_dynamic``, not imported: the DCE fit takes one echo, and by the rule of
the varying parameter the series was read as one ``MEGRE`` of every volume (until
2026-12-06), a silent wrong series. Given the role ``dce`` (``--role``), it is refused naming
``EchoTime``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .scan import DicomFrame, DicomSeries

__all__ = [
    "DSC_MAX_TR_MS",
    "NOT_IMPORTED",
    "NOT_IMPORTED_HINT",
    "NotImported",
    "distinct",
    "guess_kind",
    "is_epi",
    "localizer",
]

#: The longest TR (ms) of a dynamic EPI taken as DSC perfusion when nothing else says what it
#: is: a first pass lasts ~10–15 s, and the consensus protocols sample it every 1–1.5 s
#: (Boxerman et al. 2020, doi:10.1093/neuonc/noaa141); BOLD fMRI runs at 2–3 s or, with
#: multiband, below 1 s, so a short TR alone cannot exclude BOLD (the reason says so).
DSC_MAX_TR_MS = 2500.0

#: Series kinds that :func:`.series.read_series` recognises but that are not imported: BOLD
#: (not a read-out tumorscope fits), CEST (fitted, but its offsets are not in DICOM) and
#: multi-echo time series (the dynamic fits take one echo); the importer leaves them out with
#: a warning that says how to bring them in.
NOT_IMPORTED: frozenset[str] = frozenset({"bold", "cest", "multiecho_dynamic"})

#: How to import a series of a kind in :data:`NOT_IMPORTED` anyway (the importer's warning).
NOT_IMPORTED_HINT: dict[str, str] = {
    "bold": "--role '{series}=dsc' imports it as DSC perfusion",
    "cest": "convert it to NIfTI with a sidecar listing its SaturationOffsets (docs/cest.md)",
    "multiecho_dynamic": (
        "the DCE fit takes one echo, DSC one or two: convert the echo to fit to NIfTI with a "
        "sidecar giving its FrameTimes and EchoTime (docs/study-format.md)"
    ),
}

#: "rest" as a word of its own (``MB_rest_AP``), not inside one (``interest``, ``restricted``)
_BOLD_WORDS = re.compile(r"bold|f-?mri|resting|(?<![a-z])rest(?![a-z])|\btask", re.IGNORECASE)
_PERFUSION_WORDS = re.compile(r"perf|dsc|pwi|cbv|bolus|susceptibility", re.IGNORECASE)
_CEST_WORDS = re.compile(
    r"cest|(?<![a-z])apt(?![a-z])|z-?spec|wassr|wasabi|saturation transfer", re.IGNORECASE
)


#: Names of localizer (scout) series: planning images, often three orthogonal planes in one
#: series, never a series to fit. GE "3-Plane Loc" / "Tri-Pilot", Siemens "localizer" /
#: "AAHead_Scout", Philips "Survey"; "loc" and "pilot" only as words of their own.
_LOCALIZER_WORDS = re.compile(
    r"locali[sz]er|scout|survey|tri-?pilot|(?<![a-z])(?:3-?pl(?:ane)?[ _-]?)?loc(?![a-z])"
    r"|(?<![a-z])pilot(?![a-z])",
    re.IGNORECASE,
)


def localizer(series: DicomSeries) -> str | None:
    """The word that names ``series`` a localizer (scout, survey) in its SeriesDescription or
    ProtocolName, else None."""
    m = _LOCALIZER_WORDS.search(_names(series))
    return None if m is None else m.group(0)


class NotImported(Exception):
    """A series of a kind in :data:`NOT_IMPORTED` (raised by :func:`.series.read_series` when
    asked to refuse it, before reading its pixels); ``kind`` and ``reason`` say what it was
    taken for."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def distinct(values: Sequence[float | None]) -> list[float]:
    """Distinct values (to 1e-6), None ignored."""
    return sorted({round(float(v), 6) for v in values if v is not None})


def is_epi(series: DicomSeries) -> bool:
    """Echo planar: ``ScanningSequence`` holds ``EP`` (classic MR images), or
    ``EchoPlanarPulseSequence`` (0018,9018) is ``YES`` (Enhanced MR images, whose MR Pulse
    Sequence module replaces ``ScanningSequence``)."""
    if "EP" in re.findall(r"[A-Z]+", series.text("ScanningSequence").upper()):
        return True
    return series.text("EchoPlanarPulseSequence").strip().upper() == "YES"


def _spin_echo(series: DicomSeries) -> bool:
    """A spin echo, not a gradient echo: ``ScanningSequence`` has ``SE`` and no ``GR`` (classic
    images), else ``EchoPulseSequence`` (0018,9008) is ``SPIN`` (Enhanced MR images)."""
    scanning = series.text("ScanningSequence").upper()
    if scanning:
        return "SE" in scanning and "GR" not in scanning
    return series.text("EchoPulseSequence").strip().upper() == "SPIN"


def guess_kind(
    series: DicomSeries, volumes: list[list[DicomFrame]]
) -> tuple[str, str, dict[str, list[float | None]]]:
    """The series kind (a study-format suffix, or a kind of :data:`NOT_IMPORTED`), why, and
    the per-volume parameters (``b``, ``te``, ``ti``, ``fa``: the first image of each volume
    in ``volumes``, as :func:`.series.read_series` arranges them)."""
    first = [v[0] for v in volumes]
    params: dict[str, list[float | None]] = {
        "b": [f.b for f in first],
        "te": [f.te_ms for f in first],
        "ti": [f.ti_ms for f in first],
        "fa": [f.flip_deg for f in first],
    }
    n = len(volumes)
    desc = series.description.lower()
    if n < 3 and is_epi(series) and len(distinct(params["b"])) < 2:
        # too short for a time series: a reference (pair) for distortion correction
        return "epi", f"{n} EPI volume(s) (distortion-correction reference)", params
    if n > 1:
        if len(distinct(params["b"])) >= 2:
            return "dwi", f"{len(distinct(params['b']))} distinct b-values", params
        echoes = distinct(params["te"])
        if len(echoes) >= 2 and n > len(echoes):
            n_each = [sum(abs(float(t or 0) - e) < 1e-3 for t in params["te"]) for e in echoes]
            if len(echoes) == 2 and n_each[0] == n_each[1] and is_epi(series):
                kind, why = _dynamic_epi(series, first[0].tr_ms)
                if kind == "dsc":
                    return "dsc", (
                        f"{n_each[0]} repeated EPI volumes at 2 echo times ({echoes[0]:g}, "
                        f"{echoes[1]:g} ms), {why}: dual-echo DSC"
                    ), params  # fmt: skip
            what = "e.g. a multi-echo BOLD" if is_epi(series) else "e.g. a dual-echo DCE"
            return (
                "multiecho_dynamic",
                (
                    f"{n} volumes at {len(echoes)} echo times ({', '.join(f'{t:g}' for t in echoes)} "
                    f"ms), each repeated: a multi-echo time series ({what})"
                ),
                params,
            )
        if len(echoes) >= 2:
            if _spin_echo(series):
                return "MESE", "several echo times, spin echo", params
            return "MEGRE", "several echo times, gradient echo", params
        if len(distinct(params["ti"])) >= 2:
            return "IRT1", "several inversion times", params
        if len(distinct(params["fa"])) >= 2:
            return "VFA", "several flip angles", params
        names = _names(series)
        cest = _CEST_WORDS.search(names)
        if cest:
            why = "CEST, whose saturation offsets no standard DICOM attribute holds"
            return "cest", f"{n} repeated volumes named {names!r} ({cest.group(0)}): {why}", params
        if is_epi(series):
            kind, why = _dynamic_epi(series, first[0].tr_ms)
            return kind, f"{n} repeated EPI volumes, {why}", params
        return "dce", f"{n} repeated volumes (dynamic series)", params
    te = first[0].te_ms
    if "t2" in desc or (te is not None and te >= 60):
        return "T2w", f"single volume, TE {te} ms", params
    return "T1w", f"single volume, TE {te} ms", params


def _names(series: DicomSeries) -> str:
    """SeriesDescription and ProtocolName (once if equal): the free text the rules read."""
    return " ".join(
        dict.fromkeys(t for t in (series.description, series.text("ProtocolName")) if t)
    )


def _dynamic_epi(series: DicomSeries, tr_ms: float | None) -> tuple[str, str]:
    """``dsc`` or ``bold`` for a dynamic EPI, and why (see the module docstring)."""
    agent = series.text("ContrastBolusAgent").strip()
    names = _names(series)
    tr = "no TR" if tr_ms is None else f"TR {tr_ms:g} ms"
    if agent:
        return "dsc", f"contrast agent {agent!r}: DSC perfusion"
    bold = _BOLD_WORDS.search(names)
    if bold:
        return "bold", f"named {names!r} ({bold.group(0)}), no contrast agent: BOLD fMRI"
    perf = _PERFUSION_WORDS.search(names)
    if perf:
        return "dsc", f"named {names!r} ({perf.group(0)}): DSC perfusion"
    if tr_ms is not None and tr_ms <= DSC_MAX_TR_MS:
        return "dsc", (
            f"{tr}, no contrast agent in the header: taken as DSC perfusion (a BOLD series "
            "looks the same: --role '<description>=skip' leaves it out)"
        )
    return "bold", (
        f"{tr} (a first pass needs ≤ {DSC_MAX_TR_MS:g} ms) and no contrast agent in the "
        "header: BOLD fMRI"
    )
