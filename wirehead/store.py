"""Store: every MongoDB operation of the cache protocol.  With :mod:`wirehead.client` (the connection under
it: client lifecycle, retries, error translation) the only module that reads or writes the cache through
pymongo; the one other pymongo use in the package, ``wirehead.server.ping_uri``, only asks whether a server
answers (the server module imports no other wirehead module but the errors).

Collections (names from the config; the seed's keys keep a job each):

* ``WRITE_COLLECTION`` - *chunks*: ``{_id: "<sid>:<i>", sid, i, data, t}``, the bytes of samples; chunk 0
  also carries the sample's *manifest* (``meta`` per kind, ``nchunks``, ``stored_bytes``, ``raw_bytes``,
  ``producer``), so writing a sample is one ``insert_many``.
* ``READ_COLLECTION`` - what readers look up: one *generation* document per live generation
  ``{_id: "gen:<g>", gen, n, members, sealed, created, read_since, retired_at, stored_bytes, reads, ...}``.
* ``COUNTER_COLLECTION`` - the *state* document ``{_id: "state", write_gen, read_gen, swaps, lease, ...}``
  and the read-ticket counters of the reuse cap ``{_id: "reads:<g>", claimed}``.
* ``TEMP_COLLECTION`` - short-lived records: generator heartbeats and the swap log.

A sample is *committed* by one atomic update of its generation document, which
appends its id to ``members`` while ``n < SWAP_CAP`` and the generation is not
sealed.  Readers only look up members of the read generation, so a sample whose
chunks are half written is invisible; they also check ``nchunks`` and
``stored_bytes`` and never return a short sample.

Every method is one call of :meth:`wirehead.client.Connection.call`: it retries transient errors (the
server away, no primary during a failover, the server's "try again" codes) with backoff for up to
``RETRY_DEADLINE`` seconds once this store has reached the server, or ``CONNECT_TIMEOUT`` seconds before
it ever has (a wrong host fails fast), no attempt overrunning that deadline; then it raises
:class:`~wirehead.errors.StoreUnavailable`.  Permanent refusals (authentication, a bad command,
validation) raise :class:`~wirehead.errors.StoreError` at once.  pymongo errors never escape.

A Store holds a config and a :class:`~wirehead.client.Connection`: it can be pickled into DataLoader
workers and spawned processes (the client is dropped and remade).  Thread-safe: pymongo clients are.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import pymongo
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.write_concern import WriteConcern

from .client import Connection, drop_tracebacks
from .config import WireheadConfig
from .errors import ConfigError, StoreError, StoreUnavailable

__all__ = ["Store", "State", "GenDoc", "gen_id"]

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_ID = "state"
#: Version of the cache protocol (documents and their meaning); recorded in the state document.
PROTOCOL_VERSION = 2
#: Seconds a reader's best-effort calls (its state poll while it holds a generation, its read counts) retry.
BEST_EFFORT_SECONDS = 0.5


def reads_id(gen: int) -> str:
    """The ``_id`` of generation ``gen``'s read-ticket counter (in the counter collection)."""
    return f"reads:{gen}"


def gen_id(gen: int) -> str:
    """The ``_id`` of generation ``gen``'s document (zero-padded so ids sort by generation)."""
    return f"gen:{gen:012d}"


@dataclass(frozen=True)
class State:
    """The cache's state document: which generation is written and which is read."""

    write_gen: int
    read_gen: Optional[int]
    swaps: int
    swapped_at: Optional[float]
    lease_holder: Optional[str]
    lease_expires: float
    swap_request: Optional[int] = None  # a read generation whose readers asked for an early swap

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "State":
        lease = doc.get("lease") or {}
        return cls(
            write_gen=int(doc["write_gen"]),
            read_gen=doc.get("read_gen"),
            swaps=int(doc.get("swaps", 0)),
            swapped_at=doc.get("swapped_at"),
            lease_holder=lease.get("holder"),
            lease_expires=float(lease.get("expires", 0.0)),
            swap_request=doc.get("swap_request"),
        )


@dataclass(frozen=True)
class GenDoc:
    """One generation: its committed members in slot order."""

    gen: int
    n: int
    members: tuple[str, ...]
    sealed: bool
    created: float
    read_since: Optional[float] = None
    retired_at: Optional[float] = None
    stored_bytes: int = 0
    reads: int = 0
    wait_seconds: float = 0.0

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "GenDoc":
        members = tuple(doc.get("members", ()))
        return cls(
            gen=int(doc["gen"]),
            n=len(members) if "members" in doc else int(doc.get("n", 0)),
            members=members,
            sealed=bool(doc.get("sealed", False)),
            created=float(doc.get("created", 0.0)),
            read_since=doc.get("read_since"),
            retired_at=doc.get("retired_at"),
            stored_bytes=int(doc.get("stored_bytes", 0)),
            reads=int(doc.get("reads", 0)),
            wait_seconds=float(doc.get("wait_seconds", 0.0)),
        )


def _is_dup_only(e: BulkWriteError) -> bool:
    errors = e.details.get("writeErrors", [])
    return bool(errors) and all(err.get("code") == 11000 for err in errors) and not e.details.get("writeConcernErrors")


class Store:
    """The cache's MongoDB operations, each documented with what it guarantees and raises.

    The connection (client, retries, error translation) is :attr:`connection`, a
    :class:`~wirehead.client.Connection`; every operation here is one :meth:`Connection.call
    <wirehead.client.Connection.call>`, so each retries transient errors within its deadline and raises
    only :class:`~wirehead.errors.StoreUnavailable` or :class:`~wirehead.errors.StoreError`.
    """

    def __init__(self, config: WireheadConfig, uri: Optional[str] = None, *,
                 resolve: Optional[Callable[[], str]] = None) -> None:
        """``uri``: the resolved server URI (see :func:`wirehead.connect.resolve_uri`); ``None`` for the
        config's.  ``resolve``: finds the embedded server's URI when the config names no server (see
        :class:`~wirehead.client.Connection`).
        """
        self.config = config
        self.connection = Connection(config, uri, resolve=resolve)
        self._schema_ready = False
        self._protocol_checked = False
        self._state_created: Optional[float] = None  # the "created" stamp of the state document checked last
        #: refuse a cache whose recorded SWAP_CAP/SAMPLE/protocol differ (off only for `wirehead clean`)
        self.check_protocol = True

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_schema_ready=False, _protocol_checked=False, _state_created=None)
        return state

    # -- connection (see wirehead.client) ------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """Whether this store found its server through the shared embedded server's record."""
        return self.connection.embedded

    @property
    def uri(self) -> str:
        """The server URI: the one given, the config's, or the shared embedded server's (started on first use)."""
        return self.connection.uri

    @property
    def redacted_uri(self) -> str:
        """The URI with any password hidden."""
        return self.connection.redacted_uri

    @property
    def client(self) -> pymongo.MongoClient:
        """This process's client, made on first use (and again after a fork)."""
        return self.connection.client

    @property
    def db(self) -> Any:
        return self.client[self.config.dbname]

    @property
    def chunks(self) -> Any:
        return self.db[self.config.write_collection]

    @property
    def gens(self) -> Any:
        return self.db[self.config.read_collection]

    @property
    def counters(self) -> Any:
        return self.db[self.config.counter_collection]

    @property
    def temp(self) -> Any:
        return self.db[self.config.temp_collection]

    @staticmethod
    def _journaled(coll: Any) -> Any:
        """``coll`` writing with ``j: true`` added to its write concern (``w`` from the URI kept): the server
        answers once the write is in its on-disk journal.  Without it a server acknowledges a write it still
        holds in memory (WiredTiger flushes its log every ~100 ms), and a server killed in that window
        forgets it.  WiredTiger's journal is one sequential log, so every earlier write of the process (a
        sample's chunks before its commit) is on disk too."""
        return coll.with_options(write_concern=WriteConcern(**{**coll.write_concern.document, "j": True}))

    def close(self) -> None:
        """Close this process's client (it is remade on next use)."""
        self.connection.close()

    def sign_off(self, holder: str, worker_id: str, fields: dict[str, Any], deadline: float) -> None:
        """The last words of a generator or manager that stops (also from its finalizer at exit): give
        the swap lease back if ``holder`` has it, record ``fields`` (its final status) in its worker record
        and close the client, retrying for ``deadline`` seconds at most (0: the server is known gone).

        Best effort: a server that is gone is the reason many processes stop.  The first call that
        finds it unreachable spares the sign-offs of this process the wait (for a few seconds): a
        process that leaves many workers open exits in one deadline, not one per worker.  The lease
        then expires by itself and the record shows the worker dead after DEAD_AFTER_SECONDS."""
        try:
            if self.cleanup_worth_trying(deadline):
                self.release_lease(holder, deadline=deadline)
                self.heartbeat(worker_id, fields, deadline=deadline)
        except StoreError as e:  # unreachable (then remembered by the connection), or refused: nothing more to do
            log.debug("%s could not sign off: %s", worker_id, e)
        self.close()

    def cleanup_worth_trying(self, deadline: float) -> bool:
        """Whether a stopping process's last writes (within ``deadline`` seconds) are worth trying: a deadline
        is left, and the server was found and not found gone lately (a store that never found its server has
        no lease or record there, and must not start one now)."""
        return deadline > 0 and self.connection.found and not self.connection.gone_lately()

    def _call(self, what: str, fn: Callable[[], T], deadline: Optional[float] = None) -> T:
        return self.connection.call(what, fn, deadline)

    def ping(self) -> None:
        """Check the server answers.  Raises StoreUnavailable / StoreError."""
        self._call("ping", lambda: self.client.admin.command("ping"))

    # -- schema ----------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create indexes and the state document and generation 0 (idempotent, once per process)."""
        if self._schema_ready:
            return

        def run() -> None:
            # no index on gens.members: a multikey index makes every commit re-index the member list,
            # and the only query on members (a retried commit) scans a handful of documents
            self.chunks.create_index([("sid", 1), ("i", 1)])
            self.chunks.create_index([("t", 1)])
            self.temp.create_index([("kind", 1), ("at", 1)])

        self._call("create indexes", run)
        now = time.time()
        settings = self._protocol_settings()
        self._insert_ignore_dup(self.counters, {"_id": STATE_ID, "write_gen": 0, "read_gen": None, "swaps": 0,
                                                "swapped_at": None, "lease": None, "created": now, **settings})
        # a cache made before the settings were recorded adopts the first writer's
        for key, value in settings.items():
            self._call("record settings", lambda k=key, v=value: self.counters.update_one(
                {"_id": STATE_ID, k: {"$exists": False}}, {"$set": {k: v}}))
        self._protocol_checked = False
        self.ensure_gen(self.state().write_gen)
        self._schema_ready = True

    def _protocol_settings(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL_VERSION, "swap_cap": self.config.swap_cap, "sample": list(self.config.sample)}

    def _check_protocol(self, doc: dict[str, Any]) -> None:
        """Refuse to work on a cache whose recorded settings differ from this process's config: once per
        state document (a cache deleted and made again, by another process with other settings, is checked
        again: its ``created`` stamp differs)."""
        if not self.check_protocol or (self._protocol_checked and doc.get("created") == self._state_created):
            return
        mine = self._protocol_settings()
        names = {"protocol": "protocol version", "swap_cap": "SWAP_CAP", "sample": "SAMPLE"}
        for key, value in mine.items():
            if key in doc and doc[key] != value:
                raise ConfigError(
                    f"{names[key]} of this process ({value!r}) differs from the {names[key]} the cache "
                    f"{self.config.dbname!r} on {self.redacted_uri} was created with ({doc[key]!r}); every "
                    f"generator, manager and reader of one cache must use the same config: fix "
                    f"{self.config.describe()}, or delete the cache with `wirehead clean` to start over "
                    f"with the new value")
        self._protocol_checked = True
        self._state_created = doc.get("created")

    def _insert_ignore_dup(self, coll: Any, doc: dict[str, Any]) -> bool:
        """Insert ``doc``; return False if its ``_id`` exists already (also after a retried insert)."""
        def run() -> bool:
            try:
                coll.insert_one(doc)
                return True
            except DuplicateKeyError as e:
                # pymongo keeps the error in a reference cycle; its traceback would keep every caller's frame
                # alive until the next garbage collection, with their locals (a DataLoader worker's first batch)
                drop_tracebacks(e)
                return False
        return self._call(f"insert into {coll.name}", run)

    # -- state and generations -------------------------------------------------------------
    def state(self, deadline: Optional[float] = None) -> State:
        """The current state document (made when missing: a cache deleted while this process ran).

        ``deadline``: seconds to retry while the server is away (default RETRY_DEADLINE); a reader that
        polls with a short one keeps serving what it holds through an outage.

        Raises:
            ConfigError: the cache was made with other protocol settings (checked again whenever the state
                document was made anew, e.g. after `wirehead clean`).
            StoreUnavailable, StoreError: as every operation.
        """
        doc = self._call("read state", lambda: self.counters.find_one({"_id": STATE_ID}), deadline=deadline)
        if doc is None:
            self._schema_ready = False
            self.ensure_schema()
            doc = self._call("read state", lambda: self.counters.find_one({"_id": STATE_ID}))
            if doc is None:
                raise StoreError(f"the state document of database {self.config.dbname!r} vanished; "
                                 "was the database dropped while wirehead ran?")
        self._check_protocol(doc)
        return State.from_doc(doc)

    def ensure_gen(self, gen: int) -> None:
        """Create generation ``gen``'s document if it does not exist (safe under concurrency).

        Its read-ticket counter comes first: a generation that exists has one (until it is deleted).
        """
        self._insert_ignore_dup(self.counters, {"_id": reads_id(gen), "claimed": 0})
        doc = {"_id": gen_id(gen), "gen": gen, "n": 0, "members": [], "sealed": False, "created": time.time(),
               "stored_bytes": 0}
        if self._state_created is not None:
            doc["epoch"] = self._state_created  # which state document (which making of the cache) it belongs to
        self._insert_ignore_dup(self.gens, doc)

    def other_caches(self, limit: int = 50) -> dict[str, int]:
        """``{database: swaps}`` of the other wirehead caches on this server (databases whose
        COUNTER_COLLECTION holds a state document), to say where the data is when this one stays empty.
        Best effort: ``{}`` where listing databases is not allowed; at most ``limit`` databases are looked at."""
        def run() -> dict[str, int]:
            found: dict[str, int] = {}
            names = [n for n in self.client.list_database_names()
                     if n not in (self.config.dbname, "admin", "local", "config")]
            for name in names[:limit]:
                doc = self.client[name][self.config.counter_collection].find_one(
                    {"_id": STATE_ID, "write_gen": {"$exists": True}}, {"swaps": 1})
                if doc is not None:
                    found[name] = int(doc.get("swaps", 0))
            return found
        try:
            return self._call("list other caches", run, deadline=self.config.connect_timeout)
        except StoreError as e:  # not allowed to list databases, or the server went away: no hint then
            log.debug("could not look for other caches: %s", e)
            return {}

    def gen_doc(self, gen: int) -> Optional[GenDoc]:
        """Generation ``gen``'s document, or ``None`` if it does not exist (not yet, or deleted)."""
        doc = self._call("read generation", lambda: self.gens.find_one({"_id": gen_id(gen)}))
        return GenDoc.from_doc(doc) if doc else None

    def gen_docs(self, members: bool = True) -> list[GenDoc]:
        """Every existing generation, oldest first; with ``members=False`` without the member lists
        (cheap at any SWAP_CAP; ``GenDoc.members`` is then empty, ``n`` still right)."""
        projection = None if members else {"members": 0}
        docs = self._call("list generations", lambda: list(self.gens.find({}, projection).sort("_id", 1)))
        return [GenDoc.from_doc(d) for d in docs]

    def gen_counts(self, deadline: Optional[float] = None) -> dict[int, tuple[int, bool]]:
        """``{gen: (n, sealed)}`` of every existing generation, without their member lists (``deadline``:
        seconds to retry while the server is away, default RETRY_DEADLINE)."""
        docs = self._call("count generations", lambda: list(self.gens.find({}, {"gen": 1, "n": 1, "sealed": 1})),
                          deadline=deadline)
        return {int(d["gen"]): (int(d.get("n", 0)), bool(d.get("sealed"))) for d in docs}

    # -- writing samples -----------------------------------------------------------------
    def put_sample(self, sid: str, chunks: Sequence[bytes], manifest: dict[str, Any],
                   writer: Optional[str] = None, replace: bool = False) -> None:
        """Write a sample's chunk documents, chunk 0 carrying its manifest.  Not yet visible to readers.

        ``writer``: the id of the writing worker, stamped on every chunk (``w``); the orphan sweep
        deletes a sample only after fencing its writer (:meth:`fence_writer`).  ``replace``: overwrite
        chunks that exist already (a fenced writer restoring a sample it committed; the rewritten
        chunks carry the new ``writer``, so a sweep of the old writer no longer matches them).

        Idempotent: a retry after a lost reply writes nothing twice.
        """
        now = time.time()
        # bytes are stored as BSON binary as they are (a Binary wrapper would copy them once more)
        docs = [{"_id": f"{sid}:{i}", "sid": sid, "i": i, "data": c if isinstance(c, bytes) else bytes(c), "t": now}
                for i, c in enumerate(chunks or [b""])]
        docs[0].update({k: v for k, v in manifest.items() if k not in docs[0]}, nchunks=len(docs))
        if writer is not None:
            for d in docs:
                d["w"] = writer
        if replace:
            for d in docs:
                self._call("rewrite chunks", lambda d=d: self.chunks.replace_one({"_id": d["_id"]}, d, upsert=True))
            return
        # batches of <= ~32 MiB keep each request well under the 48 MB message limit; each batch is one call
        # (its own deadline), so one attempt never sends more than a batch
        batch: list[dict[str, Any]] = []
        size = 0
        for d in docs:
            if batch and size + len(d["data"]) > 32 * 1024 * 1024:
                self._call("write chunks", lambda b=batch: self._insert_many(b))
                batch, size = [], 0
            batch.append(d)
            size += len(d["data"])
        if batch:
            self._call("write chunks", lambda b=batch: self._insert_many(b))

    def _insert_many(self, docs: list[dict[str, Any]]) -> None:
        """Insert chunk documents; those that exist already (a retry after a lost reply) are kept as they are."""
        try:
            self.chunks.insert_many(docs, ordered=False)
        except BulkWriteError as e:
            if not _is_dup_only(e):
                raise  # translated (transient or refused) by the connection

    def commit(self, sid: str, gen: int, cap: int, stored_bytes: int = 0, fresh: bool = False) -> Optional[int]:
        """Commit sample ``sid`` into generation ``gen``: one atomic update, journaled (``j: true``), so a
        commit that returned survives the server killed right after it.

        Returns the slot (0-based) it took, or ``None`` when the generation is full, sealed, missing,
        or of a cache made again since this process read its state.  Idempotent: if ``sid`` is already a member of any generation (a retry after a lost
        reply, or a second call naming another generation), returns its slot there instead of
        committing twice.  ``fresh=True``: the caller knows ``sid`` was never committed (it got ``None``
        from every earlier commit of it), which saves one query; a retry after a lost reply still checks.
        """
        tries = [0]
        # only into a generation of the cache whose settings this process checked: a cache deleted and made
        # again meanwhile (`wirehead clean`) has another state document; the caller reads it (and is refused
        # when its settings differ) before committing there
        epoch = {} if self._state_created is None else {"epoch": {"$in": [self._state_created, None]}}

        def owner_slot() -> Optional[int]:
            owner = self.gens.find_one({"members": sid}, {"_id": 1})
            if owner is None:
                return None
            doc = self.gens.find_one({"_id": owner["_id"]}, {"members": 1})
            return list(doc["members"]).index(sid) if doc is not None and sid in doc["members"] else None

        def run() -> Optional[int]:
            tries[0] += 1
            if not fresh or tries[0] > 1:
                slot = owner_slot()
                if slot is not None:
                    return slot
            doc = self._journaled(self.gens).find_one_and_update(
                {"_id": gen_id(gen), "n": {"$lt": cap}, "sealed": False, "members": {"$ne": sid}, **epoch},
                {"$inc": {"n": 1, "stored_bytes": stored_bytes}, "$push": {"members": sid}},
                # the document after the update: SecantusDB can answer a conditional update that raced
                # another with a stale pre-image (two writers told the same slot, the last one unswapped)
                projection={"n": 1}, return_document=pymongo.ReturnDocument.AFTER,
            )
            if doc is not None:
                return int(doc["n"]) - 1
            # full, sealed or missing - or this sample became a member meanwhile (a retry after a lost reply)
            return owner_slot()

        return self._call("commit sample", run)

    def delete_samples(self, sids: Iterable[str], writer: Optional[str] = None) -> None:
        """Delete the chunks (and so the manifests) of ``sids`` (idempotent).

        With ``writer``, only chunks that writer wrote (``w``): chunks rewritten meanwhile by the
        sample's restoring writer survive.
        """
        sids = list(sids)
        for i in range(0, len(sids), 1000):
            part = sids[i:i + 1000]
            query: dict[str, Any] = {"sid": {"$in": part}}
            if writer is not None:
                query["w"] = writer
            self._call("delete chunks", lambda: self.chunks.delete_many(query))

    # -- reading samples -----------------------------------------------------------------
    def get_manifests(self, sids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Manifests of ``sids`` by id, without their bytes (missing ones are absent)."""
        docs = self._call("read manifests", lambda: list(
            self.chunks.find({"sid": {"$in": list(sids)}, "i": 0}, {"data": 0})))
        return {d["sid"]: d for d in docs}

    def get_samples(self, sids: Sequence[str]) -> dict[str, tuple[dict[str, Any], list[bytes]]]:
        """``{sid: (manifest, chunk payloads in order)}`` for ``sids``, in one query.

        A sample whose chunk 0 is missing is absent; one with missing chunks has a short list
        (callers compare with ``manifest["nchunks"]``).
        """
        def run() -> dict[str, tuple[dict[str, Any], list[bytes]]]:
            parts: dict[str, list[tuple[int, bytes]]] = {}
            heads: dict[str, dict[str, Any]] = {}
            for d in self.chunks.find({"sid": {"$in": list(sids)}}):
                parts.setdefault(d["sid"], []).append((d["i"], d.pop("data")))
                if d["i"] == 0:
                    heads[d["sid"]] = d
            return {sid: (head, [c for _, c in sorted(parts[sid], key=lambda p: p[0])])
                    for sid, head in heads.items()}
        return self._call("read samples", run)

    def sample_chunks(self, sid: str) -> Iterator[dict[str, Any]]:
        """Sample ``sid``'s chunk documents ``{sid, i, data, ...}`` one at a time, in order, chunk 0 (with the
        manifest) first: each read by its own query (and retried alone) when the previous one is taken, so a
        caller that decodes as they come (:class:`wirehead.chunks.StreamDecoder`) holds one chunk's bytes at a
        time, where :meth:`get_samples` holds the whole sample's.

        Yields nothing when chunk 0 is missing (the sample is gone); stops at the first missing chunk or
        after the manifest's ``nchunks`` (callers compare how many came with ``nchunks``).
        """
        first = self._call("read chunk", lambda: self.chunks.find_one({"_id": f"{sid}:0"}))
        if first is None:
            return
        n = int(first.get("nchunks", 1))
        yield first
        del first  # the caller's copy is the only one while it decodes
        for i in range(1, n):
            doc = self._call("read chunk", lambda i=i: self.chunks.find_one({"_id": f"{sid}:{i}"}))
            if doc is None:
                return
            yield doc
            del doc

    # -- swapping ------------------------------------------------------------------------
    def acquire_lease(self, holder: str, seconds: float, preempt: Optional[str] = None) -> bool:
        """Take or renew the swap lease for ``holder``; False if another holder's lease is unexpired.

        ``preempt``: a holder-name prefix whose unexpired leases may be taken anyway (managers
        take the lease from generators that swapped while no manager ran).
        """
        self.ensure_schema()
        now = time.time()
        free: list[dict[str, Any]] = [{"lease": None}, {"lease.holder": holder}, {"lease.expires": {"$lt": now}}]
        if preempt:
            free.append({"lease.holder": {"$regex": "^" + re.escape(preempt)}})

        def run() -> bool:
            doc = self.counters.find_one_and_update(
                {"_id": STATE_ID, "$or": free},
                {"$set": {"lease": {"holder": holder, "expires": now + seconds}}},
                projection={"_id": 1}, return_document=pymongo.ReturnDocument.AFTER,
            )
            return doc is not None
        return self._call("acquire lease", run)

    def release_lease(self, holder: str, deadline: Optional[float] = None) -> None:
        """Give the lease up if ``holder`` has it (``deadline``: seconds to retry, default RETRY_DEADLINE)."""
        self._call("release lease", lambda: self.counters.update_one(
            {"_id": STATE_ID, "lease.holder": holder}, {"$set": {"lease": None}}), deadline=deadline)

    def seal(self, gen: int) -> None:
        """Close generation ``gen`` to further commits (idempotent)."""
        self._call("seal generation", lambda: self.gens.update_one(
            {"_id": gen_id(gen)}, {"$set": {"sealed": True, "sealed_at": time.time()}}))

    def swap(self, write_gen: int) -> bool:
        """Make ``write_gen`` the read generation and ``write_gen + 1`` the write generation: one atomic update.

        The caller seals ``write_gen`` first.  Returns True if this call swapped, False if the state
        had moved on (another swapper did it).  Safe to retry.
        """
        now = time.time()
        self.ensure_gen(write_gen + 1)

        def run() -> bool:
            doc = self._journaled(self.counters).find_one_and_update(
                {"_id": STATE_ID, "write_gen": write_gen},
                {"$set": {"write_gen": write_gen + 1, "read_gen": write_gen, "swapped_at": now,
                          "swap_request": None},
                 "$inc": {"swaps": 1}},
                projection={"_id": 1}, return_document=pymongo.ReturnDocument.AFTER,
            )
            return doc is not None
        done = self._call("swap", run)
        if done:
            # a generation created before counters came with generations gets its counter now: only after
            # this swap succeeded, so it is the new read generation, never a deleted one brought back
            self._insert_ignore_dup(self.counters, {"_id": reads_id(write_gen), "claimed": 0})
            self._call("mark read generation", lambda: self.gens.update_one(
                {"_id": gen_id(write_gen)}, {"$set": {"read_since": now}}))
        return done

    def request_swap(self, read_gen: int) -> None:
        """Ask swappers to swap early because readers of ``read_gen`` reached the reuse cap."""
        self._call("request swap", lambda: self.counters.update_one(
            {"_id": STATE_ID, "read_gen": read_gen}, {"$set": {"swap_request": read_gen}}))

    def mark_retired(self, gen: int, at: float) -> None:
        """Record when generation ``gen`` stopped being the read generation (start of its grace period)."""
        self._call("retire generation", lambda: self.gens.update_one(
            {"_id": gen_id(gen), "retired_at": None}, {"$set": {"retired_at": at}}))

    def drop_gen(self, gen: int) -> int:
        """Delete a retired generation: its samples first, then its document (a crash in between leaves
        orphans that the orphan sweep removes).  Returns how many samples it held."""
        doc = self.gen_doc(gen)
        if doc is None:
            return 0
        self.delete_samples(doc.members)
        self._call("delete read counts", lambda: self.counters.delete_many({"_id": reads_id(gen)}))
        self._call("delete generation", lambda: self.gens.delete_one({"_id": gen_id(gen)}))
        return doc.n

    def orphan_candidates(self, older_than: float) -> dict[str, Optional[str]]:
        """``{sample id: writer id}`` of samples with chunks written before ``older_than`` (epoch
        seconds); the writer is ``None`` for chunks written before writers were recorded."""
        def run() -> dict[str, Optional[str]]:
            out: dict[str, Optional[str]] = {}
            for d in self.chunks.find({"t": {"$lt": older_than}}, {"sid": 1, "w": 1, "_id": 0}):
                if d.get("w") is not None or d["sid"] not in out:
                    out[d["sid"]] = d.get("w")
            return out
        return self._call("find old samples", run)

    # -- writer fencing (the orphan sweep decides by liveness, not by age) ----------------------
    def heartbeat_periods(self, writers: Sequence[str]) -> dict[str, float]:
        """``{writer: seconds between its heartbeats}`` for the writers that recorded theirs (generators
        record their HEARTBEAT_SECONDS with every beat; processes may run with different configs)."""
        def run() -> dict[str, float]:
            docs = self.temp.find({"_id": {"$in": list(writers)}, "every": {"$gt": 0}}, {"every": 1})
            return {d["_id"]: float(d["every"]) for d in docs}
        return self._call("read heartbeat periods", run) if writers else {}

    def fence_writer(self, writer: str, stale_before: float) -> bool:
        """Fence ``writer`` if its heartbeat is older than ``stale_before`` (or it has none).

        One conditional update of the writer's heartbeat record (created, fenced, when missing).
        A fenced writer never commits again under this id (it checks :meth:`is_fenced` after
        writing and after committing, and rewrites under a new id).  Returns True if the writer
        is fenced now (by this call or earlier); False if its heartbeat is fresh.
        """
        def run() -> bool:
            for _ in range(3):
                res = self.temp.update_one(
                    {"_id": writer, "$or": [{"beat": {"$lt": stale_before}}, {"beat": {"$exists": False}},
                                             {"fenced": True}]},
                    {"$set": {"fenced": True, "fenced_at": time.time()}})
                if res.matched_count:
                    return True
                if self.temp.find_one({"_id": writer}, {"_id": 1}) is not None:
                    return False  # a fresh heartbeat: the writer is alive
                try:
                    self.temp.insert_one({"_id": writer, "kind": "fence", "fenced": True, "fenced_at": time.time()})
                    return True
                except DuplicateKeyError:
                    continue  # its first heartbeat came meanwhile: look again
            return False
        return self._call("fence writer", run)

    def is_fenced(self, writer: str) -> bool:
        """Whether ``writer`` was fenced by an orphan sweep."""
        doc = self._call("read fence", lambda: self.temp.find_one({"_id": writer}, {"fenced": 1}))
        return bool(doc and doc.get("fenced"))

    def forget_worker(self, worker_id: str) -> None:
        """Delete a worker's heartbeat record (a generator that took a new id after being fenced)."""
        self._call("forget worker", lambda: self.temp.delete_one({"_id": worker_id}))

    def live_members(self) -> set[str]:
        """Ids of every sample committed to an existing generation."""
        def run() -> set[str]:
            out: set[str] = set()
            for d in self.gens.find({}, {"members": 1}):
                out.update(d.get("members", ()))
            return out
        return self._call("list members", run)

    # -- reads accounting (reuse) --------------------------------------------------------
    def add_reads(self, gen: int, reads: int, wait_seconds: float = 0.0) -> None:
        """Add a reader's batched read count (and time waited because of the reuse cap) to a generation.

        Best effort, for monitoring: tries for at most :data:`BEST_EFFORT_SECONDS` seconds, so a reader that
        serves from memory through an outage is not held up by its count (and skipped for a few seconds
        after a call found the server gone)."""
        if self.connection.gone_lately():  # a call found the server gone seconds ago: do not wait again
            raise StoreUnavailable(f"count reads skipped: MongoDB at {self.redacted_uri} did not answer lately")
        self._call("count reads", lambda: self.gens.update_one(
            {"_id": gen_id(gen)}, {"$inc": {"reads": int(reads), "wait_seconds": float(wait_seconds)}}),
            deadline=min(BEST_EFFORT_SECONDS, self.config.retry_deadline))

    def claim_tickets(self, gen: int, want: int, limit: int) -> tuple[int, int]:
        """Atomically claim ``want`` read tickets of generation ``gen`` out of ``limit``, all or none.

        Returns ``(first ticket, how many)``; how many is ``want``, or 0 when fewer than ``want``
        tickets are left or the generation is gone.  One update per batch of reads enforces REUSE_CAP
        across every reader of a generation; a claim never takes tickets that its batch does not serve.
        A claim that returned is in the server's journal, so a server killed and started again on its data
        never hands its tickets out again.

        The counter is made with the generation (:meth:`ensure_gen`, :meth:`swap`), never here: a reader
        whose view is stale claims on a generation that may be deleted already, and a counter made again
        for it would hand out its tickets a second time.
        """
        key = reads_id(gen)

        def run() -> tuple[int, int]:
            if want <= 0 or want > limit:
                return 0, 0
            # one conditional increment: no compare-and-swap loop that many readers could starve.  Journaled
            # (j: true): a claim the server acknowledged but held only in memory was lost when it was killed,
            # and the server started again handed those tickets out a second time (a sample over REUSE_CAP)
            doc = self._journaled(self.counters).find_one_and_update(
                {"_id": key, "claimed": {"$lte": limit - want}}, {"$inc": {"claimed": want}},
                projection={"claimed": 1}, return_document=pymongo.ReturnDocument.AFTER)
            if doc is None:  # fewer than ``want`` tickets left
                return 0, 0
            return int(doc["claimed"]) - want, want
        return self._call("claim read tickets", run)

    # -- heartbeats and swap log ---------------------------------------------------------
    def heartbeat(self, worker_id: str, fields: dict[str, Any], deadline: Optional[float] = None) -> bool:
        """Record that a worker (generator, manager, reader) is alive, with its figures.

        Returns True if the worker was fenced by an orphan sweep (it must not commit under this id).
        ``deadline``: seconds to retry while the server is away (default RETRY_DEADLINE).
        """
        now = time.time()
        doc = self._call("heartbeat", lambda: self.temp.find_one_and_update(
            {"_id": worker_id},
            {"$set": {**fields, "beat": now, "kind": fields.get("kind", "generator")},
             "$setOnInsert": {"started": now, "host": socket.gethostname(), "pid": os.getpid()}},
            projection={"fenced": 1}, upsert=True, return_document=pymongo.ReturnDocument.AFTER), deadline=deadline)
        return bool(doc and doc.get("fenced"))  # None: a SecantusDB first upsert; not fenced

    def workers(self) -> list[dict[str, Any]]:
        """Every worker record (generators, managers)."""
        return self._call("list workers", lambda: list(self.temp.find({"kind": {"$in": ["generator", "manager"]}})))

    def log_swap(self, entry: dict[str, Any]) -> None:
        """Append one swap to the swap log."""
        self._call("log swap", lambda: self.temp.insert_one({"kind": "swap", "at": time.time(), **entry}))

    def swap_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent swap log entries, oldest first."""
        docs = self._call("read swap log", lambda: list(
            self.temp.find({"kind": "swap"}, {"_id": 0}).sort("at", -1).limit(limit)))
        return list(reversed(docs))

    def trim_swap_log(self, keep: int = 1000) -> None:
        """Keep only the newest ``keep`` swap log entries."""
        def run() -> None:
            old = list(self.temp.find({"kind": "swap"}, {"at": 1}).sort("at", -1).skip(keep).limit(1))
            if old:
                self.temp.delete_many({"kind": "swap", "at": {"$lte": old[0]["at"]}})
        self._call("trim swap log", run)

    def counts(self) -> dict[str, int]:
        """Document counts of the chunk and manifest collections (for monitoring and tests)."""
        return self._call("count documents", lambda: {
            "chunks": self.chunks.estimated_document_count(),
            "samples": self.chunks.count_documents({"i": 0}),
        })

    def drop_database(self) -> None:
        """Delete the whole cache database."""
        self._call("drop database", lambda: self.client.drop_database(self.config.dbname))
        self._schema_ready = False
        self._protocol_checked = False

    # -- read-only queries for monitoring (wirehead.monitor) ---------------------------------
    def peek_state(self) -> Optional[State]:
        """The state document, or ``None`` if this cache was never initialised.  Writes nothing."""
        doc = self._call("read state", lambda: self.counters.find_one({"_id": STATE_ID}))
        if doc:
            self._check_protocol(doc)
        return State.from_doc(doc) if doc else None

    def database_exists(self) -> bool:
        """Whether the cache's database exists on the server."""
        return self._call("list databases", lambda: self.config.dbname in self.client.list_database_names())
