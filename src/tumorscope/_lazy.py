"""Lazy public names for subpackages (PEP 562), so that importing a subpackage stays cheap."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any


def lazy_attributes(
    package: str, namespace: dict[str, Any], **modules: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` of ``package``, whose public names are
    imported from their modules on first use.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    namespace : dict
        The package's ``globals()``; a resolved name is cached there.
    **modules : sequence of str
        Submodule (relative to the package) -> the public names it defines.

    Returns
    -------
    tuple
        ``__getattr__``, ``__dir__`` and ``__all__`` (the public names, sorted).

    Raises
    ------
    ValueError
        A name given for two modules.
    """
    names: dict[str, str] = {}
    for module, defined in modules.items():
        for name in defined:
            if names.setdefault(name, module) != module:
                raise ValueError(f"{package}: {name!r} is listed for {names[name]} and {module}")

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__, sorted(names)
