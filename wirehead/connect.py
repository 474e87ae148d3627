"""Where the cache lives: :func:`resolve_uri` turns a config into a server URI, and :func:`open_store`, the
one way to open a cache from ``(config_path, config, uri)``, gives a :class:`~wirehead.store.Store` on it.

Precedence: ``$WIREHEAD_MONGO_URI``, then the config's MONGO_URI, then MONGOHOST/PORT (see
:attr:`WireheadConfig.uri <wirehead.config.WireheadConfig.uri>`), then the shared embedded local
server of this user (:func:`wirehead.server.shared_uri`, started on first use).

:mod:`wirehead.store` (over :mod:`wirehead.client`) takes a resolved URI and :mod:`wirehead.server` runs
servers; this module joins them, and neither imports it.
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Union

from .config import ConfigSource, WireheadConfig
from .errors import StoreUnavailable
from .server import shared_record, shared_uri, wirehead_home
from .store import Store

__all__ = ["resolve_uri", "embedded_uri", "open_store"]


def embedded_uri() -> str:
    """The shared embedded server's URI, starting it when none runs.

    Raises:
        StoreUnavailable: a shared server is alive but frozen (it does not answer).
        ServerNotFound, WaitTimeout: as :func:`wirehead.server.shared_uri`.
    """
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
    record = shared_record()
    if record is None:
        raise StoreUnavailable(
            f"the config names no server (no MONGOHOST/MONGO_URI) and no shared local server is running "
            f"(no live record in {wirehead_home() / 'server.json'}); start one with a manager or generator, "
            f"or set MONGO_URI / $WIREHEAD_MONGO_URI")
    return str(record["uri"])


def open_store(config: ConfigSource = None, uri: Optional[str] = None, *,
               config_path: Union[str, "os.PathLike[str]", None] = None, start_server: bool = True) -> Store:
    """The one way to open a cache from ``(config_path, config, uri)``: every class and command that takes
    them (generator, manager, dataset, controller, monitor, CLI) calls this.

    Args:
        config: a :class:`WireheadConfig`, a YAML path or a mapping of keys (see :meth:`WireheadConfig.load`).
        uri: a server URI overriding the environment's and the config's.
        config_path: a YAML path, instead of ``config``.
        start_server: with ``True`` (processes that generate, manage or read), a config that names no server
            uses the shared embedded server, started on the store's first use (nothing is started here), and
            follows it when it is restarted on another port.  With ``False`` (commands that only look), the
            shared server must already run.

    Raises:
        ConfigError: the config is invalid (or both ``config`` and ``config_path`` were given).
        StoreUnavailable: ``start_server=False``, the config names no server and no shared server runs.
    """
    cfg = WireheadConfig.load(config, config_path)
    if uri is None and cfg.uri is None:
        if start_server:
            return Store(cfg, None, resolve=embedded_uri)
        return Store(cfg, resolve_uri(cfg, start_server=False),
                     resolve=functools.partial(resolve_uri, cfg, start_server=False))
    return Store(cfg, uri)
