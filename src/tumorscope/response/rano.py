"""RANO 2.0 and iRANO: response of brain tumours from bidimensional products.

Wen PY, van den Bent M, Youssef G, et al. RANO 2.0: Update to the Response Assessment in
Neuro-Oncology criteria for high- and low-grade gliomas in adults. J Clin Oncol
2023;41:5187-5199. doi:10.1200/JCO.23.01059

Wen PY, Macdonald DR, Reardon DA, et al. Updated response assessment criteria for high-grade
gliomas: RANO working group. J Clin Oncol 2010;28:1963-1972. doi:10.1200/JCO.2009.26.3541

Okada H, Weller M, Huang R, et al. Immunotherapy response assessment in neuro-oncology: a
report of the RANO working group. Lancet Oncol 2015;16:e534-e542.
doi:10.1016/S1470-2045(15)00088-1

Rules implemented (time point)
------------------------------
* Size is the sum of products of perpendicular diameters (SPD, mm²) of the enhancing target
  lesions: ``diameter_mm × perpendicular_mm``; ``absent`` counts 0 and, by analogy with
  RECIST 1.1's default of 5 mm (a tumorscope decision), ``too small to measure`` 5 × 5 mm².
  Enhancing disease reappearing after the SPD reached 0 is progression (any growth from a
  nadir of 0 is an unbounded relative increase). Target lesions must be
  measurable at baseline, "contrast-enhancing lesions with clearly defined margins, with
  two perpendicular diameters of at least 10 mm"; RANO 2.0 keeps at most 3 target lesions.
* CR: disappearance of all enhancing target and non-target disease, no new lesion, "off
  corticosteroids (or on physiologic replacement doses only)", clinically stable or improved.
* PR: "≥50% decrease in the sum of products of perpendicular diameters" from baseline, no
  new lesion, no progression of non-measurable disease, a corticosteroid dose not greater
  than at baseline ("stable or reduced corticosteroids"), clinically stable or improved. All
  enhancing disease gone while still on steroids above the physiologic dose is not CR but
  meets PR when the dose is not above baseline (e.g. 4 → 2 mg/day), and SD when it is.
* PD: "≥25% increase in the sum of products of perpendicular diameters of enhancing lesions
  compared with the smallest tumour measurement obtained either at baseline (if no decrease)
  or best response", a new lesion, unequivocal progression of non-target disease, or
  clinical deterioration (``clinical_status`` ``worse``). An increase in corticosteroids
  alone is not progression.
* SD: none of these. When the images meet CR or PR but the corticosteroid or clinical
  conditions do not, the visit is SD and the reason says why.
* Non-measurable disease only (no enhancing target lesion at baseline): "patients with
  nonmeasurable disease only cannot have a complete response; the best response possible is
  stable disease" (Wen et al. 2010, CR definition), and PR is defined on the SPD of measurable
  lesions, which such a patient has not. The empty SPD is not a target "CR": every visit
  without progression is SD (NE when a non-target lesion is not assessed), also when the
  disease disappears; PD as above (new lesion, non-target progression, clinical decline).
* CR and PR need confirmation at least 4 weeks later: that is applied by
  :func:`tumorscope.response.best_overall_response`, which confirms by default for RANO.

Confirmation of progression (design decision, stated in every reason)
---------------------------------------------------------------------
RANO 2.0 asks for a confirmation scan when progression is seen early (within 12 weeks of the
end of radiotherapy) and iRANO asks for one when radiographic progression (including new
lesions) appears within 6 months of starting immunotherapy in a patient without significant
clinical decline, with the date of progression back-dated to the first scan once confirmed.
Such a visit is reported as ``preliminary PD``. It becomes ``PD`` at a later scan when the
SPD rose at least ``confirm_increase_pct`` (default 25%, the RANO threshold) above the SPD of
the first preliminary-PD scan, a further new lesion appeared, non-target disease progressed
unequivocally, or the patient deteriorated clinically; it is withdrawn (SD, PR, CR) when the
images no longer meet progression; otherwise it stays ``preliminary PD``. The windows are
options: ``confirm_window_days`` counted from the baseline visit (default 0 for ``"rano"``,
i.e. no confirmation, and 182 days for ``"irano"``). Clinical deterioration is progression
at once in both.

Post-radiotherapy window (RANO 2.0): progression seen within 12 weeks after the end of
radiotherapy needs a confirmation scan, as pseudoprogression is common then. Given the end of
radiotherapy (``radiotherapy_end``, per subject; from the table column ``radiotherapy_end`` or
the manifest's ``treatment.radiotherapy_end_date``), progression at a visit dated up to 84
days after it (or before it) is ``preliminary PD``, confirmed or withdrawn as above; both
windows apply, for RANO and iRANO. RANO 2010 let new enhancement mostly outside the
radiation field (or histology) count at once; tumorscope has no radiation-field input, so
every progression in the window waits for confirmation (a tumorscope decision).

Non-enhancing disease (RANO 2.0, Wen et al. 2023, after RANO-LGG, van den Bent et al. 2011,
doi:10.1016/S1470-2045(11)70057-2). Target rows with ``enhancing`` false are the measurable
non-enhancing (T2/FLAIR) component: at least 10 × 10 mm at baseline, at most ``max_targets``
of them (the limit applies to each component, a tumorscope reading). Its SPD is scored on its
own (column ``ne_response``, the enhancing one in ``ce_response``):

* CR: all non-enhancing target lesions gone;
* PR: "≥50% decrease" of the T2/FLAIR SPD from baseline;
* MR (minor response): a decrease of at least 25% but less than 50% from baseline;
* PD: "≥25% increase" of the T2/FLAIR SPD from its nadir (baseline or best response);
* SD: none of these.

Combination (tumours assessed on both components): progression of either component is
progression; otherwise the overall category is the less favourable of the two (CR > PR > MR >
SD; NE when either is not evaluable), so CR needs both components gone, and a PR of the
enhancing part with stable T2/FLAIR disease is SD. A tumour with only a non-enhancing target
is scored on it. MR, like PR, needs a corticosteroid dose not above baseline (SD otherwise) and
confirmation at least 4 weeks later (:func:`tumorscope.response.best_overall_response`).

Non-target non-enhancing lesions: CR requires "stable or improved nonenhancing (T2/FLAIR)
lesions" (Wen et al. 2010; RANO 2.0), so a non-target lesion with ``enhancing`` false that
persists without unequivocal progression does not stand in the way of CR (its unequivocal
progression is PD, and a missing assessment NE, as for any non-target lesion).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import ResponseError
from ._core import (
    TOO_SMALL_MM,
    Subject,
    at_least,
    blank_row,
    fmt,
    new_lesions_present,
    nontarget_category,
    pct,
)
from .recist import COLUMNS as _RECIST_COLUMNS

__all__ = ["COLUMNS", "POST_RADIOTHERAPY_DAYS", "assess_rano"]

#: RANO 2.0: progression within 12 weeks after the end of radiotherapy needs confirmation.
POST_RADIOTHERAPY_DAYS = 84

COLUMNS: list[str] = [
    *_RECIST_COLUMNS,
    "spd_mm2",
    "nadir_mm2",
    "ce_response",
    "ne_spd_mm2",
    "ne_response",
    "steroid_dose_mg",
    "clinical_status",
]


def assess_rano(
    subjects: list[Subject],
    *,
    immunotherapy: bool = False,
    confirm_window_days: int | None = None,
    confirm_increase_pct: float = 25.0,
    physiologic_steroid_mg: float = 0.0,
    max_targets: int | None = None,
    radiotherapy_end: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Score every visit with RANO 2.0 (``immunotherapy=False``) or iRANO (``True``).

    Parameters
    ----------
    subjects : list of Subject
        From the validated measurement table.
    immunotherapy : bool, default False
        Apply iRANO (Okada et al. 2015): progression within ``confirm_window_days`` (default
        182, 6 months) of the baseline needs confirmation unless the patient deteriorated.
    confirm_window_days : int, optional
        Days after baseline within which progression is preliminary. Default 0 (RANO) or 182
        (iRANO).
    confirm_increase_pct : float, default 25
        SPD increase over the first preliminary-PD scan that confirms progression.
    physiologic_steroid_mg : float, default 0
        Highest daily dexamethasone-equivalent dose accepted as physiologic replacement for CR.
    max_targets : int, optional
        Maximum number of target lesions; default 3 for RANO 2.0, 5 for iRANO (RANO 2010).
    radiotherapy_end : mapping of subject to date, optional
        End of radiotherapy of each subject (ISO text, ``datetime.date`` or timestamp):
        progression within :data:`POST_RADIOTHERAPY_DAYS` (12 weeks) after it needs
        confirmation (RANO 2.0), in addition to ``confirm_window_days``.

    Returns
    -------
    list of dict
        One per visit, keys :data:`COLUMNS`; ``change_*`` columns refer to the SPD.
    """
    window = (
        confirm_window_days if confirm_window_days is not None else (182 if immunotherapy else 0)
    )
    limit = max_targets if max_targets is not None else (5 if immunotherapy else 3)
    name = "irano" if immunotherapy else "rano"
    rows: list[dict[str, Any]] = []
    rt = {str(k): _timestamp(v) for k, v in (radiotherapy_end or {}).items() if v is not None}
    for s in subjects:
        _check_rano_targets(s, limit=limit, name=name)
        rows.extend(
            _subject_rows(
                s, name, window, confirm_increase_pct, physiologic_steroid_mg, rt.get(s.subject)
            )
        )
    return rows


def _timestamp(value: Any) -> Any:
    import pandas as pd

    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ResponseError(
            f"radiotherapy end {value!r} is not a date", field="radiotherapy_end"
        ) from None
    if pd.isna(stamp):
        raise ResponseError(f"radiotherapy end {value!r} is not a date", field="radiotherapy_end")
    return stamp.normalize()


def _check_rano_targets(s: Subject, *, limit: int, name: str) -> None:
    base = s.baseline
    for enhancing in (True, False):
        targets = [t for t in s.of_kind("target") if t.enhancing is enhancing]
        what = "enhancing" if enhancing else "non-enhancing (T2/FLAIR)"
        if len(targets) > limit:
            les = targets[limit]
            raise ResponseError(
                f"{base.obs[les.lesion_id].row}: subject {s.subject} has {len(targets)} {what} "
                f"target lesions; {name.upper()} uses at most {limit}",
                field="kind",
            )
        for les in targets:
            o = base.obs[les.lesion_id]
            if not (
                math.isfinite(o.perpendicular_mm)
                and o.perpendicular_mm >= 10.0
                and o.diameter_mm >= 10.0
            ):
                raise ResponseError(
                    f"{o.row}: {what} target lesion {les.lesion_id} of subject {s.subject} is "
                    f"{fmt(o.diameter_mm)} x {fmt(o.perpendicular_mm)} mm at baseline; "
                    f"{name.upper()} needs two perpendicular diameters of at least 10 mm",
                    field="perpendicular_mm",
                )


def _spd(s: Subject, v: Any, enhancing: bool = True) -> tuple[float, list[str]]:
    """Sum of products of the target lesions of one component (enhancing or T2/FLAIR)."""
    total, missing = 0.0, []
    for les in s.of_kind("target"):
        if les.enhancing is not enhancing:
            continue
        o = v.obs.get(les.lesion_id)
        if o is None:
            missing.append(les.lesion_id)
        elif o.status == "absent" or (math.isfinite(o.diameter_mm) and o.diameter_mm == 0):
            continue
        elif o.status == "too small to measure":
            total += TOO_SMALL_MM * TOO_SMALL_MM
        elif math.isfinite(o.diameter_mm) and math.isfinite(o.perpendicular_mm):
            total += o.diameter_mm * o.perpendicular_mm
        else:
            missing.append(les.lesion_id)
    return total, missing


def _category(
    spd: float,
    missing: list[str],
    base_spd: float,
    nadir: float,
    nadir_txt: str,
    *,
    enhancing: bool,
) -> tuple[str, str]:
    """The category of one component's SPD (enhancing: CR/PR/SD/PD/NE; non-enhancing adds MR)."""
    what = "SPD" if enhancing else "T2/FLAIR SPD"
    gone = "all enhancing target lesions gone" if enhancing else "all T2/FLAIR target lesions gone"
    rise_pct = pct(spd, nadir)
    fall_pct = -pct(spd, base_spd)
    if not missing and spd == 0:
        return "CR", gone
    if nadir == 0 and spd > 0:
        kind = "enhancing disease" if enhancing else "T2/FLAIR disease"
        return "PD", f"{kind} reappeared ({fmt(spd)} mm²) after {what} 0 ({nadir_txt})"
    if nadir > 0 and at_least(rise_pct, 25.0):
        return "PD", (
            f"{what} rose {fmt(rise_pct)}% from nadir {fmt(nadir)} mm² ({nadir_txt}) to "
            f"{fmt(spd)} mm²" + (f" with {', '.join(missing)} not assessed" if missing else "")
        )
    if missing:
        return "NE", f"target lesion(s) {', '.join(missing)} not assessed"
    fell = f"{what} fell {fmt(fall_pct)}% from baseline {fmt(base_spd)} mm² to {fmt(spd)} mm²"
    if at_least(fall_pct, 50.0):
        return "PR", fell
    if not enhancing and at_least(fall_pct, 25.0):
        return "MR", fell + " (minor response: 25% to 50%)"
    return "SD", (
        f"{what} {fmt(spd)} mm²: {fmt(pct(spd, base_spd))}% from baseline, "
        f"{fmt(rise_pct)}% from nadir {fmt(nadir)} mm² ({nadir_txt})"
    )


#: The order of the categories when the enhancing and non-enhancing ones are combined.
_ORDER = {"CR": 4, "PR": 3, "MR": 2, "SD": 1}


def _combine(ce: tuple[str, str] | None, ne: tuple[str, str] | None) -> tuple[str | None, str]:
    """The target category of the tumour from its components (either may be absent)."""
    if ce is None and ne is None:
        return None, "non-measurable disease only"
    if ce is None or ne is None:
        only = ce or ne
        assert only is not None
        return only
    reasons = f"enhancing: {ce[1]}; non-enhancing: {ne[1]}"
    cats = (ce[0], ne[0])
    if "PD" in cats:
        return "PD", "; ".join(r for c, r in (ce, ne) if c == "PD")
    if "NE" in cats:
        return "NE", "; ".join(r for c, r in (ce, ne) if c == "NE")
    worst = min(cats, key=lambda c: _ORDER[c])
    return (
        worst,
        f"{worst} (the less favourable of enhancing {ce[0]} and T2/FLAIR {ne[0]}): " + reasons,
    )


def _subject_rows(
    s: Subject, name: str, window: int, confirm_pct: float, physio: float, rt_end: Any = None
) -> list[dict[str, Any]]:
    base = s.baseline
    base_spd, _ = _spd(s, base)
    base_ne, _ = _spd(s, base, enhancing=False)
    base_dose = base.steroid_dose_mg
    nadir, nadir_visit = base_spd, base.visit
    ne_nadir, ne_nadir_visit = base_ne, base.visit
    prelim: tuple[str, float, float, set[str]] | None = None  # visit, SPDs, new lesions
    confirmed: str | None = None
    flair = [les.lesion_id for les in s.of_kind("non-target") if not les.enhancing]
    # no target lesion: the empty SPD is not a measurement (not a target "CR")
    ce_meas = any(les.enhancing for les in s.of_kind("target"))
    ne_meas = any(not les.enhancing for les in s.of_kind("target"))
    measurable = ce_meas or ne_meas
    out = []
    for v in s.visits:
        days = int((v.date - base.date).days)
        ce_spd, ce_missing = _spd(s, v)
        ne_spd, ne_missing = _spd(s, v, enhancing=False)
        # the columns spd/change describe the enhancing component, or the T2/FLAIR one alone
        spd, missing, b_spd, nd = (
            (ce_spd, ce_missing, base_spd, nadir)
            if ce_meas
            else (ne_spd, ne_missing, base_ne, ne_nadir)
        )
        row = blank_row(s, v, COLUMNS, name)
        row.update(
            spd_mm2=math.nan if missing or not measurable else spd,
            nadir_mm2=nd if measurable else math.nan,
            ne_spd_mm2=math.nan if ne_missing or not ne_meas else ne_spd,
            steroid_dose_mg=v.steroid_dose_mg,
            clinical_status=v.clinical_status,
        )
        if v.index <= 0:
            row.update(
                response="baseline" if v.index == 0 else "pre-baseline",
                reason=(
                    "not scored"
                    if v.index < 0
                    else _baseline_reason(ce_meas, ne_meas, base_spd, base_ne)
                ),
                spd_mm2=spd if v.index == 0 and measurable else row["spd_mm2"],
            )
            out.append(row)
            continue
        nt, nt_reason, _ = nontarget_category(s, v)
        if nt == "non-CR/non-PD" and flair:
            nt, nt_reason = _stable_flair(s, v, flair, nt, nt_reason)
        new = new_lesions_present(s, v)
        ce = (
            _category(
                ce_spd,
                ce_missing,
                base_spd,
                nadir,
                _nadir_txt(nadir_visit, base.visit),
                enhancing=True,
            )
            if ce_meas
            else None
        )
        ne = (
            _category(
                ne_spd,
                ne_missing,
                base_ne,
                ne_nadir,
                _nadir_txt(ne_nadir_visit, base.visit),
                enhancing=False,
            )
            if ne_meas
            else None
        )
        target, t_reason = _combine(ce, ne)
        row.update(
            target_response=target,
            ce_response=ce[0] if ce else None,
            ne_response=ne[0] if ne else None,
            nontarget_response=nt,
            new_lesions=bool(new),
            new_lesion_ids=",".join(new),
            change_from_baseline_pct=math.nan if missing or not measurable else pct(spd, b_spd),
            change_from_nadir_pct=math.nan if missing or not measurable else pct(spd, nd),
        )
        worse = v.clinical_status == "worse"
        radiographic_pd = []
        if target == "PD":
            radiographic_pd.append(t_reason)
        if nt == "PD":
            radiographic_pd.append(nt_reason)
        if new:
            radiographic_pd.append(f"new lesion(s) {', '.join(new)}")

        if confirmed is not None:
            response, reason = "PD", f"progression confirmed at visit {confirmed}"
        elif worse:
            response = "PD"
            reason = "; ".join(["clinical deterioration", *radiographic_pd])
        elif prelim is not None:
            p_visit, p_spd, p_ne, p_new = prelim
            why = []
            for now, then, gone, what in (
                (ce_spd, p_spd, ce_missing, "SPD"),
                (ne_spd, p_ne, ne_missing, "T2/FLAIR SPD"),
            ):
                if then > 0 and not gone and at_least(pct(now, then), confirm_pct):
                    why.append(
                        f"{what} rose {fmt(pct(now, then))}% from {fmt(then)} mm² at the "
                        f"preliminary PD (visit {p_visit})"
                    )
            if set(new) - p_new:
                why.append(f"further new lesion(s) {', '.join(sorted(set(new) - p_new))}")
            if nt == "PD":
                why.append(nt_reason)
            if why:
                response, confirmed = "PD", v.visit
                reason = f"preliminary PD of visit {p_visit} confirmed: " + "; ".join(why)
            elif radiographic_pd:
                response = "preliminary PD"
                reason = f"preliminary PD since visit {p_visit} not confirmed: " + "; ".join(
                    radiographic_pd
                )
            else:
                response, reason = _non_pd(target, t_reason, nt, nt_reason, v, base_dose, physio)
                reason = f"preliminary PD of visit {p_visit} withdrawn: " + reason
                prelim = None
        elif radiographic_pd:
            after_rt = None if rt_end is None else int((v.date - rt_end).days)
            if days <= window or (after_rt is not None and after_rt <= POST_RADIOTHERAPY_DAYS):
                response = "preliminary PD"
                when = (
                    f" within {window} days of baseline"
                    if days <= window
                    else f" {after_rt} days after the end of radiotherapy ({rt_end:%Y-%m-%d}; "
                    f"within {POST_RADIOTHERAPY_DAYS // 7} weeks, RANO 2.0)"
                )
                reason = "; ".join(radiographic_pd) + when + ": needs a confirmation scan"
                prelim = (v.visit, ce_spd, ne_spd, set(new))
            else:
                response, reason = "PD", "; ".join(radiographic_pd)
        else:
            response, reason = _non_pd(target, t_reason, nt, nt_reason, v, base_dose, physio)
        row.update(response=response, reason=reason)
        out.append(row)
        if ce_meas and not ce_missing and ce_spd < nadir:
            nadir, nadir_visit = ce_spd, v.visit
        if ne_meas and not ne_missing and ne_spd < ne_nadir:
            ne_nadir, ne_nadir_visit = ne_spd, v.visit
    return out


def _nadir_txt(nadir_visit: str, base_visit: str) -> str:
    return "baseline" if nadir_visit == base_visit else f"visit {nadir_visit}"


def _baseline_reason(ce_meas: bool, ne_meas: bool, base_spd: float, base_ne: float) -> str:
    if not (ce_meas or ne_meas):
        return "no measurable disease at baseline (non-measurable disease only)"
    parts = [f"baseline SPD {fmt(base_spd)} mm²"] if ce_meas else []
    if ne_meas:
        parts.append(f"baseline T2/FLAIR SPD {fmt(base_ne)} mm²")
    return "; ".join(parts)


def _stable_flair(s: Subject, v: Any, flair: list[str], nt: str, nt_reason: str) -> tuple[str, str]:
    """RANO CR allows "stable or improved nonenhancing (T2/FLAIR) lesions": when the only
    non-target disease left is non-enhancing and not progressing, the category is CR."""
    persisting = [
        les.lesion_id
        for les in s.of_kind("non-target")
        if (o := v.obs.get(les.lesion_id)) is not None
        and o.status != "absent"
        and not (o.status is None and math.isfinite(o.diameter_mm) and o.diameter_mm == 0)
        and not (les.nodal and math.isfinite(o.diameter_mm) and o.diameter_mm < 10.0)
    ]
    if not persisting or any(lid not in flair for lid in persisting):
        return nt, nt_reason
    return "CR", (
        f"enhancing non-target disease gone; non-enhancing (T2/FLAIR) {', '.join(persisting)} "
        "stable or improved (allowed for CR by RANO)"
    )


def _non_pd(
    target: str | None,
    t_reason: str,
    nt: str | None,
    nt_reason: str,
    v: Any,
    base_dose: float,
    physio: float,
) -> tuple[str, str]:
    dose = v.steroid_dose_mg
    if target == "NE" or nt == "NE":
        return "NE", t_reason if target == "NE" else nt_reason
    if target is None:  # non-measurable disease only (Wen et al. 2010)
        return "SD", (
            f"non-measurable disease only ({nt_reason}): CR and PR need measurable disease, "
            "the best response possible is SD"
        )
    on_steroids = ""
    if target == "CR" and nt in (None, "CR"):
        if not (math.isfinite(dose) and dose > physio):
            note = "" if math.isfinite(dose) else " (corticosteroid dose not recorded)"
            if "T2/FLAIR" in nt_reason:
                note += f"; {nt_reason}"
            return "CR", t_reason + note
        # CR needs steroids off; with a dose not above baseline it is PR (Wen et al. 2010)
        on_steroids = f", but on corticosteroids ({fmt(dose)} mg/day): not CR"
    if target == "MR":
        if math.isfinite(dose) and math.isfinite(base_dose) and dose > base_dose:
            return "SD", (
                f"{t_reason}, but corticosteroids rose from {fmt(base_dose)} to {fmt(dose)} "
                "mg/day: not MR"
            )
        return "MR", t_reason
    if target in ("CR", "PR"):
        if math.isfinite(dose) and math.isfinite(base_dose) and dose > base_dose:
            return "SD", (
                f"{t_reason}, but corticosteroids rose from {fmt(base_dose)} to {fmt(dose)} "
                "mg/day: not PR"
            )
        extra = f"; {nt_reason}" if target == "CR" and not on_steroids else ""
        if on_steroids:
            on_steroids += f", not above baseline ({fmt(base_dose)} mg/day): PR"
        return "PR", t_reason + on_steroids + extra
    return "SD", t_reason
