"""gzip streams for the images tumorscope reads and writes: ISA-L when installed, else zlib.

Every ``.nii.gz`` the package reads (:meth:`tumorscope.volume.Volume.from_nifti`) or writes
(:meth:`~tumorscope.volume.Volume.to_nifti`, hence every map) and the volumes the report's
viewer embeds go through these functions. With the ``isal`` package (the ``fast`` extra:
Python bindings of Intel's ISA-L, the library behind ``igzip``) compression runs 8.4–8.6×
and decompression 1.4–1.8× faster than the standard library's zlib on this package's images
(``benchmarks/bench_map_gzip.py``, the maps and series of the large visit, quiet machine);
without it the standard :mod:`gzip` module is used. Both
write the same format, and either reads what the other wrote.

Written streams are deterministic: no file name and a zero modification time in the gzip
header (as nibabel writes them), and the compressor fed fixed blocks whatever the writes
(ISA-L's output depends on how its input is cut into calls), so that the same map written
twice — by a command or a pipeline step, from a C- or a Fortran-ordered array — is the same
file, which the run's provenance and the serial/Dask comparisons rely on. The compressed bytes of one
image differ between the two back-ends (ISA-L level 1 and zlib level 1 choose different
matches); the decompressed bytes are identical.

Exceptions seen, not explained: in one CI run (2026-12-05, fresh clone, 2 cores) one
mostly-zero phantom image of 24 KB (``arteryfraction_truth``, written by 4 visits in two
threads) got other compressed bytes once than the 7 other writes of the same array; and
the tiny phantom's 4-D ``concentration`` map (1.2 MB, five blocks) now and then, which made
``test_two_output_folders_give_identical_files_and_hashes`` fail in a few runs. On
2026-12-06 it was caught 5 times in ~190 runs of the tiny study (two to four processes at
once on 2 busy cores; never on a quiet machine): every block handed to ISA-L had the same
length and SHA (traced), the streams the same CRC and decompressed bytes, and they differed
by one token — a 94-byte match at distance 6,556 in one stream where the other has
literals, 727 kB into the data. The same blocks compressed again, in one thread or beside
two compressing threads, after heap garbage in 300 patterns, at 64 buffer alignments or with
garbage after each block, always gave the usual stream, and valgrind finds no read of
uninitialised memory in ISA-L (AVX2 path; this CPU has no AVX-512). So a run under load
can, rarely, get another valid stream of the same bytes from ISA-L; the cause is below this
package. Tests that mean "the same data" compare decompressed contents; the provenance uses
file hashes only to decide whether an input changed (another stream of the same data costs
a recomputation, never a wrong result).
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

__all__ = ["BACKEND", "COMPRESS_LEVEL", "WRITE_BLOCK", "compress", "open_read", "open_write"]

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


#: Bytes handed to the compressor per call by :func:`open_write`'s writer.
WRITE_BLOCK = 1 << 18


class _Writer(io.BufferedIOBase):
    """A gzip writer that hands the compressor fixed blocks of :data:`WRITE_BLOCK` bytes
    (the last one shorter), whatever the sizes of the writes, and closes the raw file it
    wraps (``GzipFile(fileobj=...)`` does not).

    ISA-L's deflate output depends on how its input is cut into calls (zlib's does not): a
    map written from a C-ordered array and the same map from a Fortran-ordered one reach it
    in different pieces, and would be different files. Re-blocking makes the file a
    function of its bytes only, as with zlib.
    """

    def __init__(self, raw: IO[bytes], gz: Any) -> None:
        self._raw = raw
        self._gz = gz
        self._buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        start = 0
        if self._buf:
            take = min(WRITE_BLOCK - len(self._buf), n)
            self._buf += view[:take]
            start = take
            if len(self._buf) == WRITE_BLOCK:
                self._gz.write(self._buf)
                self._buf = bytearray()
        while n - start >= WRITE_BLOCK:
            self._gz.write(view[start : start + WRITE_BLOCK])
            start += WRITE_BLOCK
        if start < n:
            self._buf += view[start:]
        return n

    def tell(self) -> int:
        return int(self._gz.tell()) + len(self._buf)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Forward only (a gzip stream being written): the gap is written as zeros."""
        if whence == os.SEEK_CUR:
            offset += self.tell()
        elif whence != os.SEEK_SET:
            raise OSError("a gzip stream being written seeks from its start or position only")
        gap = offset - self.tell()
        if gap < 0:
            raise OSError("a gzip stream being written cannot seek backwards")
        while gap > 0:
            step = min(gap, WRITE_BLOCK)
            self.write(bytes(step))
            gap -= step
        return self.tell()

    def seekable(self) -> bool:
        return True

    def flush(self) -> None:
        pass  # blocks are handed over as they fill; the rest when the stream closes

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buf:
                self._gz.write(self._buf)
                self._buf = bytearray()
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
