"""Security: URIs pass through, credentials stay secret, the local server is loopback-only, stored
bytes never run code, YAML is loaded safely, and authentication works against a real server.

The authentication tests start their own server with users and ``--auth`` (SecantusDB's SCRAM-SHA-256,
or mongod's when it is on PATH): first without auth to create the users, then again with ``--auth`` on
the same data directory.  Every process is stopped in ``finally``.
"""

from __future__ import annotations

import logging
import pickle
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import quote, quote_plus

import numpy as np
import pymongo
import pytest

from helpers import ROOT, child_env, clear_env_credentials, drop_database, trap_unpickling
from wirehead import (ConfigError, LocalMongo, MongoheadDataset, StoreError, StoreUnavailable, WireheadConfig,
                      WireheadGenerator, WireheadManager)
from wirehead.config import redact_uri
from wirehead.monitor import snapshot
from wirehead.server import free_port
from wirehead.store import Store
from wirehead.swapper import Swapper

pytestmark = pytest.mark.timeout(180)

# distinctive secrets, so a leak anywhere is found by a plain substring search
ADMIN_USER = "wh_admin"
ADMIN_PW = "Adm1n#Pw:q@7/Zx%"  # every character a URI must escape
APP_USER = "wh_app"
APP_PW = "AppPw-9f3kQ2vL"
SRC_USER = "wh_src"
SRC_PW = "SrcPw-4hT8wN1m"
SRC_DB = "wh_users"  # where SRC_USER is defined (its authSource)
SRC_CACHE = "wh_src_cache"  # the only database SRC_USER may write
PLAIN_PW = "PlainSecret-7Qx2"  # used where no server checks it


def forms(password: str) -> list[str]:
    """The password as typed and as it appears percent-encoded in a URI."""
    return sorted({password, quote_plus(password), quote(password, safe="")})


def assert_secret_free(text: str, *passwords: str, where: str = "") -> None:
    for pw in passwords:
        for form in forms(pw):
            assert form not in text, f"password {form!r} leaked in {where or 'text'}:\n{text[:3000]}"


@pytest.fixture(autouse=True)
def _no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_env_credentials(monkeypatch)


# ---------------------------------------------------------------------------------------------------
# an auth-enabled server
# ---------------------------------------------------------------------------------------------------


class _AuthMongo(LocalMongo):
    """LocalMongo that requires authentication (``--auth`` is the flag of both secantusd-py and mongod)."""

    def _command(self, exe: str, host: str = "127.0.0.1") -> list[str]:
        return [*super()._command(exe, host), "--auth"]


@dataclass
class AuthServer:
    server: LocalMongo
    admin_user: str = ADMIN_USER
    admin_password: str = ADMIN_PW

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return int(self.server.port)

    def uri(self, user: Optional[str] = None, password: Optional[str] = None, query: str = "") -> str:
        auth = f"{quote_plus(user)}:{quote_plus(password or '')}@" if user else ""
        return f"mongodb://{auth}{self.host}:{self.port}/{query}"


def start_auth_server(dbpath: Path) -> AuthServer:
    """Provision users on a fresh data directory, then restart the server there with ``--auth``."""
    plain = LocalMongo(dbpath, startup_timeout=60, auth=False)
    plain.start()
    try:
        client = pymongo.MongoClient(plain.uri, serverSelectionTimeoutMS=5000)
        try:
            client.admin.command("createUser", ADMIN_USER, pwd=ADMIN_PW, roles=[{"role": "root", "db": "admin"}])
            client.admin.command("createUser", APP_USER, pwd=APP_PW, roles=[{"role": "root", "db": "admin"}])
            client[SRC_DB].command("createUser", SRC_USER, pwd=SRC_PW,
                                   roles=[{"role": "readWrite", "db": SRC_CACHE}])
        finally:
            client.close()
    finally:
        plain.stop()
    server = _AuthMongo(dbpath, startup_timeout=60, auth=False)  # its own users, not LocalMongo's
    server.start()
    return AuthServer(server)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """A local server with users (admin, app, and one defined in another database) that requires auth."""
    srv: Optional[AuthServer] = None
    try:
        srv = start_auth_server(tmp_path_factory.mktemp("auth-mongo"))
        yield srv
    finally:
        if srv is not None:
            srv.server.stop()


def _small(cfg: WireheadConfig) -> WireheadConfig:
    return cfg.replace(SWAP_CAP=2, SAMPLE=["image", "label"], POLL_SECONDS=0.05, LEASE_SECONDS=2.0,
                       CONNECT_TIMEOUT=3.0, RETRY_DEADLINE=10.0, READ_TIMEOUT=10.0)


def _end_to_end(cfg: WireheadConfig) -> np.ndarray:
    """Push two samples, swap, read one back; drop the database; return what was read."""
    gen = WireheadGenerator(config=cfg, name="auth-gen")
    try:
        gen.push((np.full((2, 3), 7, np.float32), np.full((2, 3), 1, np.uint8)))
        gen.push((np.full((2, 3), 8, np.float32), np.full((2, 3), 2, np.uint8)))
    finally:
        gen.close()
    WireheadManager(config=cfg, name="auth-mgr").step()  # swaps unless the generator already did
    assert Store(cfg).state().read_gen == 0
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=10)
    try:
        got = np.stack([ds[0]["image"], ds[1]["image"]])
    finally:
        ds.close()
    return got


# ===================================================================================================
# URIs pass through untouched
# ===================================================================================================

URIS = [
    pytest.param(f"mongodb://ann:{PLAIN_PW}@db.example:27017/", id="credentials"),
    pytest.param(f"mongodb://ann:{quote_plus(ADMIN_PW)}@db.example:27017/?authSource=admin", id="quoted+authSource"),
    pytest.param(f"mongodb://ann:{PLAIN_PW}@db.example:27017/?authSource=users&authMechanism=SCRAM-SHA-256",
                 id="authMechanism"),
    pytest.param(f"mongodb://ann:{PLAIN_PW}@db.example:27017/?tls=true&tlsCAFile=/etc/ssl/ca.pem"
                 "&tlsAllowInvalidHostnames=false", id="tls"),
    pytest.param(f"mongodb://ann:{PLAIN_PW}@h1.example:27017,h2.example:27018,h3.example:27019/"
                 "?replicaSet=rs0&readPreference=primary&w=majority", id="replica-set"),
    pytest.param(f"mongodb+srv://ann:{PLAIN_PW}@cluster0.example.net/?retryWrites=true&w=majority", id="srv"),
    pytest.param("mongodb://h1.example,h2.example/?replicaSet=rs0&tls=true", id="no-credentials"),
]


class _Recorded(Exception):
    pass


@pytest.mark.parametrize("uri", URIS)
def test_uri_passes_through_to_pymongo_untouched(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = WireheadConfig(SWAP_CAP=2, MONGO_URI=uri)
    assert cfg.uri == uri
    store = Store(cfg)
    assert store.uri == uri
    seen: list[Any] = []

    def recorder(host: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(host)
        raise _Recorded()

    monkeypatch.setattr("wirehead.store.pymongo.MongoClient", recorder)
    with pytest.raises(_Recorded):
        store.client
    assert seen == [uri]  # the exact string goes to the driver: no parsing, no rebuilding
    # while every printable form hides the password
    for text in (repr(cfg), str(cfg), cfg.redacted_uri, store.redacted_uri):
        assert_secret_free(text, PLAIN_PW, ADMIN_PW, where="repr/redacted uri")
    if "@" in uri:
        assert "***" in cfg.redacted_uri


def test_uri_from_the_environment_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"mongodb://ann:{PLAIN_PW}@h1.example,h2.example/?replicaSet=rs0&authSource=admin&tls=true"
    monkeypatch.setenv("WIREHEAD_MONGO_URI", uri)
    cfg = WireheadConfig(SWAP_CAP=2, MONGOHOST="ignored.example")
    assert cfg.uri == uri and Store(cfg).uri == uri
    assert_secret_free(repr(cfg), PLAIN_PW)


def test_credentials_from_the_environment_with_mongohost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIREHEAD_MONGO_USERNAME", "ann@corp")
    monkeypatch.setenv("WIREHEAD_MONGO_PASSWORD", ADMIN_PW)
    cfg = WireheadConfig(SWAP_CAP=2, MONGOHOST="db.example", PORT=27999)
    assert cfg.uri == f"mongodb://ann%40corp:{quote_plus(ADMIN_PW)}@db.example:27999/"
    assert Store(cfg).uri == cfg.uri
    assert cfg.username is None and cfg.password is None  # nothing of the environment is stored in the config
    assert_secret_free(repr(cfg), ADMIN_PW)
    # keys in the config win over the environment
    cfg2 = WireheadConfig(SWAP_CAP=2, MONGOHOST="db.example", USERNAME="bob", PASSWORD=PLAIN_PW)
    assert cfg2.uri == f"mongodb://bob:{PLAIN_PW}@db.example:27017/"
    assert_secret_free(repr(cfg2), PLAIN_PW, ADMIN_PW)


# ===================================================================================================
# a password never appears in reprs, exceptions, logs, snapshots, the CLI or the widgets
# ===================================================================================================


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_password_never_in_reprs_or_connection_errors() -> None:
    cfg = WireheadConfig(SWAP_CAP=2, MONGO_URI=f"mongodb://ann:{quote_plus(ADMIN_PW)}@127.0.0.1:1/",
                         CONNECT_TIMEOUT=1)
    cfg_keys = WireheadConfig(SWAP_CAP=2, MONGOHOST="127.0.0.1", PORT=1, USERNAME="ann", PASSWORD=PLAIN_PW,
                              CONNECT_TIMEOUT=1)
    for c in (cfg, cfg_keys):
        gen = WireheadGenerator(config=c, name="g")
        mgr = WireheadManager(config=c, name="m")
        ds = MongoheadDataset(config=c, timeout=2)
        for obj in (c, gen, mgr, ds):
            assert_secret_free(repr(obj) + str(obj), ADMIN_PW, PLAIN_PW, where=f"repr of {type(obj).__name__}")
        errors: list[BaseException] = []
        for call in (Store(c).ping, lambda: gen.push((np.zeros(2), np.zeros(2))), mgr.step, lambda: len(ds)):
            with pytest.raises(StoreUnavailable) as info:
                call()
            errors.append(info.value)
        for e in errors:
            assert "***" in str(e)
            assert_secret_free(f"{e!s} {e!r} {e.args!r}", ADMIN_PW, PLAIN_PW, where="StoreUnavailable")
            assert e.__cause__ is None and e.__suppress_context__  # the driver's error is not chained on


def test_password_never_in_invalid_value_errors() -> None:
    with pytest.raises(ConfigError) as info:
        WireheadConfig(SWAP_CAP=2, MONGOHOST="h", PASSWORD=12345678)
    assert "12345678" not in str(info.value) and "PASSWORD=***" in str(info.value)
    with pytest.raises(ConfigError) as info:
        WireheadConfig(SWAP_CAP=2, MONGO_URI=f"http://ann:{PLAIN_PW}@h/")
    assert_secret_free(str(info.value), PLAIN_PW, where="MONGO_URI error")
    with pytest.raises(StoreError) as info2:
        Store(WireheadConfig(SWAP_CAP=2, MONGO_URI=f"mongodb://ann:{PLAIN_PW}@h:port/")).ping()
    assert_secret_free(str(info2.value), PLAIN_PW, where="invalid URI error")


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_password_never_in_logs(caplog: pytest.LogCaptureFixture, auth_server: AuthServer, dbname: str) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: wirehead's and pymongo's records alike
    bad = WireheadConfig(SWAP_CAP=2, MONGO_URI=f"mongodb://ann:{quote_plus(ADMIN_PW)}@127.0.0.1:1/",
                         CONNECT_TIMEOUT=1)
    with pytest.raises(StoreUnavailable):
        WireheadGenerator(config=bad).push((np.zeros(2), np.zeros(2)))
    wrong = _small(WireheadConfig(SWAP_CAP=2, MONGO_URI=auth_server.uri(APP_USER, "Wr0ng-" + APP_PW), DBNAME=dbname))
    with pytest.raises(StoreError):
        WireheadManager(config=wrong).step()
    good = _small(WireheadConfig(SWAP_CAP=2, MONGO_URI=auth_server.uri(ADMIN_USER, ADMIN_PW), DBNAME=dbname))
    try:
        _end_to_end(good)
        WireheadManager(config=good, name="logged-mgr").run(duration=0.2)  # logs the server it runs on
        snapshot(good).format_text()
    finally:
        drop_database(good)
    started = [r.getMessage() for r in caplog.records if "logged-mgr started on" in r.getMessage()]
    assert started and f"{ADMIN_USER}:***@127.0.0.1:{auth_server.port}" in started[0]  # the URI was logged
    assert any(r.name.startswith("pymongo") for r in caplog.records)  # the driver's records were captured too
    text = caplog.text + "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert_secret_free(text, ADMIN_PW, APP_PW, where="log records")


def test_password_never_in_snapshots(auth_server: AuthServer, dbname: str) -> None:
    cfg = _small(WireheadConfig(SWAP_CAP=2, MONGO_URI=auth_server.uri(ADMIN_USER, ADMIN_PW), DBNAME=dbname))
    try:
        _end_to_end(cfg)
        snap = snapshot(cfg)
        assert snap.swaps == 1 and snap.uri == f"mongodb://{ADMIN_USER}:***@127.0.0.1:{auth_server.port}/"
        for text in (snap.to_json(), snap.to_json(indent=2), snap.format_text(), str(snap), repr(snap)):
            assert_secret_free(text, ADMIN_PW, where="snapshot")
    finally:
        drop_database(cfg)


def _run_cli(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    env = child_env()
    for var in ("WIREHEAD_MONGO_URI", "WIREHEAD_MONGO_USERNAME", "WIREHEAD_MONGO_PASSWORD"):
        env.pop(var, None)
    proc = subprocess.Popen([sys.executable, "-m", "wirehead", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _cli_config(tmp_path: Path, uri: str, dbname: str) -> Path:
    path = tmp_path / "cache.yaml"
    path.write_text(f'MONGO_URI: "{uri}"\nDBNAME: "{dbname}"\nSWAP_CAP: 2\nSAMPLE: [image, label]\n'
                    "CONNECT_TIMEOUT: 1\nRETRY_DEADLINE: 5\n")
    return path


@pytest.mark.parametrize("verbosity", [[], ["-vv"]], ids=["quiet", "debug-log"])
@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_password_never_in_cli_output_unreachable(tmp_path: Path, verbosity: list[str]) -> None:
    port = free_port()
    cfg = _cli_config(tmp_path, f"mongodb://ann:{quote_plus(ADMIN_PW)}@127.0.0.1:{port}/", "cli_sec")
    t0 = time.monotonic()
    res = _run_cli([*verbosity, "status", str(cfg)])
    assert time.monotonic() - t0 < 30
    assert res.returncode == 2, res.stderr
    assert f"127.0.0.1:{port}" in res.stderr and "did not answer" in res.stderr, res.stderr
    assert "ann:***@" in res.stderr
    assert_secret_free(res.stdout + res.stderr, ADMIN_PW, where="CLI output")


@pytest.mark.parametrize("password,ok", [(ADMIN_PW, True), ("Wr0ng-" + APP_PW, False)], ids=["right", "wrong"])
@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_password_never_in_cli_output_auth_server(tmp_path: Path, auth_server: AuthServer, dbname: str,
                                                  password: str, ok: bool) -> None:
    user = ADMIN_USER if ok else APP_USER
    cfg = _cli_config(tmp_path, auth_server.uri(user, password), dbname)
    res = _run_cli(["-vv", "status", str(cfg)])
    assert_secret_free(res.stdout + res.stderr, ADMIN_PW, APP_PW, password, where="CLI output")
    if ok:
        assert res.returncode == 0, res.stderr
        assert f"{ADMIN_USER}:***@127.0.0.1:{auth_server.port}" in res.stdout
        res_json = _run_cli(["status", str(cfg), "--json"])
        assert res_json.returncode == 0 and "***" in res_json.stdout
        assert_secret_free(res_json.stdout + res_json.stderr, ADMIN_PW, where="CLI --json output")
    else:
        assert res.returncode == 2  # the CLI's exit code for setup errors (config, store refusals)
        assert "wirehead status: error: MongoDB at" in res.stderr and "authentication failed" in res.stderr, \
            res.stderr


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_password_never_in_dashboard(auth_server: AuthServer, dbname: str) -> None:
    from wirehead.notebook.dashboard import SwapDashboard  # an import error fails the test: never skipped
    cfg = _small(WireheadConfig(SWAP_CAP=2, MONGO_URI=auth_server.uri(ADMIN_USER, ADMIN_PW), DBNAME=dbname))
    down = WireheadConfig(SWAP_CAP=2, MONGO_URI=f"mongodb://ann:{quote_plus(PLAIN_PW)}@127.0.0.1:1/",
                          CONNECT_TIMEOUT=1)
    try:
        _end_to_end(cfg)
        for c, healthy in ((cfg, True), (down, False)):
            dash = SwapDashboard(config=c, autostart=False)
            try:
                snap = dash.refresh()
                assert (snap is not None) == healthy, dash.error
                bundle = dash._repr_mimebundle_()
                texts = [repr(dash), dash.format_text(), dash.title.value, dash.errors.value, dash.stats.value,
                         str(dash.error), *[v for v in bundle.values() if isinstance(v, str)]]
                if healthy:
                    assert "text/html" in bundle and "***" in bundle["text/html"]
                else:
                    assert "did not answer" in dash.errors.value
                assert_secret_free("\n".join(texts), ADMIN_PW, PLAIN_PW, where="dashboard")
            finally:
                dash.stop()
    finally:
        drop_database(cfg)


# -- known leaks (bugs in wirehead/config.py redact_uri; see the reasons) --------------------------------


def test_password_hidden_when_the_user_name_is_empty() -> None:
    uri = f"mongodb://:{PLAIN_PW}@127.0.0.1:1/"
    cfg = WireheadConfig(SWAP_CAP=2, MONGO_URI=uri, CONNECT_TIMEOUT=1)
    with pytest.raises(StoreError) as info:
        Store(cfg).ping()
    assert_secret_free(repr(cfg) + str(info.value), PLAIN_PW, where="repr/StoreError")


def test_tls_key_password_option_is_hidden() -> None:
    uri = f"mongodb://ann:{PLAIN_PW}@db.example/?tls=true&tlsCertificateKeyFile=/k.pem" \
          "&tlsCertificateKeyFilePassword=KeyFilePw-5Rz"
    cfg = WireheadConfig(SWAP_CAP=2, MONGO_URI=uri)
    assert cfg.uri == uri  # passes through untouched
    assert_secret_free(repr(cfg) + (redact_uri(uri) or ""), PLAIN_PW, "KeyFilePw-5Rz", where="repr")


def test_aws_session_token_option_is_hidden() -> None:
    token = "IQoJb3JpZ2luX2VjE-SessTok-8Kd"
    uri = (f"mongodb://AKIAEXAMPLE:{PLAIN_PW}@db.example/?authMechanism=MONGODB-AWS"
           f"&authMechanismProperties=AWS_SESSION_TOKEN:{token}")
    cfg = WireheadConfig(SWAP_CAP=2, MONGO_URI=uri)
    assert cfg.uri == uri  # passes through untouched
    encoded = uri.replace("AWS_SESSION_TOKEN:", "AWS_SESSION_TOKEN%3A")
    for text in (repr(cfg), redact_uri(uri) or "", redact_uri(encoded) or ""):
        assert token not in text and PLAIN_PW not in text, text
    assert "AWS_SESSION_TOKEN:***" in (redact_uri(uri) or "")


def test_missing_tls_ca_file_raises_store_error() -> None:
    cfg = WireheadConfig(SWAP_CAP=2, MONGO_URI=f"mongodb://ann:{PLAIN_PW}@127.0.0.1:1/?tls=true"
                                               "&tlsCAFile=/nonexistent/ca.pem", CONNECT_TIMEOUT=1)
    with pytest.raises(StoreError, match="ca.pem") as info:
        Store(cfg).ping()
    assert_secret_free(str(info.value), PLAIN_PW)


# ===================================================================================================
# the local server listens on 127.0.0.1 only
# ===================================================================================================


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_local_server_listens_on_loopback_only(tmp_path: Path) -> None:
    import psutil  # a test dependency: its absence fails the test rather than turning the check off
    server = LocalMongo(tmp_path / "data")
    try:
        server.start()
        assert server.pid is not None
        root = psutil.Process(server.pid)
        procs = [root, *root.children(recursive=True)]
        listening = [c for p in procs for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert any(c.laddr.port == server.port for c in listening), listening
        assert {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening
        assert server.uri.startswith(f"mongodb://wirehead:") and f"@127.0.0.1:{server.port}/" in server.uri
    finally:
        server.stop()


@pytest.mark.slow  # two server starts (the user is created once, without access control, on 127.0.0.1)
def test_local_server_requires_its_credential_also_on_another_address(tmp_path: Path) -> None:
    # a cluster node binds the embedded server to its own address: authentication must hold there too, and the
    # run that creates the user (without access control) must never listen on that address
    import os
    import stat

    from wirehead.server import CREDENTIAL_FILE, read_credential

    host = "127.0.0.2"  # not 127.0.0.1, reachable on every Linux loopback
    server = LocalMongo(tmp_path / "data", host=host)
    try:
        server.start()
        cred = read_credential(tmp_path / "data")
        assert cred is not None and cred["provisioned"] and f"@{host}:{server.port}/" in server.uri
        assert stat.S_IMODE(os.stat(tmp_path / "data" / CREDENTIAL_FILE).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700
        with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10000) as client:
            client.wh.t.insert_one({"x": 1})
        with pymongo.MongoClient(f"mongodb://{host}:{server.port}/", serverSelectionTimeoutMS=10000) as anon:
            with pytest.raises(pymongo.errors.OperationFailure):
                anon.wh.t.find_one()
        wrong = server.uri.replace(cred["password"], "guess")
        with pymongo.MongoClient(wrong, serverSelectionTimeoutMS=10000) as client:
            with pytest.raises(pymongo.errors.OperationFailure):
                client.wh.t.find_one()
        first = server.uri
    finally:
        server.stop()
    again = LocalMongo(tmp_path / "data", host=host)  # the same data, the same credential: no second set-up
    try:
        again.start()
        assert again.uri.split("@")[0] == first.split("@")[0]
        with pymongo.MongoClient(again.uri, serverSelectionTimeoutMS=10000) as client:
            assert client.wh.t.find_one({}, {"_id": 0}) == {"x": 1}
    finally:
        again.stop()


def test_a_server_without_authentication_is_refused_off_loopback() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        LocalMongo(auth=False, host="10.0.0.5")


# ===================================================================================================
# files in shared places, recorded processes (the two-user attacks are in test_shared_node.py)
# ===================================================================================================


def test_private_dir_refuses_links_files_and_other_users_directories(tmp_path: Path) -> None:
    import os

    from wirehead.safefs import UnsafePath, private_dir

    mine = tmp_path / "mine"
    assert private_dir(mine) == str(mine) and (mine.stat().st_mode & 0o777) == 0o700
    mine.chmod(0o755)  # ours, too open: narrowed
    private_dir(mine)
    assert (mine.stat().st_mode & 0o777) == 0o700
    (tmp_path / "link").symlink_to(mine)
    with pytest.raises(UnsafePath, match="symbolic link"):
        private_dir(tmp_path / "link")
    (tmp_path / "file").write_text("")
    with pytest.raises(UnsafePath, match="not a directory"):
        private_dir(tmp_path / "file")
    if os.geteuid() == 0:  # a directory another user made first
        other = tmp_path / "other"
        other.mkdir(mode=0o777)
        os.chown(other, 61_234, 61_234)
        with pytest.raises(UnsafePath, match="belongs to uid 61234"):
            private_dir(other)


def test_open_private_refuses_links_and_other_users_files(tmp_path: Path) -> None:
    import os

    from wirehead.safefs import UnsafePath, open_private, read_private, write_private

    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(UnsafePath, match="symbolic link"):
        open_private(tmp_path / "link", os.O_RDWR | os.O_CREAT)
    assert target.read_text() == "keep"
    write_private(tmp_path / "secret", "s3cret")
    assert read_private(tmp_path / "secret") == "s3cret" and (tmp_path / "secret").stat().st_mode & 0o077 == 0
    if os.geteuid() == 0:
        os.chown(target, 61_234, 61_234)
        with pytest.raises(UnsafePath, match="belongs to uid 61234"):
            read_private(target)


def test_a_recorded_process_is_signalled_only_while_its_start_time_matches() -> None:
    import signal as sig

    from wirehead.supervise import process_start, same_process, signal_recorded

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = process_start(proc.pid)
        assert start is not None and same_process(proc.pid, start)
        # the record of another process that had this pid before (another start time): no signal
        assert not same_process(proc.pid, start - 1) and not same_process(proc.pid, None)
        assert not signal_recorded(proc.pid, start - 1, sig.SIGTERM)
        assert proc.poll() is None
        assert signal_recorded(proc.pid, start, sig.SIGTERM)
        assert proc.wait(30) == -sig.SIGTERM
        assert not same_process(proc.pid, start)
    finally:
        proc.kill()
        proc.wait(30)


# ===================================================================================================
# decoding never unpickles and never calls torch.load
# ===================================================================================================


class _Evil:
    """Unpickling this creates the marker file (open(path, "w")): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return trap_unpickling(monkeypatch)


def _meta(payload: bytes, **changes: Any) -> dict[str, Any]:
    m = {"kind": "image", "dtype": "|u1", "shape": [len(payload)], "codec": "none", "offset": 0,
         "length": len(payload), "nbytes": len(payload), "torch": None}
    m.update(changes)
    return m


def _label(payload: bytes) -> dict[str, Any]:
    return {"kind": "label", "dtype": "|u1", "shape": [0], "codec": "none", "offset": len(payload),
            "length": 0, "nbytes": 0, "torch": None}


CRAFTED = [
    pytest.param(lambda p: [_meta(p, dtype="|O", shape=[len(p) // 8], nbytes=len(p) // 8 * 8), _label(p)],
                 r"corrupt sample: kind 'image'.*dtype '\|O' is not a numeric or bool dtype", id="object-dtype"),
    pytest.param(lambda p: [_meta(p, dtype="O"), _label(p)], r"dtype 'O' is not a numeric", id="object-dtype-O"),
    pytest.param(lambda p: [_meta(p, dtype="|V8", shape=[len(p) // 8]), _label(p)], r"is not a numeric",
                 id="void-dtype"),
    pytest.param(lambda p: [_meta(p, codec="pickle"), _label(p)], r"compression codec 'pickle'", id="pickle-codec"),
    pytest.param(lambda p: [_meta(p, torch="load"), _label(p)], r"torch dtype 'load' does not exist",
                 id="torch-load-name"),
    pytest.param(lambda p: p, r"corrupt sample: meta must be a list of dicts, got bytes", id="meta-is-a-pickle"),
    pytest.param(lambda p: [p, _label(p)], r"meta entry 0 is a bytes, not a dict", id="meta-entry-is-a-pickle"),
]


def _crafted_cache(cfg: WireheadConfig, payload: bytes, meta: Any) -> tuple[Store, int, int]:
    """A read generation of one good sample and one crafted sample; returns (store, good slot, crafted slot)."""
    gen = WireheadGenerator(config=cfg)
    try:
        gen.push((np.full((2, 2), 5, np.uint8), np.full((2, 2), 6, np.uint8)))
    finally:
        gen.close()
    store = Store(cfg)
    store.put_sample("crafted", [payload], {"meta": meta, "stored_bytes": len(payload),
                                            "raw_bytes": len(payload)})
    crafted_slot = store.commit("crafted", 0, cfg.swap_cap)
    assert crafted_slot == 1
    sw = Swapper(store)
    assert sw.step().swapped
    return store, 0, crafted_slot


def _payload(marker: Path) -> bytes:
    payload = pickle.dumps(_Evil(marker))
    # the payload is live: unpickling it really creates the marker
    pickle.loads(payload).close()
    assert marker.exists()
    marker.unlink()
    return payload


@pytest.mark.parametrize("make_meta,pattern", CRAFTED)
def test_crafted_document_cannot_run_code(make_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture, make_meta: Any, pattern: str) -> None:
    marker = tmp_path / "pwned"
    payload = _payload(marker)
    cfg = make_config(SWAP_CAP=2)
    _crafted_cache(cfg, payload, make_meta(payload))
    calls = trap_unpickling(monkeypatch)
    for output in ("numpy", "torch"):
        ds = MongoheadDataset(config=cfg, output=output, timeout=10)
        try:
            t0 = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="wirehead.reader"):
                got = ds[1]  # the crafted sample is skipped like a broken one; the good one is served instead
            assert time.monotonic() - t0 < 10
            assert int(got["image"][0, 0]) == 5 and ds.reader.skipped >= 1
            assert re.search(pattern, caplog.text), caplog.text
            assert int(ds[0]["image"][0, 0]) == 5  # the good sample is still served
            batch = ds[[0, 1]]
            assert all(int(s["image"][0, 0]) == 5 for s in batch.values())
        finally:
            ds.close()
    assert not marker.exists(), "a stored document ran code"
    assert calls == []


def test_pickle_bytes_are_served_as_plain_numbers(make_config: Any, tmp_path: Path,
                                                  no_unpickling: list[str]) -> None:
    """A valid meta over a pickle payload: the bytes come back as uint8 values, nothing is unpickled."""
    marker = tmp_path / "pwned"
    cfg = make_config(SWAP_CAP=2)
    # built before the trap fixture's effect matters: pickle.dumps is not trapped
    payload = pickle.dumps(_Evil(marker))
    _crafted_cache(cfg, payload, [_meta(payload), _label(payload)])
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=10)
    try:
        got = ds[1]["image"]
        assert got.dtype == np.uint8 and got.tobytes() == payload
        tensor = MongoheadDataset(config=cfg, output="torch", timeout=10)[1]["image"]
        assert bytes(tensor.numpy()) == payload
    finally:
        ds.close()
    assert not marker.exists() and no_unpickling == []


def test_undecodable_sample_is_skipped_like_a_broken_one(make_config: Any, tmp_path: Path) -> None:
    payload = _payload(tmp_path / "pwned")
    cfg = make_config(SWAP_CAP=2)
    _crafted_cache(cfg, payload, [_meta(payload, dtype="|O", shape=[len(payload) // 8],
                                        nbytes=len(payload) // 8 * 8), _label(payload)])
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=10)
    try:
        assert int(ds[1]["image"][0, 0]) == 5  # served the good sample in its place
    finally:
        ds.close()


# ===================================================================================================
# YAML is loaded safely
# ===================================================================================================


@pytest.mark.parametrize("tag", ["!!python/object/apply:builtins.open", "!!python/object/new:builtins.open"])
def test_yaml_python_tags_raise_config_error_and_run_nothing(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f'SWAP_CAP: 2\nSAMPLE: {tag} ["{marker}", "w"]\n')
    with pytest.raises(ConfigError, match=r"evil\.yaml.*is not valid YAML.*python/object"):
        WireheadConfig.load(path)
    assert not marker.exists()


# ===================================================================================================
# authentication against the real server
# ===================================================================================================


def test_auth_server_refuses_anonymous_clients(auth_server: AuthServer, dbname: str) -> None:
    cfg = _small(WireheadConfig(SWAP_CAP=2, MONGO_URI=auth_server.uri(), DBNAME=dbname))
    with pytest.raises(StoreError, match=r"authentication failed or not authorised .*Check USERNAME/PASSWORD"):
        WireheadGenerator(config=cfg).push((np.zeros(2), np.zeros(2)))


def test_right_credentials_work_end_to_end(auth_server: AuthServer, dbname: str) -> None:
    cfg = _small(WireheadConfig(SWAP_CAP=2, MONGO_URI=auth_server.uri(ADMIN_USER, ADMIN_PW), DBNAME=dbname))
    try:
        got = _end_to_end(cfg)
        assert sorted(int(a[0, 0]) for a in got) == [7, 8]
    finally:
        drop_database(cfg)


def test_credentials_from_the_environment_work_end_to_end(auth_server: AuthServer, dbname: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIREHEAD_MONGO_USERNAME", ADMIN_USER)
    monkeypatch.setenv("WIREHEAD_MONGO_PASSWORD", ADMIN_PW)  # needs quoting: # : @ / %
    cfg = _small(WireheadConfig(SWAP_CAP=2, MONGOHOST="127.0.0.1", PORT=auth_server.port, DBNAME=dbname))
    try:
        got = _end_to_end(cfg)
        assert sorted(int(a[0, 0]) for a in got) == [7, 8]
        assert_secret_free(repr(cfg), ADMIN_PW)
    finally:
        drop_database(cfg)


@pytest.mark.parametrize("user,password", [(APP_USER, "Wr0ng-" + APP_PW), ("nobody", APP_PW)],
                         ids=["wrong-password", "unknown-user"])
def test_wrong_credentials_raise_store_error_quickly(auth_server: AuthServer, dbname: str, user: str,
                                                     password: str) -> None:
    cfg = _small(WireheadConfig(SWAP_CAP=2, MONGO_URI=auth_server.uri(user, password), DBNAME=dbname))
    for call in (Store(cfg).ping, lambda: WireheadGenerator(config=cfg).push((np.zeros(2), np.zeros(2))),
                 lambda: len(MongoheadDataset(config=cfg, timeout=5)), lambda: snapshot(cfg)):
        t0 = time.monotonic()
        with pytest.raises(StoreError) as info:
            call()
        took = time.monotonic() - t0
        msg = str(info.value)
        assert not isinstance(info.value, StoreUnavailable), msg  # a refusal, not an outage
        assert "authentication failed" in msg and "Check USERNAME/PASSWORD, authSource" in msg, msg
        assert f"{user}:***@127.0.0.1:{auth_server.port}" in msg
        assert_secret_free(f"{msg} {info.value!r}", password, APP_PW, where="StoreError")
        assert took < cfg.connect_timeout + 3, f"took {took:.1f} s"


def test_auth_source_in_the_uri_passes_through(auth_server: AuthServer) -> None:
    """A user defined in another database authenticates only with authSource naming that database."""
    with_src = _small(WireheadConfig(SWAP_CAP=2, DBNAME=SRC_CACHE,
                                     MONGO_URI=auth_server.uri(SRC_USER, SRC_PW, f"?authSource={SRC_DB}")))
    without = with_src.replace(MONGO_URI=auth_server.uri(SRC_USER, SRC_PW))
    assert Store(with_src).uri.endswith(f"/?authSource={SRC_DB}")
    with pytest.raises(StoreError, match="authentication failed"):
        Store(without).ping()
    try:
        got = _end_to_end(with_src)
        assert sorted(int(a[0, 0]) for a in got) == [7, 8]
        # the user's role is limited to its cache database: another database is refused
        other = with_src.replace(DBNAME="wh_not_allowed")
        with pytest.raises(StoreError, match="not authorised|authentication failed|refused"):
            WireheadGenerator(config=other).push((np.zeros(2), np.zeros(2)))
    finally:
        admin = with_src.replace(MONGO_URI=auth_server.uri(ADMIN_USER, ADMIN_PW))
        drop_database(admin)
