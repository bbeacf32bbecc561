"""``tumorscope measure STUDY``: the per-lesion, per-visit table of a study."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer

from ._common import ResultsDir, StudyDir, user_errors
from ._output import Overwrite, staged_output


def measure(
    study: StudyDir,
    maps: Path = typer.Option(
        None,
        help="Folder of parameter maps, DIR/sub-<s>/ses-<v>/*.nii.gz or .../ses-<v>/maps/*.nii.gz "
        "(default: STUDY/derivatives/tumorscope if it exists).",
    ),
    out: ResultsDir = None,
    fmt: str = typer.Option("parquet", "--format", help="parquet or csv."),
    habitats: str = typer.Option(
        None, help="Comma-separated maps to cluster into habitats, e.g. ADC,Ktrans."
    ),
    n_habitats: int = typer.Option(3, help="Number of habitats."),
    radiomics: bool = typer.Option(
        False, help="Also write MIRP radiomics with deltas from baseline (slower)."
    ),
    resample: bool = typer.Option(
        False,
        help="Resample lesion maps onto maps on another grid (world coordinates trusted) "
        "instead of stopping with an error.",
    ),
    overwrite: Overwrite = False,
) -> None:
    """Measure every lesion at every visit: size, map statistics, tracking, habitats."""
    with user_errors():
        from ..errors import DataError
        from ..layout import default_out_dir
        from ..stages.lesions import measure_study, study_radiomics
        from ..volume import atomic_write

        if fmt not in ("parquet", "csv"):
            raise DataError(f"--format must be parquet or csv, got {fmt!r}", field="--format")
        policy: Literal["error", "resample"] = "resample" if resample else "error"
        hab = [h.strip() for h in habitats.split(",") if h.strip()] if habitats else None
        # every input is read and checked before anything is written
        table = measure_study(
            study, maps, habitat_maps=hab, n_habitats=n_habitats, on_grid_mismatch=policy
        )
        rad = study_radiomics(study, maps, on_grid_mismatch=policy) if radiomics else None
        folder = Path(out) if out is not None else default_out_dir(study)
        with staged_output(folder, overwrite=overwrite) as stage:
            written = [_write(table, stage.folder / f"lesions.{fmt}", fmt, atomic_write)]
            if rad is not None:
                written.append(_write(rad, stage.folder / f"radiomics.{fmt}", fmt, atomic_write))
        written = [stage.final(p) for p in written]
    n_les = table[["subject", "lesion_id"]].drop_duplicates().shape[0] if len(table) else 0
    typer.echo(f"{len(table)} rows ({n_les} lesions) -> " + ", ".join(str(p) for p in written))


def _write(df: Any, path: Path, fmt: str, atomic_write: Any) -> Path:
    if fmt == "parquet":
        atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    else:
        from ..files import write_csv

        write_csv(df, path)
    return path


def register(app: typer.Typer) -> None:
    app.command("measure")(measure)
