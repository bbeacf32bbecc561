"""Habitats: fitted at baseline, applied at follow-up, named from centroids."""

from __future__ import annotations

import numpy as np
import pytest

from tumorscope.errors import DataError
from tumorscope.lesions.habitats import HABITAT_COLUMNS, fit_habitats

# (ADC mm2/s, Ktrans 1/min) of three tissue compartments
TISSUES = {
    "viable": (0.8e-3, 0.25),  # high cellularity, high perfusion
    "hypoxic": (0.7e-3, 0.04),  # high cellularity, low perfusion
    "necrotic": (2.4e-3, 0.02),  # low cellularity, low perfusion
}


def _lesion(fractions, seed, shape=(20, 20, 10)):
    """Maps whose voxels are drawn from the compartments in the given fractions."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    kinds = rng.choice(len(TISSUES), size=n, p=fractions)
    centres = np.array(list(TISSUES.values()))
    vals = centres[kinds] * (1 + 0.06 * rng.standard_normal((n, 2)))
    adc = vals[:, 0].reshape(shape)
    ktrans = vals[:, 1].reshape(shape)
    return {"ADC": adc, "Ktrans": ktrans}, kinds.reshape(shape)


def test_names_fractions_and_follow_up():
    base, truth = _lesion([0.5, 0.3, 0.2], seed=1)
    mask = np.ones(truth.shape, bool)
    model = fit_habitats(base, {"L1": mask}, n_habitats=3, log_maps=["Ktrans"])
    assert model.maps == ("ADC", "Ktrans")
    assert set(model.names) == {
        "high cellularity, high perfusion",
        "high cellularity, low perfusion",
        "low cellularity, low perfusion",
    }
    by_name = {n: i for i, n in enumerate(model.names)}
    expect = {
        0: by_name["high cellularity, high perfusion"],
        1: by_name["high cellularity, low perfusion"],
        2: by_name["low cellularity, low perfusion"],
    }
    labels = model.predict(base, mask)
    agree = np.mean(labels == np.vectorize(expect.get)(truth))
    assert agree > 0.97
    # centroids in map units are near the compartments
    cen = model.centroids_in_map_units()
    assert cen[expect[2], 0] == pytest.approx(2.4e-3, rel=0.05)
    assert cen[expect[0], 1] == pytest.approx(0.25, rel=0.05)

    follow, _ = _lesion([0.2, 0.3, 0.5], seed=2)  # the treatment made the tumour necrotic
    df = model.fractions(follow, {"L1": mask}, visit="02")
    assert tuple(df.columns) == HABITAT_COLUMNS
    frac = dict(zip(df["habitat_name"], df["fraction"], strict=True))
    assert frac["low cellularity, low perfusion"] == pytest.approx(0.5, abs=0.03)
    assert frac["high cellularity, high perfusion"] == pytest.approx(0.2, abs=0.03)
    assert df["fraction"].sum() == pytest.approx(1.0)
    # the model is not refitted: same centroids before and after applying it
    assert np.array_equal(
        model.centroids,
        fit_habitats(base, {"L1": mask}, n_habitats=3, log_maps=["Ktrans"]).centroids,
    )


def test_invalid_voxels_are_excluded_and_counted():
    base, truth = _lesion([0.5, 0.3, 0.2], seed=3)
    mask = np.ones(truth.shape, bool)
    model = fit_habitats(base, {"L1": mask}, n_habitats=3, method="gmm")
    broken = {k: v.copy() for k, v in base.items()}
    broken["Ktrans"][:2] = np.nan
    labels = model.predict(broken, mask)
    assert (labels[:2] == -1).all() and (labels[2:] >= 0).all()
    df = model.fractions(broken, {"L1": mask})
    assert (df["n_excluded"] == 2 * 20 * 10).all()
    assert df["fraction"].sum() == pytest.approx(1.0)


def test_pooled_over_subjects_and_unknown_map_names():
    a, ta = _lesion([0.6, 0.2, 0.2], seed=4, shape=(10, 10, 5))
    b, tb = _lesion([0.2, 0.2, 0.6], seed=5, shape=(12, 8, 5))
    a = {"T2": a["ADC"] * 1e5, "ve": a["Ktrans"]}
    b = {"T2": b["ADC"] * 1e5, "ve": b["Ktrans"]}
    model = fit_habitats(
        [a, b], [{"A": np.ones(ta.shape, bool)}, {"B": np.ones(tb.shape, bool)}], n_habitats=2
    )
    assert all(n.split(", ")[0].endswith("T2") for n in model.names)
    assert all("extracellular space" in n for n in model.names)


def test_bad_inputs():
    base, truth = _lesion([0.5, 0.3, 0.2], seed=6, shape=(4, 4, 2))
    mask = np.ones(truth.shape, bool)
    with pytest.raises(DataError, match="map 'Fp' is missing"):
        fit_habitats(base, {"L1": mask}, map_names=["ADC", "Fp"])
    tiny = np.zeros(truth.shape, bool)
    tiny[0, 0, 0] = True
    with pytest.raises(DataError, match="1 valid lesion voxels"):
        fit_habitats(base, {"L1": tiny}, n_habitats=3)
    flat = {"ADC": np.full(truth.shape, 1e-3), "Ktrans": base["Ktrans"]}
    with pytest.raises(DataError, match="constant"):
        fit_habitats(flat, {"L1": mask})
    model = fit_habitats(base, {"L1": mask}, n_habitats=2)
    with pytest.raises(DataError, match=r"lesion L2, visit 03.*empty"):
        model.fractions(base, {"L2": np.zeros_like(mask)}, visit="03")
