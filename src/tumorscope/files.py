"""Files tumorscope writes: one writer for a map and its sidecar, one JSON encoder, hashes.

Every map on disk is a float32 (or uint8 status) NIfTI with a JSON sidecar beside it
(``<name>.nii.gz`` + ``<name>.json``) holding ``Units``, ``Description`` and ``Provenance``.
:func:`write_map` is the only place that writes that pair: the models' ``FitResult.to_nifti``,
the stages (:mod:`tumorscope.stages`) and the pipeline all call it, so a map written by a
command and by a pipeline step is the same file byte for byte.

:func:`json_default` is the one JSON encoder for tumorscope's own values (numpy scalars and
arrays, paths, enums, dataclasses); anything else raises ``TypeError`` rather than being
written as an unreadable ``repr``. Writes are atomic (:func:`tumorscope.volume.atomic_write`).

This is a core module: it imports numpy and the core types only (no io, models or pipeline).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .errors import DataError
from .volume import Volume, atomic_write

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FORMULA_PREFIXES",
    "csv_cell",
    "file_sha256",
    "json_default",
    "read_sidecar",
    "regular_file",
    "sidecar_of",
    "to_json",
    "write_csv",
    "write_json",
    "write_map",
]

_BLOCK = 1 << 20


#: File identity and state -> its SHA-256, for :func:`file_sha256` (bounded, oldest dropped).
_HASHES: dict[tuple[int, ...], str] = {}
_HASHES_MAX = 8192
_HASHES_LOCK = threading.Lock()
#: Seconds since its last change after which a file's hash is remembered (see file_sha256).
_SETTLED_S = 2.0


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file's bytes may have: device, inode, size, modification and
    status-change times (the last set by the kernel on every write, rename over or
    ``touch``, and never settable by a user: a file rewritten and its mtime put back still
    has a new ctime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


#: What a file that is not a regular one is, by its ``stat`` mode test (for the message).
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def regular_file(path: str | os.PathLike[str], *, field: str | None = None) -> Path:
    """``path`` when it is a regular file (or a symbolic link to one), checked without
    opening it.

    Every input tumorscope reads (sidecars, images, ``.bval``/``.bvec``, lesion tables, the
    manifest) and every file it hashes goes through this check first: opening a named pipe
    (FIFO) waits for a writer forever, and a socket or device is no input either. The check
    is a ``stat``, which never blocks on such a file.

    Parameters
    ----------
    path : path-like
    field : str, optional
        The field named in the error (e.g. ``bval``).

    Returns
    -------
    Path

    Raises
    ------
    DataError
        The file is missing, cannot be looked at, or is not a regular file (naming what it
        is: a folder, a named pipe, a socket, a device).
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise DataError("file not found", file=p, field=field) from None
    except OSError as exc:
        raise DataError(
            f"cannot read the file: {exc.strerror or exc}", file=p, field=field
        ) from exc
    _refuse_special(p, mode, field)
    return p


def _refuse_special(p: Path, mode: int, field: str | None = None) -> None:
    """A DataError naming ``p`` when ``mode`` (its ``st_mode``) is not a regular file's."""
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise DataError(
            f"not a regular file but {kind}; expected a file of data", file=p, field=field
        )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks.

    The result is remembered for the process, keyed by the file's identity and state
    (:func:`_identity`): the steps of a visit hash the same series and maps several times
    (their inputs, their outputs, provenance), and a file whose bytes changed has another
    key. File times are coarse (a kernel tick, 1 s or more on some network file systems), so
    a file rewritten within the same tick could keep its key: only files last changed
    :data:`_SETTLED_S` or more before they are hashed are remembered (a later change then has
    a later time), and a file that changes while it is being hashed is not remembered.

    Raises
    ------
    OSError
        The file is missing or cannot be read.
    DataError
        It is not a regular file (a named pipe, socket, device or folder): never opened.
    """
    p = Path(path)
    st = p.stat()
    _refuse_special(p, st.st_mode)  # a named pipe would block the read below forever
    before = _identity(st)
    with _HASHES_LOCK:
        known = _HASHES.get(before)
    if known is not None:
        return known
    h = hashlib.sha256()
    with p.open("rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    digest = h.hexdigest()
    if _identity(p.stat()) == before and time.time_ns() - before[-1] >= _SETTLED_S * 1e9:
        with _HASHES_LOCK:
            if len(_HASHES) >= _HASHES_MAX:
                del _HASHES[next(iter(_HASHES))]
            _HASHES[before] = digest
    return digest


def json_default(obj: Any) -> Any:
    """JSON encoder for numpy values, paths, enums and dataclasses (``json.dumps(default=)``).

    Raises
    ------
    TypeError
        Any other object: it would be written as an unreadable ``repr`` otherwise.
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """``obj`` as JSON text (with a final newline) through :func:`json_default`."""
    return json.dumps(obj, indent=indent, sort_keys=sort_keys, default=json_default) + "\n"


def write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, sort_keys: bool = False
) -> Path:
    """Write ``obj`` as JSON, atomically (temporary name, then rename)."""
    text = to_json(obj, indent=indent, sort_keys=sort_keys)
    out = Path(path)
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out


def sidecar_of(image: str | os.PathLike[str]) -> Path:
    """The JSON sidecar beside an image: ``x.nii.gz`` → ``x.json``, ``x.nii`` → ``x.json``."""
    p = Path(image)
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return p.with_name(name[: -len(ext)] + ".json")
    return p.with_suffix(".json")


def read_sidecar(image: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of a map tumorscope wrote, or ``{}`` when there is none or it is unreadable.

    For *input* series use :func:`tumorscope.io.bids.read_sidecar`, which reports a broken
    sidecar as an error naming the file.
    """
    try:
        return dict(json.loads(regular_file(sidecar_of(image)).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):  # DataError (not a regular file) is a ValueError
        return {}


def write_map(
    path: str | os.PathLike[str],
    data: npt.ArrayLike,
    affine: npt.ArrayLike,
    *,
    units: str,
    description: str,
    provenance: Mapping[str, Any] | None,
    dtype: npt.DTypeLike | None = None,
    indent: int = 2,
) -> list[Path]:
    """Write a map (NIfTI) and its JSON sidecar, both atomically.

    Parameters
    ----------
    path : path-like
        The image, ``<name>.nii.gz``; the sidecar is ``<name>.json`` beside it.
    data : array_like, 3-D
    affine : array_like, shape (4, 4)
    units, description : str, keyword-only
        The sidecar's ``Units`` and ``Description``.
    provenance : mapping or None, keyword-only
        The sidecar's ``Provenance`` (model, options, versions, input hashes).
    dtype : numpy dtype, keyword-only, optional
        Default: the data's own dtype (maps are float32, status and class maps uint8).
    indent : int, keyword-only, default 2

    Returns
    -------
    list of Path
        The image and the sidecar.
    """
    image = Path(path)
    Volume(np.asarray(data), np.asarray(affine, dtype=float)).to_nifti(image, dtype=dtype)
    side = {"Units": units, "Description": description, "Provenance": provenance}
    return [image, write_json(sidecar_of(image), side, indent=indent)]


#: A text cell starting with one of these is read as a formula by spreadsheet programs
#: (OWASP "CSV injection"): ``=HYPERLINK(...)``, ``+cmd|...``, ``@SUM(...)``.
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` made safe for a spreadsheet: text that a spreadsheet would take as a formula
    gets a leading ``'`` (shown as text, never run); numbers and other text are unchanged.

    Examples
    --------
    >>> csv_cell('=HYPERLINK("http://x","y")')
    '\'=HYPERLINK("http://x","y")'
    >>> csv_cell("-12.5"), csv_cell("L1"), csv_cell(-3.0)
    ('-12.5', 'L1', -3.0)
    """
    if not isinstance(value, str) or not value.startswith(FORMULA_PREFIXES):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value  # a signed number ("-12.5") is data, not a formula


def _escaped(values: pd.Series) -> pd.Series:
    """:func:`csv_cell` of every cell of an object column, computed once per distinct value
    (identifiers, names and units repeat over thousands of rows; most columns need none)."""
    import pandas as pd

    try:
        distinct = pd.unique(values)
    except TypeError:  # unhashable cells (lists): one by one
        return values.map(csv_cell)
    changed = {}
    for v in distinct:
        if isinstance(v, str):
            safe = csv_cell(v)
            if safe != v:
                changed[v] = safe
    if not changed:
        return values
    return values.map(lambda v: changed.get(v, v) if isinstance(v, str) else v)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str], *, sep: str = ",") -> Path:
    """Write a table as CSV (``sep="\\t"``: TSV) atomically, text cells and column names
    escaped with :func:`csv_cell`. Every CSV tumorscope writes from user text goes through it.
    """
    import pandas as pd

    safe = frame.rename(columns=lambda c: csv_cell(str(c)))
    for col in range(safe.shape[1]):
        values = safe.iloc[:, col]
        if (
            values.dtype == object
            or pd.api.types.is_string_dtype(values)
            or isinstance(values.dtype, pd.CategoricalDtype)
        ):  # (an object column of text and numbers is not a "string dtype": escaped too)
            safe.isetitem(col, _escaped(values.astype(object)))
    out = Path(path)
    atomic_write(out, lambda tmp: safe.to_csv(tmp, index=False, sep=sep))
    return out
