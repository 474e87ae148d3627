"""Failover and transient server errors: what a real replica set does now and then, made on demand.

The server of these tests runs with its test commands: ``configureFailPoint failCommand`` makes chosen
commands of wirehead's clients (``appName`` "wirehead"; the tests' own checks are left alone) fail with a
chosen code, label, write-concern error, closed connection or a stall, and ``replSetStepDown`` makes the
primary step down for a while (no primary, as during an election).  Skipped, with the reason, on a server
without them (see ``FEATURES`` in conftest.py).

What they check (README "Guarantees", "Replica sets"): every transient error is retried within the call's
deadline and never reaches the caller before it; permanent ones are raised at once as wirehead's own errors;
no attempt overruns RETRY_DEADLINE, and the message says how long it really waited; after a step-down
every process goes on within about a second, without an error; a reader holding its generation in memory
serves it through an outage.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

import pymongo
import pytest

from helpers import GenWatcher, Workers, check_reader_report, fill, read_report, sample, wait_until
from wirehead import WireheadGenerator
from wirehead.errors import StoreError, StoreUnavailable
from wirehead.reader import Reader
from wirehead.store import Store
from wirehead.swapper import Swapper

pytestmark = [pytest.mark.server_feature("failpoints"), pytest.mark.timeout(300)]

#: every command wirehead's operations send (reads, writes, find-and-modify, counts)
COMMANDS = ["find", "insert", "update", "delete", "findAndModify", "aggregate", "count", "createIndexes",
            "getMore", "listDatabases", "ping"]


@pytest.fixture(scope="module")
def mongo_uri(failover_server: Any) -> str:
    """This module's tests run on the server with test commands (overrides the contract server's)."""
    if failover_server is None:
        pytest.skip("no server with failpoints and step-down for this kind of contract server")
    return failover_server.uri


@pytest.fixture
def admin(mongo_uri: str) -> Iterator[pymongo.MongoClient]:
    """The test's own client (not named "wirehead", so no failpoint touches it); every failpoint off after."""
    client = pymongo.MongoClient(mongo_uri, appname="wirehead-test", serverSelectionTimeoutMS=30_000)
    yield client
    client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    _primary_back(client)
    client.close()


def _primary_back(client: pymongo.MongoClient, timeout: float = 60.0) -> None:
    wait_until(lambda: client.admin.command("hello").get("isWritablePrimary"), timeout, "the primary to be back")


def _fail(client: pymongo.MongoClient, mode: Any, **data: Any) -> None:
    """Arm ``failCommand`` for wirehead's clients: ``mode`` ``{"times": n}``, ``"alwaysOn"`` or ``"off"``."""
    client.admin.command({"configureFailPoint": "failCommand", "mode": mode,
                          "data": {"failCommands": COMMANDS, "appName": "wirehead", **data}})


@contextlib.contextmanager
def _outage(client: pymongo.MongoClient, **data: Any) -> Iterator[None]:
    """Every command of wirehead's clients fails (as ``data`` says) inside the block."""
    _fail(client, "alwaysOn", **data)
    try:
        yield
    finally:
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def _protocol_round(store: Store, gen: WireheadGenerator, k: int, reader: Any = None) -> None:
    """One of each kind of operation: read the state, write and commit a sample, beat, step the swapper
    (a manager's work), and read a sample from the server (a reader without caches)."""
    store.state()
    gen.push(sample(k))
    store.heartbeat("failover-test", {"kind": "generator"})
    Swapper(store).step()
    store.gen_docs()
    if reader is not None:
        assert len(reader.get([k % 3])) == 1


# -- 1. transient errors are retried, permanent ones refused at once -------------------------------------------
TRANSIENT = {
    "HostUnreachable": {"errorCode": 6},
    "HostNotFound": {"errorCode": 7},
    "NetworkTimeout": {"errorCode": 89},
    "SocketException": {"errorCode": 9001},
    "ExceededTimeLimit": {"errorCode": 262},
    "ShutdownInProgress": {"errorCode": 91},
    "NotWritablePrimary": {"errorCode": 10107},
    "RetryableWriteError label": {"errorCode": 11601, "errorLabels": ["RetryableWriteError"]},
    "write concern ShutdownInProgress": {"writeConcernError": {"code": 91, "errmsg": "shutting down"}},
    "write concern NotWritablePrimary": {"writeConcernError": {"code": 10107, "errmsg": "not primary"}},
    "connection closed": {"closeConnection": True},
}


#: in the fast subset (`-m "not slow"`): one server code and one label; the rest, seconds each, with the slow tests
_FAST_ERRORS = {"HostUnreachable", "RetryableWriteError label"}


@pytest.mark.parametrize("error", [e if e in _FAST_ERRORS else pytest.param(e, marks=pytest.mark.slow)
                                   for e in TRANSIENT])
@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_each_transient_error_is_ridden_out_by_every_kind_of_operation(
        error: str, make_config: Any, admin: pymongo.MongoClient) -> None:
    cfg = make_config(SWAP_CAP=3, RETRY_DEADLINE=20.0, NODE_CACHE_MB=0, READER_CACHE_MB=0)
    fill(cfg, range(3))  # a read generation for the reader
    store = Store(cfg)
    reader = Reader(Store(cfg), timeout=10, prefetch=False)  # every read goes to the server
    gen = WireheadGenerator(config=cfg, name="failover")
    try:
        # each round's first two commands of a kind fail, wherever they fall: reads, writes, find-and-modify
        for k, commands in enumerate([["find"], ["insert"], ["update", "findAndModify"], ["find", "insert"]]):
            _fail(admin, {"times": 2}, failCommands=commands, **TRANSIENT[error])
            _protocol_round(store, gen, 10 + k, reader)
        admin.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        assert sum(d.n for d in store.gen_docs(members=False)) == 3 + 4  # each sample committed once
    finally:
        gen.close()
        reader.close()
        store.close()


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_a_permanent_error_is_refused_at_once_naming_its_cause(make_config: Any, admin: pymongo.MongoClient) -> None:
    cfg = make_config(RETRY_DEADLINE=20.0)
    store = Store(cfg)
    store.ensure_schema()
    _fail(admin, {"times": 1}, errorCode=2)  # BadValue: retrying cannot help
    t0 = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.state()
    assert time.monotonic() - t0 < 5.0, "a permanent error was retried"
    assert not isinstance(info.value, StoreUnavailable)
    assert "OperationFailure" in str(info.value) and "code 2" in str(info.value), info.value  # the cause
    assert "not retried" in str(info.value), info.value  # and what to do
    store.close()


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_no_driver_error_escapes_untranslated(make_config: Any) -> None:
    """A document the driver cannot encode (a pymongo/bson error that is not a server's answer)."""
    store = Store(make_config())
    store.ensure_schema()
    with pytest.raises(StoreError, match=r"refused heartbeat .*InvalidDocument.*cannot encode.*Check MONGO_URI's "
                                         r"options and the documents written"):
        store.heartbeat("bad-fields", {"kind": "generator", "what": object()})
    store.close()


# -- 2. no attempt overruns the deadline ------------------------------------------------------------------------
@pytest.mark.slow
def test_no_attempt_overruns_the_retry_deadline_and_the_message_says_the_real_wait(
        make_config: Any, admin: pymongo.MongoClient) -> None:
    cfg = make_config(RETRY_DEADLINE=1.5, CONNECT_TIMEOUT=8.0)
    store = Store(cfg)
    store.ensure_schema()
    with _outage(admin, blockConnection=True, blockTimeMS=4000):  # the server stalls every command 4 s
        for what, op in [("write chunks", lambda: store.put_sample("stalled", [b"x" * 1000], {})),
                         ("read state", store.state)]:
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                op()
            took = time.monotonic() - t0
            assert took < 1.5 + 1.0, f"{what} gave up after {took:.1f} s with RETRY_DEADLINE 1.5"
            waited = float(str(info.value).split("(waited ")[1].split(" s")[0])
            assert abs(waited - took) < 0.3, (waited, took, str(info.value))
    store.close()


# -- 3. a step-down ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_step_down_costs_about_its_length_and_messages_say_no_primary(
        make_config: Any, admin: pymongo.MongoClient) -> None:
    cfg = make_config(RETRY_DEADLINE=2.0, CONNECT_TIMEOUT=8.0)
    store = Store(cfg)
    store.ensure_schema()
    gen = WireheadGenerator(config=cfg, name="stepdown")
    try:
        gen.push(sample(0))
        admin.admin.command({"replSetStepDown": 6, "force": True})
        down_at = time.monotonic()
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:  # the step-down outlasts RETRY_DEADLINE
            gen.push(sample(1))
        took = time.monotonic() - t0
        assert took < 2.0 + 1.0, f"gave up after {took:.1f} s with RETRY_DEADLINE 2"
        message = str(info.value)
        assert "no primary" in message and "Is the server running" not in message, message
        # within RETRY_DEADLINE of its end, a call started during the step-down succeeds, about a second after it
        wait_until(lambda: time.monotonic() - down_at > 4.5, 10, "the last seconds of the step-down")
        t0 = time.monotonic()
        gen.push(sample(2))
        _protocol_round(store, gen, 3)
        after = time.monotonic() - down_at
        assert after < 6.0 + 1.5, f"the first call after a 6 s step-down ended {after:.1f} s after it began"
        print(f"\nstep-down 6 s: gave up after {took:.2f} s (RETRY_DEADLINE 2); "
              f"a call started {t0 - down_at:.1f} s in ended {after:.2f} s after the step-down began")
    finally:
        gen.close()
        store.close()


@pytest.mark.slow
def test_a_reader_with_its_generation_in_memory_serves_it_through_an_outage(
        make_config: Any, admin: pymongo.MongoClient) -> None:
    cfg = make_config(SWAP_CAP=4, RETRY_DEADLINE=2.0, NODE_CACHE_MB=0)
    store = Store(cfg)
    with WireheadGenerator(config=cfg, name="outage") as gen:
        for k in range(4):
            gen.push(sample(k))
    Swapper(store).step()
    reader = Reader(Store(cfg), timeout=10)
    try:
        first = reader.current().gen
        for k in range(4):
            reader.get([k])  # the whole generation is in this process's memory now
        outage = 30.0  # fifteen times RETRY_DEADLINE
        served, slowest = 0, 0.0
        with _outage(admin, errorCode=6):
            end = time.monotonic() + outage
            while time.monotonic() < end:
                t0 = time.monotonic()
                got = reader.get([served % 4, (served + 1) % 4])
                slowest = max(slowest, time.monotonic() - t0)
                assert len(got) == 2 and reader.gen.gen == first
                served += 2
        print(f"\noutage {outage:g} s: {served} samples served from memory, slowest read {slowest:.2f} s")
        # back: the reader catches up with a newer generation
        with WireheadGenerator(config=cfg, name="outage-2") as gen:
            for k in range(4):
                gen.push(sample(10 + k))
        wait_until(lambda: Swapper(store).step().swapped or store.state().read_gen != first, 10, "a swap")
        wait_until(lambda: reader.get([0]) and reader.gen.gen != first, 10, "the reader to follow the swap")
    finally:
        reader.close()
        store.close()


@pytest.mark.slow
def test_a_step_down_and_a_burst_of_write_concern_errors_cost_every_process_about_their_length(
        make_config: Any, admin: pymongo.MongoClient, tmp_path: Path) -> None:
    cfg = make_config(SWAP_CAP=4, RETRY_DEADLINE=30.0, GRACE_SECONDS=60.0, LEASE_SECONDS=5.0)
    report = tmp_path / "reader.json"
    store = Store(cfg)
    step_down = 10
    with Workers(cfg) as w, GenWatcher(store) as watcher:
        manager = w.start("manager", "--duration", "120")
        gens = [w.start("generator", "--gid", str(i), "--delay", "0.05") for i in (1, 2)]
        reader = w.start("reader", "--out", str(report), "--duration", "40", "--timeout", "60")
        for g in gens:
            g.wait_for("COMMITTED", count=6, timeout=90)
        wait_until(lambda: len(watcher.read_gens) >= 2, 60, "two swaps before the step-down")
        before = [len(g.committed()) for g in gens]
        swaps_before = len(watcher.read_gens)
        admin.admin.command({"replSetStepDown": step_down, "force": True})
        down_at = time.monotonic()
        back = []
        for g, n in zip(gens, before):
            wait_until(lambda: len(g.committed()) > n + 1, step_down + 30, "commits after the step-down")
            back.append(time.monotonic() - down_at)
        wait_until(lambda: len(watcher.read_gens) > swaps_before, step_down + 30, "a swap after the step-down")
        swap_back = time.monotonic() - down_at
        # then a 3 s burst of write-concern errors (the writes are applied, their acknowledgement fails)
        before = [len(g.committed()) for g in gens]
        with _outage(admin, failCommands=["insert", "update", "findAndModify", "delete"],
                     writeConcernError={"code": 91, "errmsg": "shutting down"}):
            burst_end = time.monotonic() + 3.0
            wait_until(lambda: time.monotonic() > burst_end, 10, "the end of the burst")
        for g, n in zip(gens, before):
            wait_until(lambda: len(g.committed()) > n + 1, 30, "commits after the burst")
        burst_back = time.monotonic() - burst_end
        assert reader.wait(90) == 0, reader.stderr()
        alive = [p.proc.poll() for p in (manager, *gens)]
        assert alive == [None, None, None], f"exit codes {alive}: {[p.stderr()[-1500:] for p in (manager, *gens)]}"
    result = read_report(report)
    assert result["errors"] == [], result["errors"][:2]
    check_reader_report(result, watcher.member_of)
    print(f"\nstep-down {step_down} s: generators committed again {back[0]:.1f} / {back[1]:.1f} s after it began, "
          f"the manager swapped again after {swap_back:.1f} s; the reader's slowest read "
          f"{result['max_get_seconds']:.1f} s, {len(result['reads'])} reads, 0 errors; after a 3 s burst of "
          f"write-concern errors both committed again within {burst_back:.1f} s")
    # each process costs about the step-down, not a heartbeat period (10 s) more per error
    assert max(back) < step_down + 4.0, back
    store.close()
