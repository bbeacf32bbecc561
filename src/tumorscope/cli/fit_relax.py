"""Relaxometry and cell-imaging commands.

* ``tumorscope fit t1 SERIES``: VFA (default) or inversion recovery T1, optional B1 map;
* ``tumorscope fit t2 SERIES``: multi-echo spin echo T2 (plain, offset or Rician floor);
* ``tumorscope fit t2star SERIES``: multi-echo gradient echo T2*/R2* (Rician floor);
* ``tumorscope iron PRE POST``: ΔR2* (or ΔR2) → apparent iron concentration maps and a
  per-label uptake table;
* ``tumorscope cells19f IMAGE``: 19F cell counts per region from reference tubes.

The acquisition comes from the BIDS sidecar beside the series (``FlipAngle`` and
``RepetitionTime``, ``EchoTime``, ``InversionTime``; times in s) unless given on the command
line (times in ms). Heavy imports happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import user_errors
from .fit import fit_app

__all__ = ["register"]


def _floats(text: str | None, option: str) -> list[float] | None:
    from ..errors import FitError

    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise FitError(f"expected comma-separated numbers, got {text!r}", field=option) from None
    if not values:
        raise FitError("expected at least one number", field=option)
    return values


def _series(path: Path, suffix: str, role: str, protocol: Any = None) -> Any:
    """The series given on the command line, with the acquisition given there (``protocol``)
    or read from its sidecar."""
    from ..io.bids import read_sidecar, sidecar_path
    from ..stages.base import read_series

    if protocol is None and not read_sidecar(path):
        from ..errors import DataError

        raise DataError(
            "no sidecar with the acquisition found; give it on the command line",
            file=sidecar_path(path),
        )
    return read_series(path, suffix, role=role, protocol=protocol)


def _echoes(te: list[float] | None) -> Any:
    from ..protocol import MultiEchoProtocol

    return None if te is None else MultiEchoProtocol(echo_times_ms=te)  # type: ignore[arg-type]


def _report(res: Any) -> Any:
    """Print what was fitted and written; return the fit."""
    import numpy as np

    first = res.maps[0]
    fit = first.fit
    n = int(fit.mask.sum())
    bad = int(np.count_nonzero((fit.status > 2) & fit.mask))
    typer.echo(f"fitted {first.model} to {n:,} voxels ({bad:,} not usable, see status)")
    pre = first.status.name[: -len("status.nii.gz")]
    for path in res.files:
        if path.name.endswith(".nii.gz"):
            typer.echo(f"  {path.name[len(pre) : -len('.nii.gz')]:<16} {path}")
    return fit


# options the three fit commands share (one definition, one help text)
_OUT = typer.Option(..., "--out", "-o", help="Output folder for the maps.")
_MASK = typer.Option(None, "--mask", help="Mask NIfTI on the series grid.")
_NOISE_SIGMA = typer.Option(
    None, "--noise-sigma", help="Rician noise level (signal units); estimated if omitted."
)
_PREFIX = typer.Option(None, "--prefix", help="File name prefix.")
_CHUNK = typer.Option(None, "--chunk-voxels", help="Voxels per block.")


@fit_app.command("t1")
def t1(
    series: Path = typer.Argument(..., help="4-D VFA or inversion recovery NIfTI series."),
    out: Path = _OUT,
    mask: Path = _MASK,
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
    prefix: str = _PREFIX,
    chunk_voxels: int = _CHUNK,
) -> None:
    """Fit T1 (VFA spoiled gradient echo or inversion recovery) and write M0, T1, R1 maps."""
    from ..errors import FitError
    from ..protocol import InversionRecoveryProtocol, VFAProtocol
    from ..stages.relaxometry import RelaxometryOptions, fit_relaxometry_series

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
        if seq == "vfa":
            if ti is not None:
                raise FitError("--inversion-times does not apply to VFA", field="--inversion-times")
            proto = None
            if fa is not None or tr_ms is not None:
                if fa is None or tr_ms is None:
                    raise FitError("give both --flip-angles and --tr-ms", field="--tr-ms")
                proto = VFAProtocol(flip_angles_deg=fa, tr_ms=tr_ms)  # type: ignore[arg-type]
            s = _series(series, "VFA", "t1_vfa", proto)
        else:
            if b1 is not None:
                raise FitError("--b1 applies to VFA only", field="--b1")
            if method != "nonlinear":
                raise FitError("--method applies to VFA only", field="--method")
            ir = None if ti is None else InversionRecoveryProtocol(inversion_times_ms=tuple(ti))
            s = _series(series, "IRT1", "t1_ir", ir)
        res = fit_relaxometry_series(
            s,
            out_dir=out,
            prefix=prefix,
            options=RelaxometryOptions(vfa_method=method, chunk_voxels=chunk_voxels),  # type: ignore[arg-type]
            mask=mask,
            voxel_maps=None if b1 is None else {"b1": b1},
        )
    _report(res)


@fit_app.command("t2")
def t2(
    series: Path = typer.Argument(..., help="4-D multi-echo spin echo NIfTI series."),
    out: Path = _OUT,
    mask: Path = _MASK,
    echo_times: str = typer.Option(None, "--echo-times", help="Echo times (ms): 10,20,30"),
    floor: str = typer.Option("none", "--floor", help="none, offset or rician."),
    noise_sigma: float = _NOISE_SIGMA,
    prefix: str = _PREFIX,
    chunk_voxels: int = _CHUNK,
) -> None:
    """Fit mono-exponential T2 and write S0, T2, R2 (and offset) maps."""
    from ..errors import FitError
    from ..stages.relaxometry import RelaxometryOptions, fit_relaxometry_series

    with user_errors():
        te = _floats(echo_times, "--echo-times")
        if floor not in ("none", "offset", "rician"):
            raise FitError(f"expected none, offset or rician, got {floor!r}", field="--floor")
        if floor == "offset" and noise_sigma is not None:
            raise FitError("--noise-sigma needs --floor rician", field="--noise-sigma")
        opts = RelaxometryOptions(
            t2_floor=floor,  # type: ignore[arg-type]
            t2_noise_sigma=noise_sigma,
            chunk_voxels=chunk_voxels,
        )
        s = _series(series, "MESE", "t2", _echoes(te))
        res = fit_relaxometry_series(s, out_dir=out, prefix=prefix, options=opts, mask=mask)
    _report(res)


@fit_app.command("t2star")
def t2star(
    series: Path = typer.Argument(..., help="4-D multi-echo gradient echo NIfTI series."),
    out: Path = _OUT,
    mask: Path = _MASK,
    echo_times: str = typer.Option(None, "--echo-times", help="Echo times (ms): 2,4,6"),
    floor: str = typer.Option("rician", "--floor", help="rician or none."),
    noise_sigma: float = _NOISE_SIGMA,
    noise_map: Path = typer.Option(
        None, "--noise-map", help="Spatially varying noise level map (NIfTI, series grid)."
    ),
    prefix: str = _PREFIX,
    chunk_voxels: int = _CHUNK,
) -> None:
    """Fit T2*/R2* (noise-floor aware) and write S0, R2star, T2star maps."""
    from ..stages.relaxometry import RelaxometryOptions, fit_relaxometry_series

    with user_errors():
        te = _floats(echo_times, "--echo-times")
        opts = RelaxometryOptions(
            t2star_floor=floor,  # type: ignore[arg-type]
            t2star_noise_sigma=noise_sigma,
            chunk_voxels=chunk_voxels,
        )
        res = fit_relaxometry_series(
            _series(series, "MEGRE", "t2star", _echoes(te)),
            out_dir=out,
            prefix=prefix,
            options=opts,
            mask=mask,
            voxel_maps=None if noise_map is None else {"noise_sigma_map": noise_map},
        )
    fit = _report(res)
    sigma = fit.provenance["options"].get("noise_sigma")
    if isinstance(sigma, int | float):
        typer.echo(f"  noise sigma      {sigma:g}")


def _write_table(path: Path, table: dict[str, Any]) -> None:
    import numpy as np

    from ..volume import atomic_write

    cols = list(table)
    n = len(next(iter(table.values()))) if table else 0
    lines = ["\t".join(cols)]
    for i in range(n):
        cells = []
        for c in cols:
            v = table[c][i]
            if isinstance(v, float | np.floating):
                cells.append("n/a" if not np.isfinite(v) else f"{float(v):.6g}")
            else:
                cells.append(str(v))
        lines.append("\t".join(cells))
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def iron(
    pre: Path = typer.Argument(..., help="R2* (or R2) map before the agent, 1/s (NIfTI)."),
    post: Path = typer.Argument(..., help="R2* map after the agent, same grid, 1/s."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    labels: Path = typer.Option(None, "--labels", help="Lesion label map for the table."),
    relaxivity: float = typer.Option(None, "--relaxivity", help="r2* in 1/(mM·s)."),
    field_strength: float = typer.Option(
        None, "--field-strength", help="1.5 or 3 (T): use ferumoxytol plasma relaxivity."
    ),
    rate: str = typer.Option("r2star", "--rate", help="r2star, r2 or r1 (table lookup)."),
    prefix: str = typer.Option("", "--prefix", help="File name prefix."),
) -> None:
    """ΔR2* → apparent iron concentration (mM Fe) maps and a per-label uptake table."""
    import json

    import numpy as np

    from ..errors import DataError
    from ..models.iron import (
        delta_rate,
        iron_concentration_mM,
        iron_uptake_table,
        resolve_relaxivity,
    )
    from ..volume import Volume, atomic_write

    with user_errors():
        a = Volume.from_nifti(pre)
        b = Volume.from_nifti(post)
        if not a.same_grid(b):
            raise DataError(
                "post-contrast map is not on the pre-contrast grid; register first",
                file=post,
                field="affine",
            )
        lab = None
        if labels is not None:
            lab_v = Volume.from_nifti(labels, dtype=np.int32)
            if not a.same_grid(lab_v):
                raise DataError("label map is not on the map grid", file=labels, field="affine")
            lab = lab_v.data
        r = resolve_relaxivity(relaxivity=relaxivity, field_strength_t=field_strength, rate=rate)
        d = delta_rate(a.data, b.data)
        fe = iron_concentration_mM(d, relaxivity=r)
        table = None
        if lab is not None:
            table = iron_uptake_table(d, lab, relaxivity=r, voxel_volume_ml=a.voxel_volume_ml)
        out.mkdir(parents=True, exist_ok=True)
        prov = {"pre": str(pre), "post": str(post), "relaxivity_per_mM_per_s": r, "rate": rate}
        for name, arr, unit in (("delta_rate", d, "1/s"), ("iron", fe, "mM")):
            p = out / f"{prefix}{name}.nii.gz"
            a.with_data(arr.astype(np.float32)).to_nifti(p)
            text = json.dumps({"Units": unit, "Provenance": prov}, indent=2) + "\n"
            atomic_write(out / f"{prefix}{name}.json", lambda tmp, t=text: tmp.write_text(t))
            typer.echo(f"  {name:<16} {p}")
        if table is not None:
            tp = out / f"{prefix}iron_uptake.tsv"
            _write_table(tp, table)
            typer.echo(f"  {'table':<16} {tp}")


def cells19f(
    image: Path = typer.Argument(..., help="19F magnitude image (3-D NIfTI)."),
    tubes: Path = typer.Option(..., "--tubes", help="Label map of the reference tubes (1..n)."),
    tube_mm: str = typer.Option(
        ..., "--tube-mM", help="19F concentration of tubes 1..n, mM of 19F: 20,60"
    ),
    regions: Path = typer.Option(..., "--regions", help="Label map of the regions to count."),
    fluorine_per_cell: float = typer.Option(
        ..., "--fluorine-per-cell", help="Mean 19F spins per cell (from NMR of the label)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output table (.tsv)."),
    background: Path = typer.Option(
        None, "--background", help="Signal-free mask to estimate the noise."
    ),
    noise_sigma: float = typer.Option(None, "--noise-sigma", help="Rician noise level."),
    alpha: float = typer.Option(0.01, "--alpha", help="False-positive rate per region."),
) -> None:
    """Count 19F-labelled cells per region (below-detection regions are reported as such)."""
    import numpy as np

    from ..errors import DataError
    from ..models.fluorine import calibrate_fluorine, count_cells
    from ..volume import Volume

    with user_errors():
        conc = _floats(tube_mm, "--tube-mM") or []
        img = Volume.from_nifti(image)
        if img.data.ndim != 3:
            raise DataError(f"expected a 3-D 19F image, got shape {img.shape}", file=image)

        def labels_of(p: Path) -> np.ndarray:
            v = Volume.from_nifti(p, dtype=np.int32)
            if not img.same_grid(v):
                raise DataError("not on the 19F image grid", file=p, field="affine")
            return v.data

        tube_lab = labels_of(tubes)
        present = sorted(int(i) for i in np.unique(tube_lab) if i > 0)
        if present != list(range(1, len(conc) + 1)):
            raise DataError(
                f"tube labels {present} do not match the {len(conc)} values of --tube-mM "
                "(expected labels 1..n, one concentration each)",
                file=tubes,
                field="--tube-mM",
            )
        bg = labels_of(background) > 0 if background is not None else None
        cal = calibrate_fluorine(
            img.data,
            [tube_lab == i for i in present],
            conc,
            voxel_volume_ml=img.voxel_volume_ml,
            noise_sigma=noise_sigma,
            background=bg,
        )
        table = count_cells(
            img.data, labels_of(regions), cal, fluorine_per_cell=fluorine_per_cell, alpha=alpha
        )
        _write_table(out, table)
    typer.echo(
        f"noise sigma {cal.noise_sigma:g}; tube SNR {', '.join(f'{s:.1f}' for s in cal.tube_snr)}"
    )
    for i, lab in enumerate(table["label"]):
        st = table["status"][i]
        if st == "quantified":
            typer.echo(
                f"  region {lab}: {table['cells'][i]:.4g} ± {table['cells_se'][i]:.2g} cells"
            )
        else:
            typer.echo(
                f"  region {lab}: below detection "
                f"(limit {table['cells_detection_limit'][i]:.3g} cells in one voxel)"
            )
    typer.echo(f"  table {out}")


def register(app: typer.Typer) -> None:
    """Add ``iron`` and ``cells19f``; the ``fit t1/t2/t2star`` commands join ``fit_app``."""
    app.command("iron")(iron)
    app.command("cells19f")(cells19f)
