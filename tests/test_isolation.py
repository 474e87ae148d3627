"""Finalizers run in a context of their own: the garbage collector runs them in the middle of any code, and on
Python 3.11 a context variable set there, inside a set of the interrupted code, can corrupt that code's context
for the rest of the process (every later ``reset`` of numpy's ``errstate`` raised ``LookupError``)."""

from __future__ import annotations

import contextvars
import gc
import re
from pathlib import Path
from typing import Any, Callable

import pytest

import wirehead
from wirehead.isolation import finalize, isolated

PROBE: contextvars.ContextVar[str] = contextvars.ContextVar("wirehead_test_probe", default="fresh")


class _Holder:
    """Something to be collected, in a reference cycle as a dropped object often is (collected by the GC)."""

    def __init__(self) -> None:
        self.me = self


def _in_the_interrupted_context(body: Callable[[], Any]) -> Any:
    """Run ``body`` with PROBE set, as the code a finalizer interrupts; returns what it returned."""
    token = PROBE.set("interrupted")
    try:
        return body()
    finally:
        PROBE.reset(token)


def test_a_finalizer_sees_and_sets_no_variable_of_the_code_it_interrupts() -> None:
    seen: list[str] = []

    def finalizer() -> None:
        seen.append(PROBE.get())
        PROBE.set("set by the finalizer")  # a finalizer's set (pymongo's deadline, its round-trip time) stays its own

    def body() -> str:
        holder = _Holder()
        finalize(holder, finalizer)
        del holder
        gc.collect()
        return PROBE.get()

    assert _in_the_interrupted_context(body) == "interrupted"
    assert seen == ["fresh"]


def test_an_isolated_function_runs_in_an_empty_context_each_call() -> None:
    @isolated
    def look_and_set() -> str:
        before = PROBE.get()
        PROBE.set("inside")
        return before

    assert _in_the_interrupted_context(look_and_set) == "fresh"
    assert _in_the_interrupted_context(look_and_set) == "fresh"  # nothing kept from the call before
    assert PROBE.get() == "fresh"


def test_a_dropped_dataset_is_closed_in_a_context_of_its_own(make_config: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from wirehead import MongoheadDataset
    from wirehead.store import Store

    seen: list[str] = []
    monkeypatch.setattr(Store, "close", lambda self: seen.append(PROBE.get()))  # what its finalizer calls last

    def body() -> None:
        ds = MongoheadDataset(config=make_config())
        ds.reader  # makes this process's reader, and the finalizer that releases it
        ds.me = ds  # collected by the garbage collector, as a dataset in a cycle is
        del ds
        gc.collect()

    _in_the_interrupted_context(body)
    assert seen == ["fresh"]


def test_every_finalizer_of_wirehead_is_registered_through_isolation() -> None:
    """A new ``weakref.finalize`` elsewhere would run in whatever code the garbage collector interrupts."""
    root = Path(wirehead.__file__).resolve().parent
    bare = [f"{p.relative_to(root)}:{n}" for p in sorted(root.rglob("*.py")) if p.name != "isolation.py"
            for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bweakref\.finalize\(", line)]
    assert not bare, f"finalizers registered with weakref.finalize instead of wirehead.isolation.finalize: {bare}"
