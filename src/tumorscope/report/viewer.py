"""The interactive viewer of a subject: NiiVue in a page that opens from disk, with no server.

``report/sub-<id>_viewer.html`` shows every visit side by side (linked cursors), each with its
anatomical image, every fitted map as a switchable overlay (colour map, range, opacity), the
lesion outlines, slices in the three planes, and the value and unit under the cursor. The
subject page embeds it.

Design decisions
----------------
* **NiiVue** (``@niivue/niivue``, BSD-2-Clause; version :data:`NIIVUE_VERSION`) is vendored as
  its UMD bundle under ``report/static/niivue/`` with its licence; the run copies it once into
  ``<out>/report/static/niivue/`` so all viewer pages share it. Nothing is fetched at run time.
* **Volumes travel as a script, not as files**: a page opened from ``file://`` may not
  ``fetch`` a neighbouring file (browsers treat every file as its own origin), but it may load
  a ``<script src>``. Each subject's volumes are gzipped NIfTI, base64 encoded in
  ``report/viewer/sub-<id>.js`` (``window.TUMORSCOPE_VIEWER``), read by
  ``NVImage.loadFromBase64``.
* **Size**: the maps (and outlines) are cropped to the box around the subject's lesions (all
  visits) widened by :data:`MARGIN_MM` on each side: the report is about the lesions, and a
  subject's maps at every visit must fit in one script (a whole-volume 256×256×30 float map is
  ~8 MB). The anatomical image is kept whole up to :data:`MAX_VOXELS` voxels, else cropped
  the same way. A volume still above :data:`MAX_VOXELS` is subsampled with one integer stride
  on every axis (every n-th voxel, not averaged, so each value shown is a value of the map).
  The affine follows, so the overlays stay in register, and the cursor read-out gives the
  voxel index of the map as fitted (origin and stride of the crop added back). The page says
  what was done to the anatomical image.
* **Linked cursors follow the anatomy**: cursors are linked in world coordinates; a
  follow-up registered by the ``functional`` step is placed in the baseline's space (its
  affines composed with the inverse registration), so the same point means the same
  anatomy. Values are still read in each map's own voxel.
* **Overlays keep their own grid**: NiiVue places each overlay by its affine on the
  anatomical image, so maps fitted on another grid (DWI, DCE) are shown where they are,
  without resampling; the value under the cursor is the map's own voxel.
* **Lesion outlines** are the in-plane (axial) boundary voxels of the lesion labels (the label
  minus its 2-D erosion), drawn in red above the maps.
* **Display range** of each map: 1st-99th percentile inside the lesions at the first visit
  that has the map, widened by half that range (as the static map grids), the same for
  every visit, editable on the page.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import json
import math
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _gzip, layout
from ..volume import atomic_write
from . import reads

if TYPE_CHECKING:
    import os

    from ..io import Study
    from ..layout import VisitMap
    from ..volume import Volume

__all__ = [
    "MARGIN_MM",
    "MAX_VOXELS",
    "NIIVUE_VERSION",
    "viewer_data_path",
    "viewer_path",
    "write_viewer",
]

#: Version of the vendored NiiVue bundle (``static/niivue/VERSION``).
NIIVUE_VERSION = "0.69.0"

#: Largest volume written whole (voxels); larger ones are cropped around the lesions.
MAX_VOXELS = 2_000_000

#: Margin around the lesions' box when a volume is cropped (mm).
MARGIN_MM = 20.0

_STATIC = Path(__file__).parent / "static" / "niivue"
_BUNDLE = "niivue.umd.js"

#: NiiVue colour map of each map parameter (others: ``viridis``).
_COLOURMAPS = {"ADC": "plasma", "D": "plasma", "Ktrans": "hot", "ve": "viridis", "T1": "inferno"}


def viewer_path(out_dir: str | os.PathLike[str], subject: str) -> Path:
    """``<out>/report/sub-<id>_viewer.html``."""
    return layout.report_dir(Path(out_dir)) / f"sub-{subject}_viewer.html"


def viewer_data_path(out_dir: str | os.PathLike[str], subject: str) -> Path:
    """``<out>/report/viewer/sub-<id>.js``: the subject's volumes for the viewer."""
    return layout.report_dir(Path(out_dir)) / "viewer" / f"sub-{subject}.js"


def write_viewer(
    out_dir: str | os.PathLike[str],
    study: Study,
    subject: str,
    *,
    maps: Mapping[str, Mapping[str, VisitMap]],
    registrations: Mapping[str, Any] | None = None,
    loaded: Mapping[str, Mapping[str, Volume]] | None = None,
) -> Path | None:
    """Write the viewer of one subject (page, volumes script, and the NiiVue bundle once).

    Parameters
    ----------
    out_dir : path-like
        Output folder of the run.
    study : tumorscope.io.Study
    subject : str
    maps : mapping of visit id to mapping of map name to VisitMap, keyword-only
        The maps of each visit (:func:`tumorscope.layout.read_map_index`).
    registrations : mapping of visit id to 4×4 matrix, keyword-only, optional
        Rigid transform of each follow-up, baseline world to the visit's world (the
        ``functional`` step's): the visit's volumes are placed in the baseline's space
        (affine ``inv(M) @ A``), so that the linked cursors point to the same anatomy.
        Visits without one stay in their own (scanner) space.
    loaded : mapping of visit id to mapping of map name to Volume, keyword-only, optional
        Maps the caller has already read (the subject page's figures): used instead of
        reading their files again.

    Returns
    -------
    Path or None
        The page, or None when no visit has an image to show.
    """
    from .blocks import render

    out_dir = Path(out_dir)
    subj = study.subjects[subject]
    labels = {v.id: lab for v in subj if (lab := reads.labels(v)) is not None}
    box = _lesion_box(labels.values())
    visits: list[dict[str, Any]] = []
    notes: set[str] = set()
    limits: dict[str, tuple[float, float]] = {}
    for v in subj:
        m = (registrations or {}).get(v.id)
        to_base = None if m is None else np.linalg.inv(np.asarray(m, dtype=float))
        entry = _visit_volumes(
            v,
            maps.get(v.id, {}),
            box,
            limits,
            notes,
            to_base,
            labels=labels.get(v.id),
            loaded=(loaded or {}).get(v.id, {}),
        )
        if entry is not None:
            visits.append(entry)
    if not visits:
        return None
    _copy_bundle(out_dir)
    data = viewer_data_path(out_dir, subject)
    payload = {"subject": subject, "visits": visits}
    data.parent.mkdir(parents=True, exist_ok=True)

    def write_data(tmp: Path) -> None:  # streamed: no second copy of the volumes as text
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write("window.TUMORSCOPE_VIEWER = ")
            _dump_volumes(payload, fh)
            fh.write(";\n")

    atomic_write(data, write_data)
    html = render(
        "viewer.html.j2",
        title=f"{study.name}: subject {subject}, viewer",
        subject=subject,
        bundle=f"static/niivue/{_BUNDLE}",
        data_script=f"viewer/sub-{subject}.js",
        niivue_version=NIIVUE_VERSION,
        visits=[{"id": e["id"], "label": e["label"]} for e in visits],
        maps=sorted({m["name"] for e in visits for m in e["volumes"] if m["kind"] == "map"}),
        notes=sorted(notes),
    )
    page = viewer_path(out_dir, subject)
    atomic_write(page, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return page


def _dump_volumes(payload: dict[str, Any], fh: Any) -> None:
    """``json.dump(payload, fh, separators=(",", ":"))``, the same text, without JSON's
    escaping scan of the volumes' base64 ``data`` (characters that need no escaping; the
    scan cost ~0.1 s a subject): the data are replaced by placeholders for the dump and
    written between its pieces."""
    data: list[str] = []
    visits = []
    for visit in payload["visits"]:
        volumes = []
        for vol in visit["volumes"]:
            volumes.append({**vol, "data": f"\x00{len(data)}"})  # JSON: "\u0000<k>"
            data.append(vol["data"])
        visits.append({**visit, "volumes": volumes})
    skeleton = {**payload, "visits": visits}
    text = json.dumps(skeleton, separators=(",", ":"))
    pieces = text.split('"\\u0000')
    fh.write(pieces[0])
    for piece in pieces[1:]:
        k, rest = piece.split('"', 1)
        fh.write('"' + data[int(k)] + '"' + rest)


def _copy_bundle(out_dir: Path) -> None:
    """Copy the NiiVue bundle, its licence and version into ``<out>/report/static/niivue``."""
    dest = layout.report_dir(out_dir) / "static" / "niivue"
    dest.mkdir(parents=True, exist_ok=True)
    for name in (_BUNDLE, "LICENSE", "VERSION"):
        src, dst = _STATIC / name, dest / name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            atomic_write(dst, lambda tmp, s=src: shutil.copyfile(s, tmp))


def _lesion_box(labels: Iterable[Volume]) -> tuple[np.ndarray, np.ndarray] | None:
    """World (mm) box around the lesions of every visit, widened by :data:`MARGIN_MM`."""
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for lab in labels:
        idx = np.argwhere(np.asarray(lab.data) > 0)
        if not len(idx):
            continue
        corners = np.array([idx.min(0) - 0.5, idx.max(0) + 0.5])
        grid = np.array(np.meshgrid(*corners.T, indexing="ij")).reshape(3, -1).T
        world = grid @ lab.affine[:3, :3].T + lab.affine[:3, 3]
        lo, hi = np.minimum(lo, world.min(0)), np.maximum(hi, world.max(0))
    if not np.isfinite(lo).all():
        return None
    return lo - MARGIN_MM, hi + MARGIN_MM


def shrink(
    data: np.ndarray,
    affine: np.ndarray,
    box: tuple[np.ndarray, np.ndarray] | None,
    *,
    crop: bool = False,
) -> tuple[np.ndarray, np.ndarray, str, list[int], int]:
    """A volume in a size the browser opens quickly: crop, then stride (module docstring).

    Parameters
    ----------
    data, affine
        The volume.
    box : (lower, upper) world corners (mm), or None
        The lesions' box with its margin.
    crop : bool, default False
        Crop to ``box`` whatever the size (maps); otherwise only above :data:`MAX_VOXELS`.

    Returns
    -------
    data, affine, how, origin, step
        The data and its affine, what was done ("" when nothing), and where voxel
        ``(0, 0, 0)`` of the result lies in the input and the stride, so that the input's index
        of voxel ``v`` is ``origin + step * v``.
    """
    data = np.asarray(data)
    origin, step, how = [0, 0, 0], 1, []
    if box is not None and (crop or data.size > MAX_VOXELS):
        start, stop = _crop_range(
            tuple(data.shape[:3]),
            np.asarray(affine, dtype=np.float64).tobytes(),
            np.asarray(box, dtype=np.float64).tobytes(),
        )
        if (start > 0).any() or (stop < data.shape[:3]).any():
            data = data[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
            affine = affine.copy()
            affine[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
            origin = [int(x) for x in start]
            how.append(f"cropped to {MARGIN_MM:g} mm around the lesions")
    if data.size > MAX_VOXELS:
        step = math.ceil((data.size / MAX_VOXELS) ** (1 / 3))
        data = data[::step, ::step, ::step]
        affine = affine.copy()
        affine[:3, :3] = affine[:3, :3] * step
        how.append(f"one voxel in {step} kept along each axis")
    return data, affine, ", ".join(how), origin, step


@functools.lru_cache(maxsize=64)
def _crop_range(shape: tuple[int, ...], affine: bytes, box: bytes) -> tuple[np.ndarray, np.ndarray]:
    """First and last + 1 voxel of a grid (``shape``, 4×4 ``affine``) inside a world box
    (2×3 corners), as bytes so that the maps of one grid share it (computed once a grid)."""
    inv = np.linalg.inv(np.frombuffer(affine).reshape(4, 4))
    corners = np.array(np.meshgrid(*np.frombuffer(box).reshape(2, 3).T, indexing="ij"))
    ijk = corners.reshape(3, -1).T @ inv[:3, :3].T + inv[:3, 3]
    start = np.clip(np.floor(ijk.min(0)).astype(int), 0, np.array(shape) - 1)
    stop = np.clip(np.ceil(ijk.max(0)).astype(int) + 1, start + 1, shape)
    start.flags.writeable = False
    stop.flags.writeable = False
    return start, stop


def _nifti_b64(
    data: np.ndarray, affine: np.ndarray, headers: dict[bytes, bytes] | None = None
) -> str:
    """Gzipped NIfTI-1 (float32, mm) as base64 text (compression level 1: 25× faster than
    gzip's default 9 on these maps for ~10 % more bytes; ISA-L when installed, see
    :mod:`tumorscope._gzip`; no name and ``mtime=0`` keep it reproducible).

    ``headers`` caches nibabel's header bytes per shape and affine: a float32 image's header
    does not depend on its values, and a visit's maps share a few grids, so nibabel builds
    each header once (the bytes are nibabel's own: ``test_viewer_nifti_bytes_are_nibabels``).
    """
    a = np.asarray(data, dtype=np.float32)
    key = repr(a.shape).encode() + np.asarray(affine, dtype=np.float64).tobytes()
    head = None if headers is None else headers.get(key)
    if head is None:
        import nibabel as nib

        img = nib.Nifti1Image(np.ascontiguousarray(a), affine)
        img.header.set_xyzt_units("mm")
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        raw = img.to_bytes()
        if headers is not None:
            headers[key] = raw[: len(raw) - a.nbytes]
    else:
        raw = head + a.tobytes(order="F")
    return base64.b64encode(_gzip.compress(raw)).decode("ascii")


def _outline(labels: np.ndarray) -> np.ndarray:
    """In-plane boundary of the lesion labels (1 on the outline, 0 elsewhere)."""
    from scipy import ndimage

    mask = labels > 0
    inner = ndimage.binary_erosion(
        mask, structure=ndimage.generate_binary_structure(2, 1)[..., None]
    )
    return (mask & ~inner).astype(np.float32)


def _threads() -> int:
    """The caller's share of the cores (:func:`tumorscope._threads.share_of_cores`: the
    pipeline's executor sets it per unit, one in a serial run)."""
    from .._threads import share_of_cores

    return share_of_cores()


def _limits(a: np.ndarray, inside: np.ndarray | None) -> tuple[float, float]:
    """Display range of a map: its 1st-99th percentile in the lesions (``inside``, the mask of
    the visit's labels, computed once per visit; None without a lesion), else in the whole
    map, widened by half."""
    ref = a[inside] if inside is not None and inside.shape == a.shape else a
    ref = ref[np.isfinite(ref)]
    if not ref.size:
        return 0.0, 1.0
    lo, hi = np.percentile(ref, [1, 99])
    pad = 0.5 * (hi - lo)
    lo, hi = float(lo - pad), float(hi + pad)
    if float(ref.min()) >= 0:  # finite values: min, not nanmin
        lo = max(lo, 0.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _visit_volumes(
    v: Any,
    vmaps: Mapping[str, VisitMap],
    box: tuple[np.ndarray, np.ndarray] | None,
    limits: dict[str, tuple[float, float]],
    notes: set[str],
    to_base: np.ndarray | None = None,
    *,
    labels: Volume | None = None,
    loaded: Mapping[str, Volume] | None = None,
) -> dict[str, Any] | None:
    """The volumes of one visit for the viewer: anatomical, maps, outline (``labels``: the
    visit's lesion labels; ``loaded``: maps already read).

    The maps are read, ranged and encoded on the caller's share of the cores
    (:func:`_threads`), each independent of the others (decompression, compression and most
    of numpy's work release the GIL); the page is the same, in the same order.
    """

    vols: list[dict[str, Any]] = []
    headers: dict[bytes, bytes] = {}

    def entry(name: str, kind: str, data: np.ndarray, affine: np.ndarray, **extra: Any) -> Any:
        data, aff, how, origin, step = shrink(data, affine, box, crop=kind != "anat")
        if to_base is not None:
            aff = to_base @ aff
        volume = {
            "name": name,
            "kind": kind,
            "shape": list(data.shape),
            "data": _nifti_b64(data, aff, headers),
        }
        return volume | {"origin": origin, "step": step} | extra, how

    anat = reads.anatomical(v)
    if anat is not None:
        a = np.asarray(anat.data, dtype=np.float32)
        if a.ndim == 4:
            a = a[..., 0]
        lo, hi = np.nanpercentile(a, [0.5, 99.5])
        volume, how = entry(
            "anatomical",
            "anat",
            a,
            anat.affine,
            unit="a.u.",
            colormap="gray",
            cal_min=float(lo),
            cal_max=float(hi),
        )
        if how:
            notes.add(f"anatomical image {how}")
        vols.append(volume)
    inside = None if labels is None else np.asarray(labels.data) > 0  # once per visit
    if inside is not None and not inside.any():
        inside = None

    def one_map(name: str) -> tuple[tuple[float, float], dict[str, Any]] | None:
        path, _status, unit = vmaps[name]
        m = (loaded or {}).get(name)
        if m is None:
            m = reads.volume(path, keep=False)  # read once here: not held for the page
        a = np.asarray(m.data, dtype=np.float32)
        if a.ndim != 3:
            return None
        lo, hi = limits[name] if name in limits else _limits(a, inside)
        param = name.split(".")[-1]
        volume, _ = entry(
            name,
            "map",
            a,
            m.affine,
            unit=unit,
            colormap=_COLOURMAPS.get(param, "viridis"),
            cal_min=lo,
            cal_max=hi,
        )
        return (lo, hi), volume

    names = sorted(vmaps)
    threads = min(_threads(), len(names))
    if threads > 1:  # each task in a copy of this context: the page's read cache (reads)
        with ThreadPoolExecutor(threads, thread_name_prefix="tumorscope-viewer") as pool:
            tasks = [pool.submit(contextvars.copy_context().run, one_map, n) for n in names]
            done = [t.result() for t in tasks]
    else:
        done = [one_map(n) for n in names]
    for name, got in zip(names, done, strict=True):
        if got is not None:
            limits.setdefault(name, got[0])
            vols.append(got[1])
    if not vols:
        return None
    if vols[0]["kind"] != "anat":  # no anatomical image: the first map is the background
        vols[0] = {**vols[0], "kind": "anat"}
        # said on the page (sweep of 2026-12-06: a T2w deleted after the run was dropped
        # from the re-rendered report without a word)
        notes.add(
            f"visit {v.id}: no anatomical image in the study (its series is missing); "
            f"{vols[0]['name']} is the background"
        )
    if labels is not None:
        volume, _ = entry(
            "lesion outline",
            "outline",
            _outline(np.asarray(labels.data)),
            labels.affine,
            unit="",
            colormap="red",
            cal_min=0.5,
            cal_max=1.0,
        )
        vols.append(volume)
    days = v.days_on_treatment
    label = f"visit {v.id}" + ("" if days is None else f", day {days}")
    if to_base is not None:
        label += ", registered to baseline"
    return {"id": v.id, "label": label, "volumes": vols}
