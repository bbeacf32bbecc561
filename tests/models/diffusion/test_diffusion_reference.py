"""IVIM against the OSIPI TF2.4 IVIM code collection reference voxels.

Data: ``tests/data/reference/osipi_ivim_codecollection/unit_tests/generic.json`` (Apache-2.0,
OSIPI TF2.4 IVIM-MRI CodeCollection commit f91b53c, see ``tests/data/reference/README.md``).
14 XCAT-based tissues, 18 b-values, Gaussian noise SD 5e-4. As in the source test
(``test_ivim_fit_saved``) each signal is divided by its b = 0 sample, and the pass criterion is
numpy's ``assert_allclose`` with the source tolerances: f atol 0.2 + rtol 0.1; D atol 5e-4 +
rtol 0.1; D* atol 0.1 + rtol 0.1 (mm²/s); all three asserted for every voxel (all have
0.03 < f < 0.8).

Beyond the source tolerances (generous: a plain bi-exponential fit uses <= 2% of them, see the
reference README) we also check that the full fit is close to what the noise allows: D within
2e-5 mm²/s and f within 0.01 of the truth for every voxel.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tumorscope.errors import TumorscopeWarning
from tumorscope.models import IVIM

TOL = {"f": (0.2, 0.1), "D": (5e-4, 0.1), "D_star": (0.1, 0.1)}


def _load(reference_dir: Path) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    path = reference_dir / "osipi_ivim_codecollection" / "unit_tests" / "generic.json"
    cases = json.loads(path.read_text())
    b = np.array(cases.pop("config")["bvalues"], dtype=float)
    names = list(cases)
    data = np.array([np.array(cases[k]["data"]) / cases[k]["data"][0] for k in names])
    truth = np.array([[cases[k]["f"], cases[k]["D"], cases[k]["Dp"]] for k in names])
    return b, names, data, truth


@pytest.mark.parametrize("method", ["segmented", "full", "bayes"])
def test_osipi_generic_voxels(method: str, reference_dir: Path) -> None:
    b, names, data, truth = _load(reference_dir)
    assert data.shape == (14, 18)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        fit = IVIM(b, method=method).fit(data)
    for j, key in enumerate(["f", "D", "D_star"]):
        atol, rtol = TOL[key]
        np.testing.assert_allclose(
            fit[key], truth[:, j], atol=atol, rtol=rtol, err_msg=f"{method} {key} {names}"
        )


def test_osipi_full_fit_is_close_to_truth(reference_dir: Path) -> None:
    b, _names, data, truth = _load(reference_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        fit = IVIM(b, method="full").fit(data)
    np.testing.assert_allclose(fit["f"], truth[:, 0], atol=0.01)
    np.testing.assert_allclose(fit["D"], truth[:, 1], atol=2e-5)
