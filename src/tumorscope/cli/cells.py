"""Cell-imaging commands, thin adapters over the stages the pipeline runs.

* ``tumorscope iron PRE POST``: ΔR2* → apparent iron maps (:mod:`tumorscope.stages.iron`),
  and a per-label uptake table;
* ``tumorscope cells19f IMAGE``: 19F cell counts per region from reference tubes
  (:mod:`tumorscope.stages.fluorine`).

Given the same inputs, a command writes the same files, byte for byte and under the same names,
as the pipeline's ``iron`` and ``fluorine`` steps (``docs/cell-imaging.md``). Heavy imports
happen inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import parse_floats, user_errors
from ._output import Overwrite, staged_output

__all__ = ["register"]


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as a TSV table (floats to 6 significant digits, NaN as ``n/a``), atomically."""
    import numpy as np

    from ..files import csv_cell
    from ..volume import atomic_write

    cols = list(rows[0]) if rows else []
    lines = ["\t".join(csv_cell(str(c)) for c in cols)]
    for row in rows:
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float | np.floating):
                cells.append("n/a" if not np.isfinite(v) else f"{float(v):.6g}")
            else:
                cells.append(csv_cell(str(v)))  # text from sidecars: no formula
        lines.append("\t".join(cells))
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _columns_to_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    n = len(next(iter(table.values()))) if table else 0
    return [{k: v[i] for k, v in table.items()} for i in range(n)]


def _labels_on(path: Path, like: Any, what: str) -> Any:
    """An int32 label map that must be on the grid of ``like`` (a Volume)."""
    import numpy as np

    from ..errors import DataError
    from ..volume import Volume

    vol = Volume.from_nifti(path, dtype=np.int32)
    if not like.same_grid(vol):
        raise DataError(f"label map is not on the {what} grid", file=path, field="affine")
    return vol


def iron(
    pre: Path = typer.Argument(..., help="R2* (or R2, R1) map before the agent, 1/s (NIfTI)."),
    post: Path = typer.Argument(
        ..., help="R2* map after the agent (3-D), or the post-contrast MEGRE series (4-D)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    labels: Path = typer.Option(None, "--labels", help="Lesion label map for the table."),
    relaxivity: float = typer.Option(None, "--relaxivity", help="r2* in 1/(mM·s)."),
    field_strength: float = typer.Option(
        None,
        "--field-strength",
        help="1.5 or 3 (T): use ferumoxytol plasma relaxivity (default: POST's sidecar).",
    ),
    rate: str = typer.Option("r2star", "--rate", help="r2star, r2 or r1 (table lookup)."),
    pre_status: Path = typer.Option(None, "--pre-status", help="Status map of the PRE fit."),
    post_status: Path = typer.Option(
        None, "--post-status", help="Status map of the POST fit (a fitted series has its own)."
    ),
    prefix: str = typer.Option("", "--prefix", help="File name prefix."),
    overwrite: Overwrite = False,
) -> None:
    """ΔR2* → apparent iron concentration (mM Fe) maps and a per-label uptake table.

    PRE is the pre-contrast R2* map (1/s), e.g. from 'tumorscope fit t2star' or the
    pipeline's t2star_R2star map (its status map with --pre-status). POST is either the
    post-contrast R2* map on the same grid, or the post-contrast multi-echo gradient echo
    series itself (4-D, BIDS sidecar beside it): it is then fitted as the pipeline's iron step
    does (maps <prefix>t2star_post_*), with the field strength from its sidecar.

    The maps are named as the pipeline names them: <prefix>iron_dR2star (iron_dR2, iron_dR1
    with --rate), <prefix>iron_Fe and, when a fit status is known, <prefix>iron_status. With
    the pipeline's prefix and the same inputs they are the pipeline's files, byte for byte;
    their provenance names PRE and POST as given here.
    """
    from ..stages.iron import iron_from_rates, iron_maps
    from ..volume import Volume

    with user_errors(), staged_output(out, overwrite=overwrite, prefix=prefix) as stage:
        options = _iron_options(relaxivity, field_strength, rate)
        pre_vol = Volume.from_nifti(pre)
        lab = None if labels is None else _labels_on(labels, pre_vol, "map")
        series = _post_series(post, options)
        kw: dict[str, Any] = {"out_dir": stage.folder, "prefix": prefix, "options": options}
        if series.protocol is not None:
            if post_status is not None:
                raise _usage("a fitted post-contrast series has its own status", "--post-status")
            res = iron_maps(series, pre, pre_status, pre_label=str(pre), **kw)
            post_map = next(m.path for m in res.maps if m.name == "t2star_post.R2star")
        else:
            res = iron_from_rates(pre, series.path, post=series, pre_status=pre_status,
                                  post_status=post_status, pre_label=str(pre), **kw)  # fmt: skip
            post_map = series.path
        if lab is not None:
            tp = stage.folder / f"{prefix}iron_uptake.tsv"
            _write_table(tp, _uptake_rows(pre_vol, post_map, lab, res))
    for m in res.maps:
        typer.echo(f"  {m.name:<20} {stage.final(m.path)}")
    if lab is not None:
        typer.echo(f"  {'table':<20} {stage.final(tp)}")


def _usage(message: str, option: str) -> Exception:
    from ..errors import FitError

    return FitError(message, field=option)


def _iron_options(relaxivity: float | None, field_strength: float | None, rate: str) -> Any:
    from ..stages.iron import IronOptions

    if rate not in ("r2star", "r2", "r1"):
        raise _usage(f"expected r2star, r2 or r1, got {rate!r}", "--rate")
    return IronOptions(relaxivity, field_strength, rate)  # type: ignore[arg-type]


def _post_series(post: Path, options: Any) -> Any:
    """POST as a stage input: a MEGRE series (4-D, with its protocol) or a rate map (3-D).

    The path is resolved (provenance hashes name the file absolutely, as in a study); the
    label, which provenance and messages show, is the path as given.
    """
    import dataclasses

    import nibabel as nib

    from ..errors import DataError
    from ..io.bids import read_sidecar
    from ..stages.base import SeriesInput, read_series

    if not post.is_file():
        raise DataError("file not found", file=post, field="POST")
    path = post.resolve()
    role = "t2star_ferumoxytol"
    img: Any = nib.load(str(path))
    if len(img.shape) == 4 and img.shape[3] > 1:
        if options.rate != "r2star":
            raise _usage("a post-contrast series is fitted for R2*: use --rate r2star", "--rate")
        series = read_series(path, "MEGRE", role=role)
    else:
        series = SeriesInput(path, role, None, read_sidecar(path), {"series": path})
    series = dataclasses.replace(series, label=str(post))
    known = options.relaxivity is not None or options.field_strength_t is not None
    if not known and series.sidecar.get("MagneticFieldStrength") is None:
        raise _usage(
            "give --relaxivity (1/(mM*s)) or --field-strength (1.5 or 3 T) for the ferumoxytol "
            "relaxivity: POST's sidecar has no MagneticFieldStrength",
            "--relaxivity",
        )
    return series


def _uptake_rows(pre: Any, post_map: Path, lab: Any, res: Any) -> list[dict[str, Any]]:
    """The per-label uptake table, with the relaxivity the stage used (from its sidecar)."""
    from ..files import read_sidecar
    from ..models.cells.iron import delta_rate, iron_uptake_table
    from ..volume import Volume

    fe = next(m.path for m in res.maps if m.name == "iron.Fe")
    r = read_sidecar(fe)["Provenance"]["options"]["relaxivity_per_mM_s"]
    d = delta_rate(pre.data, Volume.from_nifti(post_map).data)
    table = iron_uptake_table(d, lab.data, relaxivity=r, voxel_volume_ml=pre.voxel_volume_ml)
    return _columns_to_rows(table)


_TUBE_HELP = "19F mM of tubes 1..n: 20,60 (default: the image sidecar's ReferenceTubes)."
_PER_CELL_HELP = "Mean 19F spins per cell, from NMR (default: the sidecar's FluorinePerCell)."


def cells19f(
    image: Path = typer.Argument(..., help="19F magnitude image (3-D NIfTI)."),
    tubes: Path = typer.Option(..., "--tubes", help="Label map of the reference tubes (1..n)."),
    tube_mm: str = typer.Option(None, "--tube-mM", help=_TUBE_HELP),
    regions: Path = typer.Option(..., "--regions", help="Label map of the regions to count."),
    fluorine_per_cell: float = typer.Option(None, "--fluorine-per-cell", help=_PER_CELL_HELP),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output table: .tsv (one row per label) or .parquet."
    ),
    background: Path = typer.Option(
        None, "--background", help="Signal-free mask to estimate the noise."
    ),
    noise_sigma: float = typer.Option(None, "--noise-sigma", help="Rician noise level."),
    anatomical: Path = typer.Option(
        None,
        "--anatomical",
        help="Anatomical image on the grid: estimate the noise outside the body, as the "
        "pipeline does.",
    ),
    alpha: float = typer.Option(0.01, "--alpha", help="False-positive rate per region."),
    lesion_table: Path = typer.Option(
        None, "--lesion-table", help="Lesion table (TSV: label, lesion_id) naming the regions."
    ),
    subject: str = typer.Option(None, "--subject", help="Subject column of a .parquet table."),
    visit: str = typer.Option(None, "--visit", help="Visit column of a .parquet table."),
    overwrite: Overwrite = False,
) -> None:
    """Count 19F-labelled cells per region (below-detection regions are reported as such).

    A .tsv table holds one row per label (the counts); a .parquet table is the one the
    pipeline's fluorine step writes (sub-<s>_ses-<v>_cells19F.parquet): with --subject,
    --visit, --lesion-table and --anatomical it is that file, byte for byte.
    """
    from ..stages.fluorine import FluorineOptions, count_cells_19f

    with user_errors(), staged_output(out.parent, overwrite=overwrite) as stage:
        table = stage.folder / out.name
        img = _series(image, "fluorine")
        tube = _series(tubes, "fluorine_tubes")
        conc = None if tube_mm is None else _tube_concentrations(tube_mm, tubes)
        options = FluorineOptions(conc, fluorine_per_cell, noise_sigma, alpha)
        keys = {k: v for k, v in (("subject", subject), ("visit", visit)) if v is not None}
        parquet = out.name.endswith(".parquet")
        res = count_cells_19f(
            img,
            tube,
            None if anatomical is None else _series(anatomical, "anatomical"),
            _volume(regions),
            None if lesion_table is None else _lesion_ids(lesion_table),
            table_path=table if parquet else None,
            options=options,
            keys=keys,
            background=None if background is None else _volume(background),
        )
        if not parquet:
            _write_table(table, res.rows["counts"])
    for note in res.warnings:
        typer.echo(note)
    for r in res.rows["cells19f"]:
        if r["status"] == "quantified":
            typer.echo(f"  region {r['lesion_id']}: {r['cells']:.4g} ± {r['cells_se']:.2g} cells")
        else:
            typer.echo(
                f"  region {r['lesion_id']}: below detection "
                f"(limit {r['cells_detection_limit']:.3g} cells in one voxel)"
            )
    typer.echo(f"  table {out}")


def _series(path: Path, role: str) -> Any:
    """An image given on the command line as a stage input (sidecar read if present)."""
    from ..errors import DataError
    from ..io.bids import read_sidecar
    from ..stages.base import SeriesInput

    if not path.is_file():
        raise DataError("file not found", file=path, field=role)
    resolved = path.resolve()
    return SeriesInput(
        resolved, role, None, read_sidecar(resolved), {"series": resolved}, str(path)
    )


def _volume(path: Path) -> Any:
    import numpy as np

    from ..volume import Volume

    return Volume.from_nifti(path, dtype=np.int32)


def _tube_concentrations(text: str, tubes: Path) -> dict[int, float]:
    """``--tube-mM`` as {label: mM}; the tube map must hold exactly the labels 1..n."""
    import numpy as np

    from ..errors import DataError

    conc = parse_floats(text, "--tube-mM")
    present = sorted(int(i) for i in np.unique(_volume(tubes).data) if i > 0)
    if present != list(range(1, len(conc) + 1)):
        raise DataError(
            f"tube labels {present} do not match the {len(conc)} values of --tube-mM "
            "(expected labels 1..n, one concentration each)",
            file=tubes,
            field="--tube-mM",
        )
    return {i + 1: c for i, c in enumerate(conc)}


def _lesion_ids(path: Path) -> dict[int, str]:
    """``{label: lesion_id}`` from a lesion table (TSV with ``label`` and ``lesion_id``)."""
    import csv

    from ..errors import DataError

    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return {
                int(r["label"]): str(r["lesion_id"]) for r in csv.DictReader(fh, delimiter="\t")
            }
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read the lesion table: {exc}", file=path) from exc


def register(app: typer.Typer) -> None:
    """Add ``iron`` and ``cells19f``."""
    app.command("iron")(iron)
    app.command("cells19f")(cells19f)
