"""The exceptions wirehead raises.

Every error wirehead raises on purpose is a :class:`WireheadError`, and also an
instance of the closest built-in class (``ValueError``, ``TypeError``,
``TimeoutError``, ``ConnectionError``) so callers can catch either.  Driver
errors (pymongo, bson) never escape: :mod:`wirehead.client` re-raises each one
once as :class:`StoreUnavailable` (transient errors that lasted past the
deadline) or :class:`StoreError` (refused: permanent), with the cause (the
driver's error, password-free; not chained on) and what to do in the message.
"""

from __future__ import annotations

__all__ = [
    "WireheadError",
    "ConfigError",
    "SampleError",
    "StoreError",
    "StoreUnavailable",
    "RetryAbandoned",
    "ServerNotFound",
    "WaitTimeout",
    "GeneratorError",
    "corrupt_sample",
]


class WireheadError(Exception):
    """Base class of every error wirehead raises on purpose."""


class ConfigError(WireheadError, ValueError):
    """A configuration is missing, unreadable or holds an invalid value.

    The message names the key, the bad value, the file (when there is one) and
    what is allowed.
    """


class SampleError(WireheadError, ValueError):
    """A sample does not match the configured SAMPLE kinds (count or names)."""


class StoreError(WireheadError):
    """The database (or the driver) refused an operation: authentication, a bad command, validation, a document
    that cannot be encoded.  Not retried: retrying cannot help."""


class StoreUnavailable(StoreError, ConnectionError):
    """The database could not be used before the configured deadline: unreachable, frozen, or without a
    primary (a failover), or answering "try again" until then."""


class RetryAbandoned(StoreUnavailable):
    """A call stopped retrying an unavailable server because its process was asked to stop (a generator's or
    manager's ``stop()``, SIGTERM, ``scancel``) before ``RETRY_DEADLINE`` ran out."""


class ServerNotFound(WireheadError, RuntimeError):
    """No local MongoDB-compatible server executable could be found."""


class WaitTimeout(WireheadError, TimeoutError):
    """A wait (first swap, a free slot, a server start) passed its deadline."""


class GeneratorError(WireheadError, RuntimeError):
    """The user's sample generator raised; the message names which generator, host and pid."""


def corrupt_sample(kind: str, what: str) -> ValueError:
    """The error for stored bytes or meta that cannot be a sample wirehead wrote (never trusted).

    Returns (does not raise) ``ValueError("corrupt sample: kind '<kind>': <what>")``.
    """
    return ValueError(f"corrupt sample: kind {kind!r}: {what}")
