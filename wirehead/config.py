"""WireheadConfig: the YAML keys, their validation and defaults, and the connection URI.

A config is immutable once built and is validated as a whole at construction:
an invalid value raises one :class:`~wirehead.errors.ConfigError` that names the
key, the value, the file (when loaded from one) and what is allowed.  No
half-built config ever exists.

Keys are written in upper case in YAML (as in upstream wirehead) and read as
lower-case attributes in Python: ``SWAP_CAP`` -> ``config.swap_cap``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union
from urllib.parse import quote_plus

import yaml

from .errors import ConfigError

__all__ = ["WireheadConfig", "ConfigSource", "redact_uri", "COMPRESSION_CODECS", "REUSE_POLICIES"]

log = logging.getLogger(__name__)

#: Compression codecs a kind may use ("none" stores raw bytes).
COMPRESSION_CODECS = ("none", "zstd", "lz4", "blosc2")
#: What a dataset does when every sample of the read generation reached REUSE_CAP.
REUSE_POLICIES = ("wait", "warn", "swap_early")

URI_ENV = "WIREHEAD_MONGO_URI"
_DBNAME_BAD = re.compile(r'[/\\. "$*<>:|?\x00]')


def redact_uri(uri: Optional[str]) -> Optional[str]:
    """Return ``uri`` with any password replaced by ``***`` (safe for logs and reprs)."""
    if uri is None:
        return None
    uri = re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^\s/]*@", r"\1:***@", uri)
    # secrets passed as URI options: a TLS key password, AWS session tokens
    uri = re.sub(r"(?i)(tlsCertificateKeyFilePassword=)[^&\s]*", r"\1***", uri)
    return re.sub(r"(?i)(AWS_SESSION_TOKEN(?::|%3A))[^,&\s]*", r"\1***", uri)


@dataclass(frozen=True)
class WireheadConfig:
    """Validated wirehead settings, shared by generators, managers and datasets.

    Build one with :meth:`load` (a path, a dict, or another config),
    :meth:`from_yaml`, or keyword arguments (either case):
    ``WireheadConfig(SWAP_CAP=100, SAMPLE=["image", "label"])``.

    Every process of one cache must use the same values for ``dbname``,
    ``sample``, the collection names and ``swap_cap``.
    """

    # -- the seed's keys ---------------------------------------------------
    swap_cap: int
    """SWAP_CAP: committed samples that fill a generation and trigger a swap (int >= 1)."""
    mongohost: Optional[str] = None
    """MONGOHOST: server host name; with neither this nor MONGO_URI, the embedded local server is used."""
    dbname: str = "wirehead"
    """DBNAME: the MongoDB database that holds this cache."""
    port: int = 27017
    """PORT: server port, used with MONGOHOST."""
    sample: tuple[str, ...] = ("input", "label")
    """SAMPLE: names of the arrays of one sample, in the order a generator yields them."""
    write_collection: str = "write"
    """WRITE_COLLECTION: holds the chunk documents (the samples' bytes; chunk 0 carries the manifest)."""
    read_collection: str = "read"
    """READ_COLLECTION: holds what readers look up: one document per generation, listing its samples."""
    counter_collection: str = "counters"
    """COUNTER_COLLECTION: holds the state document and the read-ticket counters of the reuse cap."""
    temp_collection: str = "temp"
    """TEMP_COLLECTION: holds short-lived records: generator heartbeats and the swap log."""
    chunksize: int = 10
    """CHUNKSIZE: MiB per chunk document, 1..15 (MongoDB documents are limited to 16 MiB)."""
    # -- additions ---------------------------------------------------------
    mongo_uri: Optional[str] = None
    """MONGO_URI: a full MongoDB URI; the environment variable WIREHEAD_MONGO_URI overrides it."""
    username: Optional[str] = None
    """USERNAME: user for MONGOHOST (or set WIREHEAD_MONGO_USERNAME)."""
    password: Optional[str] = field(default=None, repr=False)
    """PASSWORD: password for MONGOHOST (better: WIREHEAD_MONGO_PASSWORD); never logged."""
    compression: Any = "none"
    """COMPRESSION: a codec for every kind ("none", "zstd", "lz4", "blosc2") or a mapping kind -> codec."""
    connect_timeout: float = 10.0
    """CONNECT_TIMEOUT: seconds to find the server for one attempt."""
    retry_deadline: float = 60.0
    """RETRY_DEADLINE: seconds an operation keeps retrying (with backoff) while the server is away."""
    lease_seconds: float = 10.0
    """LEASE_SECONDS: how long a swapper's lease lasts without renewal."""
    grace_seconds: float = 30.0
    """GRACE_SECONDS: how long a replaced read generation stays readable before deletion."""
    retired_generations: int = 1
    """RETIRED_GENERATIONS: most replaced read generations kept (in their grace period), whatever the swap rate."""
    orphan_seconds: float = 300.0
    """ORPHAN_SECONDS: age after which uncommitted chunks of dead generators are deleted."""
    heartbeat_seconds: float = 2.0
    """HEARTBEAT_SECONDS: how often generators record that they are alive."""
    dead_after_seconds: float = 30.0
    """DEAD_AFTER_SECONDS: a generator silent this long shows as dead."""
    poll_seconds: float = 0.2
    """POLL_SECONDS: how often managers and waiting readers look at the state."""
    read_timeout: float = 300.0
    """READ_TIMEOUT: seconds a dataset waits for the first read generation."""
    min_fill: int = 0
    """MIN_FILL: committed samples needed in a generation before readers may use it (0: SWAP_CAP rules)."""
    reuse_cap: int = 0
    """REUSE_CAP: maximum reads per sample of a read generation, counted across readers (0: unbounded)."""
    reuse_policy: str = "wait"
    """REUSE_POLICY: at the reuse cap, "wait" for a swap, "warn" and keep serving, or "swap_early"."""
    swap_early_min: int = 1
    """SWAP_EARLY_MIN: the smallest generation a "swap_early" swap may make."""
    reader_cache_mb: int = 1024
    """READER_CACHE_MB: MiB of decoded samples a dataset keeps per process (the read generation is immutable)."""
    node_cache_mb: int = 2048
    """NODE_CACHE_MB: MiB of node-local shared memory holding the read generation's stored bytes for every
    reading process on the node (0: off, each process uses its own READER_CACHE_MB cache)."""
    variable_shapes: bool = False
    """VARIABLE_SHAPES: allow a generator's samples to change shape (else a change is refused: batches need one shape)."""

    # where the config came from, for error messages; not a key
    source: Optional[str] = field(default=None, compare=False, repr=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: D107 - documented on the class
        if args:
            raise TypeError("WireheadConfig takes keyword arguments only; use WireheadConfig.load(path_or_dict)")
        source = kwargs.pop("source", None)
        values = _normalise(kwargs, source)
        object.__setattr__(self, "source", source)
        for f in _FIELDS.values():
            object.__setattr__(self, f.name, values.get(f.name, _default_of(f)))
        _validate(self)

    # -- construction -------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: Union[str, os.PathLike]) -> "WireheadConfig":
        """Load and validate a YAML file (read with ``yaml.safe_load``).

        Raises:
            ConfigError: the file is missing or unreadable, is not valid YAML, is not a
                mapping, or holds a missing or invalid key.
        """
        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise ConfigError(f"config file {str(p)!r} does not exist; pass the path of a YAML config") from None
        except OSError as e:
            raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"config file {str(p)!r} must hold a mapping of KEY: value, got {type(data).__name__}"
            )
        return cls(source=str(p), **{str(k): v for k, v in data.items()})

    @classmethod
    def load(
        cls,
        config: "ConfigSource" = None,
        config_path: Union[str, os.PathLike, None] = None,
        **overrides: Any,
    ) -> "WireheadConfig":
        """Build a config from a path, a mapping, a config, or nothing (keyword arguments only).

        ``overrides`` replace keys of the loaded config.  Raises :class:`ConfigError`.
        """
        if config is not None and config_path is not None:
            raise ConfigError("pass either config or config_path, not both")
        if config is None:
            config = config_path
        if isinstance(config, WireheadConfig):
            return config.replace(**overrides) if overrides else config
        if isinstance(config, (str, os.PathLike)):
            base = cls.from_yaml(config)
            return base.replace(**overrides) if overrides else base
        if isinstance(config, Mapping):
            return cls(**{**{str(k): v for k, v in config.items()}, **overrides})
        if config is None:
            return cls(**overrides)
        raise ConfigError(
            f"config must be a path, a mapping or a WireheadConfig, got {type(config).__name__}"
        )

    def replace(self, **changes: Any) -> "WireheadConfig":
        """Return a copy with some keys changed (validated again)."""
        values = self.to_dict()
        values.update(_normalise(changes, self.source))
        return WireheadConfig(source=self.source, **values)

    def to_dict(self) -> dict[str, Any]:
        """The keys as lower-case names; the password is included (do not log this)."""
        d = {name: getattr(self, name) for name in _FIELDS}
        d["sample"] = list(self.sample)
        return d

    # -- derived ------------------------------------------------------------
    @property
    def uri(self) -> Optional[str]:
        """The MongoDB URI to connect to, or ``None`` for the embedded local server.

        Precedence: ``$WIREHEAD_MONGO_URI``, then MONGO_URI, then MONGOHOST/PORT (with
        USERNAME/PASSWORD or ``$WIREHEAD_MONGO_USERNAME``/``$WIREHEAD_MONGO_PASSWORD``).
        """
        env = os.environ.get(URI_ENV)
        if env:
            return env
        if self.mongo_uri:
            return self.mongo_uri
        if self.mongohost:
            user = self.username or os.environ.get("WIREHEAD_MONGO_USERNAME")
            password = self.password or os.environ.get("WIREHEAD_MONGO_PASSWORD")
            auth = ""
            if user:
                auth = quote_plus(user) + (":" + quote_plus(password) if password else "") + "@"
            return f"mongodb://{auth}{self.mongohost}:{self.port}/"
        return None

    @property
    def redacted_uri(self) -> str:
        """The URI with its password hidden, or ``"<embedded local server>"``."""
        uri = self.uri
        return redact_uri(uri) if uri else "<embedded local server>"

    @property
    def chunk_bytes(self) -> int:
        """CHUNKSIZE in bytes."""
        return self.chunksize * 1024 * 1024

    def compression_for(self, kind: str) -> str:
        """The compression codec for one SAMPLE kind."""
        if isinstance(self.compression, Mapping):
            return str(self.compression.get(kind, "none"))
        return str(self.compression)

    def describe(self) -> str:
        """Where this config came from, for messages."""
        return f"config file {self.source!r}" if self.source else "config"

    def __repr__(self) -> str:
        return (
            f"WireheadConfig(uri={self.redacted_uri!r}, dbname={self.dbname!r}, "
            f"swap_cap={self.swap_cap}, sample={list(self.sample)!r})"
        )


ConfigSource = Union[WireheadConfig, Mapping[str, Any], str, "os.PathLike[str]", None]

_FIELDS = {f.name: f for f in dataclasses.fields(WireheadConfig) if f.name != "source"}
_REQUIRED = {"swap_cap"}


def _default_of(f: dataclasses.Field) -> Any:
    return f.default


def _where(source: Optional[str]) -> str:
    return f" in config file {source!r}" if source else ""


def _normalise(raw: Mapping[str, Any], source: Optional[str]) -> dict[str, Any]:
    """Map keys of any case onto field names; warn about unknown keys."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).lower()
        if name not in _FIELDS:
            valid = [n.upper() for n in _FIELDS]
            near = difflib.get_close_matches(str(key).upper(), valid, n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; valid keys: {', '.join(valid)}"
            log.warning("unknown config key %s%s is ignored%s", key, _where(source), hint)
            continue
        out[name] = value
    return out


def _fail(cfg_source: Optional[str], key: str, value: Any, allowed: str) -> "ConfigError":
    shown = "***" if key == "PASSWORD" else repr(value)
    return ConfigError(f"{key}={shown}{_where(cfg_source)} is invalid: {allowed}")


def _validate(cfg: WireheadConfig) -> None:
    src = cfg.source
    for name in _REQUIRED:
        if getattr(cfg, name) is None or getattr(cfg, name) is dataclasses.MISSING:
            raise ConfigError(f"{name.upper()} is required{_where(src)} but missing: set it, e.g. {name.upper()}: 100")

    def integer(name: str, lo: int, hi: Optional[int] = None) -> None:
        v = getattr(cfg, name)
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
        if not ok:
            rng = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"
            raise _fail(src, name.upper(), v, f"must be {rng}")

    def number(name: str, lo: float) -> None:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > lo or not math.isfinite(v):
            raise _fail(src, name.upper(), v, f"must be a number of seconds > {lo}, finite")
        object.__setattr__(cfg, name, float(v))

    def text(name: str, optional: bool = False) -> None:
        v = getattr(cfg, name)
        if v is None and optional:
            return
        if not isinstance(v, str) or not v.strip():
            raise _fail(src, name.upper(), v, "must be a non-empty string")

    integer("swap_cap", 1)
    integer("chunksize", 1, 15)
    integer("port", 1, 65535)
    text("mongohost", optional=True)
    text("mongo_uri", optional=True)
    text("username", optional=True)
    if cfg.password is not None and not isinstance(cfg.password, str):
        raise _fail(src, "PASSWORD", cfg.password, "must be a string")
    if cfg.mongo_uri is not None and not cfg.mongo_uri.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(
            f"MONGO_URI{_where(src)} is invalid: must start with mongodb:// or mongodb+srv:// "
            f"(got {redact_uri(cfg.mongo_uri)!r})"
        )
    text("dbname")
    if _DBNAME_BAD.search(cfg.dbname) or len(cfg.dbname.encode()) > 63:
        raise _fail(
            src, "DBNAME", cfg.dbname,
            "a MongoDB database name has at most 63 bytes and none of / \\ . \" $ * < > : | ? space or NUL",
        )
    for name in ("write_collection", "read_collection", "counter_collection", "temp_collection"):
        text(name)
        v = getattr(cfg, name)
        if "$" in v or "\x00" in v or v.startswith("system."):
            raise _fail(src, name.upper(), v, "a collection name may not contain $ or NUL or start with 'system.'")
    names = [cfg.write_collection, cfg.read_collection, cfg.counter_collection, cfg.temp_collection]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"WRITE_COLLECTION, READ_COLLECTION, COUNTER_COLLECTION and TEMP_COLLECTION{_where(src)} "
            f"must be four different names, got {names}"
        )

    sample = cfg.sample
    if isinstance(sample, str) or not isinstance(sample, (list, tuple)):
        raise _fail(src, "SAMPLE", sample, "must be a non-empty list of unique names, e.g. [image, label]")
    if not sample:
        raise _fail(src, "SAMPLE", list(sample), "must be a non-empty list of unique names, e.g. [image, label]")
    for s in sample:
        if not isinstance(s, str) or not s or "." in s or s.startswith("$"):
            raise _fail(src, "SAMPLE", list(sample), f"every name must be a non-empty string without '.' or a leading '$' (bad: {s!r})")
    dupes = sorted({s for s in sample if list(sample).count(s) > 1})
    if dupes:
        raise _fail(src, "SAMPLE", list(sample), f"names must be unique; repeated: {dupes}")
    object.__setattr__(cfg, "sample", tuple(sample))

    comp = cfg.compression
    if comp is None:
        comp = "none"
        object.__setattr__(cfg, "compression", comp)
    if isinstance(comp, Mapping):
        unknown = [k for k in comp if k not in cfg.sample]
        if unknown:
            raise _fail(src, "COMPRESSION", dict(comp), f"names kinds not in SAMPLE {list(cfg.sample)}: {unknown}")
        bad = [v for v in comp.values() if v not in COMPRESSION_CODECS]
        if bad:
            raise _fail(src, "COMPRESSION", dict(comp), f"codecs must be one of {list(COMPRESSION_CODECS)}")
        object.__setattr__(cfg, "compression", dict(comp))
    elif comp not in COMPRESSION_CODECS:
        raise _fail(src, "COMPRESSION", comp, f"must be one of {list(COMPRESSION_CODECS)} or a mapping kind -> codec")

    for name in ("connect_timeout", "retry_deadline", "lease_seconds", "heartbeat_seconds",
                 "dead_after_seconds", "poll_seconds", "read_timeout"):
        number(name, 0)
    for name in ("grace_seconds", "orphan_seconds"):
        number(name, 0)
    integer("retired_generations", 0)
    integer("min_fill", 0)
    integer("reuse_cap", 0)
    integer("swap_early_min", 1)
    integer("reader_cache_mb", 0)
    integer("node_cache_mb", 0)
    if not isinstance(cfg.variable_shapes, bool):
        raise _fail(src, "VARIABLE_SHAPES", cfg.variable_shapes, "must be true or false")
    if cfg.reuse_policy not in REUSE_POLICIES:
        raise _fail(src, "REUSE_POLICY", cfg.reuse_policy, f"must be one of {list(REUSE_POLICIES)}")
    if cfg.min_fill > cfg.swap_cap:
        raise _fail(src, "MIN_FILL", cfg.min_fill, f"must be at most SWAP_CAP ({cfg.swap_cap})")
    if cfg.swap_early_min > cfg.swap_cap:
        raise _fail(src, "SWAP_EARLY_MIN", cfg.swap_early_min, f"must be at most SWAP_CAP ({cfg.swap_cap})")
    if cfg.dead_after_seconds <= cfg.heartbeat_seconds:
        raise _fail(src, "DEAD_AFTER_SECONDS", cfg.dead_after_seconds,
                    f"must be larger than HEARTBEAT_SECONDS ({cfg.heartbeat_seconds})")
