"""Bad input, one catalogue: every mistake raises a specific error whose message names the problem,
fast (no hang), and leaves the rest of the cache untouched.

Three groups:

* config: servers that cannot be used (unreachable host, wrong port, wrong credentials against an
  auth-enabled server); the catalogue of config mistakes (the file, missing and mistyped keys, values
  out of range) is one, in tests/test_config.py;
* samples pushed by a generator: wrong tuple length, None, strings, object/bytes/datetime arrays,
  ragged lists, kinds with the wrong names, and a sample generator that raises; empty arrays are
  valid numeric arrays and must round-trip;
* datasets: indices out of range, negative or of the wrong type, bad constructor arguments, and
  no data before the deadline.

Every case that touches a cache first records its chunk/manifest counts, its state and its
generations, and checks after the failure that none of them changed.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from typing import Any, Callable

import numpy as np
import pytest

import helpers
from helpers import clear_env_credentials, drop_database, fill
from test_security import auth_server  # noqa: F401  (a fixture)
from wirehead.server import free_port
from wirehead import (GeneratorError, MongoheadDataset, MongoTupleheadDataset, SampleError,
                      StoreError, StoreUnavailable, WaitTimeout, WireheadConfig, WireheadGenerator,
                      WireheadManager)
from wirehead.store import Store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_env_credentials(monkeypatch)


sample = functools.partial(helpers.sample, shape=(3, 4))  # 2-d samples: the checks below index [0, 0]


def fingerprint(store: Store) -> tuple:
    """Everything a bad call must leave unchanged: document counts, state, generations."""
    s = store.state()
    return (store.counts(), (s.write_gen, s.read_gen, s.swaps), store.gen_counts(), store.live_members())


# ===================================================================================================
# config: servers that cannot be used (config mistakes: tests/test_config.py)
# ===================================================================================================


def _through_store(cfg: WireheadConfig) -> None:
    Store(cfg).ping()


def _through_generator(cfg: WireheadConfig) -> None:
    WireheadGenerator(config=cfg).push(sample(1))


def _through_dataset(cfg: WireheadConfig) -> None:
    len(MongoheadDataset(config=cfg, timeout=5))


def _through_manager(cfg: WireheadConfig) -> None:
    WireheadManager(config=cfg).step()


ENTRY_POINTS = [_through_store, _through_generator, _through_dataset, _through_manager]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda f: f.__name__.split("_")[-1])
def test_unreachable_host_raises_store_unavailable_within_a_few_seconds(entry: Callable[..., None]) -> None:
    cfg = WireheadConfig(SWAP_CAP=2, SAMPLE=["image", "label"], MONGO_URI="mongodb://127.0.0.1:1/",
                         CONNECT_TIMEOUT=1, RETRY_DEADLINE=30)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"MongoDB at mongodb://127\.0\.0\.1:1/ did not answer .*"
                                               r"Is the server running and reachable\?"):
        entry(cfg)
    took = time.monotonic() - t0
    # before the first contact only CONNECT_TIMEOUT counts, never RETRY_DEADLINE
    assert took < 6, f"took {took:.1f} s"


def test_wrong_port_names_host_and_port() -> None:
    port = free_port()  # nothing listens there
    cfg = WireheadConfig(SWAP_CAP=2, MONGOHOST="127.0.0.1", PORT=port, CONNECT_TIMEOUT=1)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match=rf"127\.0\.0\.1:{port}.*did not answer"):
        Store(cfg).ping()
    assert time.monotonic() - t0 < 6
    assert isinstance(StoreUnavailable("x"), ConnectionError)  # catchable as the built-in too


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_wrong_credentials_raise_store_error_naming_authentication(auth_server: Any, dbname: str) -> None:
    cfg = WireheadConfig(SWAP_CAP=2, MONGO_URI=auth_server.uri(auth_server.admin_user, "not-the-password"),
                         DBNAME=dbname, CONNECT_TIMEOUT=2)
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="authentication failed") as info:
        WireheadGenerator(config=cfg).push(sample(1))
    assert not isinstance(info.value, StoreUnavailable)  # a refusal, not an outage: no retrying
    assert "not-the-password" not in str(info.value)
    assert time.monotonic() - t0 < 6
    # nothing was written with the right credentials either
    good = Store(cfg.replace(MONGO_URI=auth_server.uri(auth_server.admin_user, auth_server.admin_password)))
    assert not good.database_exists()


def test_invalid_uri_raises_store_error() -> None:
    cfg = WireheadConfig(SWAP_CAP=2, MONGO_URI="mongodb://127.0.0.1:notaport/", CONNECT_TIMEOUT=1)
    with pytest.raises(StoreError, match=r"invalid MongoDB URI or TLS option in mongodb://127\.0\.0\.1:notaport/.*[Pp]ort"):
        Store(cfg).ping()


# ===================================================================================================
# samples
# ===================================================================================================


@pytest.fixture
def seeded(make_config: Any) -> tuple[WireheadConfig, Store, WireheadGenerator]:
    """A cache holding two committed samples, and a generator on it (closed afterwards)."""
    cfg = make_config(SWAP_CAP=4)
    gen = WireheadGenerator(config=cfg, name="bad-input")
    gen.push(sample(1))
    gen.push(sample(2))
    yield cfg, Store(cfg), gen
    gen.close()


class _NotAnArray:
    pass


# (sample, exception class, message pattern)
BAD_SAMPLES = [
    pytest.param((np.zeros(3, np.float32),), SampleError,
                 r"sample has 1 value\(s\) but SAMPLE expects 2: \['image', 'label'\]", id="tuple-too-short"),
    pytest.param((np.zeros(3), np.zeros(3), np.zeros(3)), SampleError,
                 r"sample has 3 value\(s\) but SAMPLE expects 2", id="tuple-too-long"),
    pytest.param((), SampleError, r"sample has 0 value\(s\)", id="empty-tuple"),
    pytest.param(None, SampleError, r"a sample must be a tuple of 2 arrays .* got None", id="sample-None"),
    pytest.param("image,label", SampleError, r"a sample must be a tuple of 2 arrays.*got str", id="sample-string"),
    pytest.param(np.zeros((2, 3)), SampleError, r"got ndarray", id="sample-bare-array"),
    pytest.param((None, np.zeros(3)), TypeError, r"sample kind 'image': None cannot be stored", id="value-None"),
    pytest.param((np.zeros(3), "a label"), TypeError, r"sample kind 'label': a value of type str", id="value-string"),
    pytest.param((np.array(["a", "b"]), np.zeros(3)), TypeError, r"'image': unicode string arrays",
                 id="value-unicode-array"),
    pytest.param((np.zeros(3), np.array([b"x"])), TypeError, r"'label': bytes arrays", id="value-bytes-array"),
    pytest.param((np.array([1, "a", None], dtype=object), np.zeros(3)), TypeError, r"'image': object arrays",
                 id="value-object-array"),
    pytest.param((np.zeros(3), [[1, 2], [3]]), TypeError, r"'label': a Python list cannot be stored",
                 id="value-ragged-list"),
    pytest.param((np.array([[1, 2], [3]], dtype=object), np.zeros(3)), TypeError, r"'image': object arrays",
                 id="value-ragged-object-array"),
    pytest.param((np.zeros(3), np.array(["2024-01-01"], dtype="datetime64[D]")), TypeError,
                 r"'label': datetime64 arrays", id="value-datetime-array"),
    pytest.param((np.zeros(3), _NotAnArray()), TypeError, r"'label': a value of type _NotAnArray",
                 id="value-object"),
    pytest.param({"image": np.zeros(3), "mask": np.zeros(3)}, SampleError,
                 r"does not match SAMPLE \['image', 'label'\]: missing \['label'\]; unexpected \['mask'\]",
                 id="dict-wrong-kind-name"),
    pytest.param({"image": np.zeros(3)}, SampleError, r"missing \['label'\]", id="dict-missing-kind"),
    pytest.param({"image": np.zeros(0), "label": np.zeros(0), "extra": np.zeros(0)}, SampleError,
                 r"unexpected \['extra'\]", id="dict-empty-arrays-extra-kind"),
]


@pytest.mark.parametrize("bad,exc,pattern", BAD_SAMPLES)
def test_bad_sample_is_refused_and_the_cache_is_untouched(seeded: Any, bad: Any, exc: type, pattern: str) -> None:
    cfg, store, gen = seeded
    before = fingerprint(store)
    with pytest.raises(exc, match=pattern):
        gen.push(bad)
    assert fingerprint(store) == before
    # the generator is still usable after the refusal
    gen.push(sample(3))
    assert store.counts()["samples"] == before[0]["samples"] + 1


@pytest.mark.parametrize("shape", [(0,), (0, 4), (3, 0, 2)], ids=str)
def test_empty_arrays_are_valid_and_round_trip(make_config: Any, shape: tuple[int, ...]) -> None:
    """Decided: empty arrays are valid numeric arrays; dtype and shape come back exactly."""
    cfg = make_config(SWAP_CAP=1)
    gen = WireheadGenerator(config=cfg)
    try:
        gen.push((np.zeros(shape, np.float32), np.zeros(shape, ">i2")))
    finally:
        gen.close()
    WireheadManager(config=cfg).step()
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=10)
    image, label = ds[0]["image"], ds[0]["label"]
    assert image.shape == shape and image.dtype == np.float32
    assert label.shape == shape and label.dtype == np.dtype(">i2")


def test_generator_that_raises_names_generator_host_and_pid(make_config: Any) -> None:
    cfg = make_config()
    store = Store(cfg)
    store.ensure_schema()
    before = fingerprint(store)

    def broken():
        raise RuntimeError("synthesis diverged at step 3")
        yield  # pragma: no cover

    gen = WireheadGenerator(broken(), config=cfg, name="gpu-node-7")
    t0 = time.monotonic()
    with pytest.raises(GeneratorError) as info:
        gen.run()
    msg = str(info.value)
    assert "gpu-node-7" in msg and f"host {socket.gethostname()}" in msg
    assert f"pid {os.getpid()}" in msg and "RuntimeError: synthesis diverged at step 3" in msg
    assert isinstance(info.value.__cause__, RuntimeError)
    assert time.monotonic() - t0 < 10
    after = fingerprint(store)
    assert (after[0], after[1], after[2]) == (before[0], before[1], before[2])


def test_generator_that_raises_at_once_is_recorded_for_status(make_config: Any) -> None:
    cfg = make_config()

    def broken():
        raise RuntimeError("CUDA out of memory at start-up")
        yield  # pragma: no cover

    with pytest.raises(GeneratorError):
        WireheadGenerator(broken(), config=cfg, name="gpu-node-8").run()
    recs = [w for w in Store(cfg).workers() if w.get("name") == "gpu-node-8"]
    assert recs and recs[0]["status"] == "errored" and "CUDA out of memory" in recs[0]["last_error"]


def test_generator_yielding_a_bad_sample_stops_with_the_sample_error(make_config: Any) -> None:
    cfg = make_config()
    store = Store(cfg)
    gen = WireheadGenerator(iter([sample(1), (np.zeros(3),)]), config=cfg)
    with pytest.raises(SampleError, match="SAMPLE expects 2"):
        gen.run()
    assert store.counts() == {"chunks": 1, "samples": 1}  # the good sample, nothing of the bad one


@pytest.mark.parametrize("n", [-1, 2.5, "3", True], ids=repr)
def test_generator_bad_n_samples(config: Any, n: Any) -> None:
    with pytest.raises(ValueError, match=r"n_samples should be a non-negative integer or None, but got n_samples="):
        WireheadGenerator(config=config, n_samples=n)


def test_run_without_a_generator(config: Any) -> None:
    with pytest.raises(ValueError, match="built without a generator"):
        WireheadGenerator(config=config).run()


@pytest.mark.parametrize("returned,what", [
    (sample(1), r"one sample \(a tuple of 2 arrays\)"),
    (np.zeros((3, 4)), r"one array \(ndarray of shape \(3, 4\)\)"),
    ({"image": np.zeros(3), "label": np.zeros(3)}, r"one sample \(a dict of kinds \['image', 'label'\]\)"),
    (7, r"a int, which is not iterable"),
], ids=["tuple", "array", "dict", "int"])
def test_a_factory_that_returned_one_sample_is_told_to_yield(config: Any, returned: Any, what: str) -> None:
    with pytest.raises(TypeError, match=what + r".*must return a generator, e\.g\. `while True: yield image, label`"):
        WireheadGenerator(returned, config=config)
    WireheadGenerator([sample(1), sample(2)], config=config).close()  # a list of samples is an iterable of them


def test_a_server_that_cannot_be_started_in_time_is_an_error_not_a_stop(config: Any) -> None:
    """run() returns 0, "stopped", only for stop(); a WaitTimeout of the server's start is raised."""
    from wirehead.errors import WaitTimeout as Timeout

    def not_started() -> str:
        raise Timeout("the shared server did not start within 60 s (test)")

    gen = WireheadGenerator(iter([sample(1)]), config=WireheadConfig(SWAP_CAP=2, SAMPLE=["image", "label"]))
    assert gen.store.embedded
    gen.store.connection._resolve = not_started  # what connect.embedded_uri raises when the start times out
    with pytest.raises(WaitTimeout, match="did not start within 60 s"):
        gen.run()


# ===================================================================================================
# datasets
# ===================================================================================================


@pytest.fixture
def served(make_config: Any) -> tuple[WireheadConfig, MongoheadDataset]:
    """A dataset serving a read generation of two samples (values 0 and 1)."""
    cfg = make_config(SWAP_CAP=2)
    fill(cfg, range(2), make=sample)
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=10)
    yield cfg, ds
    ds.close()


BAD_INDICES = [
    pytest.param(2, IndexError, r"dataset index 2 is out of range: no generation holds more than SWAP_CAP=2 samples",
                 id="out-of-range"),
    pytest.param(10**12, IndexError, r"out of range", id="huge"),
    pytest.param(np.int64(5), IndexError, r"dataset index 5 is out of range", id="numpy-int-out-of-range"),
    pytest.param(-1, IndexError, r"dataset index -1 is negative; indices run from 0 to len\(dataset\)-1",
                 id="negative"),
    pytest.param("0", TypeError, r"dataset indices must be integers, got str \('0'\)", id="str"),
    pytest.param(1.0, TypeError, r"must be integers, got float", id="float"),
    pytest.param(None, TypeError, r"must be integers, got NoneType", id="None"),
    pytest.param(True, TypeError, r"must be integers, got bool", id="bool"),
    pytest.param(slice(0, 2), TypeError, r"must be integers, got slice", id="slice"),
    pytest.param([0, 5], IndexError, r"dataset index 5 is out of range", id="list-with-bad-index"),
]


@pytest.mark.parametrize("index,exc,pattern", BAD_INDICES)
def test_bad_index_raises_and_the_dataset_still_serves(served: Any, index: Any, exc: type, pattern: str) -> None:
    cfg, ds = served
    store = Store(cfg)
    before = fingerprint(store)
    with pytest.raises(exc, match=pattern):
        ds[index]
    assert fingerprint(store) == before
    assert int(ds[1]["image"][0, 0]) == 1 and int(ds[0]["label"][0, 0]) == 0
    assert len(ds) == 2


def test_tuple_dataset_bad_index(served: Any) -> None:
    cfg, _ = served
    ds = MongoTupleheadDataset(config=cfg, output="numpy", timeout=10)
    with pytest.raises(IndexError, match="out of range"):
        ds[7]
    with pytest.raises(TypeError, match="must be integers"):
        ds["a"]
    image, label = ds[1]
    assert int(image[0, 0]) == 1


@pytest.mark.parametrize("kwargs,exc,pattern", [
    ({"output": "pandas"}, ValueError, r"output should be 'torch' or 'numpy', but got output='pandas'"),
    ({"timeout": 0}, ValueError, r"timeout should be a positive number of seconds, but got timeout=0"),
    ({"timeout": "soon"}, ValueError, r"but got timeout='soon'"),
    ({"transform": 5}, TypeError, r"transform should be callable, but got int"),
], ids=["output", "timeout-0", "timeout-str", "transform"])
def test_dataset_bad_arguments(config: Any, kwargs: dict, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        MongoheadDataset(config=config, **kwargs)


def test_no_data_before_the_deadline_raises_wait_timeout(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=5)
    gen = WireheadGenerator(config=cfg)
    try:
        gen.push(sample(1))  # one of five: no swap yet
    finally:
        gen.close()
    store = Store(cfg)
    before = fingerprint(store)
    ds = MongoheadDataset(config=cfg, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"no read generation after \d+ s: the write generation 0 holds 1 of "
                                          r"SWAP_CAP=5 samples\. Are generators running"):
        ds[0]
    assert time.monotonic() - t0 < 5
    assert isinstance(WaitTimeout("x"), TimeoutError)
    assert fingerprint(store) == before


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_a_reader_started_on_another_database_than_the_generators_is_told_where_the_data_is(
        make_config: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # a trainer started with the wrong config (a DBNAME typo): it waited READ_TIMEOUT for an empty cache and
    # said only "are generators running?", while they ran and swapped next door
    written = make_config(SWAP_CAP=2)
    gen = WireheadGenerator(config=written)
    try:
        gen.push(sample(1))
        gen.push(sample(2))  # a full generation: the generator swaps it itself
    finally:
        gen.close()
    wrong = written.replace(DBNAME=written.dbname + "_typo")
    monkeypatch.setattr("wirehead.reader._HINT_SECONDS", 0.3)  # the warning while it waits (10 s by default)
    try:
        ds = MongoheadDataset(config=wrong, timeout=1.0)
        with caplog.at_level(logging.WARNING, logger="wirehead"):
            with pytest.raises(WaitTimeout) as err:
                ds[0]
        message = str(err.value)
        assert f"Nothing was written to database {wrong.dbname!r}" in message, message
        assert repr(written.dbname) in message and "DBNAME" in message, message
        warned = [r.getMessage() for r in caplog.records if "still waiting for the first read generation" in r.getMessage()]
        assert len(warned) == 1 and repr(written.dbname) in warned[0], warned
    finally:
        drop_database(wrong)

