"""gzip streams for the images tumorscope reads and writes: ISA-L when installed, else zlib.

Every ``.nii.gz`` the package reads (:meth:`tumorscope.volume.Volume.from_nifti`) or writes
(:meth:`~tumorscope.volume.Volume.to_nifti`, hence every map) and the volumes the report's
viewer embeds go through these functions. With the ``isal`` package (the ``fast`` extra:
Python bindings of Intel's ISA-L, the library behind ``igzip``) compression runs ~10× and
decompression ~1.8× faster than the standard library's zlib on this package's images
(``benchmarks/bench_map_gzip.py``); without it the standard :mod:`gzip` module is used. Both
write the same format, and either reads what the other wrote.

Written streams are deterministic: no file name and a zero modification time in the gzip
header (as nibabel writes them), so that the same map written twice is the same file, which
the run's provenance and the serial/Dask comparisons rely on. The compressed bytes of one
image differ between the two back-ends (ISA-L level 1 and zlib level 1 choose different
matches); the decompressed bytes are identical.
"""

from __future__ import annotations

import gzip
import io
import os
from typing import IO, Any

_igzip: Any
try:  # the ``fast`` extra
    from isal import igzip as _igzip
except ImportError:  # pragma: no cover - exercised only where isal is not installed
    _igzip = None

__all__ = ["BACKEND", "COMPRESS_LEVEL", "compress", "open_read", "open_write"]

#: ``"isal"`` or ``"zlib"``: the library behind the streams.
BACKEND = "zlib" if _igzip is None else "isal"

#: The compression level of written images: 1, the fastest (nibabel's default too). ISA-L
#: level 1 compresses these images slightly better than zlib level 1, at a tenth of the time.
COMPRESS_LEVEL = 1

_READ_BUFFER = 1 << 20


def open_read(path: str | os.PathLike[str]) -> io.BufferedIOBase:
    """A binary file object of the decompressed contents of the gzip file ``path``.

    Reads the stream as it is consumed (a slice of a large image never holds the whole
    decompressed file). Corrupt or truncated streams raise when the damaged part is read
    (``EOFError``, ``OSError`` or ``gzip.BadGzipFile`` / ISA-L's equivalent).
    """
    if _igzip is not None:
        return _igzip.open(os.fspath(path), "rb")
    return gzip.open(os.fspath(path), "rb")


class _Writer(io.BufferedIOBase):
    """A gzip writer that also closes the raw file it wraps (``GzipFile(fileobj=...)`` does
    not)."""

    def __init__(self, raw: IO[bytes], gz: Any) -> None:
        self._raw = raw
        self._gz = gz

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return int(self._gz.write(data))

    def tell(self) -> int:
        return int(self._gz.tell())

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return int(self._gz.seek(offset, whence))

    def seekable(self) -> bool:
        return True

    def flush(self) -> None:
        if not self._gz.closed:  # IOBase.close flushes after the stream was closed
            self._gz.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._gz.close()
        finally:
            self._raw.close()
            super().close()


def open_write(path: str | os.PathLike[str], *, level: int = COMPRESS_LEVEL) -> io.BufferedIOBase:
    """A binary file object that writes a deterministic gzip stream to ``path``.

    The header carries no file name and a zero modification time (see the module's
    docstring); the file is truncated first.
    """
    raw = open(os.fspath(path), "wb")
    try:
        if _igzip is not None:
            gz: Any = _igzip.IGzipFile(
                filename="", mode="wb", compresslevel=level, fileobj=raw, mtime=0
            )
        else:
            gz = gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=raw, mtime=0)
    except BaseException:
        raw.close()
        raise
    return _Writer(raw, gz)


def compress(data: bytes | memoryview, *, level: int = COMPRESS_LEVEL) -> bytes:
    """``data`` as one deterministic gzip member (no file name, zero modification time)."""
    if _igzip is not None:
        return bytes(_igzip.compress(data, compresslevel=level, mtime=0))
    return gzip.compress(data, compresslevel=level, mtime=0)
