"""SULpeak, MTV and TLG on shapes whose values are known analytically."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.models.pet import (
    comparable_references,
    lesion_uptake,
    liver_reference,
    mtv_ml,
    peak_kernel,
    percist_threshold,
    sphere_mask,
    sul_peak,
    tlg,
)


def test_peak_kernel_is_one_millilitre():
    for vox in [(1.0, 1.0, 1.0), (2.0, 2.0, 3.0), (4.0, 4.0, 4.0)]:
        k = peak_kernel(vox)
        assert k.sum() * np.prod(vox) / 1000 == pytest.approx(1.0, rel=0.01)


def test_peak_of_a_large_uniform_sphere_is_its_activity():
    vox = (2.0, 2.0, 2.0)
    shape = (40, 40, 40)
    img = np.full(shape, 1.0)
    les = sphere_mask(shape, (20, 20, 20), 20.0, vox)
    img[les] = 7.5
    peak, _centre, trunc = sul_peak(img, les, vox)
    assert peak == pytest.approx(7.5, rel=1e-12)
    assert not trunc


def test_peak_of_a_linear_ramp_is_the_value_at_the_centre():
    # the mean of a linear function over a centrally symmetric sphere is its centre value
    vox = (2.0, 2.0, 2.0)
    x = np.arange(30)[:, None, None] * np.ones((30, 30, 30))
    img = 1.0 + 0.1 * x
    les = np.zeros(img.shape, bool)
    les[10:20, 10:20, 10:20] = True
    peak, centre, _ = sul_peak(img, les, vox)
    assert centre[0] == 19
    assert peak == pytest.approx(1.0 + 0.1 * 19, rel=1e-12)


def test_peak_of_a_small_hot_sphere_is_diluted_by_the_1ml_sphere():
    # a 4 mm radius sphere of activity A in zero background, inside the 6.2 mm peak sphere:
    # peak = A * V_hot / 1 mL (V_hot counted on the grid); error only from the kernel volume
    vox = (0.5, 0.5, 0.5)
    shape = (41, 41, 41)
    hot = sphere_mask(shape, (20, 20, 20), 4.0, vox)
    img = np.where(hot, 10.0, 0.0)
    peak, centre, _ = sul_peak(img, hot, vox)
    v_hot_ml = hot.sum() * 0.125 / 1000
    assert v_hot_ml == pytest.approx(4 / 3 * math.pi * 64 / 1000, rel=0.02)
    # every centre within 6.2 - 4 mm of the hot sphere's takes it whole
    assert np.linalg.norm((np.array(centre) - 20) * 0.5) <= 2.2 + 0.5
    assert peak == pytest.approx(10.0 * v_hot_ml / 1.0, rel=0.01)


def test_peak_at_image_edge_is_flagged():
    img = np.ones((10, 10, 10))
    les = np.zeros_like(img, bool)
    les[0, 5, 5] = True
    _, _, trunc = sul_peak(img, les, (2.0, 2.0, 2.0))
    assert trunc


def test_mtv_and_tlg_on_two_nested_cubes():
    # inner 4x4x4 cube SUV 10, shell to 8x8x8 SUV 3, 2 mm voxels (8 uL each)
    vox = (2.0, 2.0, 2.0)
    img = np.zeros((12, 12, 12))
    les = np.zeros(img.shape, bool)
    les[2:10, 2:10, 2:10] = True
    img[les] = 3.0
    img[4:8, 4:8, 4:8] = 10.0
    v = 0.008
    m41, _ = mtv_ml(img, les, vox, 0.41 * 10.0)
    assert m41 == pytest.approx(64 * v)
    assert tlg(img, les, vox, 4.1) == pytest.approx(64 * v * 10.0)
    m25, _ = mtv_ml(img, les, vox, 2.5)
    assert m25 == pytest.approx(512 * v)
    assert tlg(img, les, vox, 2.5) == pytest.approx(64 * v * 10 + 448 * v * 3)
    u = lesion_uptake(img, les, vox, percist_threshold=percist_threshold(2.0, 0.3))
    assert u.suv_max == 10.0
    assert u.mtv_percist_ml == pytest.approx(64 * v)  # threshold 3.6
    assert u.tlg_percist_g == pytest.approx(64 * v * 10)
    assert u.suv_mean == pytest.approx((64 * 10 + 448 * 3) / 512)
    assert math.isnan(lesion_uptake(img, les, vox).mtv_percist_ml)


def test_bad_inputs():
    with pytest.raises(DataError, match="empty"):
        sul_peak(np.ones((5, 5, 5)), np.zeros((5, 5, 5), bool), (1, 1, 1))
    with pytest.raises(DataError, match="shape"):
        sul_peak(np.ones((5, 5, 5)), np.ones((5, 5, 4), bool), (1, 1, 1))
    img = np.ones((5, 5, 5))
    img[2, 2, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        mtv_ml(img, np.ones((5, 5, 5), bool), (1, 1, 1), 1.0)


def test_liver_sphere_avoids_a_metastasis_and_reports_its_uptake():
    rng = np.random.default_rng(3)
    vox = (3.0, 3.0, 3.0)
    shape = (50, 40, 40)
    liver = sphere_mask(shape, (25, 20, 20), 60.0, vox) & (np.arange(50)[:, None, None] > 3)
    img = np.where(liver, rng.normal(2.0, 0.2, shape), 0.5)
    met = sphere_mask(shape, (16, 20, 20), 12.0, vox)  # in the low-index half
    img[met] = 8.0
    # an LPS-like grid: x falls with the first index, so the low-index half is the right
    wx = -3.0 * np.arange(50)[:, None, None]
    ref = liver_reference(img, liver, vox, world_x_mm=wx)
    assert ref.ok, ref.problems
    assert not (sphere_mask(shape, ref.centre, 15.0, vox) & met).any()
    assert ref.centre[0] <= 25
    assert ref.mean == pytest.approx(2.0, abs=0.05)
    assert ref.sd == pytest.approx(0.2, abs=0.03)
    assert ref.volume_ml == pytest.approx(4 / 3 * math.pi * 15**3 / 1000, rel=0.1)
    # a liver too small for a 3 cm sphere is flagged
    small = sphere_mask(shape, (25, 20, 20), 9.0, vox)
    assert not liver_reference(img, small, vox).ok
    # manual VOI
    assert liver_reference(img, small, vox, automatic=False).method == "mask"


def test_liver_comparability_rule():
    # PERCIST: "the liver SUL ... should not differ by more than 20% and 0.3 SUL units"
    assert comparable_references(2.0, 2.2)[0]
    assert not comparable_references(2.0, 2.35)[0]  # 0.35 units
    assert not comparable_references(1.0, 1.25)[0]  # 25 %


# ---------------------------------------------------------------- fast paths vs the old code


def _search_case(seed: int, kind: str):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape, vox, r = (40, 36, 14), (2.0, 2.0, 3.0), 7.0
    img = np.full(shape, 1.3) if kind == "uniform" else 1.0 + 0.1 * rng.standard_normal(shape)
    m = np.zeros(shape, bool)
    m[4:36, 3:33, 1:13] = True
    if kind == "edge":  # cut by five faces of the volume: the candidates' box is cut too
        m[:, 3:, :] = True
    if kind == "nan":
        img[10, 10, 5] = np.nan
        img[20:23, 12:15, 6] = np.nan
    if kind == "hot":  # a metastasis in the liver: far from the minimum, far from the box
        img[15:20, 15:20, 4:9] = 9.0
    cand = ndimage.distance_transform_edt(m, sampling=vox) >= r
    ball = sphere_mask(
        tuple(2 * math.ceil(r / v) + 1 for v in vox),
        tuple(float(math.ceil(r / v)) for v in vox),
        r,
        vox,
    )
    return img, m, cand, ball


@pytest.mark.parametrize("kind", ["noisy", "uniform", "nan", "hot", "edge"])
def test_liver_search_picks_the_centre_of_the_whole_volume_correlation(kind):
    # the FFT-screened search against the search as first written (scipy.ndimage.correlate
    # of the three sums over the whole volume, argmin in C order): the same voxel, ties in a
    # uniform liver included
    from tumorscope.models.pet.reference import _most_homogeneous, _most_homogeneous_reference

    for seed in range(3):
        img, m, cand, ball = _search_case(seed, kind)
        assert _most_homogeneous(img, m, cand, ball) == _most_homogeneous_reference(
            img, m, cand, ball
        )


def test_exact_sphere_sums_are_scipy_ndimage_correlate_bit_for_bit():
    from scipy import ndimage

    from tumorscope.models.pet.reference import _exact_sums

    img, m, cand, ball = _search_case(5, "nan")
    x = np.where(np.isfinite(img), img, 0.0)
    arrays = [(np.isfinite(img) & m).astype(float), np.where(m, x, 0.0), np.where(m, x * x, 0.0)]
    half = np.array(ball.shape) // 2
    centres = np.argwhere(cand)
    ours = _exact_sums([np.pad(a, [(h, h) for h in half]) for a in arrays], centres, ball)
    for a, o in zip(arrays, ours, strict=True):
        ref = ndimage.correlate(a, ball.astype(float), mode="constant")[tuple(centres.T)]
        np.testing.assert_array_equal(o, ref)


def test_fft_convolution_is_scipy_signal_fftconvolve_bit_for_bit():
    from scipy import signal

    from tumorscope.models.pet.uptake import _fftconvolve_same

    rng = np.random.default_rng(0)
    k = peak_kernel((2.0, 2.0, 3.0))
    for shape in [(20, 17, 9), (33, 40, 12), (5, 6, 7)]:
        a = rng.random(shape)
        np.testing.assert_array_equal(_fftconvolve_same(a, k), signal.fftconvolve(a, k, "same"))


def test_lesion_uptake_on_its_box_equals_each_measure_on_the_whole_volume():
    # lesion_uptake measures on the lesion's box (+ the peak sphere's half-width): the same
    # numbers as each measure called on the whole volume, also for a lesion at the image edge
    rng = np.random.default_rng(3)
    img = rng.gamma(4.0, 0.5, (40, 36, 20))
    vox = (2.0, 2.5, 3.0)
    for centre in ((20, 18, 10), (1, 30, 18)):  # inside; cut by two edges
        m = sphere_mask(img.shape, centre, 9.0, vox)
        img[m] += 5.0 * rng.random(int(m.sum()))
        u = lesion_uptake(img, m, vox, percist_threshold=3.0)
        smax = float(img[m].max())
        assert u.suv_max == smax and u.suv_mean == float(img[m].mean())
        assert (u.suv_peak, u.peak_truncated) == (
            sul_peak(img, m, vox)[0],
            sul_peak(img, m, vox)[2],
        )
        assert u.mtv41_ml == mtv_ml(img, m, vox, 0.41 * smax)[0]
        assert u.tlg41_g == tlg(img, m, vox, 0.41 * smax)
        assert (u.mtv25_ml, u.tlg25_g) == (mtv_ml(img, m, vox, 2.5)[0], tlg(img, m, vox, 2.5))
        assert (u.mtv_percist_ml, u.tlg_percist_g) == (
            mtv_ml(img, m, vox, 3.0)[0],
            tlg(img, m, vox, 3.0),
        )
    assert peak_kernel(vox) is not peak_kernel(vox)  # callers get their own array


@pytest.mark.parametrize("world_x", [False, True])
@pytest.mark.parametrize("edge", [False, True])
def test_liver_reference_on_the_mask_box_equals_it_on_the_whole_volume(world_x, edge, monkeypatch):
    # the search runs on the liver's bounding box + 1 voxel: the same reference as on the
    # whole volume (the box widened to it), for a liver inside the volume and one cut by
    # three of its faces (beyond which nothing is background)
    from tumorscope.models.pet import reference

    rng = np.random.default_rng(5)
    img = rng.normal(2.0, 0.3, (30, 28, 16))
    vox = (4.0, 4.0, 3.0)
    liver = np.zeros(img.shape, bool)
    liver[
        (slice(0, 24), slice(4, 28), slice(2, 16))
        if edge
        else (slice(3, 24), slice(4, 25), slice(2, 14))
    ] = True
    img[10:14, 10:14, 6:10] += 4.0  # a metastasis to avoid
    wx = None
    if world_x:
        wx = np.broadcast_to(-4.0 * np.arange(img.shape[0])[:, None, None], img.shape)
    a = liver_reference(img, liver, vox, world_x_mm=wx, diameter_mm=20.0)
    whole = (slice(None),) * 3
    monkeypatch.setattr(reference, "_bbox", lambda m, margin: ([0, 0, 0], whole))
    b = liver_reference(img, liver, vox, world_x_mm=wx, diameter_mm=20.0)
    assert a == b and a.centre is not None
