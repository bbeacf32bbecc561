"""DICOM import on real scanner data: tumorscope vs dcm2niix on ``../shared/dicom-real``.

For each of dcm2niix's validation sets (``shared/dicom-real/README.md``) the best of three runs
of: ``dcm2niix -z y -b y`` on the set's ``In/`` folder; ``tumorscope.io.dicom.import_dicom``
(the whole import: scan, read, dcm2niix for the vendor fields of EPI/DWI series, gzipped NIfTI,
identifier checks); and the pydicom reading alone (``scan_dicom`` + ``read_series`` without the
vendor fields). Printed as a Markdown table with the ratio import / dcm2niix.

Run: ``python benchmarks/bench_dicom_real.py [--shared ../shared/dicom-real]``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from tumorscope.io.dicom import import_dicom, read_series, scan_dicom
from tumorscope.io.dicom.convert import dcm2niix_binary

SETS = ("dcm_qa_nih", "dcm_qa_mosaic", "dcm_qa_ts", "dcm_qa_deident")


def best_of(fn: Callable[[Path], object], n: int = 3) -> float:
    times = []
    for _ in range(n):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            fn(Path(tmp))
            times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "dicom-real"
    parser.add_argument("--shared", type=Path, default=default)
    args = parser.parse_args()
    exe = dcm2niix_binary()
    if exe is None:
        raise SystemExit("dcm2niix not found")
    warnings.simplefilter("ignore")
    print("| set | files | dcm2niix | tumorscope import | reading only | import / dcm2niix |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in SETS:
        src = args.shared / name / "In"
        if not src.is_dir():
            continue
        d = best_of(
            lambda out, src=src: subprocess.run(
                [exe, "-z", "y", "-b", "y", "-f", "%s_%p", "-o", str(out), str(src)],
                capture_output=True,
                check=True,
            )
        )
        imp = best_of(lambda out, src=src: import_dicom(src, out / "study"))
        read = best_of(
            lambda out, src=src: [
                read_series(s, vendor_fields=False) for s in scan_dicom(src).series
            ]
        )
        files = sum(1 for p in src.rglob("*") if p.is_file())
        print(f"| `{name}` | {files} | {d:.2f} s | {imp:.2f} s | {read:.2f} s | {imp / d:.1f} |")


if __name__ == "__main__":
    main()
