"""Model base class, fit results, parameter specifications and the model registry.

How to write a model on the engine is explained step by step in ``docs/fitting.md``. In short,
a subclass of :class:`Model`:

* sets ``name`` (registry key), ``parameters`` (a tuple of :class:`ParameterSpec`, in the
  order of the parameter vector), optionally ``derived`` (maps computed from the fitted ones,
  such as ``kep`` or ``R2star``) and ``methods`` (accepted ``method=`` names, first = default);
* stores its protocol and options in ``__init__`` (never data) and validates them; every model
  is also built from its protocol object by :meth:`Model.from_protocol` (see
  ``protocol_type`` / ``protocol_fields``);
* declares its per-voxel inputs (maps such as B1) in ``voxel_inputs``: ``fit`` takes them as
  named arguments and hands them, block by block, to ``invalid_voxels`` and ``fit_block``;
* implements ``n_measurements``, the vectorised ``signal(params (n, p)) -> (n, m)`` and
  ``jacobian(params (n, p)) -> (n, m, p)``, and ``initial_guess(y (n, m)) -> (n, p)``;
* optionally supplies a compiled per-voxel function (``kernel()`` and ``consts()``) to run the
  numba solver, ``invalid_voxels(y)``, ``derive(maps)``, or overrides ``fit_block`` entirely for
  linear or multi-step methods;
* implements the classmethod ``example()`` and ``sample_parameters`` used by the common API test
  battery, and is decorated with :func:`register_model`.

``Model.fit`` validates shapes, masks and per-voxel inputs, then hands them (a
:class:`FitInput`) to the hook ``_fit_validated``, which by default chunks the data via
:func:`tumorscope.fitting.engine.fit_blocks`, builds the :class:`FitResult`, and issues one
summary :class:`~tumorscope.errors.TumorscopeWarning` for the voxels that did not converge. A
model that fits otherwise (a fused compiled pass, two passes) overrides the hook, not ``fit``;
a model with per-voxel inputs restates ``fit`` only to name them in its signature.
"""

from __future__ import annotations

import abc
import importlib
import os
import pkgutil
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar, cast

import numpy as np
import numpy.typing as npt

from ..errors import ExportError, FitError, ProtocolError, TumorscopeWarning
from ..fitting.engine import BlockFit, FlatFit, fit_blocks, validate_inputs
from ..fitting.lm import LMOptions, levenberg_marquardt
from ..fitting.status import FitStatus, summarize_counts

if TYPE_CHECKING:
    from ..protocol import Protocol

__all__ = [
    "FitInput",
    "FitResult",
    "Model",
    "ParameterSpec",
    "get_model",
    "list_models",
    "register_model",
    "resolve_backend",
]


@dataclass(frozen=True)
class ParameterSpec:
    """A model parameter: name, unit, bounds.

    Parameters
    ----------
    name : str
        Map name (OSIPI / tumorscope naming, e.g. ``"D_star"``, ``"Ktrans"``).
    unit : str
        Unit string as in :data:`tumorscope.units.PARAMETER_UNITS`.
    lower, upper : float
        Bounds enforced by the solvers (``-inf``/``inf`` allowed).
    typical : tuple of float, optional
        A range of realistic values, used to scale convergence tests and to simulate data in
        tests. Default: the bounds when finite.
    description : str, optional
    """

    name: str
    unit: str
    lower: float = -np.inf
    upper: float = np.inf
    typical: tuple[float, float] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.lower <= self.upper:
            raise FitError(
                f"lower bound {self.lower} above upper bound {self.upper}", field=self.name
            )
        if self.typical is None:
            lo = self.lower if np.isfinite(self.lower) else 0.0
            hi = self.upper if np.isfinite(self.upper) else max(1.0, lo + 1.0)
            object.__setattr__(self, "typical", (float(lo), float(hi)))

    @property
    def scale(self) -> float:
        """Typical magnitude (largest absolute value of the typical range, > 0)."""
        assert self.typical is not None
        s = max(abs(self.typical[0]), abs(self.typical[1]))
        return float(s) if s > 0 else 1.0


@dataclass(eq=False)
class FitResult:
    """Named parameter maps of one fit, with units, status and provenance.

    Attributes
    ----------
    maps : dict of str to ndarray
        One float32 array per fitted and derived parameter, shaped like the data minus its
        last axis; NaN outside the mask and where the status is ``INVALID_INPUT`` or
        ``FAILED``.
    units : dict of str to str
    status : ndarray of uint8
        :class:`~tumorscope.fitting.status.FitStatus` per voxel (255 = outside the mask).
    rss : ndarray of float32
        Residual sum of squares (signal units squared).
    stderr : dict of str to ndarray
        Standard errors of the fitted parameters from the Jacobian at the solution
        (NaN where not available).
    provenance : dict
        Model name, method, options, backend, package versions, input shape and dtype;
        the fit stage (:func:`tumorscope.stages.fit.fit_volume`) adds the SHA-256 of
        the input files. (In-memory arrays are not hashed: hashing costs as much as a
        log-linear ADC fit.)
    mask : ndarray of bool
        Voxels that were fitted (the mask given, or all).

    Examples
    --------
    >>> import numpy as np
    >>> from tumorscope.models import ADC
    >>> b = [0, 500, 1000]
    >>> fit = ADC(b).fit(np.exp(-np.multiply.outer([1e-3, 2e-3], b)))
    >>> np.round(fit["ADC"] * 1e3, 6)
    array([1., 2.], dtype=float32)
    """

    maps: dict[str, np.ndarray]
    units: dict[str, str]
    status: np.ndarray
    rss: np.ndarray
    stderr: dict[str, np.ndarray]
    provenance: dict[str, Any]
    mask: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, bool))

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.maps[name]
        except KeyError:
            raise KeyError(f"no map named {name!r}; this fit has {sorted(self.maps)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.maps

    def __iter__(self) -> Iterator[str]:
        return iter(self.maps)

    def keys(self) -> list[str]:
        """Names of the maps."""
        return list(self.maps)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape of the maps."""
        return tuple(self.status.shape)

    def to_nifti(
        self,
        directory: str | os.PathLike[str],
        affine: np.ndarray,
        *,
        prefix: str = "",
        include_stderr: bool = True,
    ) -> dict[str, Path]:
        """Write every map as ``<prefix><name>.nii.gz`` with a JSON sidecar.

        Also writes ``<prefix>status.nii.gz`` (uint8), ``<prefix>rss.nii.gz`` and, if
        ``include_stderr``, ``<prefix><name>_stderr.nii.gz``. Sidecars hold ``Units``,
        ``Description`` and ``Provenance``. Every file is written atomically.

        Parameters
        ----------
        directory : path-like
            Created if missing.
        affine : ndarray, shape (4, 4)
            Voxel-to-world transform of the maps.
        prefix : str, keyword-only
            Prepended to each file name (e.g. ``"sub-001_ses-01_"``).
        include_stderr : bool, keyword-only

        Returns
        -------
        dict of str to Path
            Image path per written map name.

        Raises
        ------
        ExportError
            If the maps are not 3-D or the affine is not 4×4 (checked before writing).
        """
        from ..files import write_map

        if len(self.shape) != 3:
            raise ExportError(
                f"NIfTI maps need 3-D spatial data, this fit has shape {self.shape}",
                field="maps",
            )
        aff = np.asarray(affine, dtype=float)
        if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
            raise ExportError(
                f"affine must be a finite 4x4 matrix, got {aff.shape}", field="affine"
            )
        out = Path(directory)
        items: list[tuple[str, np.ndarray, str, str]] = [
            (k, v, self.units.get(k, ""), f"{k} map") for k, v in self.maps.items()
        ]
        if include_stderr:
            items += [
                (f"{k}_stderr", v, self.units.get(k, ""), f"standard error of {k}")
                for k, v in self.stderr.items()
            ]
        items.append(("status", self.status, "1", _STATUS_DOC))
        items.append(("rss", self.rss, "", "residual sum of squares (signal units squared)"))
        written: dict[str, Path] = {}
        for name, arr, unit, desc in items:
            path = out / f"{prefix}{name}.nii.gz"
            write_map(path, arr, aff, units=unit, description=desc, provenance=self.provenance)
            written[name] = path
        return written


@dataclass(frozen=True)
class FitInput:
    """The arguments of :meth:`Model.fit` once checked: what its hook ``_fit_validated`` fits.

    Attributes
    ----------
    data : ndarray, shape (..., m)
        The data as given (no copy when already an ndarray of numbers), last axis checked.
    mask : ndarray of bool, shape data.shape[:-1], or None
    chunk_voxels : int or None
        Voxels per block, as given to ``fit``.
    voxel_inputs : mapping of str to ndarray
        The per-voxel inputs given, float64 arrays of the spatial shape, checked by the model.
    """

    data: np.ndarray
    mask: np.ndarray | None
    chunk_voxels: int | None = None
    voxel_inputs: Mapping[str, np.ndarray] = field(default_factory=dict)


_STATUS_DOC = "fit status: " + ", ".join(f"{s.value}={s.name}" for s in FitStatus)


def resolve_backend(backend: str, *, has_kernel: bool) -> str:
    """Turn ``"auto"`` into ``"numba"`` or ``"numpy"``; reject unknown names.

    Raises
    ------
    FitError
        Unknown backend, or ``"numba"`` asked for but numba is not installed or the model has
        no compiled kernel.
    """
    if backend not in ("auto", "numba", "numpy"):
        raise FitError(
            f"unknown backend {backend!r}; expected 'auto', 'numba' or 'numpy'", field="backend"
        )
    if backend == "numpy":
        return "numpy"
    try:
        import numba  # noqa: F401

        have = True
    except ImportError:  # pragma: no cover - numba is in the 'fast' extra
        have = False
    if backend == "numba":
        if not have:
            raise FitError(
                "backend 'numba' needs numba (pip install tumorscope[fast])", field="backend"
            )
        if not has_kernel:
            raise FitError(
                "this model has no compiled kernel; use backend='numpy'", field="backend"
            )
        return "numba"
    return "numba" if (have and has_kernel) else "numpy"


class Model(abc.ABC):
    """Base class of every signal model (see the module docstring and ``docs/fitting.md``).

    Subclasses hold the acquisition and options, never data; ``fit`` never mutates the model.

    **The acquisition.** Every model is built from its protocol the same way,
    ``Model.from_protocol(protocol, **options)``: the protocol is checked against
    :attr:`protocol_type` (a :class:`~tumorscope.errors.ProtocolError` names the expected
    kind), then handed to the constructor, either whole (``protocol_fields`` empty: the
    constructor takes the protocol object as its first argument, as the diffusion and
    relaxometry models do) or as the attributes named in :attr:`protocol_fields`, in order.
    ``options`` are the constructor's keyword options (``method=``, ``aif_mM=`` ...).

    **Per-voxel inputs.** Maps that vary from voxel to voxel but are not data (a B1 map, a
    noise level map) are declared by name in :attr:`voxel_inputs` and passed to :meth:`fit`
    as keyword arguments (``fit(data, mask, b1=b1_map)``). :meth:`fit` checks that each has
    the data's spatial shape (``data.shape[:-1]``; the message uses
    :attr:`voxel_input_labels`), calls :meth:`check_voxel_inputs` for model-specific checks,
    and the engine hands them, chunk by chunk and as float64 rows of the same voxels, to
    ``invalid_voxels(y, **inputs)`` and ``fit_block(y, **inputs)``: a model with voxel
    inputs accepts them as keyword arguments there. An input that is not given is not
    passed (``fit_block(y)``), so results without it are those of the plain model.
    """

    #: Registry key (lower case), e.g. ``"ivim"``.
    name: ClassVar[str] = ""
    #: Fitted parameters, in parameter-vector order.
    parameters: ClassVar[tuple[ParameterSpec, ...]] = ()
    #: Maps computed from the fitted parameters by :meth:`derive`.
    derived: ClassVar[tuple[ParameterSpec, ...]] = ()
    #: Accepted ``method=`` names; the first is the default.
    methods: ClassVar[tuple[str, ...]] = ("lm",)
    #: Name of the measurement axis in messages.
    measurement_name: ClassVar[str] = "measurements"
    #: True if ``fit_block`` detects invalid voxels itself (status INVALID_INPUT, NaN
    #: parameters) so the engine skips :meth:`invalid_voxels` (fused kernels).
    handles_invalid: ClassVar[bool] = False
    #: True if ``fit_block`` accepts float32 blocks (float32 data are then not upcast).
    native_dtype: ClassVar[bool] = False
    #: True if ``fit_block`` may run in several threads at once: it releases the GIL and
    #: calls no ``prange`` kernel (numpy, or numba ``nogil`` serial kernels). The engine then
    #: fits blocks in a thread pool of ``os.cpu_count()`` workers, and :meth:`solve_nonlinear`
    #: uses the serial numba solver. Default False: blocks one after another, numba solver
    #: with ``prange`` (safe for any model).
    thread_safe: ClassVar[bool] = False
    #: Protocol class :meth:`from_protocol` accepts (None: any object).
    protocol_type: ClassVar[type[Protocol] | None] = None
    #: Attributes of the protocol handed to the constructor by :meth:`from_protocol`, in
    #: order; empty (default): the protocol object itself is the first argument.
    protocol_fields: ClassVar[tuple[str, ...]] = ()
    #: Names of the per-voxel inputs :meth:`fit` takes as keyword arguments (e.g. ``("b1",)``).
    voxel_inputs: ClassVar[tuple[str, ...]] = ()
    #: How messages name a per-voxel input (default: its name).
    voxel_input_labels: ClassVar[Mapping[str, str]] = {}

    method: str = "lm"
    backend: str = "auto"
    lm_options: LMOptions = LMOptions()
    #: Per-instance bounds replacing those of the ParameterSpecs (see :meth:`_set_bounds`).
    bound_overrides: Mapping[str, tuple[float, float]] = {}

    # ------------------------------------------------------------------ to implement
    @property
    @abc.abstractmethod
    def n_measurements(self) -> int:
        """Length of the last data axis the model expects."""

    @abc.abstractmethod
    def signal(self, params: np.ndarray) -> np.ndarray:
        """Model signal, ``params (n, p) -> (n, m)`` (float64)."""

    @abc.abstractmethod
    def jacobian(self, params: np.ndarray) -> np.ndarray:
        """Analytic derivative of :meth:`signal`, ``params (n, p) -> (n, m, p)``."""

    def initial_guess(self, y: np.ndarray) -> np.ndarray:
        """Starting parameters ``(n, p)`` for data ``y (n, m)``.

        Default: the middle of each parameter's typical range. Override with something
        data-driven (a linearised fit, a grid search: :mod:`tumorscope.fitting.grid`).
        """
        mid = np.array([0.5 * (s.typical[0] + s.typical[1]) for s in self.parameters])  # type: ignore[index]
        return np.broadcast_to(mid, (y.shape[0], mid.size)).copy()

    def kernel(self) -> Any:
        """Compiled per-voxel model for the numba solver, or None (numpy solver only)."""
        return None

    def consts(self) -> np.ndarray:
        """Constants handed to :meth:`kernel` (float64, 1-D)."""
        return np.zeros(1)

    def invalid_voxels(self, y: np.ndarray) -> np.ndarray:
        """``(n,)`` bool: voxels whose data cannot be fitted (default: any non-finite)."""
        return ~np.all(np.isfinite(y), axis=1)

    def derive(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Derived maps (names in :attr:`derived`) from the fitted ones. Default: none."""
        return {}

    def options(self) -> dict[str, Any]:
        """Options recorded in provenance (JSON-serialisable)."""
        return {"method": self.method}

    @classmethod
    def from_protocol(cls, protocol: Protocol, **options: Any) -> Self:
        """Build the model from its acquisition protocol (see the class docstring).

        Parameters
        ----------
        protocol : Protocol
            An instance of :attr:`protocol_type` (e.g. a
            :class:`~tumorscope.protocol.MultiEchoProtocol` for ``T2Star``).
        **options
            Keyword options of the constructor.

        Raises
        ------
        ProtocolError
            A protocol of another kind.
        """
        want = cls.protocol_type
        if want is not None and not isinstance(protocol, want):
            raise ProtocolError(
                f"{cls.__name__} needs a {want.__name__}, got {type(protocol).__name__}",
                file=getattr(protocol, "source", None),
                field="protocol",
            )
        make = cast(Any, cls)
        if cls.protocol_fields:
            return make(*(getattr(protocol, f) for f in cls.protocol_fields), **options)
        return make(protocol, **options)

    def check_voxel_inputs(self, inputs: Mapping[str, np.ndarray], mask: np.ndarray | None) -> None:
        """Model-specific checks of the per-voxel inputs given to :meth:`fit` (shapes are
        already checked). Default: none. Raise :class:`~tumorscope.errors.DataError` or
        :class:`~tumorscope.errors.FitError` naming the input."""
        return None

    @classmethod
    @abc.abstractmethod
    def example(cls) -> Model:
        """A model with a typical protocol, used by the common API test battery."""

    def sample_parameters(self, n: int, *, rng: np.random.Generator) -> np.ndarray:
        """``(n, p)`` parameters drawn uniformly in each typical range (for simulations)."""
        lo = np.array([s.typical[0] for s in self.parameters])  # type: ignore[index]
        hi = np.array([s.typical[1] for s in self.parameters])  # type: ignore[index]
        return lo + (hi - lo) * rng.random((n, lo.size))

    # ------------------------------------------------------------------ provided
    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.parameters)

    @property
    def units(self) -> dict[str, str]:
        """Unit of every map this model produces."""
        return {s.name: s.unit for s in (*self.parameters, *self.derived)}

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds, each shape (p,) (ParameterSpecs, then overrides)."""
        lo = np.array([s.lower for s in self.parameters], dtype=float)
        hi = np.array([s.upper for s in self.parameters], dtype=float)
        for name, (a, b) in self.bound_overrides.items():
            i = self.parameter_names.index(name)
            lo[i], hi[i] = a, b
        return lo, hi

    def _set_bounds(self, bounds: Mapping[str, Sequence[float]] | None) -> None:
        """Validate and store per-instance bounds ``{name: (lower, upper)}`` (call in __init__).

        Raises
        ------
        FitError
            Unknown parameter name, or bounds that are not two numbers with lower < upper.
        """
        out: dict[str, tuple[float, float]] = {}
        for name, pair in (bounds or {}).items():
            if name not in self.parameter_names:
                raise FitError(
                    f"unknown parameter {name!r}; expected one of {list(self.parameter_names)}",
                    field="bounds",
                )
            try:
                a, b = (float(v) for v in pair)
            except (TypeError, ValueError):
                raise FitError(
                    f"bounds[{name!r}] must be (lower, upper), got {pair!r}", field="bounds"
                ) from None
            if not a < b:
                raise FitError(
                    f"bounds[{name!r}] needs lower < upper, got ({a}, {b})", field="bounds"
                )
            out[name] = (a, b)
        self.bound_overrides = out

    def scales(self) -> np.ndarray:
        """Typical magnitude of each parameter, shape (p,)."""
        return np.array([s.scale for s in self.parameters], dtype=float)

    def _check_method(self, method: str) -> str:
        if method not in self.methods:
            raise FitError(
                f"unknown method {method!r} for model {self.name!r}; expected one of "
                f"{', '.join(repr(m) for m in self.methods)}",
                field="method",
            )
        return method

    def solve_nonlinear(
        self,
        y: np.ndarray,
        p0: np.ndarray,
        *,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        backend: str | None = None,
    ) -> BlockFit:
        """Bounded Levenberg–Marquardt of this model on a block, from ``p0``."""
        lo, hi = self.bounds()
        be = resolve_backend(backend or self.backend, has_kernel=self.kernel() is not None)
        solver = "numba-serial" if (be == "numba" and self.thread_safe) else be
        res = levenberg_marquardt(
            y,
            p0,
            lo if lower is None else lower,
            hi if upper is None else upper,
            fun=self.signal,
            jac=self.jacobian,
            kernel=self.kernel() if be == "numba" else None,
            consts=self.consts() if be == "numba" else None,
            scale=self.scales(),
            options=self.lm_options,
            backend=solver,
        )
        return BlockFit(res.params, res.status, res.rss, res.stderr)

    def fit_block(self, y: np.ndarray) -> BlockFit:
        """Fit a block ``y (n, m)`` of valid voxels. Default: LM from :meth:`initial_guess`."""
        return self.solve_nonlinear(y, self.initial_guess(y))

    def _n_workers(self) -> int:
        return max(1, os.cpu_count() or 1) if self.thread_safe else 1

    def fit(
        self,
        data: npt.ArrayLike,
        mask: npt.ArrayLike | None = None,
        *,
        chunk_voxels: int | None = None,
        **voxel_inputs: npt.ArrayLike | None,
    ) -> FitResult:
        """Fit the model to every voxel of ``data`` (within ``mask``).

        Parameters
        ----------
        data : array_like, shape (..., m)
            Measurements on the last axis, in the order of the protocol.
        mask : array_like of bool, shape data.shape[:-1], optional
            Voxels to fit; others get NaN maps and status ``NOT_FITTED``.
        chunk_voxels : int, optional, keyword-only
            Voxels per block (bounds memory); results do not depend on it.
        **voxel_inputs : ndarray, shape data.shape[:-1], optional
            The model's per-voxel inputs (names in :attr:`voxel_inputs`, e.g. ``b1=``);
            ``None`` is the same as not given.

        Returns
        -------
        FitResult

        Raises
        ------
        FitError
            Data whose last axis disagrees with the protocol, a mask or per-voxel input of
            another shape, a per-voxel input the model does not take.

        Warns
        -----
        TumorscopeWarning
            Once, if some voxels did not converge, hit bounds or had invalid input.
        """
        arr, m = validate_inputs(
            data, mask, n_measurements=self.n_measurements, what=self.measurement_name
        )
        inputs = self._check_voxel_input_shapes(arr.shape[:-1], voxel_inputs)
        self.check_voxel_inputs(inputs, m)
        return self._fit_validated(FitInput(arr, m, chunk_voxels, inputs))

    def _fit_validated(self, given: FitInput) -> FitResult:
        """The fit of :meth:`fit` once data, mask and per-voxel inputs are checked: the engine
        (:meth:`_fit_engine`), then the :class:`FitResult`. A model that fits otherwise (a
        fused compiled pass, several passes, a noise level estimated first) overrides this
        hook, not :meth:`fit`."""
        flat = self._fit_engine(given)
        return self._result(given.data, flat, order=flat.order)

    def _fit_engine(self, given: FitInput) -> FlatFit:
        """The engine (:func:`~tumorscope.fitting.engine.fit_blocks`) on checked input with
        this model's block solver, invalid-voxel test, workers and dtype policy (the flat results
        are in the data's memory order: :attr:`FlatFit.order`)."""
        return fit_blocks(
            self.fit_block,
            given.data,
            given.mask,
            n_params=len(self.parameters),
            invalid_fn=None if self.handles_invalid else self.invalid_voxels,
            chunk_voxels=given.chunk_voxels,
            n_workers=self._n_workers(),
            native_dtype=self.native_dtype,
            voxel_inputs=given.voxel_inputs,
            order="auto",  # Fortran-ordered images (NIfTI) are not copied
        )

    def _check_voxel_input_shapes(
        self, shape: tuple[int, ...], given: Mapping[str, npt.ArrayLike | None]
    ) -> dict[str, np.ndarray]:
        """The per-voxel inputs given (not None) as float64 arrays of the spatial ``shape``."""
        unknown = [k for k in given if k not in self.voxel_inputs]
        if unknown:
            takes = ", ".join(self.voxel_inputs) or "none"
            raise FitError(
                f"{type(self).__name__}.fit() got an unknown per-voxel input {unknown[0]!r}; "
                f"it takes: {takes}",
                field=unknown[0],
            )
        out: dict[str, np.ndarray] = {}
        for name in self.voxel_inputs:
            value = given.get(name)
            if value is None:
                continue
            arr = np.asarray(value, dtype=float)
            if arr.shape != shape:
                label = self.voxel_input_labels.get(name, name)
                raise FitError(
                    f"{label} shape {arr.shape} does not match the data's spatial shape {shape}",
                    field=name,
                )
            out[name] = arr
        return out

    def _result(
        self, arr: np.ndarray, flat: Any, *, order: Literal["C", "F"] = "C", derived: Any = None
    ) -> FitResult:
        """Build the :class:`FitResult` from flat per-voxel results (``order``: how the
        spatial axes were flattened, "C" by the engine, "F" for F-ordered data; ``derived``:
        flat derived maps already computed, else :meth:`derive`)."""
        shape = arr.shape[:-1]

        def sh(a: np.ndarray) -> np.ndarray:
            return a.reshape(shape, order=order)

        maps = {s.name: sh(flat.params[:, i]) for i, s in enumerate(self.parameters)}
        for name, value in (self.derive(maps) if derived is None else derived).items():
            maps[name] = sh(np.asarray(value, dtype=np.float32))
        stderr = {s.name: sh(flat.stderr[:, i]) for i, s in enumerate(self.parameters)}
        status = sh(flat.status)
        msg = summarize_counts(flat.counts)
        if msg:
            warnings.warn(f"{self.name}: {msg}", TumorscopeWarning, stacklevel=_caller_level())
        from .. import __version__

        provenance = {
            "model": self.name,
            "model_class": f"{type(self).__module__}.{type(self).__qualname__}",
            "options": self.options(),
            "backend": resolve_backend(self.backend, has_kernel=self.kernel() is not None),
            "tumorscope_version": __version__,
            "numpy_version": np.__version__,
            "input": {
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
                "fitted_voxels": int(flat.mask.sum()),
            },
        }
        return FitResult(
            maps=maps,
            units=self.units,
            status=status,
            rss=sh(flat.rss),
            stderr=stderr,
            provenance=provenance,
            mask=sh(flat.mask),
        )

    def predict(self, fit: FitResult | Mapping[str, np.ndarray]) -> np.ndarray:
        """Noise-free signal from fitted maps.

        Parameters
        ----------
        fit : FitResult or mapping of name to ndarray
            Maps of every fitted parameter, all of one shape ``S``.

        Returns
        -------
        ndarray, shape S + (m,), float64
            NaN where any parameter is NaN.
        """
        maps = fit.maps if isinstance(fit, FitResult) else fit
        missing = [n for n in self.parameter_names if n not in maps]
        if missing:
            raise FitError(f"missing maps {missing} to predict {self.name!r}", field="fit")
        arrs = [np.asarray(maps[n], dtype=np.float64) for n in self.parameter_names]
        shape = arrs[0].shape
        P = np.stack([a.reshape(-1) for a in arrs], axis=1)
        out = np.full((P.shape[0], self.n_measurements), np.nan)
        ok = np.all(np.isfinite(P), axis=1)
        if ok.any():
            out[ok] = self.signal(P[ok])
        return out.reshape((*shape, self.n_measurements))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


_PACKAGE = f"{__package__}."


def _caller_level() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller of this function name the
    first frame outside ``tumorscope.models`` (the line that called ``fit``), however many
    model methods lie between."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Model]] = {}
_M = TypeVar("_M", bound=type[Model])
_LOADED = False


def register_model(cls: _M) -> _M:
    """Class decorator: register a :class:`Model` subclass under ``cls.name``.

    Raises
    ------
    FitError
        If the name is empty or already taken by another class.
    """
    name = getattr(cls, "name", "")
    if not name:
        raise FitError(f"{cls.__qualname__} has no 'name'", field="name")
    other = _REGISTRY.get(name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise FitError(
            f"model name {name!r} already registered by {other.__qualname__}", field="name"
        )
    _REGISTRY[name] = cls
    return cls


def _load_all() -> None:
    """Import every public module of ``tumorscope.models`` so that they register.

    Public modules are those whose name does not start with ``_``; a modality package
    (``models/relaxometry/``) is imported with its public modules, one level down.
    """
    global _LOADED
    if _LOADED:
        return
    pkg = importlib.import_module("tumorscope.models")
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        mod = importlib.import_module(f"tumorscope.models.{info.name}")
        if info.ispkg:
            for sub in pkgutil.iter_modules(mod.__path__):
                if not sub.name.startswith("_"):
                    importlib.import_module(f"{mod.__name__}.{sub.name}")
    _LOADED = True


def list_models() -> list[str]:
    """Names of every registered model (imports all model modules first)."""
    _load_all()
    return sorted(_REGISTRY)


def get_model(name: str) -> type[Model]:
    """The model class registered as ``name`` (case-insensitive).

    Raises
    ------
    FitError
        If no model has that name (the message lists the known ones).
    """
    key = name.lower()
    if key not in _REGISTRY:
        _load_all()
    try:
        return _REGISTRY[key]
    except KeyError:
        raise FitError(
            f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}",
            field="model",
        ) from None
