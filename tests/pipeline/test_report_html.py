"""The HTML reports of a complete run: structure, self-containedness, headless Chromium."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.imgs: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.external: list[str] = []
        self.tables: list[dict[str, str | None]] = []
        self.figures = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "img":
            self.imgs.append(a)
        if tag == "figure":
            self.figures += 1
        if tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))
        if tag == "table":
            self.tables.append(a)
        for key in ("src", "href"):
            v = a.get(key)
            if v and re.match(r"^(https?:)?//", v):
                self.external.append(v)
        if tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.external.append(str(a.get("href") or a.get("src")))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _check_images(page: _Page) -> None:
    assert page.imgs
    for img in page.imgs:
        src = str(img["src"])
        # figures are self-contained SVG (report.figures); images inside them are PNG data
        assert src.startswith("data:image/svg+xml;base64,")
        svg = base64.b64decode(src.split(",", 1)[1]).decode()
        assert svg.startswith("<svg ") and svg.endswith("</svg>")
        assert not re.search(r'href="(?!data:image/png;base64,)', svg)
        assert img.get("alt")


def test_study_report_structure(full_run: Any) -> None:
    index = full_run.out_dir / "report" / "index.html"
    page = _parse(index)
    assert {
        "fig-spider",
        "fig-waterfall",
        "subjects-table",
        "assessments-table",
        "software-table",
    } <= page.ids
    _check_images(page)
    assert page.external == []  # opens from disk with no network
    assert {"sub-001.html", "sub-002.html"} <= set(page.links)
    assert all("sortable" in str(t.get("class")) for t in page.tables)
    text = index.read_text()
    assert "recist1.1" in text and "Model ivim" in text and "Model extended_tofts" in text


def test_subject_report_structure(full_run: Any) -> None:
    path = full_run.out_dir / "report" / "sub-002.html"
    page = _parse(path)
    assert {
        "fig-timeline",
        "fig-trajectories",
        "fig-maps",
        "fig-histograms",
        "fdm-table",
        "assessments-table",
        "lesions-table",
        "alignment-table",
        "flags",
    } <= page.ids
    _check_images(page)
    assert page.external == []
    text = path.read_text()
    # the pseudoprogression is flagged with its reason
    assert "iUPD" in text and "unconfirmed progression" in text
    assert "PSEUDOPROGRESSION at visit 02" in text
    assert "doi:10.1073/pnas.0501532102" in text  # fDM reference in the text


def test_reports_can_be_rewritten_from_the_results(
    full_run: Any, full_run_copy: Path, tmp_path: Path
) -> None:
    from tumorscope.errors import DataError
    from tumorscope.pipeline.runner import write_reports

    out = full_run_copy  # a private copy: the session's run may be open on another worker
    study = full_run.out_dir.parent / "study"  # the study that was run (not a copy of it)
    (out / "report" / "sub-001.html").unlink()
    index = write_reports(study, out)
    assert index == out / "report" / "index.html" and index.incomplete is None
    assert (out / "report" / "sub-001.html").is_file()
    with pytest.raises(DataError, match="tumorscope run"):
        write_reports(study, tmp_path / "nothing")
    assert not (out / ".tumorscope.lock.json").exists()  # the report's lock was released


def test_reports_are_not_rewritten_while_a_run_holds_the_folder(
    full_run: Any, full_run_copy: Path
) -> None:
    """`tumorscope report` takes the run's lock: a run writing into the folder blocks it."""
    from filelock import FileLock

    from tumorscope.errors import DataError
    from tumorscope.pipeline.runner import write_reports

    out = full_run_copy
    small_study = full_run.out_dir.parent / "study"  # the study that was run
    (out / "report" / "sub-001.html").unlink()
    held = FileLock(str(out / ".tumorscope.lock"))
    held.acquire()
    try:
        with pytest.raises(DataError, match="holds the output folder"):
            write_reports(small_study, out)
        with pytest.raises(DataError, match=r"after 0\.2 s"):
            write_reports(small_study, out, lock_timeout=0.2)
    finally:
        held.release()
    assert not (out / "report" / "sub-001.html").exists()  # nothing was written
    write_reports(small_study, out)
    assert (out / "report" / "sub-001.html").is_file()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.parametrize("page", ["index.html", "sub-001.html"])
def test_reports_load_in_headless_chromium(full_run: Any, tmp_path: Path, page: str) -> None:
    """The page runs its script to the end with no console error; a screenshot is kept."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium (Debian package 'chromium'; .ci/run installs it)")
    url = (full_run.out_dir / "report" / page).as_uri()
    base = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        # the subject page embeds the WebGL viewer: software WebGL, opted in (else Chromium
        # logs a deprecation notice to the page's console)
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    )
    assert 'data-ready="1"' in dom.stdout
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert console == []
    artefacts = Path(os.environ.get("TUMORSCOPE_TEST_ARTIFACTS", tmp_path))
    artefacts.mkdir(parents=True, exist_ok=True)
    shot = artefacts / f"report-{page.removesuffix('.html')}.png"
    subprocess.run(
        [*base, "--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_the_viewer_is_its_own_step_and_the_page_embeds_it(full_run: Any, tmp_path: Path) -> None:
    """``report_viewer`` writes the viewer (its page and volumes are its outputs, not the
    subject page's) so that it runs beside ``measure`` and ``assess``; the subject page
    embeds it. A run of ``report_subject`` without ``report_viewer`` writes the viewer
    itself, with the same volumes."""
    import json
    import sqlite3

    from tumorscope.pipeline import run_study

    out = full_run.out_dir
    with sqlite3.connect(out / "tumorscope.sqlite") as db:
        rows = dict(
            db.execute(
                "select step, outputs from step_runs where unit = 'sub-002' and step like 'report%'"
            ).fetchall()
        )
    assert set(rows) == {"report_viewer", "report_subject"}
    viewer_outputs = sorted(json.loads(rows["report_viewer"]))
    assert viewer_outputs == ["report/sub-002_viewer.html", "report/viewer/sub-002.js"]
    assert sorted(json.loads(rows["report_subject"])) == ["report/sub-002.html"]
    assert 'src="sub-002_viewer.html"' in (out / "report" / "sub-002.html").read_text()

    alone = tmp_path / "alone"
    shutil.copytree(out, alone)
    for p in ("report/sub-002_viewer.html", "report/viewer/sub-002.js", "report/sub-002.html"):
        (alone / p).unlink()
    study = out.parent / "study"  # the study that was run (a copy of it is another study)
    run_study(study, alone, steps=[s for s in _steps() if s != "report_viewer"])
    assert 'src="sub-002_viewer.html"' in (alone / "report" / "sub-002.html").read_text()
    same = (out / "report/viewer/sub-002.js").read_bytes()
    assert (alone / "report/viewer/sub-002.js").read_bytes() == same


def _steps() -> list[str]:
    from tumorscope.pipeline.steps import STEPS

    return [s.name for s in STEPS] + ["report"]
