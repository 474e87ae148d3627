"""Test fixtures: one real MongoDB-compatible server for the session, one database per test.

Helpers that are not fixtures (child processes, waiting, cleaning up) live in ``helpers.py``.

The server is ``$WIREHEAD_TEST_MONGO_URI`` when set, else a :class:`wirehead.LocalMongo`
(a real ``mongod`` when on PATH, else SecantusDB) on 127.0.0.1, stopped at the end of the
session, also when tests fail.  No in-process fake is ever used for the cache protocol.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tests import their helpers as `helpers`

from helpers import drop_database  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep the per-user shared server of the embedded default out of the real home directory."""
    home = tmp_path_factory.mktemp("wirehead-home")
    old = os.environ.get("WIREHEAD_HOME")
    os.environ["WIREHEAD_HOME"] = str(home)
    yield home
    from wirehead.server import stop_shared

    stop_shared()
    if old is None:
        os.environ.pop("WIREHEAD_HOME", None)
    else:
        os.environ["WIREHEAD_HOME"] = old


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's LocalMongo, or None when $WIREHEAD_TEST_MONGO_URI names a server."""
    if os.environ.get("WIREHEAD_TEST_MONGO_URI"):
        yield None
        return
    from wirehead import LocalMongo

    server = LocalMongo(tmp_path_factory.mktemp("mongo-data"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_uri(mongo_server: Any) -> str:
    """URI of the session's server."""
    return os.environ.get("WIREHEAD_TEST_MONGO_URI") or mongo_server.uri


@pytest.fixture
def dbname(request: pytest.FixtureRequest) -> str:
    """A database name unique to this test."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:30]
    return f"t_{base}_{uuid.uuid4().hex[:6]}"


@pytest.fixture
def make_config(mongo_uri: str, dbname: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Build configs on this test's database; drops it afterwards."""
    from wirehead import WireheadConfig

    monkeypatch.delenv("WIREHEAD_MONGO_URI", raising=False)
    made: list[Any] = []

    def make(**keys: Any) -> WireheadConfig:
        base = dict(MONGO_URI=mongo_uri, DBNAME=dbname, SWAP_CAP=4, SAMPLE=["image", "label"],
                    POLL_SECONDS=0.05, LEASE_SECONDS=2.0, GRACE_SECONDS=1.0, READ_TIMEOUT=30.0,
                    CONNECT_TIMEOUT=5.0, RETRY_DEADLINE=30.0)
        base.update(keys)
        cfg = WireheadConfig.load(base)
        made.append(cfg)
        return cfg

    yield make
    if made:
        drop_database(made[0])


@pytest.fixture
def config(make_config: Any) -> Any:
    """A small default config on this test's database."""
    return make_config()
