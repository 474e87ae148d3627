"""Lazy imports, in one place: public names of packages (PEP 562) and the optional extras.

The optional extras (``notebook``: ipywidgets, traitlets, matplotlib; ``brains``: nilearn, nibabel, torchio;
``brains-gpu``: cornucopia) are imported through :func:`require`, which names the extra to install when
one is missing: by the widget modules when they are imported (``notebook._widgets``), else inside the
function that needs them (``nifti``, ``brains``, ``cli.demo``), so ``import wirehead``, the CLI and a
generator node need none of them.  cloudpickle, optional even with the notebook extra (plain pickle is
the fallback), is tried by ``notebook.controller`` alone; anywidget by the slice viewer alone.

torch, a dependency of the package but heavy to import, is imported at the top only by the modules that
are about it (``dataset``, ``sampler``, ``brains``); the CLI and the controller import those inside the function that
needs them, so ``wirehead --help`` and a controller without a dataset never load torch.
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
