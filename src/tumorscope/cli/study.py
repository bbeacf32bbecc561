"""``tumorscope phantom``, ``tumorscope validate`` and ``tumorscope demo``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..errors import DataError
from ._common import StudyDir, user_errors

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ..pipeline.executor import Executor


def phantom(
    out: Path = typer.Argument(..., help="Folder to write the study to (must not exist)."),
    size: str = typer.Option("default", help="tiny (tests), default (demo) or large (benchmarks)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same bytes."),
    subjects: int = typer.Option(None, help="Number of subjects (default from --size)."),
    brain_subjects: int = typer.Option(
        0, help="Brain subjects with DSC perfusion (glioma progression, pseudoprogression)."
    ),
    dsc_dual_echo: bool = typer.Option(
        False,
        "--dsc-dual-echo",
        help="The brain subjects' DSC as a dual-echo pair (perf/*_echo-1_dsc, *_echo-2_dsc).",
    ),
    overwrite: bool = typer.Option(
        False,
        help="Replace the folder if it is a phantom study written by tumorscope (study.yaml "
        "and derivatives/truth/phantom.json) or empty; any other folder is refused (exit 2).",
    ),
) -> None:
    """Write a synthetic study with known ground truth (under derivatives/truth)."""
    from ..phantom import make_study

    with user_errors():
        root = make_study(
            out,
            size=size,
            seed=seed,
            n_subjects=subjects,
            overwrite=overwrite,
            brain_subjects=brain_subjects,
            dsc_dual_echo=dsc_dual_echo,
        )
    typer.echo(f"wrote synthetic study to {root}")


def print_problems(problems: list, root: Path) -> int:
    """Print one line per problem (``ERROR file: field: message``); return the error count.

    Lines are never wrapped, so file names can be copied and grepped.
    """
    from rich.console import Console
    from rich.markup import escape

    console = Console(soft_wrap=True, highlight=False)
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    for p in problems:
        style = "red" if p.severity == "error" else "yellow"
        where = ": ".join(x for x in (p.file, p.field) if x)
        console.print(
            f"[{style}]{p.severity.upper()}[/{style}] {escape(where)}: {escape(p.message)}"
        )
    console.print(f"{root}: {len(errors)} error(s), {len(warnings)} warning(s)")
    return len(errors)


def study_problems(study: Path) -> list:
    """Every problem of a study (:func:`tumorscope.io.validate_study`) and of its run options
    (``options:`` of ``study.yaml``, checked as ``run`` checks them: the io layer does not
    know the pipeline's options)."""
    from ..io import validate_study
    from ..io.manifest import read_manifest
    from ..pipeline.options import option_problems

    problems = validate_study(study)
    manifest, _ = read_manifest(study / "study.yaml") if study.is_dir() else (None, [])
    if manifest is not None:
        problems += option_problems(manifest.options)
    return problems


def validate(
    study: StudyDir,
) -> None:
    """List every problem in a study; exit 1 if any is an error (2 if it cannot be checked)."""
    with user_errors():
        if not study.is_dir():  # nothing to check: a usage error, as for every other command
            raise DataError("study folder does not exist", file=study)
        problems = study_problems(study)
    n_err = print_problems(problems, study)
    if n_err:
        raise typer.Exit(code=1)


def demo(
    out: Path = typer.Option(
        Path("tumorscope-demo"), help="Folder for the demo study and results."
    ),
    size: str = typer.Option("default", help="Phantom size: tiny, default or large."),
    seed: int = typer.Option(0, help="Random seed of the phantom."),
    workers: int = typer.Option(
        None,
        "--workers",
        help="Worker processes of the run (a local Dask cluster); default: one per core "
        "when dask.distributed is installed and there are several cores; 1 runs serially.",
    ),
) -> None:
    """Write the built-in synthetic study and run the analysis on it (on every core)."""
    from rich.console import Console

    from ..io import open_study
    from ..phantom import make_study
    from ..phantom.generate import is_phantom_study
    from ..pipeline.outdir import check_output_folder

    console = Console()
    n = default_workers() if workers is None else workers
    with user_errors():
        from ..pipeline.checks import check_workers

        check_workers(n)  # at least 1, at most 4 per core: before any worker starts
    study_dir = out / "study"
    # the workers start (and import what a visit needs) while the phantom is written
    starting = _start_workers(n)
    try:
        with user_errors():
            # both folders are checked before anything is written (sweep of 2026-12-06: a
            # user's results/ was refused only after the phantom had been written, and a
            # user's study/ was taken for the demo's and validated)
            check_output_folder(out / "results")
            if study_dir.exists() and not is_phantom_study(study_dir):
                raise DataError(
                    "the demo writes its synthetic study here, and this folder is not one "
                    "tumorscope wrote; nothing was written: choose another --out",
                    file=study_dir,
                    field="--out",
                )
            if study_dir.exists():
                console.print(f"using the existing synthetic study in {study_dir}")
                problems = study_problems(study_dir)
                if print_problems(problems, study_dir):
                    raise typer.Exit(code=1)
            else:
                # not validated again here: the run's register step checks every series and
                # lesion map of it (validate_visit) before anything is fitted
                console.print(f"writing the synthetic study ({size}) to {study_dir} ...")
                make_study(study_dir, size=size, seed=seed)
            study = open_study(study_dir)
        console.print(f"{study!r}")
        from ..pipeline import run_study
        from .run import print_summary

        console.print("running serially" if n == 1 else f"running on {n} worker processes")
        with user_errors():
            executor = None if starting is None else starting.result()
            summary = run_study(
                study_dir,
                out / "results",
                workers=n if n > 1 else None,
                progress=True,
                console=console,
                executor=executor,
                close_executor=True,
                preflight=False,  # a study the demo has just written or validated
            )
    finally:
        _stop_workers(starting)
    print_summary(summary, console)
    raise typer.Exit(code=summary.exit_code)


def _start_workers(n: int) -> Future[Executor] | None:
    """A local Dask cluster of ``n`` workers being started (and warmed up) in a thread, or
    None for a serial run."""
    if n < 2:
        return None
    from concurrent.futures import ThreadPoolExecutor

    from ..pipeline.executor import Executor

    def start() -> Executor:
        ex = Executor(workers=n, scheduler=None)
        try:
            ex.warm_up()
        except BaseException:
            ex.close()
            raise
        return ex

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tumorscope-workers")
    try:
        return pool.submit(start)
    finally:
        pool.shutdown(wait=False)


def _stop_workers(starting: Future[Executor] | None) -> None:
    """Close the cluster of :func:`_start_workers` (waiting for it if it is still starting)."""
    if starting is None:
        return
    try:
        ex = starting.result()
    except BaseException:  # it failed to start: run_study reported it, or was not reached
        return
    ex.close()


def default_workers() -> int:
    """Worker processes of ``tumorscope demo`` by default: the number of cores (the serial
    and the Dask run give identical results, ``benchmarks/bench_pipeline.py``), 1 on a single
    core or without ``dask.distributed``."""
    import importlib.util
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cores or cores < 2 or importlib.util.find_spec("distributed") is None:
        return 1
    return int(cores)


def register(app: typer.Typer) -> None:
    app.command("phantom")(phantom)
    app.command("validate")(validate)
    app.command("demo")(demo)
