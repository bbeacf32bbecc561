"""The viewer's volume shrinking (crop around the lesions, then stride; values and world
positions kept exactly) and the modality-section hook of the subject page."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tumorscope.report import sections
from tumorscope.report.viewer import MAX_VOXELS, _nifti_b64, shrink


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def test_small_volume_is_written_whole() -> None:
    a = np.zeros((10, 10, 10), np.float32)
    out, _, how, origin, step = shrink(a, np.eye(4), None, crop=True)
    assert out is a and how == "" and origin == [0, 0, 0] and step == 1


def test_crop_keeps_values_at_their_world_position() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((160, 160, 100), dtype=np.float32)  # 2.56 M voxels > MAX_VOXELS
    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    affine[:3, 3] = [-64.0, -60.0, -75.0]
    box = (np.array([-20.0, -20.0, -30.0]), np.array([20.0, 25.0, 30.0]))
    out, aff, how, origin, step = shrink(a, affine, box)
    assert out.size <= MAX_VOXELS and "cropped" in how and "one voxel in" not in how
    assert step == 1 and out[1, 2, 3] == a[origin[0] + 1, origin[1] + 2, origin[2] + 3]
    for ijk in ([0, 0, 0], [10, 7, 3], list(np.array(out.shape) - 1)):
        w = _world(aff, np.array(ijk, float))
        orig = np.linalg.solve(affine[:3, :3], w - affine[:3, 3])
        assert np.allclose(orig, np.round(orig))
        assert out[tuple(ijk)] == a[tuple(np.round(orig).astype(int))]
    # the box is inside what is kept
    lo, hi = _world(aff, np.zeros(3)), _world(aff, np.array(out.shape, float) - 1)
    assert (lo <= box[0] + 0.8).all() and (hi >= box[1] - 1.5).all()


def test_stride_when_cropping_is_not_enough() -> None:
    a = np.arange(200 * 200 * 80, dtype=np.float32).reshape(200, 200, 80)
    out, aff, how, origin, step = shrink(a, np.eye(4), None)
    assert step == int(aff[0, 0]) and origin == [0, 0, 0]
    assert step == 2 and "one voxel in 2" in how and out.size <= MAX_VOXELS
    assert out[3, 5, 7] == a[6, 10, 14]


def test_viewer_nifti_bytes_are_nibabels() -> None:
    """The viewer reuses nibabel's header of a grid for the next volume of that grid: the
    bytes must be nibabel's own for every volume, whatever the order of the grids."""
    import base64
    import gzip

    import nibabel as nib

    rng = np.random.default_rng(1)
    a1 = np.diag([0.8, 0.8, 1.5, 1.0])
    a1[:3, 3] = [-10.0, 4.0, 2.5]
    a2 = a1.copy()
    a2[0, 3] += 3.0  # same shape, another affine
    volumes = [
        (rng.random((6, 5, 4)).astype(np.float32), a1),
        (rng.random((6, 5, 4)).astype(np.float32) * 1e3, a1),
        (np.full((6, 5, 4), np.nan, np.float32), a1),
        (rng.random((6, 5, 4)), a2),  # float64 in: written as float32
        (rng.random((3, 5, 4)).astype(np.float32), a1),
        (rng.random((6, 5, 4)).astype(np.float32)[::-1], a1),  # not C-contiguous
    ]
    headers: dict[bytes, bytes] = {}
    for data, affine in volumes:
        img = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), affine)
        img.header.set_xyzt_units("mm")
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        got = gzip.decompress(base64.b64decode(_nifti_b64(data, affine, headers)))
        assert got == img.to_bytes()
    assert len(headers) == 3  # one per (shape, affine)


def test_sections_hook_inserts_blocks_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("tumorscope_test_section")
    mod.first = lambda ctx: f"<section id='a'>{ctx.subject}</section>"  # type: ignore[attr-defined]
    mod.none = lambda ctx: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(
        sections,
        "SUBJECT_SECTIONS",
        [f"{mod.__name__}:none", f"{mod.__name__}:first"],
    )
    ctx = sections.SubjectContext(Path("."), None, "007", {})  # type: ignore[arg-type]
    assert sections.subject_sections(ctx) == ["<section id='a'>007</section>"]
    with pytest.raises(AttributeError):
        sections.subject_sections(ctx, [f"{mod.__name__}:missing"])


def test_maps_are_cropped_around_the_lesions_whatever_their_size() -> None:
    a = np.arange(40 * 40 * 10, dtype=np.float32).reshape(40, 40, 10)
    box = (np.array([10.0, 12.0, 2.0]), np.array([20.0, 25.0, 5.0]))
    out, aff, how, origin, step = shrink(a, np.eye(4), box, crop=True)
    assert "cropped" in how and step == 1 and origin == [10, 12, 2]
    assert out.shape == (11, 14, 4) and out[0, 0, 0] == a[10, 12, 2]
    assert np.allclose(aff[:3, 3], [10, 12, 2])
    same, _, how2, _, _ = shrink(a, np.eye(4), box)  # small and not a map: whole
    assert same is a and how2 == ""


def test_viewer_data_is_jsons_own_text() -> None:
    """The volumes script is written without JSON's escaping scan of the base64 data: the
    text must be ``json.dumps``'s, whatever else the payload holds (quotes, non-ASCII)."""
    import io
    import json

    from tumorscope.report.viewer import _dump_volumes

    payload = {
        "subject": 'a"b',
        "visits": [
            {
                "id": "01",
                "label": "visit 01, day −3 é",
                "volumes": [
                    {"name": "adc.ADC", "data": "QUJD+/0=", "shape": [2, 3, 4], "unit": None},
                    {"name": "x", "data": "", "cal_min": 0.5},
                ],
            },
            {"id": "02", "label": "", "volumes": []},
        ],
    }
    out = io.StringIO()
    _dump_volumes(payload, out)
    assert out.getvalue() == json.dumps(payload, separators=(",", ":"))
    assert json.loads(out.getvalue()) == payload


def test_viewer_volumes_are_the_same_on_one_thread_and_on_three(
    tiny_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The viewer reads, ranges and encodes a visit's maps on the caller's share of the cores:
    its volumes script is byte for byte the one-thread script (same maps, order, ranges)."""
    import nibabel as nib

    from tumorscope.io import open_study
    from tumorscope.layout import VisitMap
    from tumorscope.report import viewer

    study = open_study(tiny_study)
    subj = study.subjects["002"]
    rng = np.random.default_rng(7)
    maps: dict[str, dict[str, VisitMap]] = {}
    for v in subj:
        anat = v.series["anatomical"].load()
        maps[v.id] = {}
        for k, name in enumerate(["adc.ADC", "adc.S0", "extended_tofts.Ktrans", "t2.T2"]):
            a = rng.gamma(2.0 + k, 1.0, anat.data.shape[:3]).astype(np.float32)
            a[rng.random(a.shape) < 0.05] = np.nan
            p = tmp_path / f"{name}_{v.id}.nii.gz"
            nib.save(nib.Nifti1Image(a, anat.affine), p)
            maps[v.id][name] = VisitMap(p, None, "x")
    written = []
    for threads in (1, 3):
        monkeypatch.setattr(viewer, "_threads", lambda n=threads: n)
        out = tmp_path / f"out{threads}"
        assert viewer.write_viewer(out, study, "002", maps=maps) is not None
        written.append(viewer.viewer_data_path(out, "002").read_bytes())
    assert written[0] == written[1]
    assert written[0].count(b'"kind":"map"') == 4 * len(list(subj))


def test_a_visit_without_its_anatomical_image_is_said_on_the_page(
    tiny_study: Path, tmp_path: Path
) -> None:
    """Sweep of 2026-12-06: a T2w removed after the run was left out of the re-rendered
    viewer without a word. The page now says which visit has no anatomical image."""
    import shutil

    import nibabel as nib

    from tumorscope.io import open_study
    from tumorscope.layout import VisitMap
    from tumorscope.report import viewer

    study_dir = tmp_path / "study"
    shutil.copytree(tiny_study, study_dir)
    study = open_study(study_dir)
    subj = study.subjects["002"]
    maps: dict[str, dict[str, VisitMap]] = {}
    for v in subj:
        anat = v.series["anatomical"].load()
        p = tmp_path / f"adc_{v.id}.nii.gz"
        nib.save(nib.Nifti1Image(np.ones(anat.data.shape[:3], np.float32), anat.affine), p)
        maps[v.id] = {"adc.ADC": VisitMap(p, None, "x")}
    gone = next(iter(subj))
    gone.series["anatomical"].path.unlink()
    study = open_study(study_dir)  # read again: the series is no longer there
    page = viewer.write_viewer(tmp_path / "out", study, "002", maps=maps)
    assert page is not None
    html = page.read_text()
    assert f"visit {gone.id}: no anatomical image in the study" in html
    others = [v.id for v in subj if v.id != gone.id]
    assert all(f"visit {i}: no anatomical" not in html for i in others)
