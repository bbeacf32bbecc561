"""``tumorscope run`` (the whole pipeline over a study) and ``tumorscope report``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..pipeline.options import RunOptions
from ._common import ResultsDir, StudyDir, user_errors

#: The defaults of the run options (one place: :class:`tumorscope.pipeline.options.RunOptions`).
_DEFAULTS = RunOptions()


def _run_option(flag: str, text: str, field: str | None = None) -> Any:
    """A run option of the command line: None unless given, so that study.yaml's ``options:``
    and then :class:`RunOptions` apply; its help names the default of ``field`` there."""
    if field is not None:
        value = getattr(_DEFAULTS, field)
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, float):
            value = f"{value:g}"
        text = f"{text} (default: {value})."
    return typer.Option(None, flag, help=text)


if TYPE_CHECKING:
    from rich.console import Console

    from ..pipeline.runner import RunSummary


def print_summary(summary: RunSummary, console: Console) -> None:
    """The final summary of a run: counts, failures with file and field, where things are.

    Public so that other commands (``tumorscope demo``) print the same summary.
    """
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"run {summary.run_id}", show_header=False, box=None)
    t.add_row("subjects", str(summary.n_subjects))
    t.add_row("units done", str(len(summary.done)))
    t.add_row("units up to date", str(len(summary.skipped)))
    t.add_row("units failed", f"[red]{len(summary.failed)}[/red]" if summary.failed else "0")
    t.add_row("units not run", str(len(summary.blocked)))
    t.add_row("time", f"{summary.duration_s:.1f} s")
    console.print(t)
    for name, why in summary.not_wired.items():
        console.print(f"[yellow]step {name} not available:[/yellow] {escape(why)}")
    if summary.failed:
        # one line per failure, never wrapped, so that file names can be copied and grepped
        console.print("[red]failures:[/red]")
        for f in summary.failed:
            where = ": ".join(x for x in (f.file, f.field) if x)
            console.print(
                f"[red]FAILED[/red] {f.step} {f.unit}: {escape(where)}{': ' if where else ''}"
                f"{escape(f.message)}",
                soft_wrap=True,
            )
        console.print(f"[red]failed subjects: {', '.join(summary.failed_subjects) or '-'}[/red]")
    if summary.report is not None:
        console.print(f"report: {summary.report}", soft_wrap=True)
    console.print(f"database: {summary.db_url}", soft_wrap=True)
    console.print(f"log: {summary.log_file}", soft_wrap=True)


def run(
    study: StudyDir,
    out: ResultsDir = None,
    db: str = typer.Option(
        None, "--db", help="Database URL (default: sqlite:///OUT/tumorscope.sqlite)."
    ),
    workers: int = typer.Option(
        None,
        "--workers",
        help="Run on a local Dask cluster of N worker processes (N >= 1; default: serially).",
    ),
    scheduler: str = typer.Option(
        None, "--scheduler", help="Run on an existing Dask cluster, e.g. tcp://host:8786."
    ),
    force: list[str] = typer.Option(
        [], "--force", help="Redo this step even if up to date (repeatable)."
    ),
    steps: str = typer.Option(
        None, "--steps", help="Run only these steps (comma-separated; default: all)."
    ),
    dwi_models: str = _run_option(
        "--dwi-models", "Diffusion models to fit, comma-separated", "dwi_models"
    ),
    dce_model: str = _run_option(
        "--dce-model", "Pharmacokinetic model of the DCE fit", "dce_model"
    ),
    dce_aif: str = _run_option(
        "--dce-aif",
        "Arterial input function: parker, georgiou, mcgrath, auto or an AIF file",
        "dce_aif",
    ),
    hypoxia_r2star: float = _run_option(
        "--hypoxia-r2star", "Hypoxia: R2* threshold in 1/s (no default; with --hypoxia-ktrans)."
    ),
    hypoxia_ktrans: float = _run_option(
        "--hypoxia-ktrans",
        "Hypoxia: Ktrans threshold in 1/min (no default; with --hypoxia-r2star).",
    ),
    align_tolerance: float = _run_option(
        "--align-tolerance",
        "Resample lesion masks onto a series that moved more than this many voxels",
        "align_tolerance_vox",
    ),
    dsc_method: str = _run_option(
        "--dsc-method", "DSC deconvolution: osvd, csvd, svd or tikhonov", "dsc_method"
    ),
    dsc_leakage: str = _run_option(
        "--dsc-leakage", "DSC leakage correction: bsw, bidirectional or none", "dsc_leakage"
    ),
    rcbv_threshold: float = _run_option(
        "--rcbv-threshold",
        "rCBV below which an enlarging lesion is flagged 'perfusion suggests treatment effect'",
        "perfusion_rcbv_threshold",
    ),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the HTML report."),
    adopt_folder: bool = typer.Option(
        False,
        "--adopt-folder",
        help="Write into --out even if it is a non-empty folder that is not a tumorscope "
        "output (tumorscope removes none of its files).",
    ),
    lock_timeout: float = typer.Option(
        0.0,
        "--lock-timeout",
        help="Seconds to wait for another run that holds --out (default 0: exit 2 at once).",
    ),
) -> None:
    """Run the whole analysis of a study: fits, lesions, response, database and report.

    Re-running skips what is up to date (content hashes); a failing subject does not stop
    the others. Exit code 1 if anything failed. Run options come from the command line, else
    from the ``options:`` of study.yaml, else their defaults.
    """
    from rich.console import Console

    from ..pipeline import run_study

    console = Console(stderr=False, highlight=False)
    given = {
        "dwi_models": dwi_models,
        "dce_model": dce_model,
        "dce_aif": dce_aif,
        "hypoxia_r2star_per_s": hypoxia_r2star,
        "hypoxia_ktrans_per_min": hypoxia_ktrans,
        "align_tolerance_vox": align_tolerance,
        "dsc_method": dsc_method,
        "dsc_leakage": dsc_leakage,
        "perfusion_rcbv_threshold": rcbv_threshold,
    }
    options = {k: v for k, v in given.items() if v is not None}
    executor = None
    try:
        with user_errors():
            from ..pipeline.checks import check_workers

            check_workers(workers)  # before a local cluster of that many workers starts
            if workers and not scheduler:
                # a local cluster, started and warmed up in the background while the run
                # claims its folder and plans the study: its workers share the compilation of
                # the numba kernels (Executor.warm_up) instead of each compiling them at first
                # call
                from ..pipeline.executor import Executor

                executor = Executor(workers=workers, scheduler=None, background=True, warm=True)
            summary = run_study(
                study,
                out,
                db_url=db,
                workers=workers,
                scheduler=scheduler,
                force=tuple(force),
                steps=None
                if steps is None
                else tuple(x for x in (y.strip() for y in steps.split(",")) if x),
                options=options,
                report=not no_report,
                progress=True,
                console=console,
                adopt_folder=adopt_folder,
                lock_timeout=lock_timeout,
                executor=executor,
                close_executor=True,
            )
    finally:
        if executor is not None:
            executor.close()
    print_summary(summary, console)
    raise typer.Exit(code=summary.exit_code)


def report(
    study: StudyDir,
    out: Path = typer.Option(
        None, "--out", help="Output folder of the run (default: STUDY/derivatives/tumorscope)."
    ),
    db: str = typer.Option(None, "--db", help="Database URL (default: the run's SQLite file)."),
    lock_timeout: float = typer.Option(
        0.0,
        "--lock-timeout",
        help="Seconds to wait for a run that holds the output folder (default: fail at once).",
    ),
) -> None:
    """Write the HTML reports again from the results of earlier runs."""
    from ..pipeline.runner import write_reports

    with user_errors():
        path = write_reports(study, out, db_url=db, lock_timeout=lock_timeout)
    typer.echo(f"report: {path}")
    if path.incomplete:
        typer.secho(f"warning: {path.incomplete}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("report")(report)
