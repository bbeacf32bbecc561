"""Options of a run: :class:`RunOptions`, their defaults, and where they are set.

Every option has its default here and nowhere else. A run takes them, in order of
precedence, from

1. the command line (``tumorscope run --dwi-models adc,ivim --dce-model tofts …``) or the
   ``options=`` argument of :func:`tumorscope.pipeline.run_study`,
2. the ``options:`` mapping of ``study.yaml``::

       options:
         dwi_models: [adc, ivim]        # or "adc,ivim"
         dce_model: extended_tofts
         dce_aif: parker
         hypoxia_r2star_per_s: 30
         hypoxia_ktrans_per_min: 0.2
         align_tolerance_vox: 0.5
         dsc_method: osvd
         dsc_leakage: bsw
         perfusion_rcbv_threshold: 1.75
         cest_mtr_asym_ppm: [3.5, 2.0]
         cest_fit_region: lesions       # or body

3. the defaults of :class:`RunOptions`.

The options a step declares (``Step.option_keys``) go into its input hash (their JSON), so
changing one redoes exactly the steps it changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, Problem

__all__ = [
    "DCE_AIFS",
    "DCE_MODELS",
    "DWI_MODELS",
    "RunOptions",
    "option_problems",
    "resolve_options",
]

#: Diffusion models ``dwi_models`` may name (names of the model registry).
DWI_MODELS = ("adc", "ivim", "dki", "dti", "dki_tensor")
#: Pharmacokinetic models ``dce_model`` may name.
DCE_MODELS = ("tofts", "extended_tofts", "patlak", "2cxm", "2cum")
#: Population arterial input functions ``dce_aif`` may name (or a path to an AIF file).
DCE_AIFS = ("parker", "georgiou", "mcgrath", "auto")


@dataclass(frozen=True)
class RunOptions:
    """Options of a run that change its results (they are part of the input hashes).

    Build with :meth:`from_mapping` (checks names and values) or directly (checked too).

    Attributes
    ----------
    dwi_models : tuple of str, default ("adc", "ivim")
        Diffusion models fitted to every DWI series (``adc``, ``ivim``, ``dki``; the tensor
        models ``dti`` and ``dki_tensor`` on series with a ``.bvec`` of enough directions,
        skipped with a warning on others).
    dwi_region : str, default "body"
        Voxels the diffusion models are fitted in: ``body`` (signal at the lowest b-value at
        least 10 % of its 99th percentile, :func:`tumorscope.stages.diffusion.body_mask`; the
        background is NaN, not fitted) or ``all`` (the whole volume, as before).
    relax_region : str, default "body"
        Voxels the relaxometry models (T2*, T2, IR T1; MOLLI T1 and T2-prep T2 of
        ``fit_cardiac``) are fitted in: ``body`` (the largest
        signal over a series' volumes at least 10 % of its 99th percentile,
        :func:`tumorscope.stages.relaxometry.body_mask`; the background is NaN, not fitted)
        or ``all`` (the whole volume, as before).
    dce_model : str, default "extended_tofts"
        Pharmacokinetic model of the DCE fit (``tofts``, ``extended_tofts``, ``patlak``,
        ``2cxm``, ``2cum``).
    dce_aif : str, default "parker"
        Arterial input function of the DCE fit: ``parker``, ``georgiou``, ``mcgrath``,
        ``auto`` (from the image) or the path of an AIF file.
    hypoxia_r2star_per_s : float or None, default None
        Hypoxia classes: R2* above this (1/s) marks high-R2* voxels (hypoxic only where
        perfused and oxygen-refractory, see ``docs/cell-imaging.md``). No default: thresholds
        depend on field strength, sequence and tumour type; ``hypoxia`` classifies nothing
        until both thresholds are given.
    hypoxia_ktrans_per_min : float or None, default None
        Hypoxia classes: Ktrans below this (1/min) marks poorly perfused voxels.
    align_tolerance_vox : float, default 0.5
        Lesion masks are resampled onto a series' maps when its alignment to the anatomical
        image moves the lesion voxels by more than this many voxels on average.
    radiomics : bool, default False
        The ``features`` step also computes MIRP radiomics and delta-radiomics of every
        lesion on the ADC, D, Ktrans and ve maps (seconds per lesion and map).
    dsc_method : str, default "osvd"
        Deconvolution of the DSC fit (``osvd``, ``csvd``, ``svd``, ``tikhonov``).
    dsc_leakage : str, default "bsw"
        Leakage correction of the DSC fit (``bsw``, ``bidirectional``, ``none``).
    perfusion_rcbv_threshold : float, default 1.75
        rCBV below which an enlarging lesion is flagged "perfusion suggests treatment
        effect" (:mod:`tumorscope.response.perfusion`: Law et al. 2003/2008).
    cest_mtr_asym_ppm : tuple of float, default (3.5, 2.0)
        Offsets (ppm) of the CEST MTRasym maps of ``fit_cest`` (APT 3.5, amines 2.0; glucose
        1.2/2.0/3.0; LRP 3.7).
    cest_fit_region : str, default "lesions"
        Where ``fit_cest`` fits the 5-pool Lorentzian (and AREX): ``lesions`` (the visit's
        lesions moved onto the CEST grid as ``measure`` moves them, dilated by 3 mm; the
        whole body if the visit has no lesion map) or ``body`` (every body voxel: 4-6x the
        step's time on the large phantom). B0 and MTRasym are mapped on the whole body
        either way (docs/cest.md).
    align_skip_same_geometry : bool, default False
        Do not register a series whose grid and affine are those of the anatomical image
        (acquired in one session geometry, e.g. one breath-hold); it is recorded as skipped
        with the reason. Off by default: an identical affine does not prove the patient kept
        still between the series (the align tests move a series' content, not its affine).
    """

    dwi_models: tuple[str, ...] = ("adc", "ivim")
    dwi_region: str = "body"
    relax_region: str = "body"
    dce_model: str = "extended_tofts"
    dce_aif: str = "parker"
    hypoxia_r2star_per_s: float | None = None
    hypoxia_ktrans_per_min: float | None = None
    align_tolerance_vox: float = 0.5
    radiomics: bool = False
    dsc_method: str = "osvd"
    dsc_leakage: str = "bsw"
    perfusion_rcbv_threshold: float = 1.75
    cest_mtr_asym_ppm: tuple[float, ...] = (3.5, 2.0)
    cest_fit_region: str = "lesions"
    align_skip_same_geometry: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _CHECKS[f.name](f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, value)

    # ------------------------------------------------------------------ mapping-like access

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def get(self, name: str, default: Any = None) -> Any:
        """An option by name (``default`` for a name that is not an option)."""
        return getattr(self, name, default) if name in self.names() else default

    def __getitem__(self, name: str) -> Any:
        if name not in self.names():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def keys(self) -> tuple[str, ...]:
        return self.names()

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.names()]

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (tuples stay tuples)."""
        return dict(self.items())

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_mapping(
        cls,
        values: Mapping[str, Any] | None,
        *,
        base: RunOptions | None = None,
        source: str = "options",
    ) -> RunOptions:
        """Options from a mapping of names to values, over ``base`` (default: the defaults).

        Parameters
        ----------
        values : mapping or None
            Option names to values; ``None`` values leave the option of ``base`` as it is.
        base : RunOptions, optional
        source : str, default "options"
            How errors name where the values come from (``study.yaml``, ``options``).

        Raises
        ------
        DataError
            An unknown option name or an unusable value (naming the source and the option).
        """
        base = base if base is not None else cls()
        given = dict(values or {})
        unknown = sorted(set(map(str, given)) - set(cls.names()))
        if unknown:
            where = "options" if source == "options" else f"options.{unknown[0]}"
            raise DataError(
                f"unknown option(s) {unknown}; expected {sorted(cls.names())}",
                file=None if source == "options" else source,
                field=where,
            )
        merged = base.to_dict()
        for k, v in given.items():
            if v is not None:
                merged[str(k)] = v
        try:
            return cls(**merged)
        except DataError as exc:
            if source == "options":
                raise
            raise DataError(exc.message, file=source, field=f"options.{exc.field}") from None


def resolve_options(
    given: RunOptions | Mapping[str, Any] | None,
    study_yaml: Mapping[str, Any] | None = None,
    *,
    manifest_name: str = "study.yaml",
) -> RunOptions:
    """The options of a run: ``given`` (command line, API) over ``study.yaml`` over defaults.

    A :class:`RunOptions` given whole is used as it is.
    """
    if isinstance(given, RunOptions):
        return given
    from_study = RunOptions.from_mapping(study_yaml, source=manifest_name)
    return RunOptions.from_mapping(given, base=from_study)


def option_problems(
    study_yaml: Mapping[str, Any] | None, *, manifest_name: str = "study.yaml"
) -> list[Problem]:
    """The problem of the ``options:`` of ``study.yaml`` that a run would stop on, for
    ``tumorscope validate``: the same check as the run's (:func:`resolve_options`), so both
    report the same message. Empty when the options are usable."""
    try:
        RunOptions.from_mapping(study_yaml, source=manifest_name)
    except DataError as exc:
        return [Problem("error", exc.file or manifest_name, exc.field or "options", exc.message)]
    return []


# ---------------------------------------------------------------------------- checks


def _bad(name: str, message: str) -> DataError:
    return DataError(message, field=name)


def _check_dwi_models(name: str, value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        models = tuple(str(m).strip().lower() for m in items if str(m).strip())
    except TypeError:
        raise _bad(name, f"expected model names, got {value!r}") from None
    if not models:
        raise _bad(name, f"expected at least one diffusion model of {', '.join(DWI_MODELS)}")
    unknown = [m for m in models if m not in DWI_MODELS]
    if unknown:
        raise _bad(name, f"unknown diffusion model(s) {unknown}; expected {', '.join(DWI_MODELS)}")
    return models


def _check_dce_model(name: str, value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in DCE_MODELS:
        raise _bad(name, f"unknown DCE model {value!r}; expected one of {', '.join(DCE_MODELS)}")
    return value


def _check_dce_aif(name: str, value: Any) -> str:
    text = str(value) if isinstance(value, str | Path) else None
    if text is None or not text.strip():
        raise _bad(name, f"expected an AIF name or file, got {value!r}")
    if text.lower() not in DCE_AIFS and not Path(text).is_file():
        raise _bad(
            name,
            f"{text!r} is neither one of {', '.join(DCE_AIFS)} nor an existing AIF file",
        )
    return text


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(name, f"must be true or false, got {value!r}")
    return bool(value)


def _number(name: str, value: Any, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool):
        raise _bad(name, f"expected a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _bad(name, f"expected a number, got {value!r}") from None
    if not x > 0 or x == float("inf"):
        raise _bad(name, f"expected a positive number, got {value!r}")
    return x


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise _bad(name, f"unknown value {value!r}; expected one of {', '.join(allowed)}")
    return value.lower()


def _check_offsets(name: str, value: Any) -> tuple[float, ...]:
    items: Any = value.split(",") if isinstance(value, str) else value
    if isinstance(items, int | float) and not isinstance(items, bool):
        items = [items]
    try:
        out = tuple(_number(name, v, optional=False) or 0.0 for v in items)
    except TypeError:
        raise _bad(name, f"expected offsets in ppm, got {value!r}") from None
    if not out:
        raise _bad(name, "expected at least one offset in ppm")
    return out


_CHECKS: dict[str, Any] = {
    "dwi_models": _check_dwi_models,
    "dwi_region": lambda n, v: _choice(n, v, ("body", "all")),
    "relax_region": lambda n, v: _choice(n, v, ("body", "all")),
    "dce_model": _check_dce_model,
    "dce_aif": _check_dce_aif,
    "hypoxia_r2star_per_s": lambda n, v: _number(n, v, optional=True),
    "hypoxia_ktrans_per_min": lambda n, v: _number(n, v, optional=True),
    "align_tolerance_vox": lambda n, v: _number(n, v, optional=False),
    "radiomics": lambda n, v: _flag(n, v),
    "dsc_method": lambda n, v: _choice(n, v, ("osvd", "csvd", "svd", "tikhonov")),
    "dsc_leakage": lambda n, v: _choice(n, v, ("bsw", "bidirectional", "none")),
    "perfusion_rcbv_threshold": lambda n, v: _number(n, v, optional=False),
    "cest_mtr_asym_ppm": lambda n, v: _check_offsets(n, v),
    "cest_fit_region": lambda n, v: _choice(n, v, ("lesions", "body")),
    "align_skip_same_geometry": lambda n, v: _flag(n, v),
}
