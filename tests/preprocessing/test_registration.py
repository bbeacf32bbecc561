"""Registration and resampling against known transforms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tumorscope.errors import DataError
from tumorscope.preprocessing import register, resample, resample_mask
from tumorscope.volume import Volume

CENTRES = np.array([[0.0, 0.0, 0.0], [14.0, -6.0, 4.0], [-10.0, 12.0, -6.0], [4.0, 16.0, 8.0]])
WIDTHS = np.array([10.0, 5.0, 7.0, 4.0])
HEIGHTS = np.array([1.0, 0.8, -0.6, 1.2])


def _scene(xyz):
    d2 = ((xyz[:, None, :] - CENTRES[None]) ** 2).sum(-1)
    return (HEIGHTS * np.exp(-d2 / (2 * WIDTHS**2))).sum(-1) * 1000.0


def _sample(shape, affine, world_map=None):
    ijk = np.indices(shape).reshape(3, -1).T.astype(float)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    if world_map is not None:
        xyz = xyz @ world_map[:3, :3].T + world_map[:3, 3]
    return _scene(xyz).reshape(shape).astype(np.float32)


def _affine(spacing, shape, rot=np.eye(3)):
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = -(a[:3, :3] @ ((np.asarray(shape) - 1) / 2))
    return a


def _rigid(angles_deg, shift):
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    m[:3, 3] = shift
    return m


@pytest.mark.parametrize("metric", ["mean_squares", "mattes"])
def test_rigid_registration_recovers_a_known_motion(metric):
    shape = (36, 36, 16)
    fixed_aff = _affine((2.0, 2.0, 3.0), shape)
    truth = _rigid((2.0, -3.0, 6.0), (3.0, -2.5, 1.5))  # fixed world -> moving world
    # the moving image is on an oblique grid of its own
    moving_aff = _affine(
        (2.0, 2.0, 3.0), shape, Rotation.from_euler("z", 10, degrees=True).as_matrix()
    )
    fixed = Volume(_sample(shape, fixed_aff), fixed_aff)
    moving = Volume(_sample(shape, moving_aff, np.linalg.inv(truth)), moving_aff)
    reg = register(fixed, moving, kind="rigid", metric=metric)
    pts = np.array([[0, 0, 0, 1], [15, 10, 5, 1], [-15, 10, -5, 1], [10, -15, 0, 1.0]])
    err = np.linalg.norm((pts @ reg.matrix.T - pts @ truth.T)[:, :3], axis=1)
    assert err.max() < 0.6, (err, reg.stop_condition)
    assert reg.rotation_deg() == pytest.approx(
        np.degrees(Rotation.from_matrix(truth[:3, :3]).magnitude()), abs=0.5
    )


@pytest.mark.parametrize(
    "preset",
    [
        {},  # the align step's
        {"samples": 10_000, "iterations": 100, "min_step": 1e-3, "relaxation": 0.7},
    ],
)
def test_quick_registration_recovers_a_known_motion(preset):
    """The pipeline's presets (``align``, ``functional``) on the scene above, on one thread
    and reproducibly."""
    import SimpleITK as sitk

    from tumorscope.pipeline.functional import _REGISTRATION
    from tumorscope.preprocessing.registration import register_quick

    assert not preset or preset == _REGISTRATION
    shape = (48, 48, 16)
    fixed_aff = _affine((2.0, 2.0, 4.0), shape)
    truth = _rigid((1.5, -2.0, 4.0), (6.0, -4.0, 3.0))
    moving_aff = _affine(
        (2.0, 2.0, 4.0), shape, Rotation.from_euler("z", 5, degrees=True).as_matrix()
    )
    fixed = Volume(_sample(shape, fixed_aff), fixed_aff)
    moving = Volume(_sample(shape, moving_aff, np.linalg.inv(truth)), moving_aff)
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    reg = register_quick(fixed, moving, **preset)
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == threads  # restored
    pts = np.array([[0, 0, 0, 1], [15, 10, 5, 1], [-15, 10, -5, 1], [10, -15, 0, 1.0]])
    err = np.linalg.norm((pts @ reg.matrix.T - pts @ truth.T)[:, :3], axis=1)
    assert err.max() < 0.6, (err, reg.stop_condition)
    np.testing.assert_array_equal(register_quick(fixed, moving, **preset).matrix, reg.matrix)


def test_resample_applies_the_transform():
    shape = (30, 30, 12)
    aff = _affine((2.0, 2.0, 3.0), shape)
    truth = _rigid((0.0, 0.0, 8.0), (4.0, 2.0, 0.0))
    moving = Volume(_sample(shape, aff, np.linalg.inv(truth)), aff)
    fixed = Volume(_sample(shape, aff), aff)
    back = resample(moving, fixed, transform=truth)
    inner = (slice(5, 25), slice(5, 25), slice(3, 9))
    err = np.abs(back.data[inner] - fixed.data[inner]).max()
    assert err < 0.05 * np.abs(fixed.data[inner]).max()
    assert np.isnan(resample(moving, fixed, transform=_rigid((0, 0, 0), (500, 0, 0))).data).all()
    far = resample(moving, fixed, transform=_rigid((0, 0, 0), (500, 0, 0)), fill=0.0)
    assert (far.data == 0).all()
    # a failed-fit NaN stays NaN (not the fill value) and only spreads to its neighbours
    holed = moving.data.copy()
    holed[15, 15, 6] = np.nan
    same = resample(moving.with_data(holed), moving, fill=0.0)
    assert np.isnan(same.data[15, 15, 6]) and int(np.isnan(same.data).sum()) == 1
    assert same.data[0, 0, 0] == pytest.approx(moving.data[0, 0, 0])


def _two_balls():
    fine_shape = (120, 120, 40)
    fine = _affine((0.5, 0.5, 1.0), fine_shape)
    ijk = np.indices(fine_shape).reshape(3, -1).T
    xyz = (ijk @ fine[:3, :3].T + fine[:3, 3]).reshape(*fine_shape, 3)
    labels = np.zeros(fine_shape, np.int16)
    labels[((xyz - [8, 0, 0]) ** 2).sum(-1) <= 9.0**2] = 1
    labels[((xyz - [-15, 5, 2]) ** 2).sum(-1) <= 6.0**2] = 4
    coarse_shape = (32, 32, 10)
    coarse_aff = _affine((2.0, 2.0, 4.0), coarse_shape)
    coarse_aff[:3, 3] += [0.13, -0.21, 0.37]  # target centres not on fine voxel corners (ties)
    coarse = Volume(np.zeros(coarse_shape, np.float32), coarse_aff)
    return Volume(labels, fine), coarse, ((1, [8, 0, 0], 9.0), (4, [-15, 5, 2], 6.0))


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_resample_mask_nearest_samples_the_target_centres():
    mask, coarse, balls = _two_balls()
    out = resample_mask(mask, coarse)
    assert out.data.dtype == np.int32
    assert set(np.unique(out.data)) == {0, 1, 4}
    ijk = np.indices(coarse.spatial_shape).reshape(3, -1).T.astype(float)
    xyz = ijk @ coarse.affine[:3, :3].T + coarse.affine[:3, 3]
    for lab, centre, radius in balls:
        dist = np.sqrt(((xyz - centre) ** 2).sum(-1)).reshape(coarse.spatial_shape)
        expected = dist <= radius
        got = out.data == lab
        # disagreements only where the centre is within one fine voxel of the surface
        assert np.all(np.abs(dist[got != expected] - radius) < 0.75)
        assert _dice(got, expected) > 0.85
    # identity onto the same grid is exact
    same = resample_mask(mask, mask)
    assert np.array_equal(same.data, mask.data)


def test_resample_mask_majority_votes_the_partial_volume():
    mask, coarse, balls = _two_balls()
    out = resample_mask(mask, coarse, method="majority")
    assert set(np.unique(out.data)) == {0, 1, 4}
    # independent majority vote of the analytic partial volume (5 sub-points per axis)
    ijk = np.indices(coarse.spatial_shape).reshape(3, -1).T.astype(float)
    off = (np.arange(5) + 0.5) / 5 - 0.5
    sub = np.stack(np.meshgrid(off, off, off, indexing="ij"), -1).reshape(-1, 3)
    for lab, centre, radius in balls:
        frac = np.zeros(len(ijk))
        for o in sub:
            xyz = (ijk + o) @ coarse.affine[:3, :3].T + coarse.affine[:3, 3]
            frac += ((xyz - centre) ** 2).sum(-1) <= radius**2
        pv = (frac / len(sub)).reshape(coarse.spatial_shape)
        got = out.data == lab
        # disagreements only for voxels about half inside (fine-grid discretisation)
        assert np.all(np.abs(pv[got != (pv > 0.5)] - 0.5) < 0.2)
        assert _dice(got, pv > 0.5) > 0.85
    with pytest.raises(DataError, match="method"):
        resample_mask(mask, coarse, method="linear")  # type: ignore[arg-type]


def test_resample_mask_through_a_registration_transform():
    shape = (40, 40, 20)
    aff = _affine((1.0, 1.0, 2.0), shape)
    labels = np.zeros(shape, np.int32)
    labels[15:25, 12:20, 8:12] = 3
    truth = _rigid((0, 0, 0), (5.0, -4.0, 2.0))  # target world -> source world
    out = resample_mask(
        Volume(labels, aff), Volume(np.zeros(shape, np.float32), aff), transform=truth
    )
    # a point p of the target maps to p + shift in the source: the box moves by -shift
    expected = np.zeros(shape, np.int32)
    expected[10:20, 16:24, 7:11] = 3
    assert np.array_equal(out.data, expected)


def test_bad_inputs():
    aff = np.eye(4)
    const = Volume(np.ones((8, 8, 8), np.float32), aff)
    other = Volume(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), aff)
    with pytest.raises(DataError, match="constant"):
        register(const, other)
    with pytest.raises(DataError, match="3-D"):
        register(Volume(np.zeros((8, 8, 8, 2), np.float32), aff), other)
    with pytest.raises(DataError, match="kind"):
        register(other, other, kind="elastic")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="non-integer"):
        resample_mask(Volume(np.full((4, 4, 4), 0.5, np.float32), aff), other)


def test_resample_mask_nearest_equals_simpleitk_through_an_oblique_transform():
    import SimpleITK as sitk

    from tumorscope.preprocessing.registration import _to_sitk

    rng = np.random.default_rng(2)
    shape = (30, 28, 12)
    src_aff = _affine(
        (0.9, 1.1, 2.5), shape, Rotation.from_euler("z", 12, degrees=True).as_matrix()
    )
    labels = np.zeros(shape, np.int32)
    labels[5:20, 6:22, 3:9] = rng.integers(0, 4, (15, 16, 6))
    tgt_shape = (20, 20, 10)
    tgt = Volume(np.zeros(tgt_shape, np.float32), _affine((1.7, 1.3, 3.1), tgt_shape))
    t = _rigid((3.0, -2.0, 5.0), (1.3, -0.7, 0.4))
    ours = resample_mask(Volume(labels, src_aff), tgt, transform=t)
    # the same resampling in SimpleITK (LPS): x_src = F t F x_tgt with F = diag(-1, -1, 1)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ t @ np.diag([-1.0, -1.0, 1.0, 1.0])
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(lps[:3, :3].ravel().tolist())
    tx.SetTranslation(lps[:3, 3].tolist())
    out = sitk.Resample(
        _to_sitk(Volume(labels, src_aff), np.int32),
        _to_sitk(tgt, np.float32),
        tx,
        sitk.sitkNearestNeighbor,
        0,
    )
    ref = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
    assert ref.any()
    assert np.array_equal(ours.data, ref)
    # and the transform matters: without it the maps differ
    assert not np.array_equal(resample_mask(Volume(labels, src_aff), tgt).data, ref)


def test_itk_one_thread_is_shared_by_concurrent_blocks() -> None:
    """Blocks open at once in two threads keep ITK on one thread until the last one leaves
    (a per-block save and restore let the first to leave undo the setting under the other)."""
    import threading

    import SimpleITK as sitk

    from tumorscope.preprocessing.registration import itk_one_thread

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(3)  # not 1, whatever the machine
    inside, leave_a = threading.Event(), threading.Event()
    seen: list[int] = []

    def a() -> None:
        with itk_one_thread():
            inside.set()
            leave_a.wait(5)

    t = threading.Thread(target=a)
    t.start()
    inside.wait(5)
    with itk_one_thread():
        leave_a.set()
        t.join(5)  # a has left: the setting stays while this block is open
        seen.append(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())
    try:
        assert seen == [1]
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 3
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
