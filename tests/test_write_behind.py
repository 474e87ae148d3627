"""WireheadGenerator.run() writes one sample while it makes and encodes the next (a writer thread).

Real server.  The store's chunk write is wrapped (it still writes to the server) to hold a write until
something else has happened, or to fail it: that is how a test sees two things overlap without timing.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import pytest

from helpers import sample
from wirehead import WireheadGenerator
from wirehead.errors import StoreError
from wirehead.store import Store


def wrap_writes(gen: WireheadGenerator, before: Callable[[int], None]) -> list[int]:
    """Call ``before(k)`` ahead of the k-th chunk write (0-based) of ``gen``; returns the list of k written."""
    real = gen.store.put_sample
    written: list[int] = []

    def put_sample(*args: Any, **kwargs: Any) -> None:
        k = len(written)
        before(k)
        real(*args, **kwargs)
        written.append(k)

    gen.store.put_sample = put_sample  # type: ignore[method-assign]
    return written


def values_in_commit_order(cfg: Any) -> list[int]:
    """The value of each committed sample of every generation, in commit order."""
    store = Store(cfg)
    try:
        out = []
        for doc in store.gen_docs():
            got = store.get_samples(list(doc.members))
            for sid in doc.members:
                manifest, chunks = got[sid]
                meta = manifest["meta"][0]
                data = b"".join(chunks)[meta["offset"]:meta["offset"] + meta["length"]]
                out.append(int(np.frombuffer(data, np.dtype(meta["dtype"]))[0]))
        return out
    finally:
        store.close()


def test_run_makes_the_next_sample_while_the_previous_is_written_in_order(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=100)
    asked = [threading.Event() for _ in range(7)]
    waited_in_vain: list[int] = []

    def factory():
        for i in range(6):
            asked[i].set()
            yield sample(i)
        asked[6].set()  # asked for a seventh: the generator ends

    gen = WireheadGenerator(factory(), config=cfg, name="overlap")

    def hold(k: int) -> None:  # the first writes wait until the factory was asked for the next sample
        if k < 2 and not asked[k + 1].wait(20):
            waited_in_vain.append(k)

    written = wrap_writes(gen, hold)
    assert gen.run() == 6
    assert waited_in_vain == []  # a serial run() would ask for the next sample only after the write
    assert written == list(range(6))
    assert values_in_commit_order(cfg) == list(range(6))  # one writer: committed in the order made


def test_a_failed_write_is_raised_by_run_naming_the_generator_and_nothing_is_written_after_it(
        make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=100)
    made: list[int] = []

    def factory():
        for i in range(10):
            made.append(i)
            yield sample(i)

    gen = WireheadGenerator(factory(), config=cfg, name="gpu-9")

    def fail_second(k: int) -> None:
        if k == 1:
            raise StoreError("writing chunks failed: disk full")

    written = wrap_writes(gen, fail_second)
    with pytest.raises(StoreError, match="disk full") as info:
        gen.run()
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "gpu-9" in notes and "writer thread" in notes
    assert written == [0]
    assert len(made) <= 3  # the failing sample, at most one made meanwhile, and no write after the error
    assert values_in_commit_order(cfg) == [0]
    store = Store(cfg)
    rec = [w for w in store.workers() if w.get("name") == "gpu-9"][0]
    assert rec["status"] == "errored" and "disk full" in rec["last_error"] and rec["produced"] == 1
    store.close()


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_stop_during_a_write_commits_that_sample_and_writes_no_other(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=100)

    def forever():
        i = 0
        while True:
            yield sample(i)
            i += 1

    gen = WireheadGenerator(forever(), config=cfg, name="stopped")

    def stop_at_second(k: int) -> None:
        if k == 1:
            gen.stop()

    written = wrap_writes(gen, stop_at_second)
    assert gen.run() == 2
    assert written == [0, 1]
    assert values_in_commit_order(cfg) == [0, 1]
