"""``tumorscope assess``: response criteria over a measurement table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import user_errors
from ._output import Overwrite, staged_output


def assess(
    table: Path = typer.Argument(
        ...,
        help="Measurement table (CSV; .tsv for tab-separated), or a study folder: its lesions "
        "are measured from the masks first.",
    ),
    criteria: str = typer.Option(
        "recist1.1",
        "--criteria",
        "-c",
        help="recist1.1, irecist, rano, irano, mrecist, choi, percist or impercist (FDG PET: "
        "a table with sul_peak and the liver reference, docs/pet.md).",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="Folder for <table>_<criteria>.csv and .json (default: beside the table; for a "
        "study, derivatives/response).",
    ),
    confirm: bool = typer.Option(
        None,
        "--confirm/--no-confirm",
        help="Require confirmation of CR/PR for the best response (default: RANO yes, RECIST no).",
    ),
    min_sd_days: int = typer.Option(
        0, help="Minimum days from baseline for stable disease to count."
    ),
    overwrite: Overwrite = False,
) -> None:
    """Score every visit of every subject and print the responses with their reasons."""
    import json

    from rich.console import Console
    from rich.table import Table

    from ..files import write_csv, write_json
    from ..response import assess as run_assess
    from ..response import best_overall_response

    console = Console()
    with user_errors():
        if table.is_dir():
            source = _from_study(table)
            folder = out if out is not None else table / "derivatives" / "response"
            stem_base = "measurements"
        else:
            source, folder, stem_base = table, out if out is not None else table.parent, table.stem
        result = run_assess(source, criteria=criteria)
        name = str(result["criteria"].iloc[0])
        pet = name.startswith(("percist", "impercist"))  # no best overall response (yet)
        bor = (
            result.iloc[0:0][["subject"]]
            if pet
            else best_overall_response(result, confirm=confirm, min_sd_days=min_sd_days)
        )
        stem = f"{stem_base}_{name}"
        csv_path = folder / f"{stem}.csv"
        json_path = folder / f"{stem}.json"
        printable = result.assign(date=result["date"].dt.strftime("%Y-%m-%d"))
        payload = {
            "criteria": name,
            "table": str(table),
            "visits": json.loads(printable.to_json(orient="records")),
            "best_overall_response": json.loads(bor.to_json(orient="records")),
        }
        with staged_output(folder, overwrite=overwrite) as stage:
            if table.is_dir():
                measured = source.drop(columns=["row"])
                write_csv(measured, stage.folder / "measurements.csv")
            write_csv(printable, stage.folder / csv_path.name)
            write_json(stage.folder / json_path.name, payload)

    view = Table(title=_plain(f"{name} responses: {table.name}")[0], show_lines=False)
    for col in ("subject", "visit", "date", "response", "sum", "Δbase", "Δnadir"):
        view.add_column(col, no_wrap=True)
    view.add_column("reason", overflow="fold", min_width=30)
    size_col = "spd_mm2" if name in ("rano", "irano") else "sul_peak" if pet else "sum_mm"
    for r in printable.itertuples(index=False):
        size = getattr(r, size_col)
        view.add_row(
            *_plain(r.subject, r.visit, r.date, r.response),
            "" if size != size else f"{size:.1f}",
            _pct(r.change_from_baseline_pct),
            _pct(getattr(r, "change_from_nadir_pct", float("nan"))),
            *_plain(r.reason),
        )
    console.print(view)
    best = Table(title="best overall response")
    for col in ("subject", "best response", "visit", "confirmed at", "reason"):
        best.add_column(col, overflow="fold")
    for b in bor.itertuples(index=False):
        best.add_row(*_plain(b.subject, b.best_response, b.visit, b.confirmed_at, b.reason))
    console.print(best)
    console.print(*_plain(f"wrote {csv_path} and {json_path}"))


def _from_study(root: Path) -> Any:
    """The measurement table of a study: lesions measured from the masks (and the maps the
    pipeline wrote, if any), baselines from the manifest."""
    from ..io import open_study
    from ..response import from_lesion_table
    from ..stages.lesions import measure_study

    study = open_study(root)
    lesions = measure_study(study)
    rt_end = {
        s.id: s.treatment.radiotherapy_end_date
        for s in study
        if s.treatment.radiotherapy_end_date is not None
    }
    return from_lesion_table(
        lesions,
        baseline={s.id: s.baseline.id for s in study},
        radiotherapy_end=rt_end or None,
    )


def _plain(*values: Any) -> list[Any]:
    """User text as Rich ``Text`` (shown as written: ``[/x]`` is not markup)."""
    from rich.text import Text

    return [Text(str(v)) for v in values]


def _pct(x: float) -> str:
    return "" if x != x else f"{x:+.1f}%"


def register(app: typer.Typer) -> None:
    app.command(name="assess")(assess)
