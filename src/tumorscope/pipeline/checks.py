"""Checks of a run's arguments before anything is written, and a full disk made one error.

:func:`tumorscope.pipeline.run_study` calls them before it claims the output folder (the
options of study.yaml are :mod:`.options`'; the output folder's are :mod:`.outdir`'s).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import DataError, TumorscopeError
from .options import DCE_AIFS

__all__ = [
    "WORKERS_PER_CORE",
    "check_aif_file",
    "check_scheduler",
    "check_sqlite_url",
    "check_workers",
    "disk_errors",
]


#: ``--workers`` is at most this many worker processes per core of the machine.
WORKERS_PER_CORE = 4


def check_workers(workers: int | None) -> None:
    """``--workers``: at least 1, at most :data:`WORKERS_PER_CORE` per core (each worker is
    a process that holds a subject's images: more cannot run faster, and a huge count would
    start processes until the machine is out of memory)."""
    if workers is None:
        return
    if workers < 1:  # 0 is no "serial": that is workers=None
        raise DataError(f"expected at least 1 worker, got {workers}", field="--workers")
    cores = os.cpu_count() or 1
    limit = WORKERS_PER_CORE * cores
    if workers > limit:
        raise DataError(
            f"expected at most {limit} workers ({WORKERS_PER_CORE} per core, {cores} core(s) "
            f"here), got {workers}",
            field="--workers",
        )


def check_scheduler(address: str) -> None:
    """``--scheduler``: the address of a Dask scheduler, ``[protocol://]host:port``, or the
    ``inproc://`` address of a scheduler in this process (Dask's in-process clusters)."""
    import re

    if re.fullmatch(r"inproc://\S+", address):
        return
    m = re.fullmatch(
        r"(?:(tcp|tls|ws|wss|ucx)://)?(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):(\d+)/?", address
    )
    if m is None or not 0 < int(m.group(3)) < 65536:
        raise DataError(
            f"expected the address of a Dask scheduler, tcp://host:port, got {address!r}",
            field="--scheduler",
        )


def check_sqlite_url(url: str, out: Path) -> None:
    """``--db`` of SQLite: a database file (an in-memory database would lose the results at
    the end) in a folder that exists or is the output folder ``out`` (created by the run)."""
    scheme, _, rest = url.partition("://")
    if not scheme.lower().startswith("sqlite"):
        return
    path = rest[1:] if rest.startswith("/") else rest
    path, _, query = path.partition("?")
    if path in ("", ":memory:") or path.startswith("file::memory:") or "mode=memory" in query:
        raise DataError(
            f"{url!r} is an in-memory database: the results would be lost when the run ends; "
            "give a database file, e.g. sqlite:///path/tumorscope.sqlite",
            field="--db",
        )
    folder = Path(path.removeprefix("file:")).parent.resolve()
    if not folder.is_dir() and folder != out:
        raise DataError(
            f"the folder of the database file does not exist ({folder}); nothing was written",
            field="--db",
        )


def check_aif_file(aif: str) -> None:
    """``--dce-aif`` naming a file: a readable AIF table (``time_s`` and ``cp_mM`` or
    ``cb_mM``), checked before anything is written rather than in every DCE unit."""
    from ..models.aif import aif_text, load_aif_csv

    if aif.lower() in DCE_AIFS:
        return
    path = Path(aif)
    head = aif_text(path, field="--dce-aif").splitlines()[:1]
    cols = [c.strip() for c in (head[0].replace("\t", ",").split(",") if head else [])]
    column = next((c for c in ("cp_mM", "cb_mM") if c in cols), None)
    if column is None or "time_s" not in cols:
        raise DataError(
            f"not an AIF table: expected the columns time_s and cp_mM (plasma) or cb_mM "
            f"(whole blood); the first line holds {cols[:6]}",
            file=path,
            field="--dce-aif",
        )
    load_aif_csv(path, concentration_column=column)


def disk_errors(out: Path, fn: Any) -> Any:
    """``fn`` with a full disk (or quota) turned into one :class:`DataError` naming the file
    that could not be written (else the output folder), no traceback."""
    import errno
    import functools

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            where = Path(exc.filename) if exc.filename else out
            raise DataError(
                f"could not write this file: {os.strerror(exc.errno).lower()}; free some "
                "space and run again (what was done is kept)",
                file=where,
            ) from exc
        except TumorscopeError as exc:
            if "database or disk is full" not in str(exc):
                raise
            raise DataError(
                "could not write the database: no space left on device; free some space and "
                "run again (what was done is kept)",
                file=exc.file or out,
            ) from exc

    return wrapped
