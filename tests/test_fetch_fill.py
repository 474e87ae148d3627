"""The fetch engine's background fill of the node cache holds back while reads come back to back."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from helpers import fill_self_checking, wait_until
from wirehead.fetch import WORKER_NAME
from wirehead.reader import Reader
from wirehead.store import Store
from wirehead.synth import check_self_checking

pytestmark = pytest.mark.timeout(300)

#: how long each read's own server query takes here (the fill's hold is at least this)
READ_QUERY_SECONDS = 0.5


@pytest.mark.slow  # about 2 s: two reads whose queries take 0.5 s each, then the fill's hold
def test_the_fill_starts_no_query_until_reads_paused_as_long_as_a_read_query_takes(
        make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # a cold pass reads back to back; a fill query started between two reads shares the server and the
    # cores with the next read's query (a cold read then took up to twice a raw find).  The fill waits
    # until no read came for as long as the last read's own query took: never sooner (a later start
    # only means a loaded machine, so the bound cannot fail under load)
    cfg = make_config(SWAP_CAP=6, NODE_CACHE_MB=64)
    fill_self_checking(cfg, 6)
    fill_starts: list[float] = []
    original = Store.get_samples

    def get_samples(self: Store, sids: list[str]) -> Any:
        if threading.current_thread().name == WORKER_NAME:
            fill_starts.append(time.monotonic())
        else:
            time.sleep(READ_QUERY_SECONDS)  # a slow server, for the reads only
        return original(self, sids)

    monkeypatch.setattr(Store, "get_samples", get_samples)
    reader = Reader(Store(cfg), timeout=30)
    try:
        len(reader)
        starts = []
        for index in (3, 4):  # back to back: the second read comes long before a read query's time passed
            starts.append(time.monotonic())
            got = reader.get([index])
            assert check_self_checking(got[0]["image"], got[0]["label"]) == index
        wait_until(lambda: fill_starts, 30, "the fill to start")
        # the last read was answered at least one query after it started, and the fill held back one more
        assert fill_starts[0] >= starts[-1] + 2 * READ_QUERY_SECONDS, (
            f"the fill started {fill_starts[0] - starts[-1]:.3f} s after the last read began, before reads paused "
            f"for as long as a read query takes ({READ_QUERY_SECONDS} s)")
        wait_until(lambda: reader.stats()["node_ready"] == 6, 30, "the fill to finish")
        assert reader.stats()["fetched_samples"] == 2 and reader.stats()["prefetched"] == 4
    finally:
        reader.close()


def test_warm_reads_leave_an_idle_worker_asleep(make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # once the generation is held, the background worker waits (until its idle time ends) for work; a read
    # brings it none, so waking it at the end of each read only takes the interpreter from the reading
    # thread (a warm 64^3 read took 0.25 ms longer on a busy 2-core machine, every read)
    from wirehead.fetch import FetchEngine

    cfg = make_config(SWAP_CAP=4, NODE_CACHE_MB=64)
    fill_self_checking(cfg, 4)
    looks: list[float] = []
    original = FetchEngine._next_job

    def next_job(self: FetchEngine) -> Any:
        looks.append(time.monotonic())
        return original(self)

    monkeypatch.setattr(FetchEngine, "_next_job", next_job)
    reader = Reader(Store(cfg), timeout=30)
    try:
        reader.get([0])
        wait_until(lambda: reader.stats()["node_ready"] == 4, 30, "the generation held in the node cache")
        wait_until(lambda: reader.stats()["worker"], 30, "the worker to wait for work")
        looks.clear()
        for i in range(60):
            got = reader.get([i % 4])
            assert check_self_checking(got[0]["image"], got[0]["label"]) == i % 4
        assert reader.stats()["fetches"] == 1  # every read after the first was warm
        assert len(looks) <= 5, f"the worker looked for work {len(looks)} times during 60 warm reads"
    finally:
        reader.close()
