"""WireheadGenerator: pulls samples from a Python generator, encodes them and commits them to the cache.

A sample is written in three steps: its chunk documents, its manifest, then the
commit (one atomic update of a generation document, see :mod:`wirehead.store`).
A generator killed at any point loses at most the sample it was writing; what it
left behind is deleted by the orphan sweep.  A sample whose commit finds the
write generation full goes into the next generation.  A generator never waits
for a swap in progress; it only waits when the write generation and the next one
are both full (the cache is ahead of every swapper), and then it swaps itself if no
manager holds the swap lease.  :meth:`WireheadGenerator.run` writes each sample in a
writer thread while it makes and encodes the next one (one sample written at a time, in order).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import traceback
import uuid
import weakref
from typing import Any, Iterable, Iterator, Optional, Union

from .chunks import encode
from .config import ConfigSource
from .connect import open_store
from .errors import GeneratorError, RetryAbandoned, SampleError, StoreError, StoreUnavailable, WaitTimeout
from .isolation import finalize
from .store import Store
from .supervise import StopEvent
from .swapper import CLEANUP_SECONDS, Swapper

__all__ = ["WireheadGenerator"]

log = logging.getLogger(__name__)

#: How many times in a row a fenced generator writes a sample again before push() fails.
MAX_FENCED_REWRITES = 3


class _Stopped(WaitTimeout):
    """:meth:`WireheadGenerator.stop` ended a wait for room in a full cache.  Private: :meth:`run` returns on
    it ("stopped"), while any other :class:`WaitTimeout` (a server that could not be started or reached in
    time) is an error; :meth:`push` callers see a :class:`WaitTimeout`."""


def _iterable(x: Any) -> bool:
    try:
        iter(x)
    except TypeError:
        return False
    return True


def _one_sample(generator: Any) -> Optional[str]:
    """What ``generator`` is when it is one sample, not an iterable of samples (a factory that returned its
    sample instead of yielding it); ``None`` when it may be an iterable of samples."""
    def array(x: Any) -> bool:
        return hasattr(x, "shape") and hasattr(x, "dtype")

    if array(generator):
        return f"one array ({type(generator).__name__} of shape {tuple(generator.shape)})"
    if isinstance(generator, (tuple, list)) and generator and all(array(x) for x in generator):
        return f"one sample (a {type(generator).__name__} of {len(generator)} arrays)"
    if isinstance(generator, dict):
        return f"one sample (a dict of kinds {sorted(map(str, generator))})"
    return None


def _new_worker_id(name: str) -> str:
    return f"gen:{name}:{uuid.uuid4().hex[:8]}"


def _beat_loop(ref: "weakref.ref[WireheadGenerator]", stop: threading.Event, interval: float) -> None:
    """The heartbeat thread: beats every ``interval`` seconds while its generator lives and runs."""
    while not stop.wait(interval):
        gen = ref()
        if gen is None:
            return
        try:
            # one period's worth of retries: a missed beat is retried at the next one
            gen._beat("running", deadline=interval)
        except StoreError as e:  # a missed heartbeat must not kill the generator
            log.debug("heartbeat of %s failed: %s", gen.name, e)
        del gen


def _cleanup_seconds(store: Store, deadline: Optional[float]) -> float:
    """Seconds a stopping generator's last writes may retry: ``deadline``, or a short clean-up deadline."""
    return min(CLEANUP_SECONDS, store.config.retry_deadline) if deadline is None else deadline


def _shut_down(store: Store, holder: str, stop: threading.Event, thread: Optional[threading.Thread],
               fields: dict[str, Any], status: str, deadline: Optional[float] = None) -> None:
    """Stop a generator's heartbeat, release its lease, record its final status, close its client.

    Also the finalizer of a generator dropped or left running at exit: it references no generator.
    """
    stop.set()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=max(1.0, store.config.heartbeat_seconds + 1.0))
    short = _cleanup_seconds(store, deadline)
    fields = dict(fields)
    worker_id = fields.pop("worker_id")
    fields["status"] = status
    store.sign_off(holder, worker_id, fields, short)  # short 0: the server is gone; the record shows it dead soon


class WireheadGenerator:
    """Feeds samples from ``generator`` into the cache.

    Args:
        generator: any iterable of samples; a sample is a tuple (in SAMPLE order) or a dict
            (by SAMPLE name) of numpy arrays or torch tensors.  May be ``None`` if you only
            call :meth:`push`.
        config_path: path of the YAML config (the seed's argument).
        config: a :class:`WireheadConfig` or a mapping, instead of ``config_path``.
        n_samples: stop after committing this many samples (upstream's default, 10**9; ``None``: until
            the generator ends).
        name: a label for this generator in status and errors (default ``host:pid``).
        uri: a server URI overriding the config's (used by controllers and tests).

    :meth:`run` runs in the calling thread; :meth:`stop` may be called from any thread.
    """

    def __init__(
        self,
        generator: Optional[Iterable[Any]] = None,
        config_path: Union[str, "os.PathLike[str]", None] = None,
        config: ConfigSource = None,
        n_samples: Optional[int] = int(1e9),
        *,
        name: Optional[str] = None,
        uri: Optional[str] = None,
    ) -> None:
        self.store = open_store(config, uri, config_path=config_path)
        self.config = self.store.config
        if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 0):
            raise ValueError(f"n_samples should be a non-negative integer or None, but got n_samples={n_samples!r}")
        one = _one_sample(generator)
        if one is None and generator is not None and not _iterable(generator):
            one = f"a {type(generator).__name__}, which is not iterable"
        if one is not None:
            raise TypeError(
                f"generator= should be an iterable of samples (e.g. a generator function's result), but got "
                f"{one}: a sample factory must return a generator, e.g. "
                f"`while True: yield image, label`, not `return image, label`")
        self.generator = generator
        self.n_samples = n_samples
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.worker_id = _new_worker_id(self.name)
        self.swapper = Swapper(self.store, role="generator")
        self.produced = 0
        self.last_error: Optional[str] = None
        self.progress_at: Optional[float] = None  # when the last sample was committed (or the start)
        self._gen: Optional[int] = None  # the generation this generator committed into last
        self._state: Optional[Any] = None  # the state it read last
        self._last_help = 0.0
        self._stop = StopEvent()  # stop() is safe from a signal handler
        self.store.connection.interrupt = self._stop  # a stop ends a call that retries a server that is away
        self._beat_stop = threading.Event()
        self._beat_thread: Optional[threading.Thread] = None
        self._finalizer: Optional[weakref.finalize] = None
        self._info: dict[str, Any] = {}
        self._started = False
        self._shapes: Optional[dict[str, tuple]] = None  # the first sample's shape per kind

    # -- control -------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to return after the sample in hand (safe from any thread)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def __enter__(self) -> "WireheadGenerator":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close("stopped" if exc_type is None or issubclass(exc_type, KeyboardInterrupt) else "errored")

    def _start(self) -> None:
        if self._started:
            return
        self.store.ensure_schema()
        self._started = True
        self.progress_at = time.time()
        self._beat_stop = threading.Event()
        self._beat("running")
        # the thread and the finalizer hold no strong reference to self: a generator that is
        # dropped without close() is collected, and its heartbeat stops and says so
        self._beat_thread = threading.Thread(
            target=_beat_loop, args=(weakref.ref(self), self._beat_stop, self.config.heartbeat_seconds),
            name=f"wirehead-heartbeat-{self.name}", daemon=True)
        self._finalizer = finalize(self, _shut_down, self.store, self.swapper.holder, self._beat_stop,
                                  self._beat_thread, self._info, "stopped")
        self._beat_thread.start()

    def _fields(self, status: str) -> dict[str, Any]:
        fields = {"kind": "generator", "name": self.name, "produced": self.produced, "last_error": self.last_error,
                  "status": status, "progress_at": self.progress_at,
                  "every": self.config.heartbeat_seconds}  # the orphan sweep waits for three missed beats
        self._info.clear()  # what the finalizer records if this generator is dropped without close()
        self._info.update(fields, worker_id=self.worker_id)
        return fields

    def _beat(self, status: str, deadline: Optional[float] = None) -> bool:
        """Record the heartbeat; True if an orphan sweep fenced this generator's id."""
        return self.store.heartbeat(self.worker_id, self._fields(status), deadline=deadline)

    def close(self, status: str = "stopped", deadline: Optional[float] = None) -> None:
        """Stop the heartbeat, give the swap lease back and record the final status (run() does this
        itself; so does leaving a ``with`` block, garbage collection and process exit).

        ``deadline``: seconds the final writes may retry (default: a short clean-up deadline).
        """
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._started:
            self._fields(status)
            self._swap_what_is_full(deadline)
            _shut_down(self.store, self.swapper.holder, self._beat_stop, self._beat_thread, self._info, status,
                       deadline=deadline)
        else:
            self._beat_stop.set()
        self._beat_thread = None
        self._started = False

    def _swap_what_is_full(self, deadline: Optional[float]) -> None:
        """Swap a full write generation before this generator ends, unless a manager's lease says it will.

        The writer that took its last slot may have died before its swap (or its swap found the lease
        taken), and nothing else swaps before some process's next step: without this, the last generator
        to end with no manager running would leave the generation it filled unread.  Best effort within
        the clean-up deadline; skipped when the server is known gone."""
        short = _cleanup_seconds(self.store, deadline)
        if not self.store.cleanup_worth_trying(short):
            return
        try:
            self.swapper.swap_full(deadline=short)
        except StoreError as e:  # the server went away, or refused: the next swapper's step swaps it
            log.debug("%s could not swap the full write generation as it ended: %s", self.name, e)

    # -- the work ------------------------------------------------------------------
    def push(self, sample: Any) -> str:
        """Encode and commit one sample; return its sample id.

        A slow write commits, however long it takes, as long as this generator's heartbeat
        (its own thread) reaches the server.  If the orphan sweep fenced this generator (it was
        paused or cut off for over ORPHAN_SECONDS), the sample is written again under a new
        generator id, at most MAX_FENCED_REWRITES times.

        Raises:
            SampleError, TypeError: the sample does not match SAMPLE (nothing is written).
            StoreUnavailable, StoreError: the server could not be used within the deadline.
            WaitTimeout: :meth:`stop` was called while the cache was full and no swap came.
            GeneratorError: fenced on every attempt (its heartbeat never kept up).
        """
        return self._write(self._prepare(sample))

    def _prepare(self, sample: Any) -> "_Prepared":
        """Validate and encode a sample into its chunks (a push's CPU part: compression, copies); writes nothing."""
        encoded = encode(sample, self.config.sample, self.config.compression)  # validates before any write
        self._check_shapes(encoded.meta)
        manifest = {"meta": encoded.meta, "stored_bytes": encoded.stored_bytes, "raw_bytes": encoded.raw_bytes}
        return _Prepared(encoded.chunks(self.config.chunk_bytes), manifest, encoded.stored_bytes)

    def _write(self, prepared: "_Prepared") -> str:
        """Write a prepared sample's chunks and commit it (the server part of a push)."""
        self._start()
        chunks, manifest = prepared.chunks, prepared.manifest
        for _ in range(MAX_FENCED_REWRITES + 1):
            sid = uuid.uuid4().hex
            writer = self.worker_id
            self.store.put_sample(sid, chunks, {**manifest, "producer": writer}, writer=writer)
            if self.store.is_fenced(writer):
                # paused past ORPHAN_SECONDS while writing: the sweep may have taken chunks; write it anew
                self._renew_id(writer)
                self.store.delete_samples([sid], writer=writer)
                continue
            self._commit(sid, prepared.stored_bytes)
            if self.store.is_fenced(writer):
                # fenced between the check and the commit: the sweep may have deleted chunks of this now
                # committed sample; write them back (readers skipped it meanwhile, never served it broken)
                self._renew_id(writer)
                self.store.put_sample(sid, chunks, {**manifest, "producer": self.worker_id},
                                      writer=self.worker_id, replace=True)
            self.produced += 1
            self.progress_at = time.time()
            self._fields("running")  # what a finalizer would record, kept current
            return sid
        raise GeneratorError(
            f"generator {self.name} (host {socket.gethostname()}, pid {os.getpid()}) was fenced by the orphan "
            f"sweep {MAX_FENCED_REWRITES + 1} times in a row: its heartbeat did not reach the server for the "
            f"swapper's ORPHAN_SECONDS (this process's: {self.config.orphan_seconds:g} s) while it wrote a sample. "
            f"Check that the process is not paused and the network to the server, and that managers run with "
            f"this ORPHAN_SECONDS (raise it if writes are paused for longer)")

    def _renew_id(self, fenced: str) -> None:
        """Continue under a fresh worker id after ``fenced`` was fenced by an orphan sweep."""
        self.worker_id = _new_worker_id(self.name)
        log.warning("%s: fenced by the orphan sweep (its heartbeat was silent for a swapper's ORPHAN_SECONDS, "
                    "%g s here, e.g. paused); writing on as %s", self.name, self.config.orphan_seconds, self.worker_id)
        self._beat("running")
        try:
            self.store.forget_worker(fenced)
        except StoreError as e:
            log.debug("could not delete the fenced record %s: %s", fenced, e)

    def _check_shapes(self, meta: Any) -> None:
        """Refuse a sample whose shapes differ from this generator's first one (unless VARIABLE_SHAPES)."""
        shapes = {m["kind"]: tuple(m["shape"]) for m in meta}
        first = self._shapes
        if first is None or self.config.variable_shapes:
            self._shapes = shapes
            return
        for kind, shape in shapes.items():
            if first.get(kind, shape) != shape:
                raise SampleError(
                    f"{self.name}: kind {kind!r} of this sample has shape {list(shape)}, but this generator's first "
                    f"sample had {list(first[kind])}; a batch needs one shape per kind (crop or pad the samples to "
                    f"one shape, or set VARIABLE_SHAPES: true and batch them yourself)")

    def _commit(self, sid: str, stored_bytes: int) -> None:
        cap = self.config.swap_cap
        if self._gen is not None:
            # the write generation we committed into last: one update when it still has room. Safe when
            # it was swapped meanwhile, because a generation is sealed or full before it is read.
            slot = self.store.commit(sid, self._gen, cap, stored_bytes, fresh=True)
            if slot is not None:
                self._after_commit(self._gen, slot)
                return
        while True:
            state = self.store.state()
            self._state = state
            for g in (state.write_gen, state.write_gen + 1):
                slot = self.store.commit(sid, g, cap, stored_bytes, fresh=True)
                if slot is None and g == state.write_gen + 1 and self.swapper.has_room():
                    self.store.ensure_gen(g)
                    slot = self.store.commit(sid, g, cap, stored_bytes, fresh=True)
                if slot is not None:
                    self._gen = g
                    self._after_commit(g, slot)
                    return
            # the write generation and the next are full (or no room for a next one until the swapper
            # collects): swap if nobody else does, else wait for it
            result = self.swapper.step() if self._lease_free(state) else None
            if result is None or not result.swapped:
                if self._stop.wait(self.config.poll_seconds):
                    raise _Stopped(f"generator {self.name} was stopped while the cache was full "
                                   f"(generations {state.write_gen} and {state.write_gen + 1}); "
                                   "is a manager running?")

    def _lease_free(self, state: Any) -> bool:
        return (state.lease_holder is None or state.lease_holder == self.swapper.holder
                or state.lease_expires < time.time())

    def _after_commit(self, gen: int, slot: int) -> None:
        """When no manager holds the lease: swap a generation this sample filled at once, and do the
        manager's step (garbage collection too) at most once per POLL_SECONDS."""
        log.debug("%s committed to generation %d slot %d", self.name, gen, slot)
        if slot == self.config.swap_cap - 1:
            self.swapper.swap_full(gen, full=True)
        now = time.monotonic()
        if now - self._last_help < self.config.poll_seconds:
            return
        self._last_help = now
        state = self._state = self.store.state()
        if self._lease_free(state):
            self.swapper.step()

    def _samples(self) -> Iterator[Any]:
        if self.generator is None:
            raise ValueError("WireheadGenerator was built without a generator; pass generator=... or use push()")
        it = iter(self.generator)
        while True:
            try:
                yield next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - the user's generator: any error, tagged and re-raised
                self.last_error = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]
                raise GeneratorError(
                    f"the sample generator of {self.name} (host {socket.gethostname()}, pid {os.getpid()}) "
                    f"raised {type(e).__name__}: {e}"
                ) from e

    def run(self, verbose: bool = False) -> int:
        """Commit samples until the generator ends, ``n_samples`` are committed, or :meth:`stop`.

        Samples are written in order by one writer thread while this thread asks the generator for the
        next sample and encodes it (compression included), so making a sample and writing the previous one
        overlap; at most one sample is being written at a time, and run() returns only after it is
        committed (or failed).  ``verbose=True`` (upstream's flag) writes a progress line to stderr as
        samples commit.  Returns the number of samples committed.  A :meth:`stop` that comes before
        :meth:`run` starts makes it return at once; one that comes later ends it after the sample being
        written.  Raises :class:`GeneratorError` if the sample generator raises (its traceback is recorded
        for ``wirehead status``), and the errors of :meth:`push` (raised in the writer thread, re-raised
        here with a note naming it).
        """
        status = "finished"
        cleanup: Optional[float] = None
        progress = _Progress(self.name, self.n_samples)
        writer = _WriteBehind(self)
        try:
            self._start()  # registered before the factory's first sample: one that hangs there shows as stalled
            submitted = 0
            for sample in self._samples():
                if self._stop.is_set():
                    status = "stopped"
                    break
                if self.n_samples is not None and submitted >= self.n_samples:
                    break
                prepared = self._prepare(sample)  # while the previous sample is being written
                if not writer.submit(prepared):  # stopped while that write finished
                    status = "stopped"
                    break
                submitted += 1
                if verbose:
                    progress.update(writer.committed)
                if self.n_samples is not None and submitted >= self.n_samples:
                    break
                if self._stop.is_set():
                    status = "stopped"
                    break
            writer.drain()
            log.info("%s committed %d samples (%s)", self.name, writer.committed, status)
            return writer.committed
        except _Stopped:  # stop() while the cache was full; any other WaitTimeout is an error (below)
            status = "stopped"
            return writer.committed
        except RetryAbandoned:  # stop() while a write retried a server that is away: its sample is in flight
            status = "stopped"
            cleanup = 0.0
            return writer.committed
        except KeyboardInterrupt:  # Ctrl-C / a supervisor's signal while the factory computed a sample
            status = "stopped"
            raise
        except BaseException as e:
            status = "errored"
            if isinstance(e, StoreUnavailable):
                cleanup = 0.0  # the server is gone: one quick try, so the error comes within its deadline
            if self.last_error is None:
                self.last_error = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]
            if not self._started and not isinstance(e, (KeyboardInterrupt, StoreError, WaitTimeout)):
                try:  # failed before its first sample: still show up in `wirehead status`
                    self._start()
                except StoreError as reg:  # the failure being raised matters more than the record
                    log.debug("could not register failed generator %s: %s", self.name, reg)
            raise
        finally:
            writer.drain(raise_error=False)  # the sample being written is committed (or failed) first
            if verbose:
                progress.done(writer.committed, status)
            self.close(status, deadline=cleanup)
            self._stop.clear()  # the generator may be run again

    def run_generator(self) -> int:
        """The seed's name for :meth:`run`."""
        return self.run()

    def __repr__(self) -> str:
        return f"WireheadGenerator(name={self.name!r}, produced={self.produced}, config={self.config!r})"


class _Prepared:
    """A sample encoded and split into chunks, ready to be written."""

    __slots__ = ("chunks", "manifest", "stored_bytes")

    def __init__(self, chunks: list[bytes], manifest: dict[str, Any], stored_bytes: int) -> None:
        self.chunks, self.manifest, self.stored_bytes = chunks, manifest, stored_bytes


class _WriteBehind:
    """The writer thread of :meth:`WireheadGenerator.run`: writes and commits prepared samples one at a time,
    in the order they were submitted, while the caller makes and encodes the next one.

    :meth:`submit` waits until the previous sample is committed, then hands over the next; the first error of
    a write is raised by the next :meth:`submit` or :meth:`drain` (with a note naming the generator and its
    writer thread), and nothing more is written after it.
    """

    def __init__(self, gen: WireheadGenerator) -> None:
        self._gen = gen
        self._cond = threading.Condition()
        self._item: Optional[_Prepared] = None
        self._busy = False
        self._closed = False
        self._error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        self.committed = 0

    def _idle(self) -> bool:
        return self._item is None and not self._busy

    def _raise(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise err

    def submit(self, prepared: _Prepared) -> bool:
        """Hand ``prepared`` to the writer once the previous sample is committed; False (nothing handed over)
        when the generator was stopped meanwhile.  Raises the previous write's error."""
        with self._cond:
            while not self._idle():
                self._cond.wait()
            self._raise()
            if self._gen.stopped:
                return False
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"wirehead-writer-{self._gen.name}",
                                                daemon=True)
                self._thread.start()
            self._item = prepared
            self._cond.notify_all()
        return True

    def drain(self, raise_error: bool = True) -> None:
        """Wait until the sample being written is committed (or failed) and end the thread; then raise its
        error (``raise_error``) or drop it (the caller is failing already)."""
        with self._cond:
            while not self._idle():
                self._cond.wait()
            self._closed = True
            self._cond.notify_all()
            if raise_error:
                self._raise()
            else:
                self._error = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _loop(self) -> None:
        gen = self._gen
        while True:
            with self._cond:
                while self._item is None and not self._closed:
                    self._cond.wait()
                if self._item is None:
                    return
                item, self._item, self._busy = self._item, None, True
            try:
                gen._write(item)
                error = None
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                error = e
                if hasattr(e, "add_note"):
                    e.add_note(f"(raised while writing a sample in the writer thread of generator {gen.name}, "
                               f"host {socket.gethostname()}, pid {os.getpid()})")
                if not isinstance(e, _Stopped):
                    log.debug("%s: writing a sample failed: %s", gen.name, e)
            with self._cond:
                self._busy = False
                if error is None:
                    self.committed += 1
                else:
                    self._error, self._closed = error, True
                self._cond.notify_all()
            if error is not None:
                return


class _Progress:
    """tqdm-like progress lines on stderr for ``run(verbose=True)`` (upstream's flag asks for them)."""

    def __init__(self, name: str, total: Optional[int]) -> None:
        self.name, self.total, self.t0, self.last = name, total, time.monotonic(), 0.0

    def _line(self, count: int) -> str:
        dt = time.monotonic() - self.t0
        of = f"/{self.total}" if self.total is not None and self.total < int(1e9) else ""
        return f"wirehead generator {self.name}: {count}{of} samples committed ({count / dt if dt else 0.0:.2f}/s)"

    def update(self, count: int) -> None:
        now = time.monotonic()
        if now - self.last >= 0.5 or count == 1 or count == self.total:
            self.last = now
            print(self._line(count), file=sys.stderr, flush=True)

    def done(self, count: int, status: str) -> None:
        print(f"{self._line(count)}: {status}", file=sys.stderr, flush=True)
