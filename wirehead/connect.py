"""Where the cache lives: one function turns a config into a server URI.

Precedence: ``$WIREHEAD_MONGO_URI``, then the config's MONGO_URI, then MONGOHOST/PORT (see
:attr:`WireheadConfig.uri <wirehead.config.WireheadConfig.uri>`), then the shared embedded local
server of this user (:func:`wirehead.server.shared_uri`, started on first use).

:mod:`wirehead.store` takes a resolved URI and :mod:`wirehead.server` runs servers; neither
imports the other: this module joins them.
"""

from __future__ import annotations

import functools
from typing import Optional

from .config import WireheadConfig
from .errors import StoreUnavailable
from .store import Store

__all__ = ["resolve_uri", "embedded_uri", "open_store"]


def embedded_uri() -> str:
    """The shared embedded server's URI, starting it when none runs.

    Raises:
        StoreUnavailable: a shared server is alive but frozen (it does not answer).
        ServerNotFound, WaitTimeout: as :func:`wirehead.server.shared_uri`.
    """
    from .server import shared_uri

    return shared_uri()


def resolve_uri(config: WireheadConfig, uri: Optional[str] = None, *, start_server: bool = True) -> str:
    """The URI of the server that holds ``config``'s cache: ``uri`` if given, else the environment's or
    the config's, else the shared embedded server's.

    With ``start_server=False`` a missing shared server raises :class:`StoreUnavailable` rather than
    starting one (for commands that only look).
    """
    if uri:
        return uri
    if config.uri is not None:
        return config.uri
    if start_server:
        return embedded_uri()
    from .server import shared_record, wirehead_home

    record = shared_record()
    if record is None:
        raise StoreUnavailable(
            f"the config names no server (no MONGOHOST/MONGO_URI) and no shared local server is running "
            f"(no live record in {wirehead_home() / 'server.json'}); start one with a manager or generator, "
            f"or set MONGO_URI / $WIREHEAD_MONGO_URI")
    return str(record["uri"])


def open_store(config: WireheadConfig, uri: Optional[str] = None, *, start_server: bool = True) -> Store:
    """A :class:`Store` on the resolved server; one on the shared embedded server follows it when it
    is restarted on another port (and, with ``start_server=False``, never starts one itself)."""
    resolved = resolve_uri(config, uri, start_server=start_server)
    if uri is None and config.uri is None:
        follow = embedded_uri if start_server else functools.partial(resolve_uri, config, start_server=False)
        return Store(config, resolved, resolve=follow)
    return Store(config, resolved)
