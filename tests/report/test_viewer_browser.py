"""The subject viewer (NiiVue) in a real browser: headless Chromium from Debian's packages
driven by Selenium and Debian's ``chromium-driver``.

The page is opened from disk (``file://``, no server) on a tiny phantom study with two maps
made here with known values: an "ADC" map on the anatomical grid whose every voxel holds a
different value, and a "Ktrans" map on a coarser grid of its own (overlays keep their grid).
Checks: the page loads with no console error; switching the overlay, its colour map, and the
slice changes what is drawn (pixel differences of canvas screenshots); the cursor read-out
gives the map's value and unit at a known voxel (for the coarse map, its own voxel); clicking
one visit moves the cursor of the other (linked cursors).

Screenshots are kept as test artefacts in ``tests/artifacts/viewer/`` (git-ignored; CI keeps
the folder) or in ``$TUMORSCOPE_ARTIFACTS/viewer``.

Needs ``chromium``, ``chromium-driver`` (apt) and ``selenium`` (pip); without them the tests
are skipped, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from tumorscope.io import open_study
from tumorscope.layout import VisitMap
from tumorscope.report.viewer import viewer_data_path, write_viewer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = (
    Path(os.environ.get("TUMORSCOPE_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
    / "viewer"
)


def _need_browser() -> Any:
    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        msg = f"browser test needs {missing} (apt: chromium chromium-driver; pip: selenium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def page(tiny_study: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The viewer page of subject 002 with two synthetic maps per visit."""
    study = open_study(tiny_study)
    subj = study.subjects["002"]
    out = tmp_path_factory.mktemp("viewer_out")
    maps: dict[str, dict[str, VisitMap]] = {}
    truth: dict[str, Any] = {}
    for k, v in enumerate(list(subj)[:2]):
        anat = v.series["anatomical"].load()
        shape = anat.data.shape[:3]
        i, j, kk = np.indices(shape, dtype=np.float32)
        adc = (1e-3 + 1e-6 * (i + 40 * j + 1600 * kk) + 1e-4 * k).astype(np.float32)
        adc_path = out / f"adc_{v.id}.nii.gz"
        nib.save(nib.Nifti1Image(adc, anat.affine), adc_path)
        coarse = anat.affine.copy()
        coarse[:3, :3] *= 2.0  # a grid of its own: 2× the voxel, same corner
        kshape = tuple(max(1, s // 2) for s in shape)
        ki, kj, kk2 = np.indices(kshape, dtype=np.float32)
        kt = (0.01 + 0.001 * (ki + 20 * kj + 400 * kk2)).astype(np.float32)
        kt_path = out / f"kt_{v.id}.nii.gz"
        nib.save(nib.Nifti1Image(kt, coarse), kt_path)
        maps[v.id] = {
            "adc.ADC": VisitMap(adc_path, None, "mm²/s"),
            "extended_tofts.Ktrans": VisitMap(kt_path, None, "1/min"),
        }
        truth[v.id] = {"adc": adc, "kt": kt, "affine": anat.affine, "kt_affine": coarse}
    # the subject's other visits have no map: the viewer shows their anatomy only. Visit 2
    # comes with a registration (baseline world -> its world): 2 voxels along x
    shift = np.eye(4)
    shift[:3, 3] = 2.0 * truth[list(subj)[1].id]["affine"][:3, 0]
    path = write_viewer(out, study, "002", maps=maps, registrations={list(subj)[1].id: shift})
    truth["shift"] = shift
    assert path is not None
    return {"path": path, "truth": truth, "visits": [v.id for v in subj], "out": out}


@pytest.fixture(scope="module")
def browser(page: dict[str, Any]) -> Any:
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--window-size=1400,1000",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(page["path"].as_uri())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = driver.execute_script(
                "var a = window.tumorscopeViewer; return a ? [a.ready, a.errors] : [false, []];"
            )
            if state[0] or state[1]:
                break
            time.sleep(0.2)
        assert state[0], f"viewer did not start: {state[1]}"
        yield driver
    finally:
        driver.quit()


def _settle(driver: Any) -> None:
    """Wait until the page's queued changes are done, then let NiiVue draw."""
    deadline = time.monotonic() + 20
    while driver.execute_script("return window.tumorscopeViewer.busy") and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    time.sleep(0.3)


def _shot(driver: Any, visit: str, name: str) -> np.ndarray:
    from PIL import Image

    _settle(driver)
    png = driver.find_element("id", f"cv-{visit}").screenshot_as_png
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.png").write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that differ by more than 10 in some channel."""
    return float((np.abs(a - b).max(axis=-1) > 10).mean())


def _coloured(img: np.ndarray) -> float:
    """Fraction of clearly coloured (not grey) pixels."""
    return float((img.max(axis=-1) - img.min(axis=-1) > 40).mean())


def _readout(driver: Any, visit: str) -> str:
    _settle(driver)
    return str(driver.find_element("id", f"readout-{visit}").text)


def _select(driver: Any, element: str, value: str) -> None:
    driver.execute_script(
        "var e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event('change'));",
        element,
        value,
    )


def _console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_volumes_are_written_for_every_visit(page: dict[str, Any]) -> None:
    text = viewer_data_path(page["out"], "002").read_text()
    assert text.startswith("window.TUMORSCOPE_VIEWER = ")
    for v in page["visits"]:
        assert f'"id":"{v}"' in text
    static = page["out"] / "report" / "static" / "niivue"
    assert (static / "niivue.umd.js").stat().st_size > 1_000_000
    assert "BSD" in (static / "LICENSE").read_text()


def test_overlay_switching_and_slices_change_the_image(browser: Any, page: dict[str, Any]) -> None:
    v = page["visits"][0]
    _select(browser, "plane", "axial")
    adc = _shot(browser, v, "01_adc_plasma")
    _select(browser, "overlay", "")
    none = _shot(browser, v, "02_no_overlay")
    assert _coloured(adc) > 3 * _coloured(none) + 0.01, (_coloured(adc), _coloured(none))
    assert _changed(adc, none) > 0.05
    _select(browser, "overlay", "extended_tofts.Ktrans")
    kt = _shot(browser, v, "03_ktrans")
    assert _changed(kt, adc) > 0.05 and _changed(kt, none) > 0.05
    _select(browser, "overlay", "adc.ADC")
    _select(browser, "colormap", "gray")
    grey = _shot(browser, v, "04_adc_grey")
    assert _coloured(grey) < 0.5 * _coloured(adc)
    _select(browser, "colormap", "plasma")
    # slices: the lowest and the highest axial slice differ (the ADC map grows with z)
    for frac, name in ((0.05, "05_slice_low"), (0.95, "06_slice_high")):
        browser.execute_script(
            "var e = document.getElementById('slice'); e.value = arguments[0];"
            "e.dispatchEvent(new Event('input'));",
            frac,
        )
        if frac < 0.5:
            low = _shot(browser, v, name)
        else:
            high = _shot(browser, v, name)
    assert _changed(low, high) > 0.02
    _select(browser, "plane", "multiplanar")
    three = _shot(browser, v, "07_three_planes")
    assert _changed(three, high) > 0.05
    _select(browser, "plane", "axial")
    assert not _console_errors(browser)


def _voxel_centre(affine: np.ndarray, ijk: tuple[int, int, int]) -> list[float]:
    return [float(x) for x in affine[:3, :3] @ np.array(ijk, float) + affine[:3, 3]]


def test_cursor_reads_value_and_unit_of_a_known_voxel(browser: Any, page: dict[str, Any]) -> None:
    v = page["visits"][0]
    t = page["truth"][v]
    ijk = (14, 16, 2)  # even: its centre is the centre of the coarse voxel (7, 8, 1)
    browser.execute_script(
        "window.tumorscopeViewer.goToMM(...arguments[0]);", _voxel_centre(t["affine"], ijk)
    )
    _shot(browser, v, "08_cursor")
    text = _readout(browser, v)
    m = re.search(r"adc\.ADC: ([-+0-9.e]+) mm²/s\s+\[voxel (\d+), (\d+), (\d+)\]", text)
    assert m, text
    assert tuple(int(x) for x in m.groups()[1:]) == ijk
    assert float(m.group(1)) == pytest.approx(float(t["adc"][ijk]), rel=1e-4)
    # the coarse map: its own voxel (floor of half the index), its own unit
    _select(browser, "overlay", "extended_tofts.Ktrans")
    text = _readout(browser, v)
    m = re.search(
        r"extended_tofts\.Ktrans: ([-+0-9.e]+) 1/min\s+\[voxel (\d+), (\d+), (\d+)\]", text
    )
    assert m, text
    kijk = tuple(int(x) for x in m.groups()[1:])
    assert kijk == (7, 8, 1)
    assert float(m.group(1)) == pytest.approx(float(t["kt"][kijk]), rel=1e-4)
    _select(browser, "overlay", "adc.ADC")
    assert not _console_errors(browser)


def test_click_moves_the_linked_cursors(browser: Any, page: dict[str, Any]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    v1, v2 = page["visits"][:2]
    before = _readout(browser, v2)
    canvas = browser.find_element("id", f"cv-{v1}")
    w, h = canvas.size["width"], canvas.size["height"]
    ActionChains(browser).move_to_element_with_offset(canvas, -w // 10, -h // 10).click().perform()
    time.sleep(0.5)
    _shot(browser, v1, "09_clicked_visit1")
    _shot(browser, v2, "10_linked_visit2")
    r1, r2 = _readout(browser, v1), _readout(browser, v2)
    vox = re.compile(r"adc\.ADC: .*\[voxel (\d+), (\d+), (\d+)\]")
    m1, m2 = vox.search(r1), vox.search(r2)
    assert m1 and m2, (r1, r2)
    assert r2 != before
    # linked through the registration: visit 2's voxel is where the baseline point lies in
    # visit 2's world (2 voxels further along x)
    t1, t2 = page["truth"][v1], page["truth"][v2]
    ijk1 = np.array([int(x) for x in m1.groups()] + [1], float)
    expect = np.linalg.inv(t2["affine"]) @ page["truth"]["shift"] @ t1["affine"] @ ijk1
    ijk = tuple(int(x) for x in m2.groups())
    assert ijk == tuple(round(float(x)) for x in expect[:3])
    assert ijk[0] == int(ijk1[0]) + 2
    value = float(re.search(r"adc\.ADC: ([-+0-9.e]+)", r2).group(1))  # type: ignore[union-attr]
    assert value == pytest.approx(float(t2["adc"][ijk]), rel=1e-4)
    assert not _console_errors(browser)
