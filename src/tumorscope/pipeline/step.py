"""The step framework: units of work, the context, what a step declares and returns.

A :class:`Step` works on one *unit*: a visit (``scope="visit"``) or a subject
(``scope="subject"``). It declares

- ``inputs``: the study files its result depends on (hashed by content),
- ``requires``: the steps whose outputs it reads (their output hashes join its input hash),
- ``run``: the work. It runs on a worker process, writes its files atomically under the
  output folder and *returns* its database rows (:class:`Write`); it never touches the
  database. The runner records the rows and the step's memory in one transaction.

Because the worker only returns rows, the database is written by one process (the client),
which keeps SQLite safe under Dask and makes a unit of work all-or-nothing.

Files are the interface between steps (where they are: :mod:`tumorscope.layout`): the maps of
a fit step and their index (:func:`record_maps`, read back by :func:`maps_of_visit`), the
per-subject measurement table of ``measure``, read by ``assess`` and ``report_subject``. Their
content hashes decide what is up to date. The steps themselves are listed in
:data:`tumorscope.pipeline.steps.STEPS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import layout
from ..errors import DataError, Problem
from ..stages.base import MapFile
from .options import RunOptions

if TYPE_CHECKING:
    from ..io import Study, Visit

__all__ = [
    "MAP_STEPS",
    "Context",
    "Step",
    "StepOutput",
    "Unit",
    "Upstream",
    "Write",
    "applied_alignments",
    "map_series_of_visit",
    "maps_of_visit",
]

#: Steps that write parameter maps (each writes a map index per visit, read by the later steps).
MAP_STEPS = (
    "fit_dwi",
    "fit_dce",
    "fit_relax",
    "fit_dsc",
    "iron",
    "fit_mre",
    "fit_cardiac",
    "pet",
    "fit_cest",
)


@dataclass(frozen=True)
class Unit:
    """One unit of work: a step on a subject, on one visit of a subject, or (subject "") the
    whole study."""

    step: str
    subject: str
    visit: str | None = None

    @property
    def key(self) -> str:
        """``sub-001``, ``sub-001/ses-01`` or ``study`` (the ``unit`` column of ``step_runs``)."""
        if not self.subject:
            return "study"
        base = f"sub-{self.subject}"
        return base if self.visit is None else f"{base}/ses-{self.visit}"

    def __str__(self) -> str:
        return f"{self.step} {self.key}"


@dataclass(frozen=True)
class Context:
    """What every step needs to find its inputs and outputs (picklable, sent to workers).

    Attributes
    ----------
    study_root : Path
    out_dir : Path
        The output folder (paths in it: :mod:`tumorscope.layout`).
    options : RunOptions
        The run's options (it also answers ``options.get(name, default)``).
    """

    study_root: Path
    out_dir: Path
    options: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        if not isinstance(self.options, RunOptions):  # a mapping of option names (checked)
            object.__setattr__(self, "options", RunOptions.from_mapping(self.options))

    def out_rel(self, path: Path) -> str:
        """Path relative to the output folder (how outputs are named in the database)."""
        return self._relative(path, self.out_dir)

    def in_rel(self, path: Path) -> str:
        """Path relative to the study root (how inputs are named in hashes and tables)."""
        return self._relative(path, self.study_root)

    # ``Path(path).resolve().relative_to(root.resolve()).as_posix()``, which walked every
    # component of both paths with ``lstat`` (~50 µs here) for each of the hundreds of files
    # a unit names in a few folders. The folders' resolved paths are kept for the life of
    # this object (not pickled: a worker resolves them on its own machine), and a file's is
    # its folder's plus its name unless the name itself is a link (checked: one ``lstat``);
    # the names are those of the expression above (tests/pipeline/test_step_paths.py) as
    # long as no folder of the run is replaced by a link while the run goes on.

    def _relative(self, path: Path, root: Path) -> str:
        full = self._resolved(os.fspath(path))
        base = self._resolved_dir(os.fspath(root))
        if os.sep != "/":  # pragma: no cover - POSIX here; elsewhere pathlib's rules
            return Path(full).relative_to(base).as_posix()
        if full == base:
            return "."
        prefix = base if base.endswith("/") else base + "/"
        if not full.startswith(prefix):
            raise ValueError(f"{full!r} is not in the subpath of {base!r}")
        return full[len(prefix) :]

    def _resolved_dir(self, folder: str) -> str:
        cache: dict[str, str] | None = self.__dict__.get("_dirs")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_dirs", cache)
        got = cache.get(folder)
        if got is None:
            got = cache[folder] = str(Path(folder).resolve())
        return got

    def _resolved(self, path: str) -> str:
        folder, name = os.path.split(path)
        if not os.path.isabs(path) or name in ("", ".", "..") or os.path.islink(path):
            return str(Path(path).resolve())
        return os.path.join(self._resolved_dir(folder), name)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_dirs", None)
        return state


@dataclass
class Write:
    """Rows a unit of work owns in one table.

    ``mode="replace"`` deletes the rows matching ``where`` then inserts ``rows``;
    ``mode="upsert"`` inserts or updates by primary key (used for subjects and visits, whose
    deletion would cascade to the results of other steps).
    """

    table: str
    where: dict[str, Any]
    rows: list[dict[str, Any]]
    mode: Literal["replace", "upsert"] = "replace"


@dataclass
class StepOutput:
    """What a step returns: the files it wrote, its rows, and log lines."""

    files: list[Path] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: Output hashes of the required steps: ``{step: {unit_key: {relative path: sha256}}}``.
Upstream = dict[str, dict[str, dict[str, str]]]


@dataclass(frozen=True)
class Step:
    """A pipeline step (see the module docstring)."""

    name: str
    scope: Literal["subject", "visit"]
    version: str
    description: str
    run: Callable[[Context, Study, Unit, Upstream], StepOutput]
    inputs: Callable[[Context, Study, Unit], list[Path]]
    requires: tuple[str, ...] = ()
    applies: Callable[[Study, Unit], bool] = lambda study, unit: True
    #: None when the step can run here, else why not (a module not installed or not written)
    missing: Callable[[], str | None] = lambda: None
    #: option names that change this step's results
    option_keys: tuple[str, ...] = ()
    #: what the step's units hold that no two units may hold at once when a subject's units
    #: run two at a time (``execute_subject``), e.g. a library that is not thread-safe
    exclusive: tuple[str, ...] = ()
    #: the numpy peak of one unit, as a multiple of the largest image among its inputs held
    #: as float32 (measured on the large phantom by ``benchmarks/bench_visit.py``, rounded
    #: up); 0: small beside the images (not counted), ``inf``: not bounded by its inputs (it
    #: runs beside no other counted unit). Two counted units run at once only when their
    #: estimates fit the subject's memory budget (:func:`.execute.memory_budget`)
    memory: float = 0.0
    #: the seconds one unit takes, roughly (serial, warm, on the large phantom's visit or the
    #: demo's; ``benchmarks/bench_visit.py``): the default mode starts the ready unit on the
    #: longest chain of steps first (:func:`.execute.step_ranks`); 0.1 for a small step
    cost: float = 0.1


# ---------------------------------------------------------------------------- inputs


def _visit(study: Study, unit: Unit) -> Visit:
    assert unit.visit is not None
    return study.subjects[unit.subject].visits[unit.visit]


def _series_files(path: Path) -> list[Path]:
    """An image and its sidecars (``.json``, ``.bval``, ``.bvec``) that exist."""
    name = path.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem
    extra = [path.with_name(stem + ext) for ext in (".json", ".bval", ".bvec")]
    return [path, *[p for p in extra if p.exists()]]


def _lesion_files(visit: Visit) -> list[Path]:
    les = visit.lesions
    if les is None:
        return []
    return [les.map_path, *([les.table_path] if les.table_path.exists() else [])]


def _manifest_file(ctx: Context) -> Path:
    return ctx.study_root / "study.yaml"


def _has_module(module: str, attr: str | None = None) -> str | None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        return f"{module} cannot be imported ({exc})"
    if attr is not None and not hasattr(mod, attr):
        return f"{module}.{attr} does not exist yet"
    return None


def _problems_error(problems: list[Problem], what: str) -> DataError:
    first = problems[0]
    listing = "; ".join(str(p) for p in problems[:10])
    more = f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
    return DataError(
        f"{len(problems)} error(s) in {what}: {listing}{more}",
        file=first.file,
        field=first.field or None,
    )


# ---------------------------------------------------------------------------- maps


def _quality(fit: Any) -> tuple[int, int]:
    """Voxels fitted and voxels converged of a fit."""
    import numpy as np

    from ..fitting.status import FitStatus

    st = np.asarray(fit.status)
    return int((st != FitStatus.NOT_FITTED).sum()), int((st == FitStatus.CONVERGED).sum())


def record_maps(
    ctx: Context, step: str, unit: Unit, entries: Sequence[MapFile], files: list[Path]
) -> StepOutput:
    """Rows of the ``maps`` table and the visit's map index for the maps a fit step wrote.

    Parameters
    ----------
    ctx, step, unit
        The unit of work (a visit).
    entries : sequence of MapFile
        The maps (:class:`tumorscope.stages.base.MapFile`: model, parameter, path, status,
        series, fit), e.g. ``StageResult.maps`` of a stage.
    files : list of Path
        Every file the step wrote (the index is added).

    The index (:func:`tumorscope.layout.map_index_path`: map name -> path, status map, unit,
    series) is how the later steps, which never read the database, find the maps; it is one of
    the step's outputs, so its hash makes them re-run when the maps change.
    """
    from ..files import file_sha256, read_sidecar, write_json

    assert unit.visit is not None
    rows: list[dict[str, Any]] = []
    index: dict[str, dict[str, Any]] = {}
    for e in entries:
        side = read_sidecar(e.path)
        unit_str = str(side.get("Units", ""))
        n_fitted, n_conv = (None, None) if e.fit is None else _quality(e.fit)
        index[e.name] = {
            "path": ctx.out_rel(e.path),
            "status": None if e.status is None else ctx.out_rel(e.status),
            "unit": unit_str,
            "series": e.series,
        }
        rows.append(
            {
                "subject": unit.subject,
                "visit": unit.visit,
                "model": e.model,
                "parameter": e.parameter,
                "step": step,
                "unit": unit_str,
                "path": ctx.out_rel(e.path),
                "sha256": file_sha256(e.path),
                "n_fitted": n_fitted,
                "n_converged": n_conv,
                "provenance": _plain_json(side.get("Provenance") or {}),
            }
        )
    fits = {e.model: e.fit for e in entries if e.fit is not None}
    notes = []
    for model, fit in fits.items():
        n, n_conv = _quality(fit)
        notes.append(f"{model}: {n_conv}/{n} voxels converged")
    idx_path = layout.map_index_path(ctx.out_dir, unit.subject, unit.visit, step)
    write_json(idx_path, index, indent=1, sort_keys=True)
    where = {"subject": unit.subject, "visit": unit.visit, "step": step}
    return StepOutput(files=[*files, idx_path], writes=[Write("maps", where, rows)], notes=notes)


def _plain_json(value: Any) -> Any:
    """``value`` as plain JSON types (through the one encoder, :func:`tumorscope.files.to_json`)."""
    import json

    from ..files import to_json

    return json.loads(to_json(value, indent=None))


def _index_files(upstream: Upstream, subject: str, visit: str) -> list[str]:
    """The map indexes of a visit among the fit steps' outputs, in step order."""
    key = f"sub-{subject}/ses-{visit}"
    return [
        rel
        for step in MAP_STEPS
        for rel in layout.map_index_files(upstream.get(step, {}).get(key, {}))
    ]


def maps_of_visit(
    ctx: Context, upstream: Upstream, subject: str, visit: str
) -> dict[str, layout.VisitMap]:
    """Maps the fit steps wrote for one visit: ``{"ivim.D": (path, status path, unit)}``.

    Read from the map indexes among the fit steps' outputs (``upstream``); each value is a
    :class:`tumorscope.layout.VisitMap` (a named tuple ``path, status, unit``).
    """
    return layout.read_map_index(ctx.out_dir, _index_files(upstream, subject, visit))


def map_series_of_visit(
    ctx: Context, upstream: Upstream, subject: str, visit: str
) -> dict[str, str | None]:
    """Role of the series each map of a visit was computed on: ``{"ivim.D": "dwi"}``."""
    return layout.read_map_series(ctx.out_dir, _index_files(upstream, subject, visit))


def applied_alignments(
    ctx: Context, upstream: Upstream, subject: str, visit: str
) -> dict[str, list[list[float]]]:
    """The alignments of a visit that ``measure`` applies: ``{role: 4x4 matrix}``."""
    import json

    key = f"sub-{subject}/ses-{visit}"
    out: dict[str, list[list[float]]] = {}
    for rel in upstream.get("align", {}).get(key, {}):
        if rel.endswith("_align.json"):
            for row in json.loads((ctx.out_dir / rel).read_text()):
                if row.get("applied") and row.get("matrix") is not None:
                    out[str(row["series"])] = row["matrix"]
    return out
