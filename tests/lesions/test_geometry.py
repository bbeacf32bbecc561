"""Lesion geometry against shapes with analytic answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tumorscope.errors import DataError
from tumorscope.lesions.geometry import GEOMETRY_KEYS, axial_axis, measure


def _grid_affine(spacing, rotation=None, shape=None, centre=(0.0, 0.0, 0.0)):
    """Affine whose voxel-centre grid is centred on ``centre`` (a voxel centre if shape is odd)."""
    lin = np.diag(spacing).astype(float)
    if rotation is not None:
        lin = rotation @ lin
    a = np.eye(4)
    a[:3, :3] = lin
    half = (np.asarray(shape) - 1) / 2.0
    a[:3, 3] = np.asarray(centre) - lin @ half
    return a


def _ellipsoid_mask(shape, affine, semi, rotation=np.eye(3), centre=(0.0, 0.0, 0.0)):
    ijk = np.indices(shape).reshape(3, -1).T.astype(float)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3] - np.asarray(centre)
    local = xyz @ rotation  # coordinates in the ellipsoid's own frame
    inside = ((local / np.asarray(semi)) ** 2).sum(axis=1) <= 1.0
    return inside.reshape(shape)


def _section_axes(semi, rotation, plane_basis):
    """Full axes (2a', 2b') of the central section of an ellipsoid by a plane (analytic)."""
    m = rotation @ np.diag(1.0 / np.asarray(semi) ** 2) @ rotation.T
    q, _ = np.linalg.qr(plane_basis)
    lam = np.linalg.eigvalsh(q.T @ m @ q)
    return 2.0 / np.sqrt(lam.min()), 2.0 / np.sqrt(lam.max())


def test_keys_and_units_of_a_disc():
    h = 0.5
    shape = (121, 121, 3)
    aff = _grid_affine((h, h, 4.0), shape=shape)
    m = _ellipsoid_mask(shape, aff, (20.0, 20.0, 1e9))
    r = measure(m, aff)
    assert tuple(r) == GEOMETRY_KEYS
    assert r["volume_ml"] == pytest.approx(np.pi * 20.0**2 * 12.0 / 1000.0, rel=0.01)
    assert r["longest_diameter_mm"] == pytest.approx(40.0, abs=h)
    assert r["short_axis_mm"] == pytest.approx(40.0, abs=h)
    assert r["short_axis_mm"] <= r["longest_diameter_mm"] + 1e-9
    assert r["bidimensional_product_mm2"] == pytest.approx(
        r["longest_diameter_mm"] * r["short_axis_mm"]
    )
    # 3-D: the cylinder's diagonal across its 3 slices (faces at +-6 mm)
    assert r["max_3d_diameter_mm"] == pytest.approx(np.hypot(40.0, 12.0), abs=h)


@pytest.mark.parametrize("spacing", [(0.7, 1.3, 5.0), (1.3, 0.7, 3.0)])
def test_ellipse_with_anisotropic_pixels(spacing):
    shape = (101, 101, 3)
    aff = _grid_affine(spacing, shape=shape)
    m = _ellipsoid_mask(shape, aff, (25.0, 12.0, 1e9))
    r = measure(m, aff)
    tol = max(spacing[:2])
    assert r["longest_diameter_mm"] == pytest.approx(50.0, abs=tol)
    assert r["short_axis_mm"] == pytest.approx(24.0, abs=tol)
    area = np.pi * 25.0 * 12.0
    assert r["volume_ml"] == pytest.approx(area * 3 * spacing[2] / 1000.0, rel=0.02)


def test_longest_slice_is_chosen():
    # a cone-like stack: discs shrinking away from slice 3; the longest is on slice 3
    h = 1.0
    m = np.zeros((61, 61, 7), bool)
    x = np.arange(61) - 30.0
    xx, yy = np.meshgrid(x, x, indexing="ij")
    for k, radius in enumerate([5, 9, 14, 20, 12, 8, 4]):
        m[:, :, k] = (xx / radius) ** 2 + (yy / (radius / 2)) ** 2 <= 1
    r = measure(m, np.diag([h, h, 2.0, 1.0]), details=True)
    assert r["slice_index"] == 3
    assert r["longest_diameter_mm"] == pytest.approx(40.0, abs=h)
    assert r["short_axis_mm"] == pytest.approx(20.0, abs=h)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotated_ellipsoid_on_anisotropic_grid(seed):
    rot = Rotation.random(random_state=seed).as_matrix()
    semi = (22.0, 14.0, 9.0)
    spacing = (0.8, 0.8, 2.0)
    shape = (71, 71, 31)
    aff = _grid_affine(spacing, shape=shape)
    m = _ellipsoid_mask(shape, aff, semi, rot)
    r = measure(m, aff)
    ld, sa = _section_axes(semi, rot, np.eye(3)[:, :2])
    assert r["longest_diameter_mm"] == pytest.approx(ld, abs=1.0)
    assert r["short_axis_mm"] == pytest.approx(sa, abs=1.0)
    assert r["max_3d_diameter_mm"] == pytest.approx(44.0, abs=2.0)
    assert r["volume_ml"] == pytest.approx(4 / 3 * np.pi * np.prod(semi) / 1000.0, rel=0.03)


@pytest.mark.parametrize(("angles", "seed"), [((25.0, 10.0, 0.0), 3), ((-15.0, 0.0, 30.0), 4)])
def test_oblique_acquisition_measures_in_the_acquired_plane(angles, seed):
    tilt = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    rot = Rotation.random(random_state=seed).as_matrix()
    semi = (20.0, 12.0, 8.0)
    shape = (71, 71, 25)
    aff = _grid_affine((0.75, 0.75, 2.0), rotation=tilt, shape=shape, centre=(5.0, -3.0, 12.0))
    m = _ellipsoid_mask(shape, aff, semi, rot, centre=(5.0, -3.0, 12.0))
    r = measure(m, aff, details=True)
    assert r["axial_axis"] == 2
    normal = tilt[:, 2]
    assert r["obliquity_deg"] == pytest.approx(np.degrees(np.arccos(abs(normal[2]))), abs=1e-6)
    ld, sa = _section_axes(semi, rot, tilt[:, :2])
    assert r["longest_diameter_mm"] == pytest.approx(ld, abs=1.0)
    assert r["short_axis_mm"] == pytest.approx(sa, abs=1.0)
    assert r["max_3d_diameter_mm"] == pytest.approx(40.0, abs=2.0)
    assert r["volume_ml"] == pytest.approx(4 / 3 * np.pi * np.prod(semi) / 1000.0, rel=0.03)
    # end points lie on the lesion surface, in world coordinates
    p = r["long_axis_endpoints_mm"] - np.array([5.0, -3.0, 12.0])
    local = p @ rot
    assert np.all(np.abs(((local / semi) ** 2).sum(axis=1) - 1.0) < 0.15)


def test_coronal_acquisition_is_measured_in_reformatted_axial_planes():
    # voxel axes: i -> x, j -> z (slice direction of a coronal stack is y), k -> y
    semi = (18.0, 10.0, 6.0)
    spacing = 1.0
    shape_ax = (51, 51, 21)
    aff_ax = _grid_affine((spacing,) * 3, shape=shape_ax)
    perm = np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])
    shape_co = (51, 21, 51)
    aff_co = _grid_affine((spacing,) * 3, rotation=perm, shape=shape_co)
    assert axial_axis(aff_co) == 1
    r_ax = measure(_ellipsoid_mask(shape_ax, aff_ax, semi), aff_ax)
    r_co = measure(_ellipsoid_mask(shape_co, aff_co, semi), aff_co)
    for key in GEOMETRY_KEYS:
        assert r_co[key] == pytest.approx(r_ax[key], rel=1e-9)


def test_translation_and_axis_flip_do_not_change_the_measures():
    rng = np.random.default_rng(7)
    m = np.zeros((30, 30, 8), bool)
    m[5:20, 8:25, 2:6] = rng.random((15, 17, 4)) > 0.3
    aff = np.diag([0.9, 1.1, 3.0, 1.0])
    flipped = aff.copy()
    flipped[0, 0] = -0.9
    flipped[:3, 3] = [100.0, -50.0, 20.0]
    a, b = measure(m, aff), measure(m, flipped)
    for key in GEOMETRY_KEYS:
        assert a[key] == pytest.approx(b[key], rel=1e-12)


def test_single_voxel():
    m = np.zeros((3, 3, 3), bool)
    m[1, 1, 1] = True
    r = measure(m, np.diag([1.0, 2.0, 5.0, 1.0]))
    assert r["volume_ml"] == pytest.approx(0.01)
    assert r["longest_diameter_mm"] == pytest.approx(2.0)
    assert r["short_axis_mm"] == pytest.approx(1.0)
    assert r["max_3d_diameter_mm"] == pytest.approx(5.0)


def test_empty_mask_is_an_error_naming_the_lesion():
    with pytest.raises(DataError, match=r"lesion L3.*empty"):
        measure(np.zeros((4, 4, 4), bool), np.eye(4), lesion="L3")


def test_an_empty_mask_may_be_a_lesion_that_vanished():
    """``allow_empty``: every measure is 0 (RECIST: a lesion that disappeared is 0 mm)."""
    r = measure(np.zeros((4, 4, 4), bool), np.eye(4), allow_empty=True)
    assert r == dict.fromkeys(GEOMETRY_KEYS, 0.0)
    r = measure(np.zeros((4, 4, 4), bool), np.eye(4), allow_empty=True, details=True)
    assert r["n_voxels"] == 0 and r["long_axis_endpoints_mm"] is None


def test_bad_shapes_are_errors():
    with pytest.raises(DataError, match="3-D mask"):
        measure(np.ones((4, 4), bool), np.eye(4))
    with pytest.raises(DataError, match="4x4"):
        measure(np.ones((4, 4, 4), bool), np.eye(3))
    with pytest.raises(DataError, match="singular"):
        measure(np.ones((4, 4, 4), bool), np.diag([1.0, 0.0, 1.0, 1.0]))


# ---------------------------------------------------------------------------- properties

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

_masks = arrays(np.bool_, st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 4)))
_spacing = st.tuples(*[st.floats(0.3, 5.0)] * 3)


def _two_separate_voxels() -> np.ndarray:
    m = np.zeros((2, 5, 2), bool)
    m[0, 0, 0] = m[1, 2, 0] = True
    return m


@settings(max_examples=60, deadline=None)
@given(_masks, _spacing)
# found by CI: eight corners of two separate voxels, four inside their hull, used to be
# ordered by angle into a non-convex polygon, so the short axis depended on the voxel order
@example(_two_separate_voxels(), (1.5, 2.0, 1.0))
def test_properties_of_any_mask(mask, spacing):
    if not mask.any():
        return
    aff = np.diag([*spacing, 1.0])
    r = measure(mask, aff)
    assert r["volume_ml"] == pytest.approx(mask.sum() * np.prod(spacing) / 1000)
    assert 0 < r["short_axis_mm"] <= r["longest_diameter_mm"] + 1e-9
    assert r["longest_diameter_mm"] <= r["max_3d_diameter_mm"] + 1e-9
    assert r["bidimensional_product_mm2"] == pytest.approx(
        r["longest_diameter_mm"] * r["short_axis_mm"]
    )
    # the same object described with a flipped and permuted voxel order measures the same
    flipped = mask[::-1, :, :].transpose(1, 0, 2)
    aff2 = np.zeros((4, 4))
    aff2[3, 3] = 1.0
    aff2[:3, 0] = aff[:3, 1]
    aff2[:3, 1] = -aff[:3, 0]
    aff2[:3, 2] = aff[:3, 2]
    aff2[:3, 3] = aff[:3, 0] * (mask.shape[0] - 1)
    r2 = measure(flipped, aff2)
    for key in GEOMETRY_KEYS:
        assert r2[key] == pytest.approx(r[key], rel=1e-9, abs=1e-9)
