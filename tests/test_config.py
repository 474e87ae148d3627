"""WireheadConfig: every seed key, defaults, URI precedence, and one ConfigError per mistake."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wirehead import ConfigError, WireheadConfig
from wirehead.chunks import encode
from wirehead.config import KEYS, REQUIRED, config_table

SEED_YAML = """\
MONGOHOST: "localhost"
DBNAME: "unit-test"
PORT: 27017
SWAP_CAP: 10
SAMPLE: ["a", "b"]
WRITE_COLLECTION: "write"
READ_COLLECTION: "read"
COUNTER_COLLECTION: "counters"
TEMP_COLLECTION: "temp"
CHUNKSIZE: 10
"""


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WIREHEAD_MONGO_URI", "WIREHEAD_MONGO_USERNAME", "WIREHEAD_MONGO_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def test_seed_config_loads_with_every_key(tmp_path: Path) -> None:
    cfg = WireheadConfig.from_yaml(write(tmp_path, SEED_YAML))
    assert (cfg.mongohost, cfg.dbname, cfg.port, cfg.swap_cap) == ("localhost", "unit-test", 27017, 10)
    assert cfg.sample == ("a", "b")
    assert (cfg.write_collection, cfg.read_collection, cfg.counter_collection, cfg.temp_collection) == (
        "write", "read", "counters", "temp")
    assert cfg.chunksize == 10 and cfg.chunk_bytes == 10 * 1024 * 1024
    assert cfg.uri == "mongodb://localhost:27017/"


def test_defaults_and_embedded_default() -> None:
    cfg = WireheadConfig(SWAP_CAP=5)
    assert cfg.port == 27017 and cfg.chunksize == 10 and cfg.dbname == "wirehead"
    assert cfg.uri is None  # no host, no URI: the embedded local server
    assert cfg.redacted_uri == "<embedded local server>"


def test_load_from_path_dict_config_and_kwargs(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_YAML)
    a = WireheadConfig.load(str(path))
    b = WireheadConfig.load({"SWAP_CAP": 10, "DBNAME": "unit-test", "SAMPLE": ["a", "b"], "MONGOHOST": "localhost"})
    c = WireheadConfig.load(a)
    d = WireheadConfig(swap_cap=10, dbname="unit-test", sample=["a", "b"], mongohost="localhost")
    assert a == b == c == d
    assert WireheadConfig.load(config_path=path, swap_cap=3).swap_cap == 3


def test_uri_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = WireheadConfig(SWAP_CAP=1, MONGOHOST="h", PORT=1234, MONGO_URI="mongodb://u:pw@other:9/?replicaSet=rs0")
    assert cfg.uri == "mongodb://u:pw@other:9/?replicaSet=rs0"
    monkeypatch.setenv("WIREHEAD_MONGO_URI", "mongodb://env:27017/")
    assert cfg.uri == "mongodb://env:27017/"
    monkeypatch.delenv("WIREHEAD_MONGO_URI")
    assert WireheadConfig(SWAP_CAP=1, MONGOHOST="h", PORT=1234).uri == "mongodb://h:1234/"


def test_credentials_from_environment_are_quoted_and_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIREHEAD_MONGO_USERNAME", "ann")
    monkeypatch.setenv("WIREHEAD_MONGO_PASSWORD", "p@ss:word/1")
    cfg = WireheadConfig(SWAP_CAP=1, MONGOHOST="db.example")
    assert cfg.uri == "mongodb://ann:p%40ss%3Aword%2F1@db.example:27017/"
    assert "p%40ss" not in repr(cfg) and "***" in cfg.redacted_uri


def test_password_never_in_repr_or_errors() -> None:
    cfg = WireheadConfig(SWAP_CAP=1, MONGO_URI="mongodb://user:hunter2@h:1/?authSource=admin&tls=true")
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg)
    assert cfg.uri.endswith("authSource=admin&tls=true")  # passed through untouched
    with pytest.raises(ConfigError) as e:
        WireheadConfig(SWAP_CAP=1, MONGO_URI="http://user:hunter2@h:1/")
    assert "hunter2" not in str(e.value) and "MONGO_URI" in str(e.value)


def test_unknown_key_warns_with_nearest_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="wirehead.config"):
        cfg = WireheadConfig.load({"SWAP_CAP": 2, "SWAPCAP": 3})
    assert cfg.swap_cap == 2
    assert "SWAPCAP" in caplog.text and "did you mean SWAP_CAP" in caplog.text


@pytest.mark.parametrize(
    "text, key, allowed",
    [
        ("SWAP_CAP: 0\n", "SWAP_CAP", "integer >= 1"),
        ("SWAP_CAP: -1\n", "SWAP_CAP", "integer >= 1"),
        ("SWAP_CAP: 2.5\n", "SWAP_CAP", "integer >= 1"),
        ("SWAP_CAP: '10'\n", "SWAP_CAP", "integer >= 1"),
        ("SWAP_CAP: true\n", "SWAP_CAP", "integer >= 1"),
        ("SWAP_CAP: 5\nCHUNKSIZE: 0\n", "CHUNKSIZE", "from 1 to 15"),
        ("SWAP_CAP: 5\nCHUNKSIZE: 16\n", "CHUNKSIZE", "from 1 to 15"),
        ("SWAP_CAP: 5\nCHUNKSIZE: 100\n", "CHUNKSIZE", "from 1 to 15"),
        ("SWAP_CAP: 5\nSAMPLE: []\n", "SAMPLE", "non-empty list"),
        ("SWAP_CAP: 5\nSAMPLE: [a, a]\n", "SAMPLE", "unique"),
        ("SWAP_CAP: 5\nSAMPLE: image\n", "SAMPLE", "non-empty list"),
        ("SWAP_CAP: 5\nDBNAME: 'my.db'\n", "DBNAME", "database name"),
        ("SWAP_CAP: 5\nDBNAME: 'a b'\n", "DBNAME", "database name"),
        ("SWAP_CAP: 5\nDBNAME: ''\n", "DBNAME", "non-empty string"),
        ("SWAP_CAP: 5\nPORT: 70000\n", "PORT", "from 1 to 65535"),
        ("SWAP_CAP: 5\nPORT: 'x'\n", "PORT", "from 1 to 65535"),
        ("SWAP_CAP: 5\nCOMPRESSION: gzip\n", "COMPRESSION", "must be one of"),
        ("SWAP_CAP: 5\nREUSE_POLICY: sometimes\n", "REUSE_POLICY", "must be one of"),
        ("SWAP_CAP: 5\nGRACE_SECONDS: -1\n", "GRACE_SECONDS", "> 0"),
        ("SWAP_CAP: 5\nWRITE_COLLECTION: read\n", "COLLECTION", "different names"),
    ],
)
def test_invalid_values_name_key_value_file_and_allowed(tmp_path: Path, text: str, key: str, allowed: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        WireheadConfig.from_yaml(path)
    msg = str(e.value)
    assert key in msg and allowed in msg and str(path) in msg


def test_missing_required_key_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, "DBNAME: x\n")
    with pytest.raises(ConfigError, match=r"SWAP_CAP is required.*config.yaml"):
        WireheadConfig.from_yaml(path)


def test_missing_file_bad_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        WireheadConfig.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        WireheadConfig.from_yaml(write(tmp_path, "SWAP_CAP: [1,\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        WireheadConfig.from_yaml(write(tmp_path, "- 1\n- 2\n"))


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = write(tmp_path, "SWAP_CAP: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        WireheadConfig.from_yaml(path)


def test_config_is_immutable_and_replace_validates() -> None:
    cfg = WireheadConfig(SWAP_CAP=3)
    with pytest.raises(AttributeError):
        cfg.swap_cap = 4  # type: ignore[misc]
    assert cfg.replace(SWAP_CAP=4).swap_cap == 4
    with pytest.raises(ConfigError):
        cfg.replace(SWAP_CAP=0)


def test_compression_per_kind() -> None:
    cfg = WireheadConfig(SWAP_CAP=3, SAMPLE=["image", "label"], COMPRESSION={"label": "zstd"})
    assert cfg.compression_for("label") == "zstd" and cfg.compression_for("image") == "none"
    with pytest.raises(ConfigError, match="not in SAMPLE"):
        WireheadConfig(SWAP_CAP=3, SAMPLE=["image"], COMPRESSION={"mask": "zstd"})


# COMPRESSION settings checked by one validator (wirehead.compression.codecs_for): the config and encode
# refuse the same settings with the same words, and accept the same ones.
BAD_COMPRESSION = ["gzip", 3, ["zstd"], {"image": "gzip"}, {"mask": "zstd"}, {"label": None}, {"label": 1}]


@pytest.mark.parametrize("setting", BAD_COMPRESSION, ids=[repr(s) for s in BAD_COMPRESSION])
def test_config_and_encode_refuse_a_compression_setting_alike(setting: Any) -> None:
    with pytest.raises(ConfigError) as from_config:
        WireheadConfig(SWAP_CAP=1, SAMPLE=["image", "label"], COMPRESSION=setting)
    with pytest.raises(ValueError) as from_encode:
        encode((np.zeros(4, np.float32), np.zeros(4, np.uint8)), ["image", "label"], setting)
    said_by_config = str(from_config.value).split(" is invalid: ", 1)[1]
    said_by_encode = str(from_encode.value).split(" is invalid: ", 1)[1]
    assert said_by_config == said_by_encode


@pytest.mark.parametrize("setting", ["none", "zstd", "blosc2", {"label": "zstd"}, {"image": "lz4", "label": "none"}])
def test_config_and_encode_accept_a_compression_setting_alike(setting: Any) -> None:
    cfg = WireheadConfig(SWAP_CAP=1, SAMPLE=["image", "label"], COMPRESSION=setting)
    enc = encode((np.zeros(4, np.float32), np.zeros(4, np.uint8)), ["image", "label"], cfg.compression)
    assert [cfg.compression_for(k) for k in cfg.sample] == [
        setting if isinstance(setting, str) else setting.get(k, "none") for k in cfg.sample]
    assert len(enc.meta) == 2


# -- the keys are declared once (wirehead.config.KEYS) -------------------------------------------------


def test_readme_configuration_table_is_the_declared_one() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    assert table == config_table(), (
        "the README's Configuration table differs from wirehead.config.KEYS; paste the output of\n"
        "  python -c 'from wirehead.config import config_table; print(config_table(), end=\"\")'\n"
        "over the table")


def test_every_declared_key_is_one_attribute_in_order() -> None:
    attrs = [name for name in WireheadConfig.__annotations__ if name != "source"]
    assert attrs == [key.attr for key in KEYS]
    assert [f.name for f in dataclasses.fields(WireheadConfig) if f.name != "source"] == attrs


def test_defaults_are_the_declared_ones() -> None:
    cfg = WireheadConfig(SWAP_CAP=1)
    for key in KEYS:
        if key.default is not REQUIRED:
            assert getattr(cfg, key.attr) == key.default, key.name
        assert key.name in (WireheadConfig.__doc__ or ""), key.name
    assert cfg.node_cache_mb == 2048 and cfg.reader_cache_mb == 1024


@pytest.mark.parametrize("key", KEYS, ids=[key.name for key in KEYS])
def test_every_key_refuses_a_value_of_the_wrong_kind(tmp_path: Path, key: Any) -> None:
    """A YAML mapping is never a valid value (a COMPRESSION mapping must name SAMPLE kinds)."""
    text = "SWAP_CAP: 5\n" if key.name != "SWAP_CAP" else ""
    path = write(tmp_path, text + f"{key.name}: {{nope: 1}}\n")
    with pytest.raises(ConfigError) as e:
        WireheadConfig.from_yaml(path)
    msg = str(e.value)
    shown = "***" if key.name == "PASSWORD" else "{'nope': 1}"
    assert msg.startswith(f"{key.name}={shown} in config file {str(path)!r} is invalid: "), msg
