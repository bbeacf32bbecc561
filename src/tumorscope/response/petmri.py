"""Joint PET/MRI read-outs: ΔTLG and ΔADCmean, the flare flag, metabolic pseudoprogression.

* :func:`joint_pet_mri` — per subject and visit, the percent change from baseline of the total
  lesion glycolysis (sum over the lesions) and of the mean ADC (mean of the lesions' mean
  ADC, over the lesions measured at both times), and their sum ``ΔTLG + ΔADCmean`` as the
  issue names the hybrid biomarker. The biomarker comes from 18F-FDG PET/MRI after two
  weeks of nivolumab in non-small-cell lung cancer (attributed in issue 17 to Umutlu et al.,
  2020). **The publication, its exact combination of the two changes and its cut-off could not
  be verified while writing this module**, so there is no default: the cut-off and the side
  of it that is favourable are required parameters, and the sum is the literal
  ``ΔTLG% + ΔADCmean%``; check the definition against the paper before using the call.
* :func:`pet_flare` — the flare / metabolic-pseudoprogression flag of a visit: a lesion whose
  uptake rose (``uptake_rise_pct``, default 30 %: PERCIST's PMD rise) while its ADC rose
  (more than ``adc_rise_pct``; set it to the ADC repeatability coefficient of
  :func:`tumorscope.response.functional.repeatability` when known) and its size stayed
  stable (RECIST's stable range, −30 % to +20 % of the diameter). Inflammation (immune
  infiltration with oedema) raises FDG uptake without more viable tumour; a rising ADC says
  the cellularity did not rise with it.
* :func:`metabolic_pseudoprogression` — from a PERCIST assessment: an unconfirmed PMD
  (iPERCIST UPMD) that the next scan does not confirm.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ResponseError
from ._core import fmt

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["joint_pet_mri", "metabolic_pseudoprogression", "pet_flare"]

_KEYS = ("subject", "visit", "date", "lesion_id")


def _prepare(table: pd.DataFrame, needed: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise ResponseError("expected a pandas DataFrame", field="table")
    missing = [c for c in (*_KEYS, *needed) if c not in table.columns]
    if missing:
        raise ResponseError(f"missing column(s) {missing}", field=missing[0])
    df = table.copy()
    df["subject"] = df["subject"].astype(str)
    df["visit"] = df["visit"].astype(str)
    df["date"] = pd.to_datetime(df["date"])
    for c in needed:
        df[c] = pd.to_numeric(df[c], errors="coerce")
        bad = df[c] < 0
        if bad.any():
            raise ResponseError(f"row {int(bad.idxmax())}: {c} is negative", field=c)
    return df


def _baseline(g: pd.DataFrame) -> Any:
    if "baseline" in g.columns:
        b = g[g["baseline"].astype(str).str.lower().isin(["true", "1"])]
        if len(b):
            return b["date"].iloc[0]
    return g["date"].min()


def _pct(new: float, ref: float) -> float:
    if not (math.isfinite(new) and math.isfinite(ref)) or ref == 0:
        return math.nan
    return 100.0 * (new - ref) / ref


def joint_pet_mri(
    table: pd.DataFrame,
    *,
    cutoff_pct: float,
    favourable: Literal["below", "above"],
    tlg: str = "tlg41_g",
    adc: str = "ADC_mean",
) -> pd.DataFrame:
    """ΔTLG, ΔADCmean and ``ΔTLG + ΔADCmean`` (percent from baseline) per subject and visit.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per lesion and visit: ``subject, visit, date, lesion_id``, the TLG column and
        the ADC column (optional ``baseline``).
    cutoff_pct : float
        Cut-off of ``ΔTLG + ΔADCmean`` (required: see the module docstring).
    favourable : {"below", "above"}
        Which side of the cut-off is the favourable (responding) call.
    tlg, adc : str
        Column names (TLG in g, ADC in mm²/s).

    Returns
    -------
    pandas.DataFrame
        ``subject, visit, date, tlg_g, delta_tlg_pct, adc_mean, delta_adc_pct, joint_pct,
        favourable`` (None at baseline or when not computable), ``reason``.
    """
    import pandas as pd

    if favourable not in ("below", "above"):
        raise ResponseError(
            f"favourable must be 'below' or 'above', got {favourable!r}", field="favourable"
        )
    if not math.isfinite(float(cutoff_pct)):
        raise ResponseError(f"cutoff_pct {cutoff_pct!r} is not a number", field="cutoff_pct")
    df = _prepare(table, (tlg, adc))
    rows = []
    for subject, g in df.groupby("subject", sort=True):
        b_date = _baseline(g)
        base = g[g["date"] == b_date].set_index("lesion_id")
        tlg0 = float(base[tlg].sum(min_count=1))
        for (visit, date), v in g.groupby(["visit", "date"], sort=False):
            vv = v.set_index("lesion_id")
            t = float(vv[tlg].sum(min_count=1))
            same = [
                k
                for k in vv.index
                if k in base.index
                and math.isfinite(vv.at[k, adc])
                and math.isfinite(base.at[k, adc])
            ]
            a = float(vv.loc[same, adc].mean()) if same else math.nan
            a0 = float(base.loc[same, adc].mean()) if same else math.nan
            d_t, d_a = _pct(t, tlg0), _pct(a, a0)
            joint = d_t + d_a
            row = {
                "subject": subject,
                "visit": visit,
                "date": date,
                "tlg_g": t,
                "delta_tlg_pct": d_t,
                "adc_mean": a,
                "delta_adc_pct": d_a,
                "joint_pct": joint,
                "favourable": None,
                "reason": "",
            }
            if date == b_date:
                row.update(delta_tlg_pct=math.nan, delta_adc_pct=math.nan, joint_pct=math.nan)
                row["reason"] = f"baseline: TLG {fmt(t)} g, ADCmean {a * 1e3:.3f}e-3 mm²/s"
            elif not math.isfinite(joint):
                row["reason"] = "TLG or ADC missing at baseline or at this visit"
            else:
                fav = joint <= cutoff_pct if favourable == "below" else joint >= cutoff_pct
                row["favourable"] = bool(fav)
                row["reason"] = (
                    f"ΔTLG {fmt(d_t)} % + ΔADCmean {fmt(d_a)} % = {fmt(joint)} % "
                    f"({'≤' if joint <= cutoff_pct else '>'} cut-off {fmt(cutoff_pct)} %)"
                )
            rows.append(row)
    out = pd.DataFrame(rows)
    return out.sort_values(["subject", "date"], kind="stable").reset_index(drop=True)


def pet_flare(
    table: pd.DataFrame,
    *,
    uptake: str = "sul_peak",
    adc: str = "ADC_mean",
    size: str = "diameter_mm",
    uptake_rise_pct: float = 30.0,
    adc_rise_pct: float = 0.0,
    size_stable_pct: tuple[float, float] = (-30.0, 20.0),
) -> pd.DataFrame:
    """The flare flag per subject and visit (module docstring); compared with baseline.

    Returns ``subject, visit, date, flare`` (bool; None at baseline), ``lesion_ids`` (the
    lesions that meet it) and ``reason``.
    """
    import pandas as pd

    lo, hi = size_stable_pct
    df = _prepare(table, (uptake, adc, size))
    rows = []
    for subject, g in df.groupby("subject", sort=True):
        b_date = _baseline(g)
        base = g[g["date"] == b_date].set_index("lesion_id")
        for (visit, date), v in g.groupby(["visit", "date"], sort=False):
            if date == b_date:
                rows.append(
                    dict(
                        subject=subject,
                        visit=visit,
                        date=date,
                        flare=None,
                        lesion_ids="",
                        reason="baseline",
                    )
                )
                continue
            hits, seen = [], []
            for lid, r in v.set_index("lesion_id").iterrows():
                if lid not in base.index:
                    continue
                b = base.loc[lid]
                du, da, ds = (
                    _pct(r[uptake], b[uptake]),
                    _pct(r[adc], b[adc]),
                    _pct(r[size], b[size]),
                )
                if not all(math.isfinite(x) for x in (du, da, ds)):
                    continue
                seen.append(lid)
                if du >= uptake_rise_pct and da > adc_rise_pct and lo < ds < hi:
                    hits.append(f"{lid} (uptake {fmt(du)} %, ADC {fmt(da)} %, size {fmt(ds)} %)")
            if not seen:
                rows.append(
                    dict(
                        subject=subject,
                        visit=visit,
                        date=date,
                        flare=None,
                        lesion_ids="",
                        reason="no lesion with uptake, ADC and size at baseline and now",
                    )
                )
                continue
            rows.append(
                dict(
                    subject=subject,
                    visit=visit,
                    date=date,
                    flare=bool(hits),
                    lesion_ids=",".join(h.split(" ")[0] for h in hits),
                    reason=(
                        "uptake rose while ADC rose at stable size: " + "; ".join(hits)
                        if hits
                        else f"no lesion with uptake ≥ +{fmt(uptake_rise_pct)} %, ADC > "
                        f"+{fmt(adc_rise_pct)} % and size within {fmt(lo)}..+{fmt(hi)} %"
                    ),
                )
            )
    out = pd.DataFrame(rows, columns=["subject", "visit", "date", "flare", "lesion_ids", "reason"])
    return out.sort_values(["subject", "date"], kind="stable").reset_index(drop=True)


def metabolic_pseudoprogression(assessment: pd.DataFrame) -> pd.DataFrame:
    """Per subject: an iPERCIST UPMD that the next scan did not confirm (PERCIST output).

    Returns ``subject, flag`` (None when the UPMD scan is the last one: not yet known),
    ``visit`` (of the UPMD) and ``reason``.
    """
    import pandas as pd

    if "ipercist" not in assessment.columns:
        raise ResponseError("expected a PERCIST assessment (column ipercist)", field="ipercist")
    rows = []
    for subject, g in assessment.sort_values("date").groupby("subject", sort=True):
        seq = list(zip(g["visit"], g["ipercist"], strict=True))
        flag: bool | None = False
        visit, reason = "", "no unconfirmed metabolic progression (UPMD)"
        for i, (v, call) in enumerate(seq):
            if call != "UPMD" or (i > 0 and seq[i - 1][1] == "UPMD"):
                continue
            nxt = next((c for _, c in seq[i + 1 :] if c != "UPMD"), None)
            visit = str(v)
            if nxt is None:
                flag, reason = None, f"UPMD at visit {v}, not yet confirmed or refuted"
            elif nxt == "CPMD":
                flag, reason = False, f"UPMD at visit {v} confirmed (CPMD)"
            else:
                flag, reason = True, f"UPMD at visit {v} not confirmed at the next scan ({nxt})"
                break
        rows.append({"subject": subject, "flag": flag, "visit": visit, "reason": reason})
    return pd.DataFrame(rows, columns=["subject", "flag", "visit", "reason"])
