"""What ``tumorscope run`` checks of a whole study before it writes anything.

:func:`metadata_problems` finds, for every visit of the study, the errors that need no image
data: a sidecar that does not give its series' protocol (a missing field, text where a number
is needed, a list of the wrong length), an image header that cannot be read, a 4th dimension
that does not match the protocol, a lesion table that cannot be read, series or lesion maps
of one visit on different grids, and the two echoes of a dual-echo DSC that do not pair
(:mod:`tumorscope.io.dual_echo`), all from the headers. These are the checks of
:func:`~tumorscope.io.study.validate_visit` less its reading of the voxel values.

Why ``run`` checks them first: a run used to find a bad sidecar only in the ``register``
step of its subject, after other subjects had been processed and the output folder written,
and then exited 1 ("the job ran and found errors"). A wrong protocol is bad input, which
gets exit 2 before anything is written, as the BIDS applications (fMRIPrep, MRIQC) refuse a
study that fails their validator before they start. The study's headers and sidecars are
small: ~10 ms a visit (every image's 540-byte header decompressed, every sidecar parsed).

What stays with ``register`` (per subject, on the workers): the voxel values — a truncated
or corrupt compressed stream, non-finite values, lesion labels against their table — which
cost a read of every image. A subject failing there does not stop the others; the run exits
1 naming it. ``tumorscope validate`` checks both, up front.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError, Problem, ProtocolError
from ..volume import Volume, _read_header
from .study import (
    MRS_SUFFIXES,
    _check_measurements,
    _read_lesion_table,
    _rel,
    data_shape,
    echo_pair_problems,
    grid_problems,
)

if TYPE_CHECKING:
    from .study import Series, Study, Visit

__all__ = ["metadata_problems"]


def metadata_problems(study: Study) -> list[Problem]:
    """The errors of every visit of ``study`` found from its sidecars, lesion tables and image
    headers (no image data read), in the order :func:`~tumorscope.io.study.validate_visit`
    reports them; warnings are left to ``validate`` and the ``register`` step."""
    problems: list[Problem] = []
    for visit in study.visits():
        if visit.path.is_dir():
            problems += _visit_errors(study, visit)
    return problems


def _header_grid(path: Path) -> Volume:
    """The grid an image's header declares (shape as :meth:`Volume.from_nifti` shapes it,
    the header's best affine), without its data."""
    header = _read_header(path)
    shape = data_shape(header.get_data_shape())
    if not 3 <= len(shape) <= 4:
        raise DataError(f"expected a 3-D or 4-D image, got shape {shape}", file=path, field="dim")
    return Volume(np.broadcast_to(np.zeros((), np.uint8), shape), header.get_best_affine())


def _series_grid(study: Study, series: Series) -> tuple[Volume | None, Problem | None]:
    rel = series.relpath
    try:
        protocol = series.protocol
    except (DataError, ProtocolError) as exc:
        where = _rel(Path(exc.file), study.root) if exc.file else rel
        return None, Problem("error", where, exc.field or "", exc.message)
    try:
        grid = _header_grid(series.path)
        _check_measurements(grid, protocol, rel, series.suffix)
    except DataError as exc:
        return None, Problem("error", rel, exc.field or "", exc.message)
    return grid, None


def _visit_errors(study: Study, visit: Visit) -> list[Problem]:
    problems: list[Problem] = []
    grids: list[tuple[str, Volume]] = []
    by_role: dict[str, Volume] = {}
    for role, series in visit.series.items():
        if series.suffix in MRS_SUFFIXES:  # spectroscopy: its own grid, checked by register
            continue
        grid, problem = _series_grid(study, series)
        if problem is not None:
            problems.append(problem)
        elif grid is not None:
            grids.append((series.relpath, grid))
            by_role[role] = grid
    problems += echo_pair_problems(study, visit, by_role)
    lesions = visit.lesions
    if lesions is not None:
        trel = _rel(lesions.table_path, study.root)
        _, table_problems = _read_lesion_table(lesions.table_path, trel)
        problems += [p for p in table_problems if p.severity == "error"]
        lrel = _rel(lesions.map_path, study.root)
        try:
            grids.append((lrel, _header_grid(lesions.map_path)))
        except DataError as exc:
            problems.append(Problem("error", lrel, exc.field or "", exc.message))
    return problems + grid_problems(grids)
