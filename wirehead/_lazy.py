"""Lazy imports, in one place: public names of packages (PEP 562) and the optional extras.

Every module of an optional extra (``notebook``: ipywidgets, traitlets, matplotlib, cloudpickle;
``brains``: nilearn, nibabel, torchio, cornucopia) is imported through :func:`require`, inside the
function that needs it, so ``import wirehead`` and a generator node need none of them, and a missing one
fails with an :class:`ImportError` that names the extra to install.  torch, a dependency of the
package but heavy to import, is imported at the top only by :mod:`wirehead.dataset` (the torch
datasets); ``brains`` and ``cli.demo`` import it through :func:`require` as well.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any, Callable, Mapping

#: The extra that installs each optional top-level module.
EXTRAS = {"ipywidgets": "notebook", "traitlets": "notebook", "anywidget": "notebook", "matplotlib": "notebook",
          "cloudpickle": "notebook", "nilearn": "brains", "nibabel": "brains", "scipy": "brains",
          "torchio": "brains", "cornucopia": "brains-gpu"}


def require(module: str, needed_by: str) -> ModuleType:
    """Import ``module`` (e.g. ``"matplotlib.figure"``), an optional dependency.

    Raises:
        ImportError: it is not installed; the message says what needs it and which extra installs it
            (``"<needed_by> needs nibabel: pip install 'wirehead[brains]'"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise missing(module, needed_by) from e


def missing(module: str, needed_by: str) -> ImportError:
    """The :class:`ImportError` for an optional ``module`` that is not installed (see :func:`require`)."""
    top = module.split(".")[0]
    how = f"pip install 'wirehead[{EXTRAS[top]}]'" if top in EXTRAS else f"pip install {top}"
    return ImportError(f"{needed_by} needs {top}: {how}")


def installed(*modules: str) -> bool:
    """Whether every one of ``modules`` can be imported (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in modules)


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any],
                 public: list[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``, whose ``exports`` map a public name to its module."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(public)

    return __getattr__, __dir__
