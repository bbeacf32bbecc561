"""What a reader of a response table needs beyond the time-point calls: where the criteria stop
(RECIST 1.1 at progression), the best overall response under each criterion with its
confirmation rule, and where the conventional and the immune criteria disagree.

Design decisions
----------------
* **RECIST 1.1 stops at progression.** Its best overall response is "recorded from the start
  of the study treatment until disease progression" (Eisenhauer et al. 2009, section 4.4.1,
  doi:10.1016/j.ejca.2008.10.026): visits after the first PD are not RECIST 1.1 time points.
  :func:`stop_at_progression` labels them ``"after PD"`` and keeps the call the rules would
  have made in ``rescored_response`` (shown nowhere as a response). The same holds for the
  other conventional criteria (RANO 2.0, mRECIST, Choi), whose PD ends the assessment too.
  The immune criteria (iRECIST, iRANO) go on: their unconfirmed progression (iUPD,
  preliminary PD) is not final.
* **Confirmation rules** are those of :func:`tumorscope.response.best_overall_response`:
  CR/PR confirmed ≥ 28 days later for RANO and iRANO (the criteria require it), not for
  RECIST 1.1 and iRECIST (needed in non-randomised trials only; pass ``confirm=True``).
  The rule applied is written into each row (``confirmation``).
* **Disagreement** between a conventional criterion and its immune counterpart (RECIST 1.1 vs
  iRECIST, RANO vs iRANO) is reported when the best overall responses differ in rank (PD vs
  iPR, not PR vs iPR), with the immune-pattern reason (pseudoprogression) when there is one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .recist import _RANK, best_overall_response

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AFTER_PD",
    "BEST_PREFIX",
    "DISAGREEMENT_PREFIX",
    "IMMUNE_PAIRS",
    "STOP_AT_PD",
    "best_responses",
    "disagreements",
    "stop_at_progression",
]

#: Names of the ``patterns`` rows (subject level) that hold the best overall response under a
#: criterion (``"best response recist1.1"``) and the disagreement of a conventional and an
#: immune criterion (``"disagreement recist1.1/irecist"``), written by the ``assess`` step.
BEST_PREFIX = "best response "
DISAGREEMENT_PREFIX = "disagreement "

#: Label of a visit after a conventional criterion's progression.
AFTER_PD = "after PD"

#: Criteria whose PD ends the assessment.
STOP_AT_PD: frozenset[str] = frozenset({"recist1.1", "rano", "mrecist", "choi"})

#: (conventional, immune) pairs compared by :func:`disagreements`.
IMMUNE_PAIRS: tuple[tuple[str, str], ...] = (("recist1.1", "irecist"), ("rano", "irano"))

_IMMUNE_OF = dict(IMMUNE_PAIRS)


def stop_at_progression(assessment: pd.DataFrame) -> pd.DataFrame:
    """Label the visits after the first PD of a conventional criterion ``"after PD"``.

    Parameters
    ----------
    assessment : pandas.DataFrame
        Output of :func:`tumorscope.response.assess` (columns ``subject``, ``visit``,
        ``days_from_baseline``, ``response``, ``reason``, ``criteria``); several criteria may
        be stacked.

    Returns
    -------
    pandas.DataFrame
        A copy (index reset), with ``response`` ``"after PD"`` on the later visits of the criteria in
        :data:`STOP_AT_PD`, their ``reason`` saying so, and a column ``rescored_response``
        holding the call the rules would make there (empty elsewhere).
    """
    out = assessment.reset_index(drop=True)  # a copy; stacked frames repeat their indexes
    out["rescored_response"] = ""
    for (_, crit), sub in out.groupby(["subject", "criteria"], sort=False):
        if str(crit) not in STOP_AT_PD:
            continue
        sub = sub.sort_values("days_from_baseline", kind="stable")
        pd_rows = sub.index[sub["response"] == "PD"]
        if not len(pd_rows):
            continue
        first = pd_rows[0]
        pd_visit = str(sub.loc[first, "visit"])
        later = sub.index[list(sub.index).index(first) + 1 :]
        immune = _IMMUNE_OF.get(str(crit))
        go_on = f"; later visits are judged by {immune}" if immune else ""
        for i in later:
            out.loc[i, "rescored_response"] = str(out.loc[i, "response"])
            out.loc[i, "response"] = AFTER_PD
            out.loc[i, "reason"] = (
                f"{crit} stops at progression (PD at visit {pd_visit}){go_on}; "
                f"re-scored this visit would read {out.loc[i, 'rescored_response']}"
            )
    return out


def best_responses(
    assessment: pd.DataFrame,
    *,
    confirm: bool | None = None,
    confirm_days: int = 28,
    min_sd_days: int = 0,
) -> pd.DataFrame:
    """Best overall response of every subject under every criterion in ``assessment``.

    Visits labelled ``"after PD"`` (:func:`stop_at_progression`) are left out, so RECIST 1.1's
    best response after a PD is PD unless a response came before it.

    Parameters
    ----------
    assessment : pandas.DataFrame
        Stacked outputs of :func:`tumorscope.response.assess` (any criteria).
    confirm, confirm_days, min_sd_days
        As for :func:`tumorscope.response.best_overall_response` (``confirm=None``: the
        criterion's own rule).

    Returns
    -------
    pandas.DataFrame
        ``subject``, ``criteria``, ``best_response``, ``visit``, ``confirmed_at``,
        ``confirmation`` (the rule applied, plain language), ``reason``.
    """
    import pandas as pd

    cols = ["subject", "criteria", "best_response", "visit", "confirmed_at", "confirmation"]
    frames = []
    scored = assessment[assessment["response"] != AFTER_PD]
    for crit, sub in scored.groupby("criteria", sort=False):
        bor = best_overall_response(
            sub, confirm=confirm, confirm_days=confirm_days, min_sd_days=min_sd_days
        )
        needs = confirm if confirm is not None else crit in ("rano", "irano")
        bor.insert(1, "criteria", str(crit))
        bor["confirmation"] = (
            f"CR/PR confirmed at least {confirm_days} days later"
            if needs
            else "no confirmation of CR/PR required"
        )
        if crit in ("irecist", "irano"):
            bor["confirmation"] += "; unconfirmed progression is not final"
        frames.append(bor)
    if not frames:
        return pd.DataFrame(columns=[*cols, "reason"])
    out = pd.concat(frames, ignore_index=True)
    return out[[*cols, "reason"]]


def disagreements(
    best: pd.DataFrame, pseudoprogression: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Subjects whose best overall response differs between conventional and immune criteria.

    Parameters
    ----------
    best : pandas.DataFrame
        Output of :func:`best_responses`.
    pseudoprogression : pandas.DataFrame, optional
        Output of :func:`tumorscope.response.patterns.pseudoprogression` (on the immune
        criterion): its reason explains the disagreement where it flags the subject.

    Returns
    -------
    pandas.DataFrame
        One row per subject and pair present in ``best``: ``subject``, ``conventional``,
        ``immune`` (criteria names), ``conventional_best``, ``immune_best``, ``disagree``
        (bool), ``reason``.
    """
    import pandas as pd

    why: dict[str, str] = {}
    if pseudoprogression is not None and len(pseudoprogression):
        for rec in pseudoprogression.to_dict("records"):
            if rec.get("pseudoprogression") is True:
                why[str(rec["subject"])] = f"pseudoprogression: {rec['reason']}"
    by = {(str(r["subject"]), str(r["criteria"])): r for r in best.to_dict("records")}
    rows: list[dict[str, Any]] = []
    for subject in sorted({s for s, _ in by}):
        for conv, imm in IMMUNE_PAIRS:
            a, b = by.get((subject, conv)), by.get((subject, imm))
            if a is None or b is None:
                continue
            ra, rb = str(a["best_response"]), str(b["best_response"])
            differ = _RANK.get(ra, 0) != _RANK.get(rb, 0)
            if differ:
                reason = (
                    f"{conv} best {ra} (visit {a['visit'] or '–'}) but {imm} best {rb} "
                    f"(visit {b['visit'] or '–'})"
                )
                if subject in why:
                    reason += f"; {why[subject]}"
            else:
                reason = f"{conv} and {imm} agree ({ra} / {rb})"
            rows.append(
                {
                    "subject": subject,
                    "conventional": conv,
                    "immune": imm,
                    "conventional_best": ra,
                    "immune_best": rb,
                    "disagree": differ,
                    "reason": reason,
                }
            )
    cols = ["subject", "conventional", "immune", "conventional_best", "immune_best"]
    return pd.DataFrame(rows, columns=[*cols, "disagree", "reason"])
