"""Code that must leave the caller's :mod:`contextvars` alone runs in a fresh context of its own.

Two kinds of code in wirehead need that:

* **Finalizers.**  A finalizer runs wherever the garbage collector happens to run: between any two allocations
  of the code it interrupts, and on Python 3.11 even inside a ``ContextVar.set`` of that code, while the
  context's variables are being rebuilt.  wirehead's finalizers talk to the server, and pymongo sets context
  variables on the way (``pymongo.timeout``'s deadline, the round-trip time).  Set in the interrupted context,
  a variable set inside another set can free the map that set is still reading (CPython issue gh-148891):
  the context's variables are then wrong for the rest of the process, and every later ``reset`` of, say,
  numpy's ``errstate`` or Playwright's zone raises ``LookupError``.  :func:`finalize` registers a finalizer
  that runs in a context of its own.
* **A start-up bounded by its own deadlines.**  :func:`isolated` makes any function run in a fresh context, so a
  caller's ``pymongo.timeout()`` does not cut it short (the shared server's start-up).
"""

from __future__ import annotations

import contextvars
import functools
import weakref
from typing import Any, Callable, TypeVar

__all__ = ["finalize", "isolated"]

T = TypeVar("T")


def _run_isolated(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return contextvars.Context().run(fn, *args, **kwargs)


def isolated(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn``, run in an empty :mod:`contextvars` context each call: it sees none of the caller's context
    variables, and what it sets stays in its own context."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        return _run_isolated(fn, *args, **kwargs)
    return run


def finalize(obj: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> weakref.finalize:
    """``weakref.finalize(obj, fn, *args, **kwargs)`` whose call runs ``fn`` in an empty context (see the module
    docstring: a finalizer must not set context variables in the code the garbage collector interrupted)."""
    return weakref.finalize(obj, _run_isolated, fn, *args, **kwargs)
