"""Compare two tumorscope result folders: database tables and files.

Used to check that a refactoring changes no result (``docs/architecture.md``)::

    python tools/compare_runs.py BEFORE/results AFTER/results

Database: every table of ``tumorscope.sqlite`` is read, the columns that record *when* or
*how long* (``started_at``, ``finished_at``, ``duration_s``, ``run_id``, ``log_file``) and
the ``runs`` table are left out, rows are sorted, and the two are compared cell by cell
(floats exactly). Columns that hold hashes of inputs (``input_hash``) or JSON provenance with
package versions are compared too, but reported in their own line, since a change of step
version or options serialisation changes them without changing a result.

Files: every file except ``logs/``, ``report/``, the database and the folder's bookkeeping
(``.tumorscope-output.json``, ``.tumorscope.lock*``: creation times, lock holders) is
compared by bytes; NIfTI images that differ in bytes are compared again by header and voxel
values, JSON files by content with each folder's absolute path replaced by ``<OUT>`` (results
of tumorscope before issue 14 named some written files by absolute path).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from pathlib import Path

VOLATILE = {"started_at", "finished_at", "duration_s", "run_id", "log_file"}
SOFT = {"input_hash", "outputs", "provenance", "sha256"}


def tables(db: Path) -> dict[str, tuple[list[str], list[tuple]]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = {}
    for (t,) in con.execute("select name from sqlite_master where type='table'"):
        if t in ("runs", "alembic_version"):
            continue
        cols = [r[1] for r in con.execute(f"pragma table_info({t})")]
        keep = [c for c in cols if c not in VOLATILE]
        rows = sorted(
            con.execute(f"select {', '.join(keep)} from {t}").fetchall(),
            key=lambda r: tuple("" if v is None else str(v) for v in r),
        )
        out[t] = (keep, rows)
    con.close()
    return out


def compare_db(a: Path, b: Path) -> int:
    ta, tb = tables(a), tables(b)
    bad = 0
    for t in sorted(set(ta) | set(tb)):
        if t not in ta or t not in tb:
            print(f"table {t}: only in {'after' if t not in ta else 'before'}")
            bad += 1
            continue
        (ca, ra), (cb, rb) = ta[t], tb[t]
        if ca != cb:
            print(f"table {t}: columns differ {ca} vs {cb}")
            bad += 1
            continue
        hard = [i for i, c in enumerate(ca) if c not in SOFT]
        soft = [i for i, c in enumerate(ca) if c in SOFT]
        ha = sorted(tuple(r[i] for i in hard) for r in ra)
        hb = sorted(tuple(r[i] for i in hard) for r in rb)
        diff = sum(x != y for x, y in zip(ha, hb, strict=False)) + abs(len(ha) - len(hb))
        sa = sorted(tuple(r[i] for i in soft) for r in ra)
        sb = sorted(tuple(r[i] for i in soft) for r in rb)
        sdiff = sum(x != y for x, y in zip(sa, sb, strict=False)) + abs(len(sa) - len(sb))
        verdict = "identical" if diff == 0 else f"{diff} rows differ"
        print(
            f"table {t:<13} {len(ra):>6} rows: {verdict}"
            + (f"; {sdiff} rows differ in {[ca[i] for i in soft]}" if sdiff else "")
        )
        if diff:
            bad += 1
            shown = 0
            for x, y in zip(ha, hb, strict=False):
                if x != y and shown < 3:
                    print("   before:", x)
                    print("   after: ", y)
                    shown += 1
    return bad


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def nifti_same(a: Path, b: Path) -> bool:
    import nibabel as nib
    import numpy as np

    ia, ib = nib.load(a), nib.load(b)
    da, db = np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj)
    return (
        da.dtype == db.dtype
        and np.array_equal(da, db, equal_nan=True)
        and np.array_equal(ia.affine, ib.affine)
    )


def _json_same(pa: Path, pb: Path, root_a: Path, root_b: Path) -> bool:
    """Same JSON once each folder's own absolute path is replaced by ``<OUT>``."""
    ta = pa.read_text().replace(str(root_a.resolve()), "<OUT>")
    tb = pb.read_text().replace(str(root_b.resolve()), "<OUT>")
    return json.loads(ta) == json.loads(tb)


def compare_files(a: Path, b: Path) -> int:
    def listing(root: Path) -> set[str]:
        return {
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file()
            and p.parts[len(root.parts)] not in ("logs", "report")
            and not p.name.startswith("tumorscope.sqlite")
            and not (p.parent == root and p.name.startswith(".tumorscope"))
        }

    fa, fb = listing(a), listing(b)
    bad = 0
    for name in sorted(fa ^ fb):
        print(f"file only {'before' if name in fa else 'after'}: {name}")
        bad += 1
    same_bytes = same_content = 0
    for name in sorted(fa & fb):
        pa, pb = a / name, b / name
        if sha(pa) == sha(pb):
            same_bytes += 1
            continue
        if name.endswith(".nii.gz") and nifti_same(pa, pb):
            same_content += 1
            continue
        if name.endswith(".json") and _json_same(pa, pb, a, b):
            same_content += 1
            continue
        print(f"file differs: {name}")
        bad += 1
    print(
        f"files: {len(fa & fb)} in both, {same_bytes} byte-identical, "
        f"{same_content} same content, {bad} differ or missing"
    )
    return bad


def main() -> int:
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    bad = compare_db(a / "tumorscope.sqlite", b / "tumorscope.sqlite")
    bad += compare_files(a, b)
    print("SAME" if bad == 0 else f"DIFFERENT ({bad})")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
