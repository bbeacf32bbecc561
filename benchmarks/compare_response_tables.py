"""Compare the response code of two code bases on many broken and valid measurement tables.

The speed-ups of ``tumorscope.response`` (issue 21: the table read as lists, not cell by cell)
must not change a result, an error message or the field an error names. This script makes
400 variants of a small two-subject table (1-3 random cells replaced by valid or broken
values, a duplicated row, a baseline column, shuffled rows), runs ``validate_table`` (with
and without the target limits), ``assess`` (RECIST 1.1, iRECIST, RANO), ``hyperprogression``
(Champiat, Lo Russo) and ``mixed_response`` on each, and stores the outcomes; ``compare``
prints the differences::

    PYTHONPATH=/work/main/src python benchmarks/compare_response_tables.py run /tmp/old.pkl
    PYTHONPATH=src python benchmarks/compare_response_tables.py run /tmp/new.pkl
    python benchmarks/compare_response_tables.py compare /tmp/old.pkl /tmp/new.pkl

Session 4 (main f39b77f against pyside): 3,200 outcomes (553 tables, 2,647 errors), no
difference.
"""

from __future__ import annotations

import pickle
import random
import sys
from typing import Any

import pandas as pd

VALUES = {
    "kind": ["target", "non-target", "new", "bad", "nontarget"],
    "status": ["", "absent", "equivocal", "too small to measure", "unequivocal progression",
               "further progression", "present", "zzz"],
    "diameter_mm": ["", "0", "5", "12", "-1", "2000", "x", "30"],
    "organ": ["", "liver", "lung", "brain", "bone"],
    "nodal": ["true", "false", "", "maybe"],
    "date": ["2026-01-01", "2026-02-01", "2026-03-01", "2026-13-01", "2025-12-01", "2026-02-30"],
    "visit": ["0", "1", "2", "3", "a1"],
    "lesion_id": ["L1", "L2", "N1", "L3", "T1"],
    "steroid_dose_mg": ["", "4", "8"],
    "clinical_status": ["", "stable", "worse", "bogus"],
    "subject": ["1", "2"],
}  # fmt: skip


def tables(n: int = 400, seed: int = 1) -> list[pd.DataFrame]:
    rng = random.Random(seed)
    base = pd.DataFrame(
        {
            "subject": ["1"] * 9 + ["2"] * 6,
            "visit": ["0", "0", "0", "1", "1", "1", "2", "2", "2", "a1", "a1", "a2", "a2", "a3", "a3"],
            "date": ["2026-01-01"] * 3 + ["2026-02-01"] * 3 + ["2026-03-01"] * 3
            + ["2025-12-01"] * 2 + ["2026-01-10"] * 2 + ["2026-02-20"] * 2,
            "lesion_id": ["L1", "L2", "N1"] * 3 + ["T1", "T2"] * 3,
            "kind": ["target", "target", "non-target"] * 3 + ["target", "non-target"] * 3,
            "diameter_mm": [30, 20, "", 25, 18, "", 40, 22, "", 50, "", 45, "", 60, ""],
            "organ": ["liver", "lung", "liver"] * 3 + ["brain", ""] * 3,
            "status": ["", "", "present"] * 3 + ["", ""] * 3,
            "nodal": ["false"] * 15,
            "steroid_dose_mg": [""] * 15,
            "clinical_status": [""] * 15,
        }
    )  # fmt: skip
    out = []
    for k in range(n):
        t = base.copy()
        for _ in range(rng.randint(1, 3)):
            col = rng.choice(list(VALUES))
            t.loc[rng.randrange(len(t)), col] = rng.choice(VALUES[col])
        if rng.random() < 0.2:
            t = pd.concat([t, t.iloc[[rng.randrange(len(t))]]], ignore_index=True)
        if rng.random() < 0.2:
            t["baseline"] = ["true" if v in ("1", "a2") else "false" for v in t["visit"]]
        if rng.random() < 0.3:
            t = t.sample(frac=1, random_state=k).reset_index(drop=True)
        out.append(t)
    return out


def outcomes() -> list[Any]:
    from tumorscope.response import assess, validate_table
    from tumorscope.response import patterns as pat

    out: list[Any] = []
    for t in tables():
        calls = (
            lambda t=t: validate_table(t),
            lambda t=t: validate_table(t, target_limits=False),
            lambda t=t: assess(t),
            lambda t=t: assess(t, criteria="irecist"),
            lambda t=t: assess(t, criteria="rano"),
            lambda t=t: pat.hyperprogression(t),
            lambda t=t: pat.hyperprogression(t, definition="lo-russo"),
            lambda t=t: pat.mixed_response(t),
        )
        for call in calls:
            try:
                out.append(("ok", call()))
            except Exception as exc:  # every error is an outcome to compare
                out.append(("error", type(exc).__name__, str(exc), getattr(exc, "field", None)))
    return out


def differences(a: list[Any], b: list[Any]) -> list[str]:
    diffs = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x[0] != y[0]:
            diffs.append(f"{i}: {x[:3]} / {y[:3]}")
        elif x[0] == "ok":
            fa, fb = x[1], y[1]
            if not (fa.equals(fb) and list(fa.dtypes) == list(fb.dtypes)):
                diffs.append(f"{i}: tables differ")
        elif x != y:
            diffs.append(f"{i}: {x} / {y}")
    return diffs


if __name__ == "__main__":
    if sys.argv[1] == "run":
        res = outcomes()
        with open(sys.argv[2], "wb") as fh:
            pickle.dump(res, fh)
        print(f"{sum(r[0] == 'ok' for r in res)} tables, {len(res)} outcomes")
    else:
        with open(sys.argv[2], "rb") as fa, open(sys.argv[3], "rb") as fb:
            d = differences(pickle.load(fa), pickle.load(fb))
        print("\n".join(d) if d else "no difference")
        sys.exit(1 if d else 0)
