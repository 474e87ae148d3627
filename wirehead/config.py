"""WireheadConfig: the YAML keys, their validation and defaults, and the connection URI.

Every key is declared once, as data, in :data:`KEYS` (name, default, what is allowed, meaning):
validation, its error messages, the class docstring and the README's Configuration table
(:func:`config_table`) all come from that declaration.

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

from .compression import COMPRESSION_CODECS, codecs_for
from .errors import ConfigError

__all__ = ["WireheadConfig", "ConfigSource", "Key", "KEYS", "REQUIRED", "config_table", "redact_uri",
           "REUSE_POLICIES"]

log = logging.getLogger(__name__)

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


@dataclass(frozen=True, repr=False)
class WireheadConfig:
    """Validated wirehead settings, shared by generators, managers and datasets.

    Build one with :meth:`load` (a path, a dict, or another config),
    :meth:`from_yaml`, or keyword arguments (either case):
    ``WireheadConfig(SWAP_CAP=100, SAMPLE=["image", "label"])``.

    Every process of one cache must use the same values for ``dbname``,
    ``sample``, the collection names and ``swap_cap``.

    The keys, their defaults, what each allows and means are declared once, in
    :data:`KEYS` (listed below and in the README's Configuration table).
    """

    # one attribute per entry of KEYS (same order; tests/test_config.py checks), typed for readers
    mongohost: Optional[str]
    port: int
    mongo_uri: Optional[str]
    username: Optional[str]
    password: Optional[str]
    dbname: str
    swap_cap: int
    sample: tuple[str, ...]
    chunksize: int
    write_collection: str
    read_collection: str
    counter_collection: str
    temp_collection: str
    compression: Union[str, dict[str, str]]
    connect_timeout: float
    retry_deadline: float
    lease_seconds: float
    grace_seconds: float
    retired_generations: int
    orphan_seconds: float
    heartbeat_seconds: float
    dead_after_seconds: float
    poll_seconds: float
    read_timeout: float
    min_fill: int
    reuse_cap: int
    reuse_policy: str
    swap_early_min: int
    reader_cache_mb: int
    node_cache_mb: int
    read_ahead: int
    variable_shapes: bool

    # where the config came from, for error messages; not a key
    source: Optional[str] = field(default=None, compare=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: D107 - documented on the class
        if args:
            raise TypeError("WireheadConfig takes keyword arguments only; use WireheadConfig.load(path_or_dict)")
        source = kwargs.pop("source", None)
        values = _validated(_normalise(kwargs, source), source)
        object.__setattr__(self, "source", source)
        for name, value in values.items():
            object.__setattr__(self, name, value)

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
        d = {key.attr: getattr(self, key.attr) for key in KEYS}
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


# --------------------------------------------------------------------------------------------------
# what each key allows: one rule object per kind of value, with the README's words for it
# --------------------------------------------------------------------------------------------------


class _Hidden:
    """Stands for a secret value in messages."""

    def __repr__(self) -> str:
        return "***"


class _Invalid(Exception):
    """Raised by a rule: ``allowed`` says what the key allows; ``shown`` replaces the value in the message
    (``None``: the message names the key alone, ``allowed`` shows the value its own way)."""

    def __init__(self, allowed: str, shown: Any = dataclasses.MISSING) -> None:
        super().__init__(allowed)
        self.allowed = allowed
        self.shown = shown


class _Rule:
    """What one key allows.  ``check`` returns the value to keep (maybe normalised) or raises _Invalid;
    ``earlier`` holds the already-validated keys before this one (lower-case names)."""

    valid = ""
    """What is allowed, as the README's Configuration table says it (markdown)."""

    def check(self, value: Any, earlier: Mapping[str, Any]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class _Int(_Rule):
    lo: int
    hi: Optional[int] = None
    at_most: Optional[str] = None  # another key whose value bounds this one

    @property
    def valid(self) -> str:  # type: ignore[override]
        if self.hi is not None:
            return f"{self.lo}–{self.hi}"
        if self.at_most is not None:
            return f"{self.lo}–`{self.at_most}`"
        return f"integer ≥ {self.lo}"

    def check(self, value: Any, earlier: Mapping[str, Any]) -> int:
        if not _is_int(value) or value < self.lo or (self.hi is not None and value > self.hi):
            rng = f"an integer from {self.lo} to {self.hi}" if self.hi is not None else f"an integer >= {self.lo}"
            raise _Invalid(f"must be {rng}")
        if self.at_most is not None and value > earlier[self.at_most.lower()]:
            raise _Invalid(f"must be at most {self.at_most} ({earlier[self.at_most.lower()]})")
        return value


@dataclass(frozen=True)
class _Seconds(_Rule):
    above: Optional[str] = None  # another key this one must exceed

    @property
    def valid(self) -> str:  # type: ignore[override]
        return f"> `{self.above}`" if self.above else "> 0"

    def check(self, value: Any, earlier: Mapping[str, Any]) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise _Invalid("must be a number of seconds > 0, finite")
        if self.above is not None and value <= earlier[self.above.lower()]:
            raise _Invalid(f"must be larger than {self.above} ({earlier[self.above.lower()]})")
        return float(value)


@dataclass(frozen=True)
class _Text(_Rule):
    valid: str = "a non-empty string"  # type: ignore[misc]
    optional: bool = False

    def check(self, value: Any, earlier: Mapping[str, Any]) -> Optional[str]:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise _Invalid("must be a non-empty string")
        return self.check_text(value)

    def check_text(self, value: str) -> str:
        return value


@dataclass(frozen=True)
class _Uri(_Text):
    def check_text(self, value: str) -> str:
        if not value.startswith(("mongodb://", "mongodb+srv://")):
            # the value is shown redacted: a URI may hold a password
            raise _Invalid(f"must start with mongodb:// or mongodb+srv:// (got {redact_uri(value)!r})", shown=None)
        return value


@dataclass(frozen=True)
class _DbName(_Text):
    def check_text(self, value: str) -> str:
        if _DBNAME_BAD.search(value) or len(value.encode()) > 63:
            raise _Invalid("a MongoDB database name has at most 63 bytes and none of / \\ . \" $ * < > : | ? space or NUL")
        return value


@dataclass(frozen=True)
class _Collection(_Text):
    def check_text(self, value: str) -> str:
        if "$" in value or "\x00" in value or value.startswith("system."):
            raise _Invalid("a collection name may not contain $ or NUL or start with 'system.'")
        return value


class _Secret(_Rule):
    valid = "string"

    def check(self, value: Any, earlier: Mapping[str, Any]) -> Optional[str]:
        if value is not None and not isinstance(value, str):
            raise _Invalid("must be a string", shown=_Hidden())
        return value


class _Names(_Rule):
    valid = "non-empty list of unique names"

    def check(self, value: Any, earlier: Mapping[str, Any]) -> tuple[str, ...]:
        what = "must be a non-empty list of unique names, e.g. [image, label]"
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise _Invalid(what)
        names = list(value)
        if not names:
            raise _Invalid(what, shown=names)
        for s in names:
            if not isinstance(s, str) or not s or "." in s or s.startswith("$"):
                raise _Invalid(f"every name must be a non-empty string without '.' or a leading '$' (bad: {s!r})",
                               shown=names)
        dupes = sorted({s for s in names if names.count(s) > 1})
        if dupes:
            raise _Invalid(f"names must be unique; repeated: {dupes}", shown=names)
        return tuple(names)


class _Compression(_Rule):
    valid = (", ".join(f"`{c}`" for c in COMPRESSION_CODECS)
             + ", or a mapping kind → codec (see [Compression](#compression))")

    def check(self, value: Any, earlier: Mapping[str, Any]) -> Union[str, dict[str, str]]:
        if value is None:
            return "none"
        try:
            codecs_for(value, earlier["sample"])  # the one validator of a compression setting
        except ValueError as e:
            raise _Invalid(str(e), shown=dict(value) if isinstance(value, Mapping) else value) from None
        return dict(value) if isinstance(value, Mapping) else value


class _Flag(_Rule):
    valid = "true or false"

    def check(self, value: Any, earlier: Mapping[str, Any]) -> bool:
        if not isinstance(value, bool):
            raise _Invalid("must be true or false")
        return value


@dataclass(frozen=True)
class _OneOf(_Rule):
    options: tuple[str, ...]

    @property
    def valid(self) -> str:  # type: ignore[override]
        shown = [f"`{o}`" for o in self.options]
        return ", ".join(shown[:-1]) + " or " + shown[-1]

    def check(self, value: Any, earlier: Mapping[str, Any]) -> str:
        if value not in self.options:
            raise _Invalid(f"must be one of {list(self.options)}")
        return value


# --------------------------------------------------------------------------------------------------
# the keys, declared once
# --------------------------------------------------------------------------------------------------

REQUIRED: Any = dataclasses.MISSING
"""The default of a key that has none: it must be set."""


@dataclass(frozen=True)
class Key:
    """One config key: its YAML name, default, what it allows and what it means."""

    name: str
    """The name in YAML (upper case); the attribute is the lower-case name."""
    default: Any
    """The value when the key is not set (:data:`REQUIRED`: it must be set)."""
    rule: _Rule
    """What the key allows (checked at construction; ``rule.valid`` says it in words)."""
    meaning: str
    """What the key does (markdown; the README's table shows it)."""

    @property
    def attr(self) -> str:
        """The attribute name on :class:`WireheadConfig`."""
        return self.name.lower()


#: Every config key, in the order they are validated and listed (a key that bounds another comes first).
KEYS: tuple[Key, ...] = (
    Key("MONGOHOST", None, _Text("host name", optional=True),
        "server host; with neither `MONGOHOST` nor `MONGO_URI`, the embedded local server is used"),
    Key("PORT", 27017, _Int(1, 65535), "server port, with `MONGOHOST`"),
    Key("MONGO_URI", None, _Uri("`mongodb://…` or `mongodb+srv://…`", optional=True),
        "a full MongoDB URI (users, TLS, replica sets); `$WIREHEAD_MONGO_URI` overrides it"),
    Key("USERNAME", None, _Text("string", optional=True),
        "user for `MONGOHOST` (or `$WIREHEAD_MONGO_USERNAME`)"),
    Key("PASSWORD", None, _Secret(),
        "password for `MONGOHOST` (better: `$WIREHEAD_MONGO_PASSWORD`); never logged"),
    Key("DBNAME", "wirehead", _DbName("a MongoDB database name"), "the database that holds the cache"),
    Key("SWAP_CAP", REQUIRED, _Int(1), "committed samples that fill a generation and trigger a swap"),
    Key("SAMPLE", ("input", "label"), _Names(),
        "names of the arrays of one sample, in the order a generator yields them"),
    Key("CHUNKSIZE", 10, _Int(1, 15), "MiB per chunk document (MongoDB documents are limited to 16 MiB)"),
    Key("WRITE_COLLECTION", "write", _Collection("collection name"),
        "holds the samples' bytes (chunk documents; chunk 0 carries the manifest)"),
    Key("READ_COLLECTION", "read", _Collection("collection name"),
        "holds what readers look up: one document per generation, listing its samples"),
    Key("COUNTER_COLLECTION", "counters", _Collection("collection name"),
        "holds the state document and the reuse cap's read counters"),
    Key("TEMP_COLLECTION", "temp", _Collection("collection name"),
        "holds short-lived records: generator heartbeats and the swap log"),
    Key("COMPRESSION", "none", _Compression(),
        "the codec of every kind, or a mapping kind → codec (kinds it leaves out: `none`)"),
    Key("CONNECT_TIMEOUT", 10.0, _Seconds(),
        "seconds to reach a server never reached before (a wrong host fails fast)"),
    Key("RETRY_DEADLINE", 60.0, _Seconds(), "seconds operations retry, with backoff, while a reached server is away"),
    Key("LEASE_SECONDS", 10.0, _Seconds(), "how long a swapper's lease lasts without renewal"),
    Key("GRACE_SECONDS", 30.0, _Seconds(), "how long a replaced read generation stays readable before deletion"),
    Key("RETIRED_GENERATIONS", 1, _Int(0),
        "most replaced read generations kept, whatever the swap rate (older ones are deleted before their grace "
        "ends)"),
    Key("ORPHAN_SECONDS", 300.0, _Seconds(),
        "a generator whose heartbeat is silent this long (and for three of its own heartbeat periods) is fenced "
        "and its uncommitted samples deleted (a slow write with a live heartbeat is never touched)"),
    Key("HEARTBEAT_SECONDS", 2.0, _Seconds(), "how often generators report that they are alive"),
    Key("DEAD_AFTER_SECONDS", 30.0, _Seconds(above="HEARTBEAT_SECONDS"), "a generator silent this long shows as dead"),
    Key("POLL_SECONDS", 0.2, _Seconds(), "how often managers and readers look at the state"),
    Key("READ_TIMEOUT", 300.0, _Seconds(),
        "seconds a dataset waits for the first read generation (or, with `REUSE_CAP` and `wait`, for the next)"),
    Key("MIN_FILL", 0, _Int(0, at_most="SWAP_CAP"),
        "with no read generation yet, swap as soon as this many samples are committed (0: wait for `SWAP_CAP`); "
        "every later generation fills to `SWAP_CAP`"),
    Key("REUSE_CAP", 0, _Int(0), "most reads per sample of a read generation, across all readers (0: unbounded)"),
    Key("REUSE_POLICY", "wait", _OneOf(REUSE_POLICIES),
        "at the reuse cap: `wait` for a swap, `warn` and serve on, or `swap_early`"),
    Key("SWAP_EARLY_MIN", 1, _Int(1, at_most="SWAP_CAP"), "the smallest generation a `swap_early` swap may make"),
    Key("READER_CACHE_MB", 1024, _Int(0),
        "MiB of stored sample bytes (as read from the server, before decoding) each reading process keeps from the "
        "read generation: what the node cache does not hold (everything, without one; a new read generation is "
        "then prefetched only when it fits)"),
    Key("NODE_CACHE_MB", 2048, _Int(0),
        "MiB of node-local shared memory (`/dev/shm`) per read generation holding its stored sample bytes once, "
        "shared by every reading process on the node (DataLoader workers, trainer processes, DDP ranks); 0 turns "
        "it off (each process then uses its own `READER_CACHE_MB`)"),
    Key("READ_AHEAD", 2, _Int(0),
        "batches a `ReadAheadSampler` announces ahead of the one being read; the reading process fetches them "
        "in the background (one query a batch) and holds them until read (0: off)"),
    Key("VARIABLE_SHAPES", False, _Flag(),
        "let a generator's samples change shape (else a change is refused at the generator, naming the kind and "
        "both shapes: a batch needs one shape)"),
)

_BY_ATTR = {key.attr: key for key in KEYS}
_COLLECTIONS = tuple(key for key in KEYS if isinstance(key.rule, _Collection))  # the four collections


def _where(source: Optional[str]) -> str:
    return f" in config file {source!r}" if source else ""


def _normalise(raw: Mapping[str, Any], source: Optional[str]) -> dict[str, Any]:
    """Map keys of any case onto attribute names; warn about unknown keys."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).lower()
        if name not in _BY_ATTR:
            valid = [k.name for k in KEYS]
            near = difflib.get_close_matches(str(key).upper(), valid, n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; valid keys: {', '.join(valid)}"
            log.warning("unknown config key %s%s is ignored%s", key, _where(source), hint)
            continue
        out[name] = value
    return out


def _validated(given: Mapping[str, Any], source: Optional[str]) -> dict[str, Any]:
    """Every key's value (given, else its default), checked by its rule in KEYS order.

    Raises:
        ConfigError: the first invalid or missing key, naming the key, the value, the file and
            what is allowed.
    """
    values: dict[str, Any] = {}
    for key in KEYS:
        value = given.get(key.attr, key.default)
        if key.default is REQUIRED and (value is None or value is REQUIRED):
            raise ConfigError(f"{key.name} is required{_where(source)} but missing: set it, e.g. {key.name}: 100")
        try:
            values[key.attr] = key.rule.check(value, values)
        except _Invalid as e:
            shown = value if e.shown is dataclasses.MISSING else e.shown
            named = key.name if shown is None and e.shown is None else f"{key.name}={shown!r}"
            raise ConfigError(f"{named}{_where(source)} is invalid: {e.allowed}") from None
    names = [values[key.attr] for key in _COLLECTIONS]
    if len(set(names)) != len(names):
        listed = ", ".join(key.name for key in _COLLECTIONS[:-1]) + f" and {_COLLECTIONS[-1].name}"
        raise ConfigError(f"{listed}{_where(source)} must be four different names, got {names}")
    return values


# --------------------------------------------------------------------------------------------------
# the README's table and the class docstring, from KEYS
# --------------------------------------------------------------------------------------------------


def _shown_default(default: Any) -> str:
    if default is REQUIRED:
        return "required"
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, (int, float)):
        return f"{default:g}"
    if isinstance(default, tuple):
        return f"`[{', '.join(default)}]`"
    return f"`{default}`"


def config_table() -> str:
    """The README's Configuration table (markdown), made from :data:`KEYS`."""
    rows = ["| key | default | meaning | valid |", "|---|---|---|---|"]
    rows += [f"| `{k.name}` | {_shown_default(k.default)} | {k.meaning} | {k.rule.valid} |" for k in KEYS]
    return "\n".join(rows) + "\n"


WireheadConfig.__doc__ = (WireheadConfig.__doc__ or "") + "\n    Keys (YAML name: default; allowed; meaning)::\n\n" + "".join(
    f"        {k.name}: {_shown_default(k.default)}; {k.rule.valid}; {k.meaning}\n" for k in KEYS)
