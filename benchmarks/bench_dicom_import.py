"""DICOM import: tumorscope (pydicom) vs dcm2niix on the synthetic vendor-style series.

The phantom (``--size``, one subject, baseline visit) is written as DICOM in each vendor style
(classic single-frame, and with the DWI as an enhanced multi-frame object), then converted by
both tools. Printed per vendor and series: conversion time (ratio ours/dcm2niix), whether the
voxel data and world geometry agree with the original NIfTI (compared in the closest canonical
orientation, since dcm2niix flips rows), and whether the acquisition fields each tool recovers
match the truth (b-values, frame times).

Run: ``python benchmarks/bench_dicom_import.py [--size tiny|default]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

from tumorscope.io import open_study
from tumorscope.io.dicom import read_series, scan_dicom
from tumorscope.phantom import make_study
from tumorscope.phantom.dicom import study_to_dicom


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    return np.asarray(img.dataobj), img.affine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny")
    args = ap.parse_args()
    exe = shutil.which("dcm2niix")
    tmp = Path(tempfile.mkdtemp())
    root = make_study(tmp / "phantom", size=args.size, seed=0, n_subjects=1)
    manifest = yaml.safe_load((root / "study.yaml").read_text())
    visits = manifest["subjects"]["001"]["visits"]
    for vid in list(visits)[1:]:
        del visits[vid]
        shutil.rmtree(root / "sub-001" / f"ses-{vid}")
    (root / "study.yaml").write_text(yaml.safe_dump(manifest))
    truth = {s.suffix: s for s in open_study(root).subjects["001"].visits["01"].series.values()}
    print(f"{'vendor':8} {'layout':9} {'series':6} {'ours s':>7} {'d2n s':>7} {'ratio':>6}  "
          f"{'ours geom/data/params':22} dcm2niix geom/data/params")  # fmt: skip
    for vendor in ("siemens", "ge", "philips"):
        for layout in ("classic", "enhanced"):
            d = tmp / f"{vendor}-{layout}"
            study_to_dicom(
                root,
                d,
                vendors=(vendor,),
                enhanced=("dwi",) if layout == "enhanced" else (),
                segmentations=False,
            )
            scan = scan_dicom(d)
            for s in scan.series:
                # both tools get a folder holding this one series, and are timed from the files
                src = tmp / "one"
                shutil.rmtree(src, ignore_errors=True)
                src.mkdir()
                for f in s.files:
                    shutil.copy(f, src / f.name)
                t0 = time.perf_counter()
                sd = read_series(scan_dicom(src).series[0], dce_baseline_frames=5)
                t_ours = time.perf_counter() - t0
                ref = truth[sd.suffix]
                vol = ref.load()
                a_data, a_aff = canonical(vol.data, vol.affine)
                o_data, o_aff = canonical(sd.volume.data, sd.volume.affine)
                ours = (
                    np.allclose(o_aff, a_aff, atol=1e-3),
                    np.array_equal(o_data, a_data),
                    sd.protocol == ref.protocol,
                )
                theirs: tuple[object, ...] = ("-", "-", "-")
                t_d2n = float("nan")
                if exe is not None:
                    out = tmp / "d2n" / f"{vendor}-{layout}-{sd.suffix}"
                    out.mkdir(parents=True)
                    t0 = time.perf_counter()
                    subprocess.run(
                        [exe, "-z", "n", "-f", "x", "-o", str(out), str(src)],
                        check=True,
                        capture_output=True,
                    )
                    t_d2n = time.perf_counter() - t0
                    niis = sorted(out.glob("x*.nii"))
                    if len(niis) != 1:
                        theirs = (f"split into {len(niis)} files", "-", "-")
                        print(
                            f"{vendor:8} {layout:9} {sd.suffix:6} {t_ours:7.3f} {t_d2n:7.3f} "
                            f"{t_ours / t_d2n:6.2f}  {ours!s:22} {theirs}"
                        )
                        continue
                    img = nib.load(niis[0])
                    d_data, d_aff = canonical(np.asarray(img.dataobj), img.affine)
                    side = json.loads(niis[0].with_suffix(".json").read_text())
                    params: object = "n/a"
                    if sd.suffix == "dwi":
                        bval = out / "x.bval"
                        params = bval.exists() and np.allclose(
                            np.loadtxt(bval),
                            ref.protocol.bvalues,  # type: ignore[union-attr]
                        )
                    elif sd.suffix == "dce":
                        params = "FrameTimes" in side or "FrameTimesStart" in side
                    theirs = (
                        np.allclose(d_aff, a_aff, atol=1e-3),
                        d_data.shape == a_data.shape and np.array_equal(d_data, a_data),
                        params,
                    )
                print(
                    f"{vendor:8} {layout:9} {sd.suffix:6} {t_ours:7.3f} {t_d2n:7.3f} "
                    f"{t_ours / t_d2n:6.2f}  {ours!s:22} {theirs}"
                )
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
