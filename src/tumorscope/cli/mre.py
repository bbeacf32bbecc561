"""MR elastography and cardiac mapping commands.

* ``tumorscope fit mre SERIES``: wrapped phase series (``*_MRE.nii.gz``) → |G*| (kPa), phase
  angle φ (rad) and a confidence mask (direct inversion for one frequency, MDEV for several);
* ``tumorscope fit molli SERIES``: MOLLI / ShMOLLI inversion-recovery images → T1* and the
  Look-Locker corrected T1.

The acquisition comes from the BIDS sidecar beside the series (``VibrationFrequency``,
``PhaseOffsets``, ``EncodingDirections``, ``MotionEncodingEfficiency``; ``InversionTime``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import MaskFile, OutDir, PrefixOrDefault, user_errors
from ._output import Overwrite, staged_output
from .fit import fit_app

__all__: list[str] = []


@fit_app.command("mre")
def mre(
    series: Annotated[Path, typer.Argument(help="4-D MRE wrapped-phase NIfTI series (rad).")],
    out: OutDir,
    mask: MaskFile = None,
    unwrap: Annotated[
        str, typer.Option("--unwrap", help="Phase unwrapping: laplacian or skimage.")
    ] = "laplacian",
    smooth_mm: Annotated[
        float | None,
        typer.Option("--smooth-mm", help="Gaussian smoothing of the waves (mm; 1.5 voxels)."),
    ] = None,
    laplacian: Annotated[
        str, typer.Option("--laplacian", help="auto, 3d, or 2d (in-plane, thick slices).")
    ] = "auto",
    prefix: PrefixOrDefault = None,
    overwrite: Overwrite = False,
) -> None:
    """Invert an MRE series and write |G*| (kPa), phase angle (rad) and confidence maps."""
    import numpy as np

    from ..errors import FitError
    from ..io.bids import stem
    from ..stages.base import read_series
    from ..stages.mre import MREOptions, fit_mre_series
    from ..volume import Volume

    with user_errors(), staged_output(out, overwrite=overwrite, prefix=prefix) as stage:
        if unwrap not in ("laplacian", "skimage"):
            raise FitError(f"expected laplacian or skimage, got {unwrap!r}", field="--unwrap")
        if laplacian not in ("auto", "3d", "2d"):
            raise FitError(f"expected auto, 3d or 2d, got {laplacian!r}", field="--laplacian")
        s = read_series(series, "MRE", role="mre")
        m = None
        if mask is not None:
            mv = Volume.from_nifti(mask)
            m = np.asarray(mv.data).reshape(mv.spatial_shape) != 0
        res = fit_mre_series(
            s,
            out_dir=stage.folder,
            prefix=prefix if prefix is not None else f"{stem(series)}_",
            options=MREOptions(unwrap=unwrap, smooth_mm=smooth_mm, laplacian=laplacian),  # type: ignore[arg-type]
            mask=m,
        )
    g = res.maps[0]
    data = Volume.from_nifti(stage.final(g.path)).data
    finite = data[np.isfinite(data)]
    med = f", median {np.median(finite):.2f} kPa" if finite.size else ""
    typer.echo(f"inverted {finite.size:,} voxels{med}")
    for w in res.warnings:
        typer.echo(f"warning: {w}", err=True)
    for path in res.files:
        if path.name.endswith(".nii.gz"):
            typer.echo(f"  {stage.final(path)}")


@fit_app.command("molli")
def molli(
    series: Annotated[Path, typer.Argument(help="4-D MOLLI / ShMOLLI NIfTI series.")],
    out: OutDir,
    mask: MaskFile = None,
    prefix: PrefixOrDefault = None,
    overwrite: Overwrite = False,
) -> None:
    """Fit MOLLI T1 (A - B exp(-TI/T1*), T1 = T1*(B/A - 1)) and write its maps."""
    from ..stages.base import read_series
    from ..stages.cardiac import fit_molli_series

    with user_errors(), staged_output(out, overwrite=overwrite, prefix=prefix) as stage:
        s = read_series(series, "MOLLI", role="t1_molli")
        res = fit_molli_series(s, out_dir=stage.folder, prefix=prefix, mask=mask)
    for w in res.warnings:
        typer.echo(f"warning: {w}", err=True)
    for path in res.files:
        if path.name.endswith(".nii.gz"):
            typer.echo(f"  {stage.final(path)}")
