"""The exceptions wirehead raises.

Every error wirehead raises on purpose is a :class:`WireheadError`, and also an
instance of the closest built-in class (``ValueError``, ``TypeError``,
``TimeoutError``, ``ConnectionError``) so callers can catch either.  Driver
errors (pymongo) never escape: :mod:`wirehead.store` re-raises them once, as
:class:`StoreUnavailable` or :class:`StoreError`.
"""

from __future__ import annotations

__all__ = [
    "WireheadError",
    "ConfigError",
    "SampleError",
    "StoreError",
    "StoreUnavailable",
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
    """The database answered, but refused an operation (e.g. authentication)."""


class StoreUnavailable(StoreError, ConnectionError):
    """The database could not be reached before the configured deadline."""


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
