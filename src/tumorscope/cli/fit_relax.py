"""Relaxometry commands.

* ``tumorscope fit t1 SERIES``: VFA (default) or inversion recovery T1, optional B1 map;
* ``tumorscope fit t2 SERIES``: multi-echo spin echo T2 (plain, offset or Rician floor);
* ``tumorscope fit t2star SERIES``: multi-echo gradient echo T2*/R2* (Rician floor);

The acquisition comes from the BIDS sidecar beside the series (``FlipAngle`` and
``RepetitionTime``, ``EchoTime``, ``InversionTime``; times in s) unless given on the command
line (times in ms). Heavy imports happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import parse_floats, user_errors
from .fit import fit_app

__all__: list[str] = []


def _floats(text: str | None, option: str) -> list[float] | None:
    return None if text is None else parse_floats(text, option)


def _protocol(series: Path, suffix: str) -> Any:
    from ..io.bids import protocol_from_sidecar, read_sidecar, sidecar_path

    side = read_sidecar(series)
    if not side:
        from ..errors import DataError

        raise DataError(
            "no sidecar with the acquisition found; give it on the command line",
            file=sidecar_path(series),
        )
    return protocol_from_sidecar(series, suffix, side)


def _fit_and_write(
    model: Any,
    series: Path,
    *,
    out: Path,
    mask: Path | None,
    prefix: str,
    voxel_map: tuple[str, str, Path] | None = None,
    chunk_voxels: int | None = None,
) -> Any:
    """Fit ``model`` to ``series`` and write the maps atomically.

    ``voxel_map`` is ``(fit keyword, label, path)`` of a per-voxel input map (``b1`` for
    VFA, ``noise_sigma_map`` for T2*), checked on the series grid before anything is fitted
    or written.
    """
    import warnings

    import numpy as np

    from ..errors import DataError, FitError, TumorscopeWarning
    from ..files import file_sha256
    from ..stages.fit import FitOutputs, fit_volume, load_mask
    from ..volume import Volume

    vol = Volume.from_nifti(series)
    if voxel_map is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TumorscopeWarning)
            return fit_volume(
                model, vol, out_dir=out, mask=mask, prefix=prefix, chunk_voxels=chunk_voxels
            )
    keyword, label, path = voxel_map
    if vol.data.ndim != 4 or vol.n_measurements != model.n_measurements:
        raise FitError(
            f"the series has shape {vol.shape}; expected 4-D with {model.n_measurements} "
            f"{model.measurement_name}",
            file=series,
            field="dim[4]",
        )
    map_vol = Volume.from_nifti(path)
    if map_vol.spatial_shape != vol.spatial_shape or not vol.same_grid(map_vol):
        raise DataError(
            f"{label} grid {map_vol.spatial_shape} differs from the series grid "
            f"{vol.spatial_shape}; resample it first",
            file=path,
            field="affine",
        )
    m = load_mask(mask, vol)
    values = np.asarray(map_vol.data, dtype=float).reshape(vol.spatial_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        fit = model.fit(vol.data, m, chunk_voxels=chunk_voxels, **{keyword: values})
    files = {"series": series, keyword: path, **({"mask": mask} if mask is not None else {})}
    fit.provenance["inputs"] = {
        k: {"path": str(p), "sha256": file_sha256(p)} for k, p in files.items()
    }
    fit.provenance["stage"] = "fit"
    written = fit.to_nifti(out, vol.affine, prefix=prefix)
    return FitOutputs(fit, written, [])


def _report(res: Any, what: str) -> None:
    fit = res.fit
    n = int(fit.mask.sum())
    import numpy as np

    bad = int(np.count_nonzero((fit.status > 2) & fit.mask))
    typer.echo(f"fitted {what} to {n:,} voxels ({bad:,} not usable, see status)")
    for name, path in res.files.items():
        typer.echo(f"  {name:<16} {path}")


def _stem(path: Path) -> str:
    from ..io.bids import stem

    return stem(path)


@fit_app.command("t1")
def t1(
    series: Path = typer.Argument(..., help="4-D VFA or inversion recovery NIfTI series."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the maps."),
    mask: Path = typer.Option(None, "--mask", help="Mask NIfTI on the series grid."),
    sequence: str = typer.Option(
        None, "--sequence", help="vfa or ir (default: ir if the sidecar has InversionTime)."
    ),
    method: str = typer.Option(
        "nonlinear", "--method", help="VFA: nonlinear, despot1 or two_point."
    ),
    b1: Path = typer.Option(None, "--b1", help="VFA: relative flip-angle map (1 = nominal)."),
    flip_angles: str = typer.Option(None, "--flip-angles", help="VFA flip angles, deg: 2,5,12"),
    tr_ms: float = typer.Option(None, "--tr-ms", help="VFA repetition time (ms)."),
    inversion_times: str = typer.Option(None, "--inversion-times", help="IR TIs (ms)."),
    prefix: str = typer.Option(None, "--prefix", help="File name prefix."),
    chunk_voxels: int = typer.Option(None, "--chunk-voxels", help="Voxels per block."),
) -> None:
    """Fit T1 (VFA spoiled gradient echo or inversion recovery) and write M0, T1, R1 maps."""
    from ..errors import FitError
    from ..models.relaxometry import IRT1, VFAT1

    with user_errors():
        fa = _floats(flip_angles, "--flip-angles")
        ti = _floats(inversion_times, "--inversion-times")
        seq = sequence.lower() if sequence else None
        if seq not in (None, "vfa", "ir"):
            raise FitError(f"expected vfa or ir, got {sequence!r}", field="--sequence")
        if seq is None:
            if ti is not None:
                seq = "ir"
            elif fa is not None:
                seq = "vfa"
            else:
                from ..io.bids import read_sidecar

                seq = "ir" if "InversionTime" in read_sidecar(series) else "vfa"
        model: Any
        if seq == "vfa":
            if ti is not None:
                raise FitError("--inversion-times does not apply to VFA", field="--inversion-times")
            if fa is not None or tr_ms is not None:
                if fa is None or tr_ms is None:
                    raise FitError("give both --flip-angles and --tr-ms", field="--tr-ms")
                model = VFAT1(fa, tr_ms, method=method)  # type: ignore[arg-type]
            else:
                model = VFAT1.from_protocol(_protocol(series, "VFA"), method=method)
        else:
            if b1 is not None:
                raise FitError("--b1 applies to VFA only", field="--b1")
            if method != "nonlinear":
                raise FitError("--method applies to VFA only", field="--method")
            proto_ti = ti if ti is not None else _protocol(series, "IRT1").inversion_times_ms
            model = IRT1(proto_ti)
        pre = prefix if prefix is not None else f"{_stem(series)}_{model.name}_"
        res = _fit_and_write(
            model,
            series,
            out=out,
            mask=mask,
            prefix=pre,
            voxel_map=None if b1 is None else ("b1", "B1 map", b1),
            chunk_voxels=chunk_voxels,
        )
    _report(res, model.name)


@fit_app.command("t2")
def t2(
    series: Path = typer.Argument(..., help="4-D multi-echo spin echo NIfTI series."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the maps."),
    mask: Path = typer.Option(None, "--mask", help="Mask NIfTI on the series grid."),
    echo_times: str = typer.Option(None, "--echo-times", help="Echo times (ms): 10,20,30"),
    floor: str = typer.Option("none", "--floor", help="none, offset or rician."),
    noise_sigma: float = typer.Option(
        None, "--noise-sigma", help="Rician noise level (signal units); estimated if omitted."
    ),
    prefix: str = typer.Option(None, "--prefix", help="File name prefix."),
    chunk_voxels: int = typer.Option(None, "--chunk-voxels", help="Voxels per block."),
) -> None:
    """Fit mono-exponential T2 and write S0, T2, R2 (and offset) maps."""
    from ..errors import FitError
    from ..models.relaxometry import T2, T2Offset

    with user_errors():
        te = _floats(echo_times, "--echo-times")
        if te is None:
            te = list(_protocol(series, "MESE").echo_times_ms)
        model: Any
        if floor == "offset":
            if noise_sigma is not None:
                raise FitError("--noise-sigma needs --floor rician", field="--noise-sigma")
            model = T2Offset(te)
        elif floor in ("none", "rician"):
            model = T2(te, floor=floor, noise_sigma=noise_sigma)  # type: ignore[arg-type]
        else:
            raise FitError(f"expected none, offset or rician, got {floor!r}", field="--floor")
        pre = prefix if prefix is not None else f"{_stem(series)}_{model.name}_"
        res = _fit_and_write(
            model, series, out=out, mask=mask, prefix=pre, chunk_voxels=chunk_voxels
        )
    _report(res, model.name)


@fit_app.command("t2star")
def t2star(
    series: Path = typer.Argument(..., help="4-D multi-echo gradient echo NIfTI series."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the maps."),
    mask: Path = typer.Option(None, "--mask", help="Mask NIfTI on the series grid."),
    echo_times: str = typer.Option(None, "--echo-times", help="Echo times (ms): 2,4,6"),
    floor: str = typer.Option("rician", "--floor", help="rician or none."),
    noise_sigma: float = typer.Option(
        None, "--noise-sigma", help="Rician noise level (signal units); estimated if omitted."
    ),
    noise_map: Path = typer.Option(
        None, "--noise-map", help="Spatially varying noise level map (NIfTI, series grid)."
    ),
    prefix: str = typer.Option(None, "--prefix", help="File name prefix."),
    chunk_voxels: int = typer.Option(None, "--chunk-voxels", help="Voxels per block."),
) -> None:
    """Fit T2*/R2* (noise-floor aware) and write S0, R2star, T2star maps."""
    from ..models.relaxometry import T2Star

    with user_errors():
        te = _floats(echo_times, "--echo-times")
        if te is None:
            te = list(_protocol(series, "MEGRE").echo_times_ms)
        model = T2Star(te, noise_sigma=noise_sigma, floor=floor)  # type: ignore[arg-type]
        pre = prefix if prefix is not None else f"{_stem(series)}_{model.name}_"
        res = _fit_and_write(
            model,
            series,
            out=out,
            mask=mask,
            prefix=pre,
            voxel_map=None if noise_map is None else ("noise_sigma_map", "noise map", noise_map),
            chunk_voxels=chunk_voxels,
        )
    _report(res, model.name)
    sigma = res.fit.provenance["options"].get("noise_sigma")
    if isinstance(sigma, int | float):
        typer.echo(f"  noise sigma      {sigma:g}")
