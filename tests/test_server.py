"""LocalMongo (the embedded default): start, restart on the same data, stop with nothing left behind,
and the one shared server that separate processes meet on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from helpers import child_env, freeze_group
from wirehead import LocalMongo, ServerNotFound
from wirehead.server import find_engine, shared_record, shared_uri, stop_shared
from wirehead.server import ping_uri


def _listening_addresses(pid: int) -> set[str]:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    return {c.laddr.ip for p in procs for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_start_restart_same_dir_keeps_data_and_stop_leaves_nothing(tmp_path: Path) -> None:
    import pymongo

    data = tmp_path / "data"
    with LocalMongo(data) as server:
        pid = server.pid
        assert server.uri.startswith("mongodb://wirehead:") and f"@127.0.0.1:{server.port}/" in server.uri
        assert _listening_addresses(pid) == {"127.0.0.1"}  # loopback only
        client = pymongo.MongoClient(server.uri)
        client.t.c.insert_one({"_id": 1, "v": "kept"})
        client.close()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with LocalMongo(data) as again:
        client = pymongo.MongoClient(again.uri)
        assert client.t.c.find_one({"_id": 1})["v"] == "kept"
        client.close()
        uri = again.uri
    assert not ping_uri(uri, timeout=0.5)
    assert data.exists()  # a given directory survives


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_temporary_directory_is_removed() -> None:
    server = LocalMongo().start()
    path = server.dbpath
    assert path is not None and path.exists()
    server.stop()
    server.stop()  # twice is fine
    assert not path.exists()


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_stops_when_the_caller_fails(tmp_path: Path) -> None:
    server = LocalMongo(tmp_path / "d")
    with pytest.raises(RuntimeError, match="boom"):
        with server:
            pid = server.pid
            raise RuntimeError("boom")
    assert not server.running
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_clear_error_when_no_server_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.raises(ServerNotFound, match=r"pip install 'wirehead\[local\]'"):
        find_engine()


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_separate_processes_meet_on_one_shared_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    script = textwrap.dedent("""
        import json, sys
        from wirehead import WireheadConfig
        from wirehead.store import Store
        store = Store(WireheadConfig(SWAP_CAP=1, DBNAME="shared_t"))   # no host: the embedded default
        store.ensure_schema()
        print(json.dumps({"uri": store.uri}))
    """)
    env = child_env(WIREHEAD_HOME=str(home))
    env.pop("WIREHEAD_MONGO_URI", None)
    try:
        procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(3)]
        uris = {json.loads(p.communicate(timeout=120)[0])["uri"] for p in procs}
        assert len(uris) == 1, uris  # three processes, one server
        record = json.loads((home / "server.json").read_text())
        assert record["uri"] in uris and psutil.pid_exists(record["pid"])
        # a stale record (dead pid) is replaced by a fresh server
        os.environ["WIREHEAD_HOME"], old = str(home), os.environ["WIREHEAD_HOME"]
        try:
            assert shared_record() is not None
            stopped = stop_shared()
            assert stopped is not None and not ping_uri(stopped["uri"], timeout=0.5)
            (home / "server.json").write_text(json.dumps({**record, "pid": 2 ** 22 + 17}))
            assert shared_record() is None
            fresh = shared_uri()
            assert ping_uri(fresh) and shared_record()["uri"] == fresh
        finally:
            stop_shared()
            os.environ["WIREHEAD_HOME"] = old
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_private_server_does_not_outlive_an_owner_killed_by_sigkill(tmp_path: Path) -> None:
    import signal

    script = "from wirehead import LocalMongo; import time; s = LocalMongo().start(); print(s.pid, s.uri, flush=True); time.sleep(600)"
    owner = subprocess.Popen([sys.executable, "-c", script], env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        pid_s, uri = owner.stdout.readline().split()
        group = [psutil.Process(int(pid_s)), *psutil.Process(int(pid_s)).children(recursive=True)]
        assert ping_uri(uri)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        gone, alive = psutil.wait_procs(group, timeout=15)
        assert not alive, f"server processes outlived their owner: {alive}"
        assert not ping_uri(uri, timeout=0.5)
    finally:
        owner.kill()
        owner.wait(10)
        owner.stdout.close()


@pytest.mark.slow
def test_a_running_store_follows_the_shared_server_to_a_new_port_and_a_frozen_one_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from wirehead import StoreUnavailable, WireheadConfig
    from wirehead.store import Store

    monkeypatch.setenv("WIREHEAD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WIREHEAD_MONGO_URI", raising=False)
    cfg = WireheadConfig(SWAP_CAP=2, DBNAME="follow_t", RETRY_DEADLINE=30.0, CONNECT_TIMEOUT=5.0)
    shared_uri()  # its first start (which also creates its user) is not what this test times
    store = Store(cfg)  # no host: the shared embedded server
    try:
        store.ensure_schema()
        first = store.uri
        stop_shared()  # the shared server dies; the next script starts another, on a new port, same data
        second = shared_uri()
        assert second != first
        assert store.state().write_gen == 0  # the running store found it (the cache survived: same data)
        assert store.uri == second
        # frozen: its process lives but does not answer; the next script is told, no second server starts
        pid = shared_record()["pid"]
        freeze_group(pid)
        try:
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable, match=rf"pid {pid}.*does not answer.*kill -CONT"):
                Store(cfg).ping()
            assert time.monotonic() - t0 < 15
        finally:
            os.killpg(pid, signal.SIGCONT)
        assert Store(cfg).uri == second
    finally:
        store.close()
        stop_shared()


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_a_shared_server_whose_home_was_deleted_is_stopped_not_orphaned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    import shutil
    import signal

    home = tmp_path / "home"
    monkeypatch.setenv("WIREHEAD_HOME", str(home))
    first = shared_uri()
    pid = shared_record()["pid"]
    try:
        shutil.rmtree(home)  # the user deletes ~/.wirehead while the server runs
        assert shared_record() is None
        second = shared_uri()  # the next script: the orphan is stopped, a fresh server starts
        assert second != first and ping_uri(second)
        deadline = time.monotonic() + 15
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        # and `wirehead server stop` also sees a server whose home is gone
        pid2 = shared_record()["pid"]
        shutil.rmtree(home)
        stopped = stop_shared()
        assert stopped is not None and stopped["pid"] == pid2 and not ping_uri(second, timeout=0.5)
    finally:
        stop_shared()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # only if the test failed with it still running


def _answering_pid(uri: str) -> int:
    import pymongo

    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        return int(client.admin.command("serverStatus")["pid"])
    finally:
        client.close()


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_a_port_another_server_answers_on_is_never_taken_for_the_one_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two starts can draw the same free port: the loser's server cannot bind, but the winner answers the
    loser's ping.  Each LocalMongo must talk to its own process, never to a stranger on its port."""
    import wirehead.server as server_module

    with LocalMongo(tmp_path / "a") as first:
        taken = first.port
        # a fixed port someone else holds: a clear error, not a handle on the other server
        with pytest.raises(RuntimeError, match=rf"port {taken}.*another server"):
            LocalMongo(tmp_path / "b", port=taken, startup_timeout=30).start()
        # a drawn port that turns out taken: another one is drawn, and the server is ours
        real = server_module.free_port
        draws = iter([taken])
        monkeypatch.setattr(server_module, "free_port", lambda *host: next(draws, None) or real(*host))
        with LocalMongo(tmp_path / "c", startup_timeout=30) as second:
            assert second.port != taken
            assert os.getpgid(_answering_pid(second.uri)) == second.pid
        assert os.getpgid(_answering_pid(first.uri)) == first.pid


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_a_process_paused_while_it_starts_the_shared_server_stalls_no_other_script(tmp_path: Path) -> None:
    """One script holds the shared server's lock while it starts (or stops) the server; suspended there
    (Ctrl-Z, SIGSTOP), it kept every other script of the user waiting for good.  Now they wait a bounded time
    and then say which process holds the lock."""
    import signal

    home = tmp_path / "home"
    home.mkdir()
    env = child_env(WIREHEAD_HOME=str(home))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import time
        from wirehead import server
        with server._locked():
            print("LOCKED", flush=True)
            time.sleep(120)
        """)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"  # type: ignore[union-attr]
        holder.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        waiter = subprocess.run([sys.executable, "-c", textwrap.dedent("""
            from wirehead import server
            server._LOCK_SECONDS = 2.0  # 210 s by default: a start may take three tries of 60 s
            server.shared_uri()
            """)], env=env, capture_output=True, text=True, timeout=90)
        took = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait(10)
    assert waiter.returncode != 0 and took < 60, (took, waiter.stderr[-2000:])
    message = waiter.stderr.strip().splitlines()[-1]
    assert "WaitTimeout" in message and f"pid {holder.pid}" in message and "server.lock" in message, message
