"""Gzip level of the maps: write time against file size, on the maps of a real run.

Every map a run wrote (``<results>/sub-*/ses-*/maps/*.nii.gz``) is decompressed once; its
NIfTI bytes are then compressed again at each level (zlib, as ``gzip``/nibabel do), best of
``--repeats``. Prints, per level, the total compression time, the total size, and both
relative to level 1 (the level :func:`tumorscope.files.write_map` uses, nibabel's default),
split by map kind (float maps, uint8 status maps) — so the choice can be re-checked on any
data set. Then the two gzip back-ends of :mod:`tumorscope._gzip` against each other: zlib
(the standard library, what nibabel uses) and ISA-L (``isal``, the ``fast`` extra), both at
level 1: the time to compress the maps, and the time to decompress the maps and, with
``--study``, the study's own image series (``**/*.nii.gz`` under it, as written by the
scanner-side converter or the phantom), best of ``--repeats`` each, with the ratios::

    python benchmarks/bench_map_gzip.py RESULTS_DIR [--levels 1,2,3,4,6] [--repeats 2]
        [--study STUDY_DIR]
"""

from __future__ import annotations

import argparse
import gzip
import time
import zlib
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="output folder of a run")
    ap.add_argument("--levels", default="1,2,3,4,6,9")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--study", type=Path, help="a study folder: its series are decompressed too")
    args = ap.parse_args()
    files = sorted(args.results.glob("sub-*/ses-*/maps/*.nii.gz"))
    if not files:
        raise SystemExit(f"no maps under {args.results}/sub-*/ses-*/maps")
    raw = {p: gzip.decompress(p.read_bytes()) for p in files}
    kinds = {p: ("status" if p.name.endswith("_status.nii.gz") else "maps") for p in files}
    levels = [int(x) for x in args.levels.split(",")]
    rows = {}
    for level in levels:
        for kind in ("maps", "status", "all"):
            sel = [p for p in files if kind == "all" or kinds[p] == kind]
            best = float("inf")
            size = 0
            for _ in range(args.repeats):
                t = time.perf_counter()
                size = sum(len(zlib.compress(raw[p], level)) for p in sel)
                best = min(best, time.perf_counter() - t)
            rows[level, kind] = (best, size, sum(len(raw[p]) for p in sel), len(sel))
    print(f"{len(files)} maps, {sum(map(len, raw.values())) / 2**20:.1f} MB uncompressed")
    print(
        f"{'level':>5} {'kind':<7} {'files':>5} {'time s':>8} {'MB':>8} {'× raw':>7} "
        f"{'time × L1':>10} {'size × L1':>10}"
    )
    for (level, kind), (t, size, n_raw, n) in rows.items():
        t1, s1 = rows[levels[0], kind][:2]
        print(
            f"{level:>5} {kind:<7} {n:>5} {t:>8.3f} {size / 2**20:>8.2f} {size / n_raw:>7.3f} "
            f"{t / t1:>10.2f} {size / s1:>10.3f}"
        )
    _backends(raw, args.study, args.repeats)


def _best(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _backends(raw: dict[Path, bytes], study: Path | None, repeats: int) -> None:
    """zlib against ISA-L, level 1: compress the maps; decompress the maps and the series."""
    try:
        from isal import igzip
    except ImportError:
        print("\nisal is not installed (pip install isal): no back-end comparison")
        return
    blobs = list(raw.values())
    packed = [gzip.compress(b, 1, mtime=0) for b in blobs]
    series = sorted(study.glob("**/*.nii.gz")) if study else []
    series_gz = [p.read_bytes() for p in series]
    rows = [
        (
            "compress maps",
            _best(lambda: [gzip.compress(b, 1, mtime=0) for b in blobs], repeats),
            _best(lambda: [igzip.compress(b, 1, mtime=0) for b in blobs], repeats),
            sum(map(len, blobs)),
        ),
        (
            "decompress maps",
            _best(lambda: [gzip.decompress(b) for b in packed], repeats),
            _best(lambda: [igzip.decompress(b) for b in packed], repeats),
            sum(map(len, blobs)),
        ),
    ]
    if series_gz:
        rows.append(
            (
                f"decompress {len(series)} series",
                _best(lambda: [gzip.decompress(b) for b in series_gz], repeats),
                _best(lambda: [igzip.decompress(b) for b in series_gz], repeats),
                sum(len(gzip.decompress(b)) for b in series_gz),
            )
        )
    print(
        f"\n{'gzip back-ends, level 1':<28} {'MB':>8} {'zlib s':>8} {'ISA-L s':>8} {'zlib/ISA-L':>11}"
    )
    for name, tz, ti, n in rows:
        print(f"{name:<28} {n / 2**20:>8.1f} {tz:>8.3f} {ti:>8.3f} {tz / ti:>11.2f}")


if __name__ == "__main__":
    main()
