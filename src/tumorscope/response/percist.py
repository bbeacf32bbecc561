"""PERCIST 1.0, the five-lesion option, imPERCIST and iPERCIST: metabolic response on FDG PET.

Input: a tidy table, one row per lesion per visit, columns ``subject``, ``visit``, ``date``,
``lesion_id``, ``kind`` (``target``: present at baseline, ``new``: appeared later;
``non-target`` is accepted and only enters the complete-response check), ``sul_peak`` (g/mL,
NaN = not assessed), ``liver_sul_mean``, ``liver_sul_sd`` (the visit's normal-liver 3 cm
sphere; NaN when the liver is abnormal), ``blood_pool_sul_mean`` and, optionally,
``blood_pool_sul_sd``, ``organ`` and ``baseline`` (``true`` on the baseline rows; default the
first visit).

Rules (Wahl RL, Jacene H, Kasamon Y, Lodish MA, "From RECIST to PERCIST: evolving
considerations for PET response criteria in solid tumors", J Nucl Med 2009;50 Suppl
1:122S-150S, Table 7; practical guide O JH, Lodge MA, Wahl RL, Radiology 2016;280:576-584):

* Measurable: "a minimum tumor SUL peak of 1.5-fold liver SUL mean + 2 SDs (in 3-cm-diameter
  sphere in the right lobe of the liver)"; "if the liver is abnormal, the primary tumor
  should have uptake > 2.0 × SUL mean of blood pool in 1-cm-diameter ROI in descending
  thoracic aorta" (+ 2 SD, as the brief of issue 17 states; without ``blood_pool_sul_sd``
  the blood-pool threshold cannot be formed and the visit is NE).
* The hottest lesion: "the single most metabolically active lesion ... the lesion with the
  most intense uptake at follow-up may not be the same lesion as at baseline".
* CMR: "complete resolution of 18F-FDG uptake within the measurable target lesion so that it
  is less than mean liver activity and indistinguishable from surrounding background
  blood-pool levels"; "disappearance of all other lesions to background blood-pool levels";
  no new FDG-avid lesion. Here: every lesion's SULpeak ≤ the liver mean and ≤ blood-pool mean
  + 2 SD (SD 0 when not given: the strictest reading); without a blood-pool value the liver
  alone decides and the reason says so.
* PMR: "reduction of a minimum of 30% in the target measurable tumor 18F-FDG SUL peak.
  Absolute drop in SUL must be at least 0.8 SUL units"; no new lesions.
* PMD: ">30% increase in 18F-FDG SUL peak, with >0.8 SUL units increase in tumor SUV peak
  from the baseline scan in pattern typical of tumor ... or advent of new 18F-FDG-avid
  lesions that are typical of cancer". (The ≥ of the brief is used at both boundaries, with
  the response module's relative tolerance.)
* SMD: none of the above.
* Five-lesion option (``n_lesions=5``): "the sum of up to 5 ... hottest lesions (no more than
  2 per organ)" with the same 30 % / 0.8 rules on the sum.

imPERCIST (Ito K, Teng R, Schöder H, et al., "18F-FDG PET/CT for monitoring of ipilimumab
therapy in patients with metastatic melanoma", J Nucl Med 2019;60:335-341): the sum of the
SULpeak of up to five hottest lesions (at most 2 per organ), "new lesions are included in the
sum of SULpeak if they are among the five hottest lesions", "the appearance of new lesions
alone does not define PMD"; PMD a ≥ 30 % rise of the sum, PMR a ≥ 30 % fall (no absolute
0.8 rule is stated there, none is applied).

iPERCIST (Goldfarb L, Duchemann B, Chouahnia K, et al., "Monitoring anti-PD-1-based
immunotherapy in non-small cell lung cancer with FDG PET: introduction of iPERCIST", EJNMMI
Res 2019;9:8): the first PMD is unconfirmed (UPMD) and needs the next scan: confirmed (CPMD)
when the hottest SULpeak rose again by ≥ 30 % and ≥ 0.8 from the UPMD scan or a new FDG-avid
lesion appeared since it. Column ``ipercist`` carries this reading; ``response`` stays
PERCIST's. A decision: when the next scan neither confirms nor leaves PMD, it stays UPMD.

Design decisions where the papers are silent: a new lesion is FDG-avid when its SULpeak
exceeds the visit's liver SULmean (blood-pool mean when the liver is abnormal) — visible
above the CMR boundary; a target lesion with no ``sul_peak`` at a follow-up makes the visit
NE (it might be the hottest) unless it is PMD anyway; with no measurable lesion at baseline
every later visit is NE; in a sum (the five-lesion option, imPERCIST) a target lesion below
the threshold at baseline enters a follow-up sum only once it reaches that visit's threshold
(else unchanged sub-threshold lesions, left out of the baseline sum, would enter the
follow-up one and an unchanged scan would read as progression; the single hottest lesion of
PERCIST is taken at follow-up whatever its value, as the paper says); the liver-comparability rule (< 20 % and < 0.3 SUL units between
scans) is checked and a failure is stated in the reason without changing the call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ResponseError
from ._core import at_least, fmt, pct

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "PET_KINDS", "assess_percist", "validate_pet_table"]

PET_KINDS = ("target", "non-target", "new")
_REQUIRED = ("subject", "visit", "date", "lesion_id", "kind", "sul_peak")
_REF = ("liver_sul_mean", "liver_sul_sd", "blood_pool_sul_mean", "blood_pool_sul_sd")

COLUMNS: list[str] = [
    "subject",
    "visit",
    "date",
    "days_from_baseline",
    "response",
    "sul_peak",
    "baseline_sul_peak",
    "change_from_baseline_pct",
    "change_sul",
    "hottest_lesion_id",
    "lesion_ids",
    "measurable_threshold",
    "liver_sul_mean",
    "new_lesions",
    "new_lesion_ids",
    "ipercist",
    "reason",
    "criteria",
]

#: Relative/absolute rules of PERCIST.
PCT = 30.0
ABS_SUL = 0.8


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def validate_pet_table(table: pd.DataFrame) -> pd.DataFrame:
    """Check the PET measurement table; return a clean copy (numbers float, dates parsed).

    Raises :class:`ResponseError` naming the row (0-based position) and the column.
    """
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise ResponseError("expected a pandas DataFrame", field="table")
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise ResponseError(f"missing column(s) {missing}", field=missing[0])
    if "liver_sul_mean" not in table.columns and "blood_pool_sul_mean" not in table.columns:
        raise ResponseError(
            "need liver_sul_mean/liver_sul_sd or blood_pool_sul_mean for the PERCIST threshold",
            field="liver_sul_mean",
        )
    df = table.reset_index(drop=True).copy()
    for c in _REF:
        if c not in df.columns:
            df[c] = math.nan
    for c in ("subject", "visit", "lesion_id", "kind"):
        df[c] = df[c].astype(str).str.strip()
    for i, row in df.iterrows():
        if row["kind"] not in PET_KINDS:
            raise ResponseError(
                f"row {i}: kind {row['kind']!r} is not one of {list(PET_KINDS)}", field="kind"
            )
        for c in ("sul_peak", *_REF):
            x = _num(row[c])
            if row[c] is not None and not pd.isna(row[c]) and not math.isfinite(x):
                raise ResponseError(f"row {i}: {c} {row[c]!r} is not a number", field=c)
            if math.isfinite(x) and x < 0:
                raise ResponseError(f"row {i}: {c} {x} is negative", field=c)
            df.at[i, c] = x
    for c in ("sul_peak", *_REF):
        df[c] = df[c].astype(float)
    try:
        df["date"] = pd.to_datetime(df["date"])
    except (ValueError, TypeError) as exc:
        raise ResponseError(f"dates must be ISO dates: {exc}", field="date") from exc
    for (s, v), g in df.groupby(["subject", "visit"], sort=False):
        if g["date"].nunique() != 1:
            raise ResponseError(f"subject {s} visit {v}: more than one date", field="date")
        for c in _REF:
            vals = g[c].dropna().unique()
            if len(vals) > 1:
                raise ResponseError(
                    f"subject {s} visit {v}: {c} differs between rows {list(vals)}", field=c
                )
        dup = g["lesion_id"][g["lesion_id"].duplicated()]
        if len(dup):
            raise ResponseError(
                f"subject {s} visit {v}: lesion {dup.iloc[0]} listed twice", field="lesion_id"
            )
    return df


@dataclass
class _Visit:
    visit: str
    date: Any
    lesions: dict[str, tuple[str, float, str]]  # id -> (kind, sul_peak, organ)
    ref: dict[str, float]

    def of_kind(self, *kinds: str) -> dict[str, float]:
        return {k: v[1] for k, v in self.lesions.items() if v[0] in kinds}

    def reference(self) -> tuple[float, float, str]:
        """(threshold, CMR/avidity level, text); NaN threshold when not formable."""
        lm, ls = self.ref["liver_sul_mean"], self.ref["liver_sul_sd"]
        bm, bs = self.ref["blood_pool_sul_mean"], self.ref["blood_pool_sul_sd"]
        if math.isfinite(lm) and math.isfinite(ls) and lm > 0:
            return 1.5 * lm + 2 * ls, lm, f"1.5 × liver {fmt2(lm)} + 2 × SD {fmt2(ls)}"
        if math.isfinite(bm) and bm > 0:
            if math.isfinite(bs):
                return 2.0 * bm + 2 * bs, bm, f"2.0 × blood pool {fmt2(bm)} + 2 × SD {fmt2(bs)}"
            return math.nan, bm, "liver not usable and blood-pool SD missing"
        return math.nan, math.nan, "no liver or blood-pool reference"


def fmt2(x: float) -> str:
    """Two decimals for SUL values."""
    return f"{x:.2f}" if math.isfinite(x) else str(x)


def _select(vals: dict[str, float], organs: dict[str, str], n: int) -> list[str]:
    """The ``n`` hottest lesions, at most 2 per organ when ``n > 1`` and organs are known."""
    order = sorted(vals, key=lambda k: (-vals[k], k))
    out: list[str] = []
    per: dict[str, int] = {}
    for k in order:
        o = organs.get(k, "")
        if n > 1 and o and per.get(o, 0) >= 2:
            continue
        out.append(k)
        per[o] = per.get(o, 0) + 1
        if len(out) == n:
            break
    return out


def assess_percist(
    df: pd.DataFrame,
    *,
    variant: str = "percist",
    n_lesions: int | None = None,
) -> list[dict[str, Any]]:
    """Score every visit; one dict per visit (:data:`COLUMNS`).

    ``variant`` is ``"percist"`` (``n_lesions`` 1, or 5 for the five-lesion option) or
    ``"impercist"`` (5 lesions, new lesions in the sum, not PMD by themselves).
    """
    if variant not in ("percist", "impercist"):
        raise ResponseError(f"unknown PERCIST variant {variant!r}", field="criteria")
    n = n_lesions if n_lesions is not None else (5 if variant == "impercist" else 1)
    bad = n not in (1, 5) if variant == "percist" else not 1 <= n <= 5
    if bad:
        raise ResponseError(
            f"n_lesions {n}: PERCIST takes 1 (the hottest lesion) or 5 (its 5-lesion option), "
            "imPERCIST 1 to 5",
            field="n_lesions",
        )
    rows: list[dict[str, Any]] = []
    for subject, g in df.groupby("subject", sort=True):
        rows.extend(_subject(str(subject), g, variant, n))
    return rows


def _visits(g: pd.DataFrame) -> tuple[list[_Visit], int, dict[str, str]]:
    import pandas as pd

    visits = []
    organs: dict[str, str] = {}
    base_idx = 0
    for i, (vis, vg) in enumerate(
        sorted(g.groupby("visit", sort=False), key=lambda kv: kv[1]["date"].iloc[0])
    ):
        les = {}
        for _, r in vg.iterrows():
            organ = str(r["organ"]) if "organ" in vg.columns and not pd.isna(r["organ"]) else ""
            les[r["lesion_id"]] = (r["kind"], float(r["sul_peak"]), organ)
            if organ:
                organs[r["lesion_id"]] = organ
        ref = {c: float(vg[c].dropna().iloc[0]) if vg[c].notna().any() else math.nan for c in _REF}
        if (
            "baseline" in vg.columns
            and vg["baseline"].astype(str).str.lower().isin(["true", "1"]).any()
        ):
            base_idx = i
        visits.append(_Visit(str(vis), vg["date"].iloc[0], les, ref))
    return visits, base_idx, organs


def _subject(subject: str, g: pd.DataFrame, variant: str, n: int) -> list[dict[str, Any]]:
    visits, b, organs = _visits(g)
    base = visits[b]
    crit = variant if n == (5 if variant == "impercist" else 1) else f"{variant}-{n}"
    new_at_base = base.of_kind("new")
    if new_at_base:
        raise ResponseError(
            f"subject {subject}: lesion(s) {sorted(new_at_base)} are 'new' at the baseline visit",
            field="kind",
        )
    thr_b, _, ref_txt_b = base.reference()
    targets_b = {k: v for k, v in base.of_kind("target").items() if math.isfinite(v)}
    measurable = {k: v for k, v in targets_b.items() if math.isfinite(thr_b) and at_least(v, thr_b)}
    chosen_b = _select(measurable, organs, n)
    base_val = float(sum(measurable[k] for k in chosen_b)) if chosen_b else math.nan
    out: list[dict[str, Any]] = []
    upmd: dict[str, Any] | None = None  # the unconfirmed PMD scan (iPERCIST)
    for i, v in enumerate(visits):
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        thr, level, _ref_txt = v.reference()
        row.update(
            subject=subject,
            visit=v.visit,
            date=v.date,
            days_from_baseline=int((v.date - base.date).days),
            criteria=crit,
            baseline_sul_peak=base_val,
            measurable_threshold=thr,
            liver_sul_mean=v.ref["liver_sul_mean"],
            new_lesions=False,
            new_lesion_ids="",
            sul_peak=math.nan,
            change_from_baseline_pct=math.nan,
            change_sul=math.nan,
        )
        if i < b:
            row.update(response="pre-baseline", reason="not scored", ipercist="pre-baseline")
            out.append(row)
            continue
        if i == b:
            if not math.isfinite(thr_b):
                why = f"no measurability threshold ({ref_txt_b})"
            elif not chosen_b:
                why = (
                    f"no target lesion reaches the threshold {fmt2(thr_b)} ({ref_txt_b}): not "
                    "measurable by PERCIST"
                )
            else:
                what = "hottest lesion" if len(chosen_b) == 1 else f"sum of {len(chosen_b)} hottest"
                why = (
                    f"{what} SULpeak {fmt2(base_val)} ({', '.join(chosen_b)}); measurable "
                    f"threshold {fmt2(thr_b)} ({ref_txt_b})"
                )
            row.update(
                response="baseline",
                ipercist="baseline",
                sul_peak=base_val,
                hottest_lesion_id=chosen_b[0] if chosen_b else None,
                lesion_ids=",".join(chosen_b),
                reason=why,
            )
            out.append(row)
            continue
        resp, reason, info = _followup(
            v, base, base_val, chosen_b, variant, n, organs, level, frozenset(measurable), thr
        )
        row.update(info)
        row.update(response=resp, reason=reason)
        # iPERCIST
        if resp == "PMD" and upmd is None:
            ip = "UPMD"
            upmd = {"val": row["sul_peak"], "new": set(row["new_lesion_ids"].split(",")) - {""}}
        elif upmd is not None:
            ip, upmd = _confirm(row, upmd, resp, variant)
        else:
            ip = resp
        row["ipercist"] = ip
        out.append(row)
    return out


def _confirm(
    row: dict[str, Any], upmd: dict[str, Any], resp: str, variant: str
) -> tuple[str, dict[str, Any] | None]:
    """iPERCIST at the scan after a UPMD: CPMD, still UPMD, or the PERCIST call (reset)."""
    val, prev = row["sul_peak"], upmd["val"]
    new_now = set(row["new_lesion_ids"].split(",")) - {""}
    rose = (
        math.isfinite(val)
        and math.isfinite(prev)
        and at_least(pct(val, prev), PCT)
        and (variant == "impercist" or at_least(val - prev, ABS_SUL))
    )
    fresh = new_now - upmd["new"]
    if rose or (fresh and variant == "percist"):
        why = (
            f"SULpeak {fmt2(prev)} → {fmt2(val)} since the UPMD scan"
            if rose
            else f"new lesion(s) {', '.join(sorted(fresh))} since the UPMD scan"
        )
        row["reason"] += f"; iPERCIST: progression confirmed ({why})"
        return "CPMD", None
    if resp == "PMD":
        row["reason"] += "; iPERCIST: still unconfirmed (no further progression since the UPMD)"
        return "UPMD", upmd
    if resp == "NE":  # a scan that cannot be read neither confirms nor refutes the UPMD
        row["reason"] += "; iPERCIST: the UPMD awaits a readable scan"
        return "NE", upmd
    row["reason"] += f"; iPERCIST: the UPMD is not confirmed ({resp})"
    return resp, None


def _followup(
    v: _Visit,
    base: _Visit,
    base_val: float,
    chosen_b: list[str],
    variant: str,
    n: int,
    organs: dict[str, str],
    level: float,
    measurable_b: frozenset[str],
    thr: float,
) -> tuple[str, str, dict[str, Any]]:
    info: dict[str, Any] = {}
    new = v.of_kind("new")
    avid = sorted(
        k for k, x in new.items() if math.isfinite(x) and math.isfinite(level) and x > level
    )
    info.update(new_lesions=bool(avid), new_lesion_ids=",".join(avid))
    notes = []
    lb, lv = base.ref["liver_sul_mean"], v.ref["liver_sul_mean"]
    if math.isfinite(lb) and math.isfinite(lv) and lb > 0:
        d = lv - lb
        if not (abs(d) / lb * 100 < 20.0 and abs(d) < 0.3):
            notes.append(
                f"liver SULmean {fmt2(lb)} → {fmt2(lv)} differs by ≥ 20 % or ≥ 0.3: scans may "
                "not be comparable (PERCIST)"
            )
    tail = ("; " + "; ".join(notes)) if notes else ""
    if not chosen_b:
        return "NE", "no measurable lesion at baseline" + tail, info
    pool = v.of_kind("target")
    if n > 1:
        # a sum compares like with like: a target below the threshold at baseline (not in
        # the baseline sum) enters a follow-up sum only once it reaches the visit's threshold
        pool = {
            k: x
            for k, x in pool.items()
            if k in measurable_b
            or not math.isfinite(x)
            or (math.isfinite(thr) and at_least(x, thr))
        }
    if variant == "impercist":
        pool = {**pool, **new}
    unassessed = sorted(k for k, x in pool.items() if not math.isfinite(x))
    base_targets = set(base.of_kind("target"))
    lost = sorted(base_targets - set(v.lesions))
    finite = {k: x for k, x in pool.items() if math.isfinite(x)}
    chosen = _select(finite, organs, n)
    val = float(sum(finite[k] for k in chosen)) if chosen else 0.0
    d_pct, d_abs = pct(val, base_val), val - base_val
    info.update(
        sul_peak=val,
        change_from_baseline_pct=d_pct,
        change_sul=d_abs,
        hottest_lesion_id=chosen[0] if chosen else None,
        lesion_ids=",".join(chosen),
    )
    what = "hottest SULpeak" if n == 1 else f"sum of {len(chosen)} hottest SULpeak"
    change = f"{what} {fmt2(base_val)} → {fmt2(val)} ({fmt(d_pct)} %, {d_abs:+.2f} SUL units)" + (
        f" [{', '.join(chosen)}]" if chosen else ""
    )
    abs_rule = variant == "percist"
    rise = at_least(d_pct, PCT) and (not abs_rule or at_least(d_abs, ABS_SUL))
    fall = at_least(-d_pct, PCT) and (not abs_rule or at_least(-d_abs, ABS_SUL))
    pmd = []
    if rise and not (unassessed or lost):
        pmd.append(f"{change}: rise ≥ 30 %" + (" and ≥ 0.8 SUL units" if abs_rule else ""))
    elif rise:
        pmd.append(f"{change} among the lesions assessed: rise ≥ 30 %")
    if avid and variant == "percist":
        pmd.append(f"new FDG-avid lesion(s) {', '.join(avid)} (SULpeak above liver {fmt2(level)})")
    if pmd:
        return "PMD", "; ".join(pmd) + tail, info
    if unassessed or lost:
        return "NE", f"lesion(s) {', '.join(unassessed + lost)} not assessed" + tail, info
    # CMR: every lesion at or below the liver mean and the blood-pool level
    lm = v.ref["liver_sul_mean"]
    bm, bs = v.ref["blood_pool_sul_mean"], v.ref["blood_pool_sul_sd"]
    bp = bm + 2 * (bs if math.isfinite(bs) else 0.0) if math.isfinite(bm) else math.nan
    everything = {k: x for k, x in v.lesions.items() if math.isfinite(x[1])}
    peak_all = max((x[1] for x in everything.values()), default=0.0)
    below_liver = (not math.isfinite(lm)) or peak_all <= lm
    below_bp = (not math.isfinite(bp)) or peak_all <= bp
    if (math.isfinite(lm) or math.isfinite(bp)) and below_liver and below_bp and not avid:
        refs = []
        if math.isfinite(lm):
            refs.append(f"liver mean {fmt2(lm)}")
        if math.isfinite(bp):
            refs.append(f"blood pool {fmt2(bp)}")
        else:
            refs.append("no blood-pool value: judged against the liver only")
        return (
            "CMR",
            f"all lesions' SULpeak ≤ {fmt2(peak_all)}, at or below {' and '.join(refs)}; {change}"
            + tail,
            info,
        )
    if fall and (variant == "impercist" or not avid):
        return (
            "PMR",
            f"{change}: fall ≥ 30 %" + (" and ≥ 0.8 SUL units" if abs_rule else "") + tail,
            info,
        )
    extra = ""
    if new and variant == "impercist":
        extra = f"; new lesion(s) {', '.join(sorted(new))} in the sum, not PMD by themselves"
    return "SMD", f"{change}: neither PMR nor PMD{extra}" + tail, info
