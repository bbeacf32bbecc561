"""The organ watch: immune-related adverse events read on the follow-up scans.

Checkpoint inhibitors inflame healthy organs (myocarditis, hepatitis, colitis, hypophysitis).
Per visit, the organ values measured on the maps (myocardial T1, T2 and ECV; liver stiffness
and T1; bowel-wall thickness; pituitary height; see ``docs/organ-watch.md``) are compared
with the **study's** reference ranges (site normal values, ``organ_reference:`` in
``study.yaml``; there are no built-in defaults: normal T1 and T2 depend on field strength,
vendor and sequence) and flagged under published criteria where they exist, else by their
change from baseline.

Values are tidy rows ``{"visit", "organ", "measure", "value", "unit"}``; measures are map
names (``T1``, ``T2``, ``ECV``, ``abs_G``) or geometric ones (``thickness_mm``,
``height_mm``), plus the user-supplied markers of the Lake Louise criteria (``T2w_ratio``,
``T2w_signal``, ``LGE``: 1 present, 0 absent).

"Elevated" against a reference means above its ``upper`` limit when the study gives one,
else a z-score ``(value - mean) / sd`` above 2 (the upper limit of normal as mean + 2 SD,
the convention of the SCMR mapping consensus, Messroghli et al., J Cardiovasc Magn Reson
2017, doi:10.1186/s12968-017-0389-8). Without a reference there is no z-score and no
"elevated"; the reason says so.

Flags (each function quotes its rule; rows of the ``patterns`` table):

* :func:`lake_louise` → ``myocarditis_lake_louise``;
* :func:`hepatitis_stiffness` → ``hepatitis_stiffness``;
* :func:`colitis_bowel_wall` → ``colitis_bowel_wall``;
* :func:`hypophysitis_pituitary` → ``hypophysitis_pituitary``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..anatomy import AHA_SEGMENTS
from ..errors import DataError, Problem

__all__ = [
    "BOWEL_WALL_UPPER_MM",
    "LAKE_LOUISE_RULE",
    "LIVER_STIFFNESS_RC_PCT",
    "ORGANS",
    "Flag",
    "Reference",
    "colitis_bowel_wall",
    "elevated",
    "hepatitis_stiffness",
    "hypophysitis_pituitary",
    "lake_louise",
    "organ_watch",
    "parse_organ_reference",
    "z_score",
]

#: Organ region names the organ watch reads (labels of the organ map, see docs/organ-watch.md)
#: and the measures it takes in each.
ORGANS: dict[str, tuple[str, ...]] = {
    "myocardium": ("T1", "T2", "ECV", "T2w_ratio", "T2w_signal", "LGE"),
    "blood_pool": ("T1",),
    "liver": ("abs_G", "phi", "T1"),
    "bowel_wall": ("thickness_mm",),
    "pituitary": ("height_mm",),
}

#: Ferreira et al., "Cardiovascular magnetic resonance in nonischemic myocardial
#: inflammation: expert recommendations", J Am Coll Cardiol 2018;72:3158-76,
#: doi:10.1016/j.jacc.2018.09.072 (the 2018 Lake Louise criteria), as quoted.
LAKE_LOUISE_RULE = (
    "CMR supports myocardial inflammation with at least 1 T2-based criterion (myocardial "
    "edema: global or regional increase of myocardial T2 relaxation time, or an increased "
    "signal intensity in T2-weighted images) and at least 1 T1-based criterion (myocardial "
    "injury: increased myocardial T1, extracellular volume, or late gadolinium enhancement)"
)
_T2_MARKERS = ("T2", "T2w_ratio", "T2w_signal")
_T1_MARKERS = ("T1", "ECV", "LGE")
#: T2-weighted signal-intensity ratio myocardium / skeletal muscle ≥ 2.0 (the original Lake
#: Louise criteria, Friedrich et al., J Am Coll Cardiol 2009;53:1475-87), used for
#: ``T2w_ratio`` when the study gives no reference for it.
T2W_RATIO_THRESHOLD = 2.0

#: Organ names of AHA segments in the organ table: ``myocardium_aha1`` … ``myocardium_aha16``.
AHA_PREFIX = "myocardium_aha"

#: Test–retest repeatability coefficient of liver MR elastography stiffness, 22 %
#: (meta-analysis: Serai et al., Radiology 2017;285:92-100, doi:10.1148/radiol.2017161398):
#: a rise beyond it is a real change at 95 % confidence.
LIVER_STIFFNESS_RC_PCT = 22.0

#: Maximal bowel-wall thickness above 3 mm is pathological (ECCO-ESGAR guideline for
#: diagnostic assessment in IBD, Maaser et al., J Crohns Colitis 2019;13:144-64,
#: doi:10.1093/ecco-jcc/jjy113), unless the study gives its own ``upper``.
BOWEL_WALL_UPPER_MM = 3.0


@dataclass(frozen=True)
class Reference:
    """A site reference for one organ measure (from ``study.yaml``'s ``organ_reference:``).

    ``mean`` and ``sd`` give z-scores; ``upper`` (and ``lower``) the limits of normal;
    ``change_pct`` / ``change_abs`` a study threshold for a change from baseline; ``source``
    where the values come from (free text, shown in the report).
    """

    mean: float | None = None
    sd: float | None = None
    upper: float | None = None
    lower: float | None = None
    change_pct: float | None = None
    change_abs: float | None = None
    unit: str | None = None
    source: str | None = None


References = Mapping[tuple[str, str], Reference]

_FIELDS = ("mean", "sd", "upper", "lower", "change_pct", "change_abs")


def parse_organ_reference(
    raw: Any, file: str = "study.yaml"
) -> tuple[dict[tuple[str, str], Reference], list[Problem]]:
    """``organ_reference:`` of the manifest → ``{(organ, measure): Reference}``, problems.

    The mapping is ``organ → measure → {mean, sd, upper, lower, change_pct, change_abs,
    unit, source}``. Numbers must be finite, ``sd`` > 0, ``mean`` with ``sd``.
    """
    out: dict[tuple[str, str], Reference] = {}
    problems: list[Problem] = []
    if raw is None:
        return out, problems
    if not isinstance(raw, Mapping):
        return out, [Problem("error", file, "organ_reference", "expected organ → measure → values")]
    for organ, measures in raw.items():
        where = f"organ_reference.{organ}"
        if not isinstance(measures, Mapping):
            problems.append(Problem("error", file, where, "expected measure → values"))
            continue
        for measure, spec in measures.items():
            fld = f"{where}.{measure}"
            if not isinstance(spec, Mapping):
                problems.append(Problem("error", file, fld, "expected a mapping (mean, sd, …)"))
                continue
            unknown = sorted(set(spec) - {*_FIELDS, "unit", "source"})
            if unknown:
                problems.append(
                    Problem("error", file, fld, f"unknown key(s) {unknown}; expected {_FIELDS}")
                )
                continue
            vals: dict[str, float | None] = {}
            ok = True
            for k in _FIELDS:
                v = spec.get(k)
                if v is None:
                    vals[k] = None
                    continue
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    problems.append(
                        Problem("error", file, f"{fld}.{k}", f"expected a number, got {v!r}")
                    )
                    ok = False
                    continue
                vals[k] = float(v)
            if not ok:
                continue
            if (vals["mean"] is None) != (vals["sd"] is None):
                problems.append(Problem("error", file, fld, "give mean and sd together"))
                continue
            if vals["sd"] is not None and vals["sd"] <= 0:
                problems.append(Problem("error", file, f"{fld}.sd", "sd must be > 0"))
                continue
            if all(v is None for v in vals.values()):
                problems.append(Problem("error", file, fld, f"no value given (one of {_FIELDS})"))
                continue
            out[(str(organ), str(measure))] = Reference(
                **vals,
                unit=None if spec.get("unit") is None else str(spec["unit"]),
                source=None if spec.get("source") is None else str(spec["source"]),
            )
    return out, problems


def z_score(value: float | None, ref: Reference | None) -> float | None:
    """``(value - mean) / sd``; None without a value or without the reference's mean and sd."""
    if value is None or ref is None or ref.mean is None or ref.sd is None:
        return None
    if not math.isfinite(value):
        return None
    return (value - ref.mean) / ref.sd


def elevated(value: float | None, ref: Reference | None) -> tuple[bool | None, str]:
    """Above the reference's ``upper`` limit, else above mean + 2 SD; None without either."""
    if value is None or not math.isfinite(value):
        return None, "no value"
    if ref is None:
        return None, "no reference range in study.yaml (organ_reference)"
    if ref.upper is not None:
        return (
            value > ref.upper,
            f"{value:.4g} {'>' if value > ref.upper else '≤'} upper {ref.upper:.4g}",
        )
    z = z_score(value, ref)
    if z is None:
        return None, "the reference has neither upper nor mean and sd"
    return z > 2.0, f"{value:.4g}, z = {z:.2f} ({'>' if z > 2 else '≤'} 2)"


@dataclass
class Flag:
    """One flag of one visit: ``flag`` None when it cannot be evaluated; ``reason`` says why."""

    pattern: str
    visit: str
    flag: bool | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "visit": self.visit,
            "flag": self.flag,
            "reason": self.reason,
            "details": self.details,
        }


def _marker(
    measure: str, value: float | None, refs: References, organ: str
) -> tuple[bool | None, str]:
    ref = refs.get((organ, measure))
    if measure in ("T2w_signal", "LGE"):
        if value is None:
            return None, "not given"
        return bool(value), "present" if value else "absent"
    if measure == "T2w_ratio" and ref is None and value is not None and math.isfinite(value):
        pos = value >= T2W_RATIO_THRESHOLD
        return pos, f"{value:.2f} {'≥' if pos else '<'} {T2W_RATIO_THRESHOLD} (Friedrich 2009)"
    return elevated(value, ref)


def lake_louise(
    visit: str,
    values: Mapping[str, float | None],
    refs: References,
    segments: Mapping[int, Mapping[str, float | None]] | None = None,
) -> Flag:
    """Myocarditis by the 2018 Lake Louise criteria (:data:`LAKE_LOUISE_RULE`).

    ``values``: the myocardium's measures at the visit (``T2``, ``T2w_ratio``, ``T2w_signal``,
    ``T1``, ``ECV``, ``LGE``; any may be missing). ``segments``: optional T1 / T2 means of AHA
    segments (``{segment number: {"T1": …, "T2": …}}``, organs ``myocardium_aha<n>``), each
    against the myocardium's reference: the criteria's "regional increase". Each criterion is
    evaluated on the markers available: the flag is True when at least one T2-based and one
    T1-based marker are positive, False when the available markers of a criterion are all
    negative, None when a criterion has no marker available (the reason names it).
    """
    parts: dict[str, str] = {}
    found: dict[str, list[bool]] = {"T2": [], "T1": []}
    for group, markers in (("T2", _T2_MARKERS), ("T1", _T1_MARKERS)):
        for m in markers:
            pos, why = _marker(m, values.get(m), refs, "myocardium")
            if values.get(m) is None:
                continue
            parts[m] = why
            if pos is not None:
                found[group].append(pos)
        # regional increase: any AHA segment's T2 (T1) above the myocardium's reference
        ref = refs.get(("myocardium", group))
        for n, seg in sorted((segments or {}).items()):
            pos, why = elevated(seg.get(group), ref)
            if pos is None:
                continue
            found[group].append(pos)
            if pos:
                parts[f"{group} AHA {n} ({AHA_SEGMENTS.get(n, '?')})"] = why
    t2_ok, t1_ok = any(found["T2"]), any(found["T1"])
    details = {"markers": parts, "rule": LAKE_LOUISE_RULE}
    if t2_ok and t1_ok:
        flag: bool | None = True
        reason = "T2-based and T1-based criteria met"
    elif (found["T2"] and not t2_ok) or (found["T1"] and not t1_ok):
        flag = False
        missing = [g for g in ("T2", "T1") if found[g] and not any(found[g])]
        reason = (
            f"{missing[0]}-based criterion not met"
            if len(missing) == 1
            else "T2- and T1-based criteria not met"
        )
    else:
        flag = None
        missing = [g for g in ("T2", "T1") if not found[g]]
        reason = f"no evaluable {' or '.join(missing)}-based marker (values or reference missing)"
    text = "; ".join(f"{k}: {v}" for k, v in parts.items())
    return Flag(
        "myocarditis_lake_louise", visit, flag, f"{reason} ({text})" if text else reason, details
    )


def _change_pct(value: float | None, base: float | None) -> float | None:
    if (
        value is None
        or base is None
        or not math.isfinite(value)
        or not math.isfinite(base)
        or base == 0
    ):
        return None
    return 100.0 * (value / base - 1.0)


def hepatitis_stiffness(
    visit: str, value: float | None, baseline_value: float | None, refs: References
) -> Flag:
    """Liver stiffness rising: hepatitis (or fibrosis) on immunotherapy.

    Rule: flagged when ``|G*|`` of the liver rose from baseline by more than the test–retest
    repeatability coefficient of liver MRE (:data:`LIVER_STIFFNESS_RC_PCT`, 22 %; the study's
    ``change_pct`` overrides it) or is elevated against the study's reference. There is no
    published MRE criterion for immune-related hepatitis; the change rule is the one the
    issue asks for where none exists.
    """
    ref = refs.get(("liver", "abs_G"))
    if value is None or not math.isfinite(value):
        return Flag("hepatitis_stiffness", visit, None, "no liver stiffness at this visit")
    thr = (
        ref.change_pct if ref is not None and ref.change_pct is not None else LIVER_STIFFNESS_RC_PCT
    )
    ch = _change_pct(value, baseline_value)
    el, why = elevated(value, ref)
    rose = ch is not None and ch > thr
    details = {"change_pct": ch, "threshold_pct": thr, "elevated": el}
    if rose or el:
        bits = [f"rose {ch:.0f} % from baseline (> {thr:g} %)"] if rose else []
        bits += [f"elevated ({why})"] if el else []
        return Flag("hepatitis_stiffness", visit, True, "; ".join(bits), details)
    if ch is None and el is None:
        return Flag("hepatitis_stiffness", visit, None, f"no baseline stiffness and {why}", details)
    ch_txt = "baseline" if ch is None else f"change {ch:+.0f} % (≤ {thr:g} %)"
    return Flag("hepatitis_stiffness", visit, False, f"{ch_txt}; {why}", details)


def colitis_bowel_wall(visit: str, value: float | None, refs: References) -> Flag:
    """Colitis: maximal bowel-wall thickness above 3 mm (:data:`BOWEL_WALL_UPPER_MM`, ECCO-ESGAR
    2019), or above the study's ``upper`` for ``bowel_wall.thickness_mm``."""
    ref = refs.get(("bowel_wall", "thickness_mm"))
    if value is None or not math.isfinite(value):
        return Flag("colitis_bowel_wall", visit, None, "no bowel-wall thickness at this visit")
    upper = ref.upper if ref is not None and ref.upper is not None else BOWEL_WALL_UPPER_MM
    src = "study reference" if ref is not None and ref.upper is not None else "ECCO-ESGAR 2019"
    thick = value > upper
    reason = f"maximal wall thickness {value:.1f} mm {'>' if thick else '≤'} {upper:g} mm ({src})"
    return Flag("colitis_bowel_wall", visit, thick, reason, {"upper_mm": upper})


def hypophysitis_pituitary(
    visit: str, value: float | None, baseline_value: float | None, refs: References
) -> Flag:
    """Hypophysitis: pituitary enlargement, against the study's reference only.

    Rule: flagged when the pituitary height is elevated against ``pituitary.height_mm`` of the
    study, or rose from baseline by more than its ``change_abs`` (mm) or ``change_pct``. No
    threshold is built in (normal height varies with age and sex); without a reference the
    flag is None and the change is reported.
    """
    ref = refs.get(("pituitary", "height_mm"))
    if value is None or not math.isfinite(value):
        return Flag("hypophysitis_pituitary", visit, None, "no pituitary height at this visit")
    ch_mm = None if baseline_value is None else value - baseline_value
    ch_pct = _change_pct(value, baseline_value)
    details = {"change_mm": ch_mm, "change_pct": ch_pct}
    if ref is None:
        txt = "" if ch_mm is None else f"; change from baseline {ch_mm:+.1f} mm"
        return Flag(
            "hypophysitis_pituitary",
            visit,
            None,
            f"no reference for pituitary.height_mm in study.yaml (organ_reference){txt}",
            details,
        )
    el, why = elevated(value, ref)
    rose_abs = ref.change_abs is not None and ch_mm is not None and ch_mm > ref.change_abs
    rose_pct = ref.change_pct is not None and ch_pct is not None and ch_pct > ref.change_pct
    bits = [f"elevated ({why})"] if el else []
    if rose_abs:
        bits.append(f"rose {ch_mm:.1f} mm (> {ref.change_abs:g} mm)")
    if rose_pct:
        bits.append(f"rose {ch_pct:.0f} % (> {ref.change_pct:g} %)")
    if bits:
        return Flag("hypophysitis_pituitary", visit, True, "; ".join(bits), details)
    if el is None and ch_mm is None:
        return Flag("hypophysitis_pituitary", visit, None, why, details)
    return Flag("hypophysitis_pituitary", visit, False, f"not enlarged ({why})", details)


@dataclass
class OrganWatch:
    """The organ watch of one subject: ``measurements`` rows (z-scores and changes from
    baseline: ``lesion_id`` = organ, ``map`` = measure, ``statistic`` ``"z"`` or
    ``"change_from_baseline_pct"``) and ``patterns`` rows (flags), with notes."""

    measurements: list[dict[str, Any]]
    patterns: list[dict[str, Any]]
    notes: list[str]


def organ_watch(
    values: Iterable[Mapping[str, Any]],
    visits: Sequence[str],
    baseline: str,
    refs: References,
) -> OrganWatch:
    """Z-scores, changes from baseline and flags of one subject's organ values.

    Parameters
    ----------
    values : iterable of mapping
        Rows ``{"visit", "organ", "measure", "value", "unit"}`` (the organ means).
    visits : sequence of str
        The subject's visits in date order.
    baseline : str
        The baseline visit (changes are against it).
    refs : mapping
        :func:`parse_organ_reference`'s result.
    """
    if baseline not in visits:
        raise DataError(
            f"baseline visit {baseline!r} is not among the visits {list(visits)}", field="baseline"
        )
    table: dict[tuple[str, str, str], float | None] = {}
    units: dict[tuple[str, str], str] = {}
    for r in values:
        v = r.get("value")
        table[(str(r["visit"]), str(r["organ"]), str(r["measure"]))] = (
            None if v is None or not math.isfinite(float(v)) else float(v)
        )
        units[(str(r["organ"]), str(r["measure"]))] = str(r.get("unit") or "")
    meas: list[dict[str, Any]] = []
    no_ref: set[tuple[str, str]] = set()
    for (visit, organ, measure), v in sorted(table.items()):
        ref = refs.get(("myocardium" if organ.startswith(AHA_PREFIX) else organ, measure))
        z = z_score(v, ref)
        if z is not None:
            meas.append(_mrow(visit, organ, measure, "z", z, "1"))
        elif v is not None and measure not in ("LGE", "T2w_signal"):
            no_ref.add((organ, measure))
        base = table.get((baseline, organ, measure))
        ch = _change_pct(v, base)
        if ch is not None and visit != baseline:
            meas.append(_mrow(visit, organ, measure, "change_from_baseline_pct", ch, "%"))
    notes = [
        f"no reference range for {o}.{m} in study.yaml (organ_reference): no z-score"
        for o, m in sorted(no_ref)
    ]
    organs = {o for (_, o, _) in table}
    flags: list[Flag] = []
    for visit in visits:

        def val(o: str, m: str, visit: str = visit) -> float | None:
            return table.get((visit, o, m))

        segs = {
            int(o[len(AHA_PREFIX) :]): {"T1": val(o, "T1"), "T2": val(o, "T2")}
            for o in organs
            if o.startswith(AHA_PREFIX) and o[len(AHA_PREFIX) :].isdigit()
        }
        if any((visit, "myocardium", m) in table for m in ORGANS["myocardium"]) or any(
            v is not None for seg in segs.values() for v in seg.values()
        ):
            flags.append(
                lake_louise(
                    visit, {m: val("myocardium", m) for m in ORGANS["myocardium"]}, refs, segs
                )
            )
        if (visit, "liver", "abs_G") in table:
            flags.append(
                hepatitis_stiffness(
                    visit, val("liver", "abs_G"), table.get((baseline, "liver", "abs_G")), refs
                )
            )
        if (visit, "bowel_wall", "thickness_mm") in table:
            flags.append(colitis_bowel_wall(visit, val("bowel_wall", "thickness_mm"), refs))
        if (visit, "pituitary", "height_mm") in table:
            flags.append(
                hypophysitis_pituitary(
                    visit,
                    val("pituitary", "height_mm"),
                    table.get((baseline, "pituitary", "height_mm")),
                    refs,
                )
            )
    return OrganWatch(meas, [f.row() for f in flags], notes)


def _mrow(
    visit: str, organ: str, measure: str, stat: str, value: float, unit: str
) -> dict[str, Any]:
    return {
        "visit": visit,
        "lesion_id": organ,
        "map": measure,
        "statistic": stat,
        "value": value,
        "unit": unit,
    }
