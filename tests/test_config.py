"""WireheadConfig: every seed key, defaults, URI precedence, the keys declared once (KEYS), and the one catalogue
of config mistakes: each raises one ConfigError naming the key, the value, the file and what is allowed."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path
from typing import Any, Optional

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


# -- one catalogue of config mistakes: each raises one ConfigError naming the key, the value, the file and
# -- what is allowed (tests/test_bad_input.py covers servers that cannot be used)

VALID_YAML = """\
MONGOHOST: "localhost"
DBNAME: "bad_input"
PORT: 27017
SWAP_CAP: 10
SAMPLE: ["image", "label"]
CHUNKSIZE: 10
"""


def _yaml_with(**changes: Any) -> str:
    """VALID_YAML with keys replaced (value None: key removed); values are written as YAML text."""
    lines = []
    for line in VALID_YAML.splitlines():
        key = line.split(":", 1)[0]
        if key in changes:
            if changes[key] is not None:
                lines.append(f"{key}: {changes.pop(key)}")
            else:
                changes.pop(key)
        else:
            lines.append(line)
    lines += [f"{k}: {v}" for k, v in changes.items()]
    return "\n".join(lines) + "\n"


# (file text, what the message says: a regex)
BAD_FILES = [
    pytest.param(None, r"cfg\.yaml' does not exist; pass the path of a YAML config", id="missing-file"),
    pytest.param("SWAP_CAP: [1, 2\nSAMPLE: {", r"cfg\.yaml' is not valid YAML", id="bad-yaml"),
    pytest.param("SWAP_CAP: !!python/object/apply:os.system ['echo pwned']\n", r"cfg\.yaml' is not valid YAML",
                 id="unsafe-yaml"),
    pytest.param("- SWAP_CAP\n- 10\n", r"cfg\.yaml' must hold a mapping of KEY: value, got list", id="not-a-mapping"),
    pytest.param("", r"SWAP_CAP is required in config file .*cfg\.yaml.* but missing", id="empty-file"),
    pytest.param(_yaml_with(SWAP_CAP=None), r"SWAP_CAP is required in config file .*cfg\.yaml.* but missing",
                 id="no-SWAP_CAP"),
    pytest.param(_yaml_with(SWAP_CAP="null"), r"SWAP_CAP is required in config file .*cfg\.yaml.* but missing",
                 id="SWAP_CAP-null"),
]


@pytest.mark.parametrize("text,said", BAD_FILES)
def test_config_file_mistakes_name_the_file(tmp_path: Path, text: Optional[str], said: str) -> None:
    path = tmp_path / "cfg.yaml"
    if text is not None:
        path.write_text(text)
    for load in (WireheadConfig.from_yaml, WireheadConfig.load):
        with pytest.raises(ConfigError, match=said):
            load(path)


# (changed key, YAML value, "KEY=value" as the message shows it, what it says is allowed: a regex)
BAD_VALUES = [
    # SWAP_CAP out of range or not an integer
    ("SWAP_CAP", "0", "SWAP_CAP=0", "an integer >= 1"),
    ("SWAP_CAP", "-1", "SWAP_CAP=-1", "an integer >= 1"),
    ("SWAP_CAP", "2.5", "SWAP_CAP=2.5", "an integer >= 1"),
    ("SWAP_CAP", '"ten"', "SWAP_CAP='ten'", "an integer >= 1"),
    ("SWAP_CAP", "'10'", "SWAP_CAP='10'", "an integer >= 1"),
    ("SWAP_CAP", "true", "SWAP_CAP=True", "an integer >= 1"),
    # CHUNKSIZE: MiB per chunk, 1..15 (16 MiB is MongoDB's document limit)
    ("CHUNKSIZE", "0", "CHUNKSIZE=0", "an integer from 1 to 15"),
    ("CHUNKSIZE", "16", "CHUNKSIZE=16", "an integer from 1 to 15"),
    ("CHUNKSIZE", "100", "CHUNKSIZE=100", "an integer from 1 to 15"),
    # the server
    ("PORT", '"abc"', "PORT='abc'", "an integer from 1 to 65535"),
    ("PORT", "70000", "PORT=70000", "an integer from 1 to 65535"),
    ("MONGOHOST", "42", "MONGOHOST=42", "a non-empty string"),
    ("USERNAME", '""', "USERNAME=''", "a non-empty string"),
    ("PASSWORD", "3", "PASSWORD=***", "must be a string"),
    ("MONGO_URI", '"http://example.org"', "MONGO_URI", "must start with mongodb://"),
    # seconds: numbers > 0, finite
    ("CONNECT_TIMEOUT", '"fast"', "CONNECT_TIMEOUT='fast'", "a number of seconds > 0"),
    ("READ_TIMEOUT", "0", "READ_TIMEOUT=0", "a number of seconds > 0"),
    ("GRACE_SECONDS", "-1", "GRACE_SECONDS=-1", "a number of seconds > 0"),
    ("POLL_SECONDS", ".inf", "POLL_SECONDS=inf", "finite"),
    ("DEAD_AFTER_SECONDS", "1", "DEAD_AFTER_SECONDS=1", r"larger than HEARTBEAT_SECONDS \(2\.0\)"),
    # counts
    ("RETIRED_GENERATIONS", "-1", "RETIRED_GENERATIONS=-1", "an integer >= 0"),
    ("REUSE_CAP", "-2", "REUSE_CAP=-2", "an integer >= 0"),
    ("READER_CACHE_MB", "1.5", "READER_CACHE_MB=1.5", "an integer >= 0"),
    ("NODE_CACHE_MB", "-1", "NODE_CACHE_MB=-1", "an integer >= 0"),
    ("MIN_FILL", "11", "MIN_FILL=11", r"at most SWAP_CAP \(10\)"),
    ("SWAP_EARLY_MIN", "0", "SWAP_EARLY_MIN=0", "an integer >= 1"),
    ("SWAP_EARLY_MIN", "11", "SWAP_EARLY_MIN=11", r"at most SWAP_CAP \(10\)"),
    # choices
    ("COMPRESSION", '"gzip"', "COMPRESSION='gzip'", "must be one of"),
    ("COMPRESSION", "{image: gzip}", "COMPRESSION={'image': 'gzip'}", "codecs must be one of"),
    ("COMPRESSION", "{mask: zstd}", "COMPRESSION={'mask': 'zstd'}", r"names kinds not in SAMPLE \['image', 'label'\]"),
    ("REUSE_POLICY", '"sometimes"', "REUSE_POLICY='sometimes'", "must be one of"),
    ("VARIABLE_SHAPES", '"yes"', "VARIABLE_SHAPES='yes'", "must be true or false"),
    # SAMPLE: a non-empty list of unique names
    ("SAMPLE", "[]", "SAMPLE=[]", "a non-empty list of unique names"),
    ("SAMPLE", '["image", "image"]', "SAMPLE=['image', 'image']", r"names must be unique; repeated: \['image'\]"),
    ("SAMPLE", '"image"', "SAMPLE='image'", "a non-empty list of unique names"),
    ("SAMPLE", '["image", 3]', "SAMPLE=['image', 3]", "every name must be a non-empty string"),
    ("SAMPLE", '["a.b"]', "SAMPLE=['a.b']", "without '.'"),
    # DBNAME: MongoDB's database name rules
    ("DBNAME", '"bad.name"', "DBNAME='bad.name'", "a MongoDB database name"),
    ("DBNAME", '"has space"', "DBNAME='has space'", "a MongoDB database name"),
    ("DBNAME", '"a/b"', "DBNAME='a/b'", "a MongoDB database name"),
    ("DBNAME", '"$x"', "DBNAME='$x'", "a MongoDB database name"),
    ("DBNAME", '"' + "x" * 64 + '"', "DBNAME='" + "x" * 64 + "'", "at most 63 bytes"),
    ("DBNAME", '""', "DBNAME=''", "a non-empty string"),
    # collections
    ("READ_COLLECTION", '"write"', "must be four different names", "WRITE_COLLECTION"),
    ("WRITE_COLLECTION", '"read"', "must be four different names", "READ_COLLECTION"),
    ("TEMP_COLLECTION", '"system.x"', "TEMP_COLLECTION='system.x'", "may not .* start with 'system.'"),
    ("COUNTER_COLLECTION", '"a$b"', "COUNTER_COLLECTION='a$b'", r"may not contain \$"),
]


@pytest.mark.parametrize("key,value,named,allowed", BAD_VALUES,
                         ids=[f"{k}={v.strip(chr(34))[:12]}" for k, v, _, _ in BAD_VALUES])
def test_config_bad_value_names_key_value_file_and_allowed(tmp_path: Path, key: str, value: str, named: str,
                                                           allowed: str) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(_yaml_with(**{key: value}))
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        WireheadConfig.load(path)
    msg = str(info.value)
    assert named in msg, msg
    assert re.search(allowed, msg), msg
    assert "cfg.yaml" in msg, msg
    assert time.monotonic() - t0 < 1


def test_config_bad_value_as_keyword_names_key_without_file() -> None:
    with pytest.raises(ConfigError, match=r"^SWAP_CAP=0 is invalid: must be an integer >= 1$"):
        WireheadConfig(SWAP_CAP=0)
    with pytest.raises(ConfigError, match=r"^CHUNKSIZE=16 is invalid: must be an integer from 1 to 15$"):
        WireheadConfig.load({"SWAP_CAP": 1, "CHUNKSIZE": 16})
    with pytest.raises(ConfigError, match="not in SAMPLE"):
        WireheadConfig(SWAP_CAP=3, SAMPLE=["image"], COMPRESSION={"mask": "zstd"})


def test_config_positional_argument_is_refused() -> None:
    with pytest.raises(TypeError, match="keyword arguments only"):
        WireheadConfig("config.yaml")  # type: ignore[misc]
    with pytest.raises(ConfigError, match="config must be a path, a mapping or a WireheadConfig, got int"):
        WireheadConfig.load(42)  # type: ignore[arg-type]
