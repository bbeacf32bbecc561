"""The common API battery: every registered model passes it.

Models are collected from the registry (:func:`tumorscope.models.base.list_models` imports every
module of ``tumorscope.models``), so a model registered later is tested without editing this
file. Each model supplies ``example()`` (a typical protocol) and ``sample_parameters`` (realistic,
identifiable parameters), which the battery uses to simulate noise-free data.
"""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest

from tumorscope.errors import FitError, TumorscopeWarning
from tumorscope.fitting import FitStatus
from tumorscope.models.base import FitResult, Model, get_model, list_models

MODELS = list_models()


def _simulate(model: Model, shape: tuple[int, ...] = (2, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    n = int(np.prod(shape))
    params = model.sample_parameters(n, rng=rng)
    data = model.signal(params).reshape(*shape, model.n_measurements)
    return params.reshape(*shape, -1), data


def _fit(model: Model, data: np.ndarray, mask: np.ndarray | None = None, **kw: object) -> FitResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TumorscopeWarning)
        return model.fit(data, mask, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=MODELS)
def model(request: pytest.FixtureRequest) -> Model:
    return get_model(request.param).example()


def test_registry_has_the_diffusion_models() -> None:
    assert {"adc", "ivim", "dki"} <= set(MODELS)
    with pytest.raises(FitError, match="unknown model"):
        get_model("no-such-model")


def test_declaration(model: Model) -> None:
    names = model.parameter_names
    assert len(names) == len(set(names)) > 0
    lo, hi = model.bounds()
    assert lo.shape == hi.shape == (len(names),)
    assert np.all(lo <= hi)
    for spec in (*model.parameters, *model.derived):
        assert isinstance(spec.unit, str) and spec.unit, spec
    assert model.method in model.methods
    with pytest.raises(FitError, match="unknown method"):
        model._check_method("no-such-method")
    assert get_model(model.name) is type(model)


def test_shapes_dtype_units_and_predict(model: Model) -> None:
    truth, data = _simulate(model)
    fit = _fit(model, data.astype(np.float64))
    assert fit.shape == (2, 3)
    assert set(fit.units) == set(fit.maps)
    for name in fit:
        assert fit[name].shape == (2, 3), name
        assert fit[name].dtype == np.float32, name
    assert fit.status.dtype == np.uint8
    assert fit.rss.shape == (2, 3)
    assert set(fit.stderr) == set(model.parameter_names)
    assert np.all(fit.status <= FitStatus.AT_BOUND)
    # predict(fit) reproduces noise-free data (float32 maps: relative 1e-4 of the signal)
    pred = model.predict(fit)
    assert pred.shape == data.shape
    scale = np.max(np.abs(data), axis=-1, keepdims=True)
    tol = np.broadcast_to(1e-4 * scale + 1e-12, data.shape)
    np.testing.assert_array_less(np.abs(pred - data), tol)
    # and the parameters themselves (noise-free, identifiable by construction)
    for i, name in enumerate(model.parameter_names):
        np.testing.assert_allclose(
            fit[name],
            truth[..., i],
            rtol=2e-3,
            atol=1e-6 * np.abs(truth[..., i]).max(),
            err_msg=name,
        )
    assert fit.provenance["model"] == model.name
    json.dumps(fit.provenance)


def test_mask_nan_policy_and_determinism(model: Model) -> None:
    _, data = _simulate(model, (3, 4))
    mask = np.zeros((3, 4), bool)
    mask[1:, 1:3] = True
    full = _fit(model, data)
    part = _fit(model, data, mask)
    one = _fit(model, data, mask.astype(np.uint8), chunk_voxels=1)
    for name in full:
        assert np.all(np.isnan(part[name][~mask])), name
        np.testing.assert_array_equal(part[name][mask], full[name][mask])
        np.testing.assert_array_equal(one[name], part[name])
    assert np.all(part.status[~mask] == FitStatus.NOT_FITTED)


def test_invalid_voxels_get_status_and_one_warning(model: Model) -> None:
    _, data = _simulate(model)
    data = data.copy()
    data[0, 0, 0] = np.nan
    data[1, 2, :] = np.inf
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = model.fit(data)
    ours = [w for w in caught if issubclass(w.category, TumorscopeWarning)]
    assert len(ours) == 1
    assert "2 of 6 voxels had invalid input" in str(ours[0].message)
    assert fit.status[0, 0] == fit.status[1, 2] == FitStatus.INVALID_INPUT
    for name in fit:
        assert np.isnan(fit[name][0, 0]) and np.isnan(fit[name][1, 2])
    assert np.all(np.isfinite(fit[model.parameter_names[0]][0, 1:]))


def test_bad_shapes_raise_before_fitting(model: Model) -> None:
    _, data = _simulate(model)
    with pytest.raises(FitError, match="last axis"):
        model.fit(data[..., :-1])
    with pytest.raises(FitError, match="mask shape"):
        model.fit(data, np.ones((3, 2), bool))


def test_model_not_mutated_and_picklable(model: Model) -> None:
    _, data = _simulate(model)
    before = pickle.dumps(model.__dict__)
    fit = _fit(model, data)
    assert pickle.dumps(model.__dict__) == before
    clone = pickle.loads(pickle.dumps(model))
    again = _fit(clone, data)
    for name in fit:
        np.testing.assert_array_equal(fit[name], again[name])


def test_to_nifti_round_trip(model: Model, tmp_path: object) -> None:
    import nibabel as nib

    _, data = _simulate(model, (2, 3, 1))
    fit = _fit(model, data)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    paths = fit.to_nifti(tmp_path, affine, prefix="x_")  # type: ignore[arg-type]
    name = model.parameter_names[-1]
    img = nib.load(str(paths[name]))
    np.testing.assert_array_equal(np.asarray(img.dataobj), fit[name])
    np.testing.assert_allclose(img.affine, affine)
    side = json.loads(paths[name].with_name(f"x_{name}.json").read_text())
    assert side["Units"] == fit.units[name]
    assert side["Provenance"]["model"] == model.name
    assert "status" in paths
