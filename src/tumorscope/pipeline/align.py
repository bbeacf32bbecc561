"""Alignment of the series of a visit to its anatomical image (the ``align`` step).

Series of one visit are acquired minutes apart; the patient moves between them (breathing
position, a shift on the table). Lesions are drawn on the anatomical image, so a parameter
map from a series that moved is measured in the wrong tissue. For every series of a visit
the ``align`` step estimates a rigid transform to the anatomical image and measures how far
it moves the lesion voxels:

1. A representative 3-D frame of the series is chosen: the frame with the largest mean
   signal (b = 0 of a DWI, the first echo of a multi-echo series, the longest inversion time
   of an inversion-recovery series, peak enhancement of a DCE series), which carries the
   most anatomy.
2. It is registered rigidly to the anatomical image with Mattes mutual information
   (:func:`tumorscope.preprocessing.registration.register_quick` with its defaults, the
   settings this step has always used: two-level pyramid, 5 000 voxels sampled
   with a fixed seed (all of a smaller image), at most 40 iterations per level, the metric's
   gradient taken at the sampled points (no gradient image per level: ~0.4 s per series at
   128×128×30), SimpleITK on one thread so that a serial and a Dask run give the same
   numbers). With ``align_skip_same_geometry`` a series on the anatomical grid is not
   registered (``status="skipped"``, with the reason; off by default). The anatomical
   image's share of the registrations (its samples, bins, centre of mass) is prepared once
   for the visit (:class:`~tumorscope.preprocessing.registration.QuickRegistration`), and the
   series are read and registered on a pool of as many threads as the unit's share of the
   cores (numba's thread count), the longest first: gzip decompression and the compiled
   registration release the GIL, and every series' result is independent of the others'
   and of the thread count (bit for bit).
3. The transform moves each lesion voxel centre ``x`` to ``T x``; the mean and maximum of
   ``|T x - x|`` over the lesion voxels of the visit (mm) are the motion that matters here.
4. If the mean displacement exceeds ``tolerance_vox`` times the smallest voxel size of the
   series (default half a voxel), the transform is *applied*: ``measure`` resamples the
   lesion masks onto that series' maps through it (nearest label,
   :func:`tumorscope.preprocessing.resample_mask`) — provided the transform matches the
   images better than no motion does (same metric, evaluated at both); a registration
   that wandered off is recorded with its reason and not applied. Below the tolerance the masks are used
   voxel for voxel, so a well-aligned study gives exactly the numbers it gave without this
   step (registration noise on a motionless series is ~0.1–0.4 mm on the phantom).

Series without anatomical contrast (19F images and their reference tubes, hyperpolarised
13C, spectroscopy, the PET's reference masks, the MRE wave phase) are not registered
(``status="skipped"``; their lesion masks are used as given).

Maps keep their own grid: nothing is resampled before fitting (interpolating raw signals
biases fitted parameters); only the lesion masks move.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._frames import BrightestFrame, frame_mean, take_frame
from ..errors import DataError
from ..volume import Volume
from .step import Context, StepOutput, Unit, Upstream, Write, _lesion_files, _series_files, _visit

if TYPE_CHECKING:
    from ..io import Study, Visit
    from ..io.study import Series

__all__ = [
    "ALIGN_REFERENCE",
    "SeriesAlignment",
    "align_applies",
    "align_inputs",
    "align_visit",
    "representative_frame",
    "run_align",
    "series_representative_frame",
]

#: Role of the image the other series are aligned to (the one lesions are drawn on).
ALIGN_REFERENCE = "anatomical"

#: Roles without anatomical contrast: not registered (the PET's reference masks are drawn on
#: the PET grid; the PET itself is registered). The MRE series is the wave's phase (rad): a
#: shear-wave pattern, no anatomy. Registered, it moved the masks by a wrong transform: on
#: the demo's 8 MRE visits (phantom truth: no motion) the registration found 1.7–6.5 mm and
#: 4 of the 8 were applied, with the ITK and the compiled back-ends alike.
_NOT_REGISTRABLE = ("fluorine", "hp13c", "mrs", "pet_", "mre")
#: The second echo of a dual-echo DSC is acquired with the first (role ``dsc``), whose
#: alignment the DSC maps use: it is not registered on its own.
_WITH_FIRST_ECHO = "dsc_echo2"


@dataclass(frozen=True)
class SeriesAlignment:
    """Alignment of one series to the reference (one row of the ``alignments`` table)."""

    series: str
    reference: str
    status: str  # "registered" or "skipped"
    reason: str | None = None
    matrix: np.ndarray | None = None  # reference world -> series world (RAS+, mm)
    mean_displacement_mm: float | None = None
    max_displacement_mm: float | None = None
    rotation_deg: float | None = None
    tolerance_mm: float | None = None
    applied: bool = False
    metric: float | None = None

    def row(self, subject: str, visit: str) -> dict[str, Any]:
        """The database row."""
        return {
            "subject": subject,
            "visit": visit,
            "series": self.series,
            "reference": self.reference,
            "status": self.status,
            "reason": self.reason,
            "matrix": None if self.matrix is None else np.round(self.matrix, 6).tolist(),
            "mean_displacement_mm": self.mean_displacement_mm,
            "max_displacement_mm": self.max_displacement_mm,
            "rotation_deg": self.rotation_deg,
            "tolerance_mm": self.tolerance_mm,
            "applied": self.applied,
            "metric": self.metric,
        }


def representative_frame(vol: Volume) -> Volume:
    """The 3-D frame of a series with the largest mean signal (the volume itself if 3-D)."""
    if vol.data.ndim == 3:
        return vol
    # frame by frame (each frame is contiguous in a NIfTI-ordered array): no float64 copy of
    # the series; the mean of the finite voxels, accumulated in float64
    means = [frame_mean(vol.data[..., k]) for k in range(vol.data.shape[-1])]
    return vol.frame(int(np.argmax(means)))


def series_representative_frame(series: Series) -> Volume:
    """:func:`representative_frame` of a series, read one frame at a time
    (:meth:`Volume.frames_from_nifti`): the same frame, without holding the whole series
    (align's memory was that of the visit's largest series, beside the DCE fit).

    The check of a run's images (``register``: :func:`tumorscope.io.study.validate_visit`)
    reads every series whole, frame by frame, and keeps the frame it finds the same way
    (:func:`tumorscope._frames.keep_frame`): taken from there, the series is not read a
    second time (0.24 of the large visit's 0.62 CPU-s of ``align``, serial, 2026-12-06).
    """
    kept = take_frame(series.path)
    if kept is not None and kept.meta.get("role") == series.role:
        return kept
    best = BrightestFrame()
    for frame in Volume.frames_from_nifti(series.path, meta={"role": series.role}):
        best.offer(frame)
    if best.frame is None:  # pragma: no cover - a NIfTI image has at least one frame
        raise DataError("image has no frame", file=series.path)
    return best.frame


def _lesion_points(labels: Volume) -> np.ndarray:
    """World coordinates (n, 4, homogeneous) of the lesion voxel centres; the image centre
    if the visit has no lesion voxels."""
    idx = np.argwhere(np.asarray(labels.data) > 0).astype(np.float64)
    if idx.size == 0:
        idx = (np.array(labels.spatial_shape, dtype=np.float64) - 1.0)[None, :] / 2.0
    pts = np.c_[idx, np.ones(len(idx))]
    return pts @ np.asarray(labels.affine, dtype=np.float64).T


def _metric(reference: Volume, moving: Volume, matrix: np.ndarray, sampling: float) -> float:
    """Mattes mutual information (50 bins, full resolution) of ``moving`` seen through
    ``matrix`` (reference world -> moving world) against ``reference``; lower is better."""
    import SimpleITK as sitk

    from ..preprocessing.registration import _to_sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(float(sampling), 1234)
    reg.SetInterpolator(sitk.sitkLinear)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    m = lps @ np.asarray(matrix, dtype=np.float64) @ lps  # RAS -> LPS (its own inverse)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(m[:3, :3].ravel().tolist())
    tx.SetTranslation(m[:3, 3].tolist())
    reg.SetInitialTransform(tx, inPlace=False)
    f_img = _to_sitk(reference, np.float32)
    m_img = _to_sitk(moving, np.float32)
    return float(reg.MetricEvaluate(f_img, m_img))


def align_visit(
    visit: Visit,
    *,
    tolerance_vox: float = 0.5,
    skip_same_geometry: bool = False,
    threads: int | None = None,
) -> list[SeriesAlignment]:
    """Align every series of a visit to its anatomical image.

    Parameters
    ----------
    visit : Visit
        Must hold an ``anatomical`` series and a lesion map.
    tolerance_vox : float, default 0.5
        Mean lesion displacement, in voxels of the series (smallest voxel size), above which
        the transform is applied to the lesion masks.
    skip_same_geometry : bool, default False
        Do not register a series on the reference's grid (same spatial shape and affine to
        1e-3 mm): recorded as ``skipped`` with the reason, masks used as given. Only for
        studies whose series share one session geometry *and* position (one breath-hold):
        an identical affine alone does not prove that the patient kept still.
    threads : int, optional
        Series read and registered at once, on a thread pool (reading a gzip stream and the
        compiled registration release the GIL). Default: this thread's share of the cores,
        numba's thread count (which the pipeline's executor sets per unit; one without
        numba). Each series' work is independent of the others' and of the thread it runs
        on: the result is the same, bit for bit, whatever the count.

    Returns
    -------
    list of SeriesAlignment
        One per series other than the reference, in the visit's series order.
    """

    from ..preprocessing.registration import QuickRegistration, itk_one_thread

    if tolerance_vox <= 0 or not np.isfinite(tolerance_vox):
        raise DataError(
            f"align tolerance must be a positive number of voxels, got {tolerance_vox!r}",
            field="align_tolerance_vox",
        )
    ref_series = visit.series[ALIGN_REFERENCE]
    reference = series_representative_frame(ref_series)
    assert visit.lesions is not None
    points = _lesion_points(visit.lesions.load_labels())
    todo = [
        (role, series)
        for role, series in visit.series.items()
        if role not in (ALIGN_REFERENCE, _WITH_FIRST_ECHO) and not role.startswith(_NOT_REGISTRABLE)
    ]
    # the reference's share of the registrations (samples, bins, centre), once for the visit
    quick = QuickRegistration(reference) if todo else None

    def one(role: str, series: Series) -> SeriesAlignment:
        assert quick is not None
        moving = series_representative_frame(series)
        if skip_same_geometry and moving.same_grid(reference):
            return SeriesAlignment(
                role,
                ALIGN_REFERENCE,
                "skipped",
                "same grid and affine as the anatomical image (one session "
                "geometry, option align_skip_same_geometry); masks used as given",
            )
        reg = quick.register(moving)
        moved = points @ reg.matrix.T
        d = np.linalg.norm(moved[:, :3] - points[:, :3], axis=1)
        tol = float(tolerance_vox) * float(min(moving.voxel_sizes))
        mean_d = float(d.mean())
        reason = None
        applied = mean_d > tol
        if applied:
            # a registration that wandered off (low contrast, little overlap) must not
            # move the masks: keep it only if it matches better than no motion at all
            at_identity = _metric(reference, moving, np.eye(4), quick.sampling)
            at_solution = _metric(reference, moving, reg.matrix, quick.sampling)
            if not at_solution < at_identity:
                applied = False
                reason = (
                    f"registration did not match better than no motion (metric "
                    f"{at_solution:.4f} vs {at_identity:.4f}); masks used as given"
                )
        return SeriesAlignment(
            role,
            ALIGN_REFERENCE,
            "registered",
            reason,
            reg.matrix,
            round(mean_d, 4),
            round(float(d.max()), 4),
            round(reg.rotation_deg(), 4),
            round(tol, 4),
            bool(applied),
            float(reg.metric_value),
        )

    n = min(_threads() if threads is None else max(1, int(threads)), len(todo))
    with itk_one_thread():
        if n > 1:
            # the longest series first (file size: its frames to decompress), so that the
            # last to finish is a short one; the results are taken back in series order
            order = sorted(todo, key=lambda rs: -_file_size(rs[1].path))
            with ThreadPoolExecutor(n, thread_name_prefix="tumorscope-align") as pool:
                futures = {rs[0]: pool.submit(one, *rs) for rs in order}
                done = {role: futures[role].result() for role, _ in todo}
        else:
            done = {role: one(role, series) for role, series in todo}
    for role, series in visit.series.items():  # frames kept for series it does not register
        if role not in done:
            take_frame(series.path)
    out: list[SeriesAlignment] = []
    for role in visit.series:
        if role == ALIGN_REFERENCE:
            continue
        if role in done:
            out.append(done[role])
        else:
            out.append(
                SeriesAlignment(
                    role,
                    ALIGN_REFERENCE,
                    "skipped",
                    "the second echo of a dual-echo DSC: acquired with the first (role dsc), "
                    "whose alignment the DSC maps use"
                    if role == _WITH_FIRST_ECHO
                    else "no anatomical contrast to register (19F, 13C, MRS, PET reference "
                    "masks, MRE wave phase); masks used as given",
                )
            )
    return out


def _file_size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # reading it will say what is wrong, in its turn
        return 0


def _threads() -> int:
    """This thread's share of the cores (:func:`tumorscope._threads.share_of_cores`: the
    executor sets it per unit, one in a serial run)."""
    from .._threads import share_of_cores

    return share_of_cores(load=True)


# ---------------------------------------------------------------------------- the step


def align_applies(study: Study, unit: Unit) -> bool:
    """A visit with the anatomical image, lesions and another series to align."""
    visit = _visit(study, unit)
    return (
        ALIGN_REFERENCE in visit.series
        and visit.lesions is not None
        and any(r != ALIGN_REFERENCE for r in visit.series)
    )


def align_inputs(ctx: Context, study: Study, unit: Unit) -> list[Path]:
    """Every series of the visit (with sidecars) and its lesion map."""
    visit = _visit(study, unit)
    files = [p for ser in visit.series.values() for p in _series_files(ser.path)]
    return files + _lesion_files(visit)


def run_align(ctx: Context, study: Study, unit: Unit, upstream: Upstream) -> StepOutput:
    """Rigid alignment of every series of the visit to its anatomical image
    (:func:`align_visit`); writes :func:`tumorscope.layout.align_path`."""
    from ..files import write_json
    from ..layout import align_path

    assert unit.visit is not None
    result = align_visit(
        _visit(study, unit),
        tolerance_vox=ctx.options.align_tolerance_vox,
        skip_same_geometry=ctx.options.align_skip_same_geometry,
    )
    rows = [a.row(unit.subject, unit.visit) for a in result]
    path = write_json(align_path(ctx.out_dir, unit.subject, unit.visit), rows, indent=1)
    notes = [
        f"{a.series}: lesions move {a.mean_displacement_mm:.2f} mm on average "
        f"(tolerance {a.tolerance_mm:.2f} mm): masks resampled for its maps"
        for a in result
        if a.applied
    ]
    where = {"subject": unit.subject, "visit": unit.visit}
    return StepOutput(files=[path], writes=[Write("alignments", where, rows)], notes=notes)
