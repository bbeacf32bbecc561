"""``tumorscope fit ...``: fit signal models to series and write parameter maps.

``fit_app`` is the ``fit`` command group. Other modules add their commands to it::

    from tumorscope.cli.fit import fit_app

    @fit_app.command("dce")
    def dce(...): ...

This module imports nothing heavy at import time (the fitting code is imported inside the
commands), so ``tumorscope --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ._common import print_outputs, user_errors
from ._output import Overwrite, Staging, staged_output

if TYPE_CHECKING:
    from ..stages.fit import FitOutputs

__all__ = ["fit_app", "print_fit_outputs", "register"]

fit_app = typer.Typer(
    help="Fit signal models to a series and write parameter maps (NIfTI + JSON sidecars).",
    no_args_is_help=True,
)


@fit_app.command("dwi")
def dwi(
    series: Path = typer.Argument(..., help="4-D DWI NIfTI series (.nii or .nii.gz)."),
    model: str = typer.Option(
        "ivim", "--model", "-m", help="adc, ivim, dki, dti or dki_tensor (these two: .bvec)."
    ),
    mask: Path = typer.Option(
        None, "--mask", help="Mask NIfTI on the series grid (non-zero = fit)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the maps."),
    bval: Path = typer.Option(
        None, "--bval", help="b-value file (default: the .bval beside SERIES)."
    ),
    method: str = typer.Option(
        None,
        "--method",
        help="Fit method (adc: wlls|lls|nlls; ivim: segmented|full|bayes; dki: wlls|nlls; "
        "dti: wls|ols|nlls; dki_tensor: cwls|wls).",
    ),
    b_threshold: float = typer.Option(
        None, "--b-threshold", help="IVIM: b (s/mm²) of the segmented split."
    ),
    b_min: float = typer.Option(None, "--b-min", help="ADC: ignore b-values below this (s/mm²)."),
    b_max: float = typer.Option(None, "--b-max", help="ADC: ignore b-values above this (s/mm²)."),
    prefix: str = typer.Option(
        None, "--prefix", help="File name prefix (default '<series>_<model>_')."
    ),
    chunk_voxels: int = typer.Option(
        None, "--chunk-voxels", help="Voxels per block (memory bound)."
    ),
    region: str = typer.Option(
        "all",
        "--region",
        help="Without --mask: 'all' voxels, or 'body' (lowest-b signal >= 10% of its 99th "
        "percentile; the pipeline's default).",
    ),
    overwrite: Overwrite = False,
) -> None:
    """Fit a diffusion model (ADC, IVIM, DKI, DTI, tensor DKI) to a DWI series."""
    import warnings

    from ..errors import FitError, TumorscopeWarning
    from ..stages.diffusion import fit_dwi

    options: dict[str, object] = {}
    if method is not None:
        options["method"] = method
    given = {"--b-threshold": b_threshold, "--b-min": b_min, "--b-max": b_max}
    allowed: dict[str, set[str]] = {
        "ivim": {"--b-threshold"},
        "adc": {"--b-min", "--b-max"},
        "dki": set(),
        "dti": set(),
        "dki_tensor": set(),
    }
    with user_errors(), staged_output(out, overwrite=overwrite, prefix=prefix) as stage:
        key = model.lower()
        if key not in allowed:
            raise FitError(
                f"unknown diffusion model {model!r}; expected {', '.join(allowed)}",
                field="--model",
            )
        for flag, value in given.items():
            if value is None:
                continue
            if flag not in allowed[key]:
                raise FitError(f"{flag} does not apply to model {key!r}", field=flag)
            options[flag.lstrip("-").replace("-", "_")] = value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TumorscopeWarning)
            res = fit_dwi(
                series,
                out_dir=stage.folder,
                model=key,
                mask=mask,
                bval=bval,
                prefix=prefix,
                options=options,
                chunk_voxels=chunk_voxels,
                region=region.lower(),
            )
    method = res.fit.provenance["options"].get("method")
    summary = f"fitted {key} ({method}) to {int(res.fit.mask.sum()):,} voxels"
    print_fit_outputs(res, summary, stage)


def print_fit_outputs(res: FitOutputs, summary: str, stage: Staging | None = None) -> None:
    """Print the summary line, the fit's warnings (stderr) and one line per written map.

    For every ``tumorscope fit ...`` command (``res`` from
    :func:`tumorscope.stages.fit.fit_volume`); with ``stage``, the paths after delivery.
    """
    files = res.files if stage is None else {k: stage.final(p) for k, p in res.files.items()}
    print_outputs(summary, res.warnings, files)


def register(app: typer.Typer) -> None:
    """Add the ``fit`` command group to the root app."""
    app.add_typer(fit_app, name="fit")
