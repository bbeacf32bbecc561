"""`Volume`: an image array with its 4×4 affine, named axes and metadata.

A `Volume` never rescales intensities. Data are held as float32 unless the caller asks for
another dtype (label maps use an integer dtype). Geometry operations return new objects; a
`Volume` is never modified in place by tumorscope.

The affine maps voxel indices ``(i, j, k, 1)`` to scanner (RAS+, mm) coordinates, as in
nibabel. The first three axes are always spatial; a fourth axis, when present, holds the
measurements (b-values, frames, echoes, flip angles) and is named accordingly.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _gzip
from .errors import DataError

__all__ = [
    "ATOMIC_TEMP_PREFIX",
    "DEFAULT_MAX_IMAGE_BYTES",
    "MAX_IMAGE_BYTES_ENV",
    "SPATIAL_AXES",
    "Volume",
    "atomic_write",
    "max_image_bytes",
]

#: The environment variable that sets the largest image :meth:`Volume.from_nifti` reads.
MAX_IMAGE_BYTES_ENV = "TUMORSCOPE_MAX_IMAGE_BYTES"
#: Default ceiling (4 GiB): a 4-D DCE series of 256×256×64×120 float32 voxels takes 2 GiB.
DEFAULT_MAX_IMAGE_BYTES = 4 * 1024**3

SPATIAL_AXES: tuple[str, str, str] = ("x", "y", "z")

_MEASUREMENT_AXES = ("b", "t", "echo", "flip_angle", "inversion", "measurement", "label")


@dataclass(frozen=True, eq=False)
class Volume:
    """An image: data, affine, axis names and metadata.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z) or (X, Y, Z, N)
        Voxel values. Kept as given (no copy, no rescaling); use :meth:`astype` to convert.
    affine : ndarray, shape (4, 4)
        Voxel-to-world (RAS+, mm) transform.
    axes : sequence of str, optional
        One name per axis. Default ``("x", "y", "z")`` plus ``"measurement"`` for a 4th axis.
    meta : mapping, optional
        Free-form metadata (sidecar fields, provenance). Copied into a new dict.
    source : str, optional
        Where the data came from (a file path), used in error messages.

    Examples
    --------
    >>> import numpy as np
    >>> v = Volume(np.zeros((4, 4, 2), np.float32), np.diag([2.0, 2.0, 5.0, 1.0]))
    >>> v.voxel_sizes
    (2.0, 2.0, 5.0)
    >>> v.voxel_volume_ml
    0.02
    """

    data: np.ndarray
    affine: np.ndarray
    axes: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        data = self.data
        if not isinstance(data, np.ndarray):
            raise DataError(
                f"data must be a numpy array, got {type(data).__name__}", file=self.source
            )
        if data.ndim not in (3, 4):
            raise DataError(
                f"expected a 3-D or 4-D image, got {data.ndim}-D with shape {data.shape}",
                file=self.source,
                field="shape",
            )
        affine = np.asarray(self.affine, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise DataError(
                f"affine must be a finite 4x4 matrix, got shape {affine.shape}",
                file=self.source,
                field="affine",
            )
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise DataError(
                "affine is singular (zero voxel size)", file=self.source, field="affine"
            )
        axes = tuple(self.axes) if self.axes else _default_axes(data.ndim)
        if len(axes) != data.ndim:
            raise DataError(
                f"{len(axes)} axis names {axes} for a {data.ndim}-D array",
                file=self.source,
                field="axes",
            )
        if axes[:3] != SPATIAL_AXES:
            raise DataError(
                f"the first three axes must be {SPATIAL_AXES}, got {axes[:3]}",
                file=self.source,
                field="axes",
            )
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "meta", dict(self.meta))

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        s = self.data.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def n_measurements(self) -> int:
        """Length of the 4th axis (1 for a 3-D volume)."""
        return int(self.data.shape[3]) if self.data.ndim == 4 else 1

    @property
    def voxel_sizes(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm (norms of the affine's columns)."""
        z = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(z[0]), float(z[1]), float(z[2]))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (|det A| mm³ / 1000)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def same_grid(self, other: Volume, *, atol: float = 1e-3) -> bool:
        """True if ``other`` has the same spatial shape and affine (within ``atol`` mm)."""
        return self.spatial_shape == other.spatial_shape and bool(
            np.allclose(self.affine, other.affine, atol=atol)
        )

    # ------------------------------------------------------------------ copies
    def with_data(
        self, data: np.ndarray, *, axes: Sequence[str] | None = None, **meta: Any
    ) -> Volume:
        """A new Volume on the same grid with other data (and optionally axes, extra meta)."""
        if tuple(data.shape[:3]) != self.spatial_shape:
            raise DataError(
                f"new data shape {data.shape} does not match grid {self.spatial_shape}",
                file=self.source,
                field="shape",
            )
        new_meta = {**self.meta, **meta}
        if axes is None:
            axes = self.axes if data.ndim == self.data.ndim else _default_axes(data.ndim)
        return Volume(data, self.affine.copy(), tuple(axes), new_meta, self.source)

    def astype(self, dtype: npt.DTypeLike) -> Volume:
        """A copy with data cast to ``dtype`` (values unchanged, no rescaling)."""
        return Volume(
            self.data.astype(dtype), self.affine.copy(), self.axes, self.meta, self.source
        )

    def frame(self, index: int) -> Volume:
        """One 3-D volume from the 4th axis."""
        if self.data.ndim != 4:
            raise DataError("frame() needs a 4-D volume", file=self.source)
        return Volume(
            self.data[..., index], self.affine.copy(), SPATIAL_AXES, self.meta, self.source
        )

    # ------------------------------------------------------------------ NIfTI
    @classmethod
    def from_nifti(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: npt.DTypeLike = np.float32,
        axes: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Volume:
        """Read a NIfTI-1/2 file.

        Stored values are read as the file defines them (the header's ``scl_slope`` and
        ``scl_inter``, if set, are part of that definition); nothing else is rescaled.

        Parameters
        ----------
        path : path-like
            ``.nii`` or ``.nii.gz`` file.
        dtype : dtype, default float32
            Dtype of the returned data. Use an integer dtype for label maps (values must then
            be integral).

        Raises
        ------
        DataError
            If the file is missing, truncated or not a NIfTI image (the message names it), or
            if its header declares more data than the file holds or than the ceiling
            :func:`max_image_bytes` allows. Both are checked from the header before any image
            data are read, and no more than the declared bytes are ever decompressed. So is a
            complex image read with a real ``dtype`` (field ``datatype``).
        """
        import nibabel as nib

        p = Path(path)
        if not p.exists():
            raise DataError("file not found", file=p)
        hdr = _check_declared_size(p, np.dtype(dtype))
        arr: np.ndarray | None
        try:
            plain = _read_plain(hdr, p, np.dtype(dtype))
            if plain is not None:
                arr, affine = plain
            elif p.name.endswith(".gz"):  # the stream decompressed by our gzip back-end
                with _gzip.open_read(p) as fh:
                    img: Any = _image_class(p, hdr).from_stream(fh)
                    arr = _read_frames(img, p, np.dtype(dtype), fh)
                    if arr is None:
                        arr = np.asanyarray(img.dataobj)
                affine = img.affine
            else:
                img = nib.load(str(p))
                arr = _read_frames(img, p, np.dtype(dtype), None)
                if arr is None:
                    arr = np.asanyarray(img.dataobj)
                affine = img.affine
        except Exception as exc:  # nibabel and gzip raise many types for corrupt files
            raise DataError(
                f"cannot read NIfTI image ({type(exc).__name__}: {exc})", file=p
            ) from exc
        assert arr is not None
        target = np.dtype(dtype)
        if np.issubdtype(target, np.integer):
            if np.issubdtype(arr.dtype, np.floating):
                finite = np.isfinite(arr)
                if not finite.all() or not np.array_equal(arr, np.round(arr)):
                    raise DataError("label image holds non-integer values", file=p, field="data")
            data = arr.astype(target, copy=False)
        else:
            data = arr.astype(target, copy=False)
        while data.ndim > 4 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim == 2:
            data = data[..., None]
        return cls(data, affine, tuple(axes) if axes else (), dict(meta or {}), str(p))

    @classmethod
    def frames_from_nifti(
        cls, path: str | os.PathLike[str], *, meta: Mapping[str, Any] | None = None
    ) -> Iterator[Volume]:
        """The 3-D frames (float32) of a NIfTI image, one after the other: of a 4-D
        gzip-compressed image without scale factors, each frame read from the stream as it
        is reached, so that the whole series is never held (a 98 MB DCE series: one 2 MB
        frame at a time); of any other image, the frames of :meth:`from_nifti` (a 3-D image
        is its own single frame).

        Each frame equals ``Volume.from_nifti(path).frame(k)`` (values, affine, source),
        and the same errors are raised, naming the file, before any frame is returned for a
        header that declares more data than the file holds.
        """
        p = Path(path)
        if not p.exists():
            raise DataError("file not found", file=p)
        hdr = _check_declared_size(p, np.dtype(np.float32))
        streamed = _stream_frames(hdr, p)
        if streamed is None:
            vol = cls.from_nifti(p, meta=meta)
            if vol.data.ndim == 3:
                yield vol
                return
            for k in range(vol.data.shape[-1]):
                yield vol.frame(k)
            return
        affine, frames = streamed
        try:
            for frame in frames:
                yield cls(frame, affine.copy(), SPATIAL_AXES, dict(meta or {}), str(p))
        except DataError:
            raise
        except Exception as exc:  # gzip raises several types for a corrupt stream
            raise DataError(
                f"cannot read NIfTI image ({type(exc).__name__}: {exc})", file=p
            ) from exc

    def to_nifti(self, path: str | os.PathLike[str], *, dtype: npt.DTypeLike | None = None) -> Path:
        """Write a NIfTI-1 file atomically (temporary name, then rename).

        The data's dtype is kept (or ``dtype`` if given), and no scaling is applied: the
        header's ``scl_slope`` is left unset. The affine is written as both sform and qform.

        A float image written as another float dtype (a float64 map stored as float32) is
        not copied whole in the stored dtype first when it is 4-D: it is converted frame by
        frame as it is written. A 3-D image is converted (and put in the file's Fortran
        order) in one pass, one copy of a map. Other conversions (to an integer dtype) are
        done on the whole array first, so that nibabel never chooses a scale factor.

        A ``.nii.gz`` file of numeric data is written as nibabel writes it — the same header
        bytes, made by nibabel for the image's shape, dtypes and affine and remembered for
        the next image with the same ones, then the data in Fortran order, cast as nibabel
        casts them — so that the file is byte for byte nibabel's (``tests/test_volume.py``
        compares them), without nibabel's image object and its slice-by-slice writes for
        every map.
        """
        import nibabel as nib

        p = Path(path)
        data = self.data
        target = data.dtype if dtype is None else np.dtype(dtype)
        lazy = target != data.dtype and (
            np.issubdtype(target, np.floating) and np.issubdtype(data.dtype, np.floating)
        )
        if target != data.dtype and not lazy:
            data = data.astype(target)
        if data.dtype == np.bool_:
            data = data.astype(np.uint8)
        stored = target if lazy else data.dtype
        if p.name.endswith(".gz") and _plain_dtype(data.dtype) and _plain_dtype(stored):
            head = _header_bytes(data.shape, data.dtype, stored, self.affine)

            def _write_plain(tmp: Path) -> None:
                with _gzip.open_write(tmp) as fh:
                    fh.write(head)
                    _write_fortran(fh, data, stored)

            atomic_write(p, _write_plain)
            return p
        img = _nifti_image(data, stored, self.affine)

        def _write(tmp: Path) -> None:
            if p.name.endswith(".gz"):  # our gzip back-end (deterministic, see _gzip)
                with _gzip.open_write(tmp) as fh:
                    img.to_stream(fh)
            else:
                nib.save(img, str(tmp))

        atomic_write(p, _write)
        return p


def _nifti_image(data: Any, stored: np.dtype, affine: np.ndarray) -> Any:
    """The nibabel image :meth:`Volume.to_nifti` writes: ``stored`` dtype, no scaling, the
    affine as sform and qform, millimetres and seconds."""
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    if np.dtype(stored) != np.asarray(data).dtype:
        img.set_data_dtype(stored)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(1.0, 0.0)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return img


def _plain_dtype(dt: np.dtype) -> bool:
    """A native-order integer or float dtype (no complex, structured or swapped data)."""
    return dt.kind in "iuf" and dt.isnative


#: Header bytes (up to the data) by shape, dtypes and affine: see :func:`_header_bytes`.
_HEADERS: dict[tuple[Any, ...], bytes] = {}
_HEADERS_MAX = 256
_HEADERS_LOCK = threading.Lock()


class _HeadSink(io.RawIOBase):
    """A write-only stream that keeps the first ``keep`` bytes written and counts the rest."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.head = bytearray()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = memoryview(b).nbytes
        if len(self.head) < self.keep:
            self.head += bytes(memoryview(b).cast("B")[: self.keep - len(self.head)])
        self.size += n
        return n

    def tell(self) -> int:
        return self.size

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset + (self.size if whence == os.SEEK_CUR else 0)
        if target < self.size or whence == os.SEEK_END:
            raise OSError("forward seeks only")
        self.write(bytes(target - self.size))
        return self.size


def _header_bytes(
    shape: tuple[int, ...], dtype: np.dtype, stored: np.dtype, affine: np.ndarray
) -> bytes:
    """The bytes nibabel writes before the data of the image :meth:`Volume.to_nifti` makes
    (the header, its extension flag and any padding up to ``vox_offset``).

    They depend on the shape, the dtypes and the affine only (no scaling is ever computed:
    the slope and intercept are set), so nibabel writes them once for an image of zeros of
    that shape (a broadcast scalar: no memory) and they are remembered (a bounded table).
    """
    key = (tuple(shape), dtype.str, np.dtype(stored).str, np.asarray(affine).tobytes())
    with _HEADERS_LOCK:
        known = _HEADERS.get(key)
    if known is not None:
        return known
    zeros = np.broadcast_to(np.zeros((), dtype), shape)
    sink = _HeadSink(1 << 16)
    _nifti_image(zeros, stored, affine).to_stream(sink)
    offset = sink.size - int(np.prod(shape, dtype=np.int64)) * np.dtype(stored).itemsize
    if not 0 < offset <= len(sink.head):
        raise RuntimeError(f"unexpected NIfTI header size {offset}")
    head = bytes(sink.head[:offset])
    with _HEADERS_LOCK:
        if len(_HEADERS) >= _HEADERS_MAX:
            del _HEADERS[next(iter(_HEADERS))]
        _HEADERS[key] = head
    return head


def _write_fortran(fh: Any, data: np.ndarray, stored: np.dtype) -> None:
    """Write ``data`` cast to ``stored`` in Fortran order (as nibabel's array writer casts and
    orders it: ``astype`` then the bytes): a 3-D array in one pass (no copy when it is
    already Fortran-ordered in that dtype), a 4-D one frame by frame."""

    def put(a: np.ndarray) -> None:
        f = np.asfortranarray(a, dtype=stored)
        fh.write(memoryview(f.reshape(-1, order="F")).cast("B"))  # type: ignore[arg-type]

    if data.ndim <= 3:
        put(data)
    else:
        for frame in np.moveaxis(data.reshape(*data.shape[:3], -1, order="F"), -1, 0):
            put(frame)


def _image_class(p: Path, header: Any = None) -> Any:
    """nibabel's NIfTI-1 or NIfTI-2 image class for the file ``p`` (from its header size;
    ``header``: its header when already read)."""
    import nibabel as nib

    hdr = _read_header(p) if header is None else header
    return nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image


def _plain_layout(hdr: Any, p: Path) -> tuple[Any, np.dtype, tuple[int, ...]] | None:
    """The header (as nibabel reads it for an image), stored dtype and shape of an image
    whose data are its plain bytes after the header: gzip-compressed, the data offset set, an
    integer or float dtype, no scale factors; None for any other image."""
    if not p.name.endswith(".gz"):
        return None
    klass: Any = type(hdr)  # NIfTI-1 or NIfTI-2
    return _checked_layout(klass, bytes(hdr.binaryblock))


@functools.lru_cache(maxsize=64)
def _checked_layout(klass: Any, block: bytes) -> tuple[Any, np.dtype, tuple[int, ...]] | None:
    """:func:`_plain_layout` of a header's bytes (a function of them alone: the maps of a run
    share a handful of headers, and nibabel's checks cost more than reading a small map's
    header). The header returned is shared by the callers: read it, never change it."""
    # the header as nibabel reads it for an image: its checks applied and their fixes made
    # (``pixdim[0]`` of 0 taken as 1, negative voxel sizes...), which the affine depends on
    hdr = klass(block, check=True)
    if hdr.get_data_offset() == 0:  # unset: nibabel places the data after the extensions
        return None
    stored = np.dtype(hdr.get_data_dtype())
    shape = tuple(int(n) for n in hdr.get_data_shape())
    slope, inter = hdr.get_slope_inter()
    if (
        stored.kind not in "iuf"
        or not shape
        or min(shape) < 1
        or (slope, inter) not in ((None, None), (1.0, 0.0))
    ):
        return None
    return hdr, stored, shape


def _read_plain(hdr: Any, p: Path, target: np.dtype) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored array (F-ordered, as nibabel returns it) and the affine of a gzip-compressed
    NIfTI image without scale factors, read straight from the decompressed stream into its
    array; None for any other image (read by nibabel).

    The data of such an image are its bytes after the header, in the stored dtype, and its
    affine is the header's best affine (sform, else qform, else the voxel sizes): what
    nibabel returns, without a second opening of the stream, nibabel's image object, or an
    intermediate buffer. A stored dtype other than a float ``target`` is converted one frame
    (3-D) or one slab (a slice of the last axis of a 3-D image) at a time, as
    :func:`_read_frames` does, so that no whole copy in the stored dtype is held beside the
    result.
    """
    plain = _plain_layout(hdr, p)
    if plain is None:
        return None
    hdr, stored, shape = plain
    affine = hdr.get_best_affine()
    convert = stored != target and np.issubdtype(target, np.floating)
    with _gzip.open_read(p) as fh:
        fh.seek(int(hdr.get_data_offset()))
        if not convert or len(shape) < 3:
            flat = np.empty(int(np.prod(shape)), stored)
            _fill(fh, flat)
            return flat.reshape(shape, order="F"), affine
        out = np.empty(shape, target, order="F")
        n_last = shape[-1]
        # one frame of a 4-D image (or higher), one z-slab of a 3-D one
        part = np.empty(int(np.prod(shape[:-1])), stored)
        for k in range(n_last):
            _fill(fh, part)
            out[..., k] = part.reshape(shape[:-1], order="F")
        return out, affine


def _stream_frames(hdr: Any, p: Path) -> tuple[np.ndarray, Iterator[np.ndarray]] | None:
    """The affine and a generator of the float32 frames (F-ordered) of a 4-D image that
    :func:`_read_plain` reads (gzip, no scale factors, an integer or float dtype), read one
    frame at a time from the stream; None for any other image."""
    plain = _plain_layout(hdr, p)
    if plain is None or len(plain[2]) != 4:
        return None
    hdr, stored, shape = plain

    def frames() -> Iterator[np.ndarray]:
        with _gzip.open_read(p) as fh:
            fh.seek(int(hdr.get_data_offset()))
            part = np.empty(int(np.prod(shape[:3])), stored)
            for _ in range(shape[3]):
                _fill(fh, part)
                yield _float32_frame(part, shape[:3])

    return hdr.get_best_affine(), frames()


def _float32_frame(part: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One 3-D frame of an image's stored values (``part``: the frame's values in file order,
    any dtype) as a new float32 array of ``shape``, F-ordered as nibabel returns it: how
    :meth:`Volume.frames_from_nifti` makes each frame (and the check of a run's images the
    frame it keeps for ``align``, :mod:`tumorscope._frames`)."""
    out = np.empty(shape, np.float32, order="F")
    out[...] = part.reshape(shape, order="F")
    return out


def _fill(fh: Any, buf: np.ndarray) -> None:
    """Fill ``buf`` (C-contiguous) from the stream ``fh``, or raise on a short stream."""
    view = memoryview(buf).cast("B")  # type: ignore[arg-type]
    done = 0
    while done < len(view):
        got = fh.readinto(view[done:])
        if not got:
            raise ValueError(f"image data end {len(view) - done} bytes early")
        done += got


def _read_frames(img: Any, p: Path, target: np.dtype, stream: Any) -> np.ndarray | None:
    """A compressed 4-D image stored in another dtype than the float ``target``, read frame by
    frame into the ``target`` array (F-ordered, as nibabel returns it); None for any other
    image (read whole by nibabel). ``stream``: the open decompressed stream of ``p`` (a
    ``.gz`` file), else None (the file is opened by nibabel's opener).

    nibabel reads the whole stored array, which is then converted: the stored and the converted
    copy are held at once (an int16 DCE series: 1.5× its float32 size). Here only one stored
    frame is held beside the result. The values are the same (each voxel converted by the
    same cast); images with scale factors are left to nibabel.
    """
    from nibabel.openers import Opener

    hdr = img.header
    shape = tuple(int(n) for n in hdr.get_data_shape())
    stored = np.dtype(hdr.get_data_dtype())
    if (
        len(shape) != 4
        or not _compressed(p)
        or not np.issubdtype(target, np.floating)
        or stored == target
        or stored.kind not in "iuf"
    ):
        return None
    proxy = img.dataobj
    if (
        getattr(proxy, "order", "F") != "F"
        or float(getattr(proxy, "slope", 1.0)) != 1.0
        or float(getattr(proxy, "inter", 0.0)) != 0.0
        or tuple(getattr(proxy, "shape", ())) != shape
    ):
        return None
    frame = shape[:3]
    n_frame = int(np.prod(frame)) * stored.itemsize
    out = np.empty(shape, target, order="F")
    with contextlib.ExitStack() as stack:
        fh = stream if stream is not None else stack.enter_context(Opener(str(p)))
        fh.seek(int(img.dataobj.offset))  # the image's header copy says 0
        buf = bytearray(n_frame)
        for k in range(shape[3]):
            if fh.readinto(buf) != n_frame:
                raise ValueError(f"image data end at frame {k} of {shape[3]}")
            out[..., k] = np.frombuffer(buf, stored).reshape(frame, order="F")
    return out


def max_image_bytes() -> int:
    """The largest image (bytes in memory) :meth:`Volume.from_nifti` reads.

    Set by the environment variable ``TUMORSCOPE_MAX_IMAGE_BYTES`` (a whole number of bytes),
    else :data:`DEFAULT_MAX_IMAGE_BYTES` (4 GiB).

    Raises
    ------
    DataError
        If the variable is set to something else than a positive whole number.
    """
    text = os.environ.get(MAX_IMAGE_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(
            f"expected a positive whole number of bytes, got {text!r}", field=MAX_IMAGE_BYTES_ENV
        )
    return value


def _size(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def _read_header(p: Path) -> Any:
    """The fixed NIfTI-1/2 header of ``p`` (extensions not read), or a DataError (also for a
    file that is not a regular one: a named pipe is never opened)."""
    import nibabel as nib
    from nibabel.openers import Opener

    from .files import regular_file

    regular_file(p)
    try:
        with _gzip.open_read(p) if p.name.endswith(".gz") else Opener(str(p)) as fh:
            block = fh.read(540)
    except Exception as exc:  # gzip, bz2 and OS errors of a corrupt or unreadable file
        raise DataError(f"cannot read NIfTI image ({type(exc).__name__}: {exc})", file=p) from exc
    if len(block) >= 4:
        for order in ("<", ">"):
            n = int(np.frombuffer(block[:4], dtype=f"{order}i4")[0])
            if n in (348, 540) and len(block) >= n:
                klass = nib.Nifti1Header if n == 348 else nib.Nifti2Header
                try:
                    return klass(block[:n], check=False)
                except Exception as exc:  # nibabel raises several types for bad fields
                    raise DataError(
                        f"cannot read NIfTI image: invalid header ({exc})", file=p
                    ) from exc
    raise DataError(
        "cannot read NIfTI image: not a NIfTI-1 or NIfTI-2 header (too short or wrong size)", file=p
    )


def _check_declared_size(p: Path, target: np.dtype) -> Any:
    """Refuse, before reading any data, an image that declares more than its file holds or
    more than :func:`max_image_bytes`, or complex values to be read as real ones; return its
    header (:func:`_read_header`)."""
    hdr = _read_header(p)
    try:
        shape = tuple(int(n) for n in hdr.get_data_shape())
        stored = np.dtype(hdr.get_data_dtype())
        offset = int(hdr.get_data_offset())
    except Exception as exc:  # unknown datatype code, impossible dims
        raise DataError(
            f"cannot read NIfTI image: invalid header ({exc})", file=p, field="dim"
        ) from exc
    if any(n < 0 for n in shape) or offset < 0:
        raise DataError(
            f"cannot read NIfTI image: invalid header (shape {shape}, offset {offset})", file=p
        )
    if stored.kind == "c" and target.kind != "c":
        # read as real numbers, the imaginary part would be dropped silently
        raise DataError(
            f"the image holds complex values ({stored}); a magnitude image is expected "
            "(save the magnitude, e.g. abs(), of a complex reconstruction)",
            file=p,
            field="datatype",
        )
    n_vox = int(np.prod(shape, dtype=object)) if shape else 0
    data_bytes = n_vox * stored.itemsize
    # the stored array and, when the dtype differs, its converted copy are held at once
    memory = data_bytes + (n_vox * target.itemsize if target != stored else 0)
    limit = max_image_bytes()
    need = offset + data_bytes
    # a compressed file over the ceiling is refused below without decompressing any of it
    held = _bytes_held(p, need) if need <= limit or not _compressed(p) else need
    if held < need:
        raise DataError(
            f"cannot read NIfTI image: truncated; the header declares {data_bytes} bytes of "
            f"image data from byte {offset}, the file holds {held} bytes in all",
            file=p,
            field="dim",
        )
    if max(memory, need) > limit:
        dims = "×".join(map(str, shape))
        raise DataError(
            f"the header declares a {dims} {stored} image ({_size(memory)} in memory), "
            f"over the limit of {_size(limit)} (set {MAX_IMAGE_BYTES_ENV} to allow more)",
            file=p,
            field="dim",
        )
    return hdr


def _compressed(p: Path) -> bool:
    return p.name.endswith((".gz", ".bz2", ".zst"))  # as nibabel decides: by the extension


def _bytes_held(p: Path, need: int) -> int:
    """How many bytes ``p`` holds once decompressed, counted up to ``need`` (not beyond).

    Uncompressed: the file size. gzip: the ISIZE trailer when it shows enough (it holds the
    size of the last member modulo 2**32); otherwise the stream is decompressed, discarding
    it, up to ``need`` bytes.
    """
    from nibabel.openers import Opener

    size = p.stat().st_size
    if not _compressed(p):
        return size
    if p.name.endswith(".gz") and size >= 18 and need < 2**32:
        with p.open("rb") as fh:
            fh.seek(-4, os.SEEK_END)
            if int.from_bytes(fh.read(4), "little") >= need:
                return need
    held = 0
    try:
        with _gzip.open_read(p) if p.name.endswith(".gz") else Opener(str(p)) as zf:
            while held < need:
                chunk = zf.read(min(1 << 20, need - held))
                if not chunk:
                    break
                held += len(chunk)
    except Exception:  # a corrupt or cut stream holds what was read before the fault
        pass
    return held


def _default_axes(ndim: int) -> tuple[str, ...]:
    return SPATIAL_AXES if ndim == 3 else (*SPATIAL_AXES, "measurement")


#: Start of the name of every temporary file :func:`atomic_write` makes (the run's clean-up
#: removes only files named so, and only in the folders of the output layout).
ATOMIC_TEMP_PREFIX = ".tumorscope-tmp-"


def atomic_write(path: Path, writer: Any) -> None:
    """Call ``writer(tmp_path)`` then rename the temporary file to ``path``.

    The temporary file, in the same folder, is ``.tumorscope-tmp-<name>-<random><suffixes>``
    (:data:`ATOMIC_TEMP_PREFIX`: a clean-up never touches anybody else's file; nibabel picks
    the format by the suffixes). Nothing is left behind if ``writer`` raises; an OSError naming
    no file (a full disk) is raised naming ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmpname = tempfile.mkstemp(
        prefix=f"{ATOMIC_TEMP_PREFIX}{path.name.split('.')[0]}-", suffix=suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmpname)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno:  # full disk: no file
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc
        raise


# measurement axis names that the readers use; exported for consistency checks
MEASUREMENT_AXES = _MEASUREMENT_AXES
