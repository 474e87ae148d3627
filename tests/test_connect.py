"""wirehead.connect.open_store: the one way every class and command opens a cache from (config_path, config, uri)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from wirehead import ConfigError, WireheadConfig
from wirehead.connect import open_store
from wirehead.errors import StoreUnavailable
from wirehead.server import shared_record


def test_open_store_from_a_yaml_path_and_a_uri(make_config: Any, mongo_uri: str, tmp_path: Path) -> None:
    cfg = make_config(SWAP_CAP=3)
    path = tmp_path / "cache.yaml"
    path.write_text(yaml.safe_dump({"DBNAME": cfg.dbname, "SWAP_CAP": 3, "SAMPLE": ["image", "label"]}))
    store = open_store(config_path=path, uri=mongo_uri)
    try:
        assert store.config.dbname == cfg.dbname and store.config.swap_cap == 3 and store.uri == mongo_uri
        store.ping()
    finally:
        store.close()
    with pytest.raises(ConfigError, match="either config or config_path"):
        open_store(cfg, config_path=path)


def test_a_serverless_config_starts_nothing_until_the_store_is_used(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIREHEAD_HOME", str(tmp_path / "home"))  # no shared server here
    monkeypatch.delenv("WIREHEAD_MONGO_URI", raising=False)
    store = open_store(WireheadConfig(SWAP_CAP=2))  # start_server=True: started on first use, not here
    assert store.embedded and shared_record() is None
    store.close()
    with pytest.raises(StoreUnavailable, match="no shared local server is running"):
        open_store(WireheadConfig(SWAP_CAP=2), start_server=False)  # a command that only looks


def _wirehead_imports(module: str) -> set[str]:
    """The wirehead modules ``module`` imports anywhere in its source (also inside functions)."""
    import ast

    import wirehead

    tree = ast.parse((Path(wirehead.__file__).parent / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module] if node.module else [a.name for a in node.names])
    return found


def test_the_layers_import_one_way_connect_over_store_over_client() -> None:
    """connect joins servers and stores; the store (the protocol) and the client (the connection) never
    import it, and the client knows nothing of the protocol."""
    assert "connect" not in _wirehead_imports("store") | _wirehead_imports("client")
    assert not {"store", "connect", "swapper", "generator", "reader"} & _wirehead_imports("client")
    assert "store" in _wirehead_imports("connect")


def test_a_store_pickles_without_its_client_and_reconnects(make_config: Any) -> None:
    import pickle

    from wirehead.store import Store

    store = Store(make_config())
    store.ping()
    assert store.connection.connected
    copy = pickle.loads(pickle.dumps(store))
    assert not copy.connection.connected and copy.uri == store.uri
    copy.ping()  # made again on first use
    assert copy.connection.connected
    copy.close()
    store.close()
