"""A shared node: another local user can neither read, poison, crash nor kill anything of yours.

Each attack runs as it would on a cluster node: two real, unprivileged uids (made for the test with
``setpriv --reuid``: no account needed, nothing to clean up in /etc), a *victim* that runs wirehead and an
*attacker* that plants files, records or connections first.  Root is needed to act as two users (CI is
root); elsewhere the tests skip and say so.

Kernel settings: the attacks on planted files and links depend on ``fs.protected_regular`` and
``fs.protected_symlinks`` (many cluster images leave both 0).  These sysctls are global, not per
namespace: ``unshare`` cannot give a test a private value, and writing them changes the whole machine.
The protections only apply where a sticky directory's owner differs from the planted file's owner, so the
tests use shared directories (the node cache's and ``$TMPDIR``) that are world-writable and sticky like
``/dev/shm`` and ``/tmp`` but owned by the attacker: the kernel then behaves as with both settings at 0,
whatever this machine's settings are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from helpers import ROOT, fill_self_checking, wait_until
from wirehead import nodecache
from wirehead.fetch import whole
from wirehead.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                 reason="acting as two users needs root and setpriv (util-linux)")]


def _unused_uids(n: int) -> list[int]:
    """``n`` uids that no account, process or file of the test directories has."""
    import pwd

    taken = {p.pw_uid for p in pwd.getpwall()} | {p.info["uids"].real for p in psutil.process_iter(["uids"])
                                                   if p.info["uids"] is not None}
    found = [u for u in range(61_000, 64_000) if u not in taken][:n]
    assert len(found) == n
    return found


@dataclass
class Node:
    """Two users of one machine: their homes, and the shared directories (node cache, $TMPDIR)."""

    root: Path
    victim: int
    attacker: int
    shm: Path
    tmp: Path
    python: str = sys.executable
    path: str = ""  # PYTHONPATH and PATH additions where the test's interpreter is not reachable by other users

    def home(self, uid: int) -> Path:
        return self.root / f"home-{uid}"

    def env(self, uid: int, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WIREHEAD_")}
        env.update(HOME=str(self.home(uid)), WIREHEAD_HOME=str(self.home(uid) / ".wirehead"), TMPDIR=str(self.tmp),
                   PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), self.path]), PYTHONDONTWRITEBYTECODE="1",
                   PATH=os.pathsep.join([str(self.root / "bin"), os.environ.get("PATH", "")]),
                   **{nodecache.DIR_ENV: str(self.shm)}, **extra)
        return env

    def command(self, uid: int, *argv: str) -> list[str]:
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]

    def run(self, uid: int, code: str, *args: str, timeout: float = 120, check: bool = True,
            **env: str) -> subprocess.CompletedProcess:
        """Run Python ``code`` as ``uid``; with ``check``, its exit must be 0."""
        res = subprocess.run(self.command(uid, self.python, "-c", textwrap.dedent(code), *args),
                             capture_output=True, text=True, timeout=timeout, env=self.env(uid, **env),
                             cwd=str(self.home(uid)))
        if check:
            assert res.returncode == 0, f"uid {uid} exit {res.returncode}:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
        return res

    def sleeper(self, uid: int) -> subprocess.Popen:
        """A process of ``uid`` that leads its own process group (as a server would): what an attack kills."""
        return subprocess.Popen(self.command(uid, "sleep", "300"), env=self.env(uid), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/", start_new_session=True)


def _sleep_pid(proc: subprocess.Popen) -> int:
    """The pid of a :meth:`Node.sleeper` once it runs ``sleep`` (setpriv execs it: same pid)."""
    return wait_until(lambda: psutil.Process(proc.pid).name() == "sleep" and proc.pid, 20, "the sleeper to start")


def _reachable_python(node: Node) -> None:
    """Make the test's Python (and the embedded server) runnable by the two users: where the interpreter of
    this virtual environment lives in a directory they cannot enter (a pyenv build under /root), they run the
    system's Python of the same version on this environment's packages, and ``secantusd-py`` through it.
    Where they cannot import this checkout or its packages even so, the tests skip and say why."""
    probe = subprocess.run(node.command(node.victim, "sh", "-c", 'exec "$0" -c pass', sys.executable),
                           capture_output=True, cwd="/")
    (node.root / "bin").mkdir()
    if probe.returncode != 0:
        system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
        if not os.access(system, os.X_OK):
            pytest.skip(f"{sys.executable} cannot be run by other users and there is no {system}")
        import site

        node.python, node.path = system, os.pathsep.join(site.getsitepackages())
        wrapper = node.root / "bin" / "secantusd-py"
        wrapper.write_text(f'#!/bin/sh\nexec {system} -m secantus "$@"\n')
        wrapper.chmod(0o755)
    imports = subprocess.run(node.command(node.victim, node.python, "-c", "import numpy, pymongo, secantus, wirehead"),
                             capture_output=True, text=True, env=node.env(node.victim), cwd="/")
    if imports.returncode != 0:  # e.g. a checkout or environment under a directory only root may enter
        pytest.skip(f"other users cannot import this checkout ({ROOT}) or its packages: {imports.stderr[-300:]}")


@pytest.fixture
def node() -> Iterator[Node]:
    """Two unused uids with a home each, and shared directories owned by the attacker (see the module doc)."""
    victim, attacker = _unused_uids(2)
    root = Path(tempfile.mkdtemp(prefix="wirehead-two-users-"))
    os.chmod(root, 0o755)
    n = Node(root, victim, attacker, root / "shm", root / "tmp")
    try:
        _reachable_python(n)
        for uid in (victim, attacker):
            n.home(uid).mkdir(mode=0o700)
            os.chown(n.home(uid), uid, uid)
        for shared in (n.shm, n.tmp):
            shared.mkdir()
            os.chmod(shared, 0o1777)
            os.chown(shared, attacker, attacker)
        yield n
    finally:
        for p in psutil.process_iter():  # whatever the test's two uids still run (servers, sleepers)
            with contextlib.suppress(psutil.Error):
                if p.uids().real in (victim, attacker):
                    p.kill()
        shutil.rmtree(root, ignore_errors=True)


def _fill(cfg: Any, n: int) -> None:
    fill_self_checking(cfg, n, (8, 8, 8))


#: The victim: a trainer that reads every sample of the read generation through the node cache.
READ_ALL = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from wirehead import WireheadConfig
from wirehead.reader import Reader
from wirehead.store import Store
from wirehead.synth import check_self_checking
cfg = WireheadConfig.load(json.loads(sys.argv[1]))
reader = Reader(Store(cfg), timeout=30, prefetch=False)
values = []
for i in range(len(reader)):
    s = reader.get([i])[0]
    try:
        values.append(check_self_checking(s["image"], s["label"]))
    except AssertionError:
        values.append(-1)
print("RESULT", json.dumps({"values": values, "node": reader.stats()["node"]}))
reader.close()
"""


def _read_all(node: Node, cfg: Any) -> dict[str, Any]:
    res = node.run(node.victim, READ_ALL, json.dumps(cfg.to_dict()))
    return json.loads(res.stdout.split("RESULT", 1)[1])


# -- the segment names of wirehead 0.x before this fix (what an attacker computes) ---------------------------
def _old_base(node: Node, cfg: Any, uri: str) -> Path:
    gen = Store(cfg).gen_doc(Store(cfg).state().read_gen)
    key = hashlib.sha1("|".join([uri, cfg.dbname, cfg.write_collection, cfg.read_collection]).encode()).hexdigest()[:12]
    mhash = hashlib.sha1("\n".join(gen.members).encode()).hexdigest()[:8]
    return node.shm / f"wirehead-{node.victim}-{key}-g{gen.gen}-{mhash}"


# -- 1. crash another user's trainer ---------------------------------------------------------------------------
def test_a_planted_lock_file_does_not_crash_another_users_trainer(node: Node, make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=3)
    _fill(cfg, 3)
    node.run(node.attacker, f"""
        import os
        for name in ("wirehead-{node.victim}-x.lock", "wirehead-{node.victim}-x.idx"):
            fd = os.open(os.path.join({str(node.shm)!r}, name), os.O_CREAT | os.O_RDWR, 0o666)
            os.fchmod(fd, 0o666)
    """)
    result = _read_all(node, cfg)
    assert sorted(result["values"]) == [0, 1, 2] and result["node"]


def test_a_squatted_node_cache_directory_is_refused_not_used(node: Node, make_config: Any) -> None:
    # the attacker makes the victim's directory first (and leaves it open to all): the victim must not use it
    cfg = make_config(SWAP_CAP=3)
    _fill(cfg, 3)
    node.run(node.attacker, f"""
        import os
        d = os.path.join({str(node.shm)!r}, "wirehead-{node.victim}")
        os.mkdir(d)
        os.chmod(d, 0o777)
    """)
    res = node.run(node.victim, READ_ALL, json.dumps(cfg.to_dict()))
    result = json.loads(res.stdout.split("RESULT", 1)[1])
    assert sorted(result["values"]) == [0, 1, 2] and not result["node"]
    assert f"belongs to uid {node.attacker}" in res.stderr and "READER_CACHE_MB" in res.stderr, res.stderr
    assert os.listdir(node.shm / f"wirehead-{node.victim}") == []  # nothing of the victim's went there


# -- 2. feed another user's trainer your own data ----------------------------------------------------------------
def test_a_planted_segment_cannot_feed_another_user_its_data(node: Node, make_config: Any, mongo_uri: str) -> None:
    cfg = make_config(SWAP_CAP=3)
    _fill(cfg, 3)
    store = Store(cfg)
    gen = store.gen_doc(store.state().read_gen)
    assert gen is not None
    # the attacker's bytes: a whole, valid sample (the one of slot 1), served as slot 0
    meta, chunks, total = whole(*store.get_samples([gen.members[1]])[gen.members[1]])
    head = json.dumps(meta).encode()
    payload = head + b"".join(bytes(c) for c in chunks)
    n = len(gen.members)
    idx = struct.pack("<8sqqqq", b"WHNODE01", n, 1 << 20, len(payload), 0)
    idx += struct.pack("<iidqqq", 2, 0, 0.0, 0, total, len(head)) + bytes(40 * (n - 1))
    planted = node.root / "planted"
    planted.mkdir()
    (planted / "idx").write_bytes(idx)
    (planted / "data").write_bytes(payload + bytes((1 << 20) - len(payload)))
    os.chmod(planted, 0o755)
    base = _old_base(node, cfg, mongo_uri)
    plant = textwrap.dedent(f"""
        import fcntl, os, shutil, time
        base, src = {str(base)!r}, {str(planted)!r}
        for suffix in (".lock", ".idx", ".data"):
            fd = os.open(base + suffix, os.O_CREAT | os.O_RDWR, 0o666)
            os.fchmod(fd, 0o666)
            os.close(fd)
        shutil.copyfile(src + "/idx", base + ".idx")
        shutil.copyfile(src + "/data", base + ".data")
        lock = os.open(base + ".lock", os.O_RDWR)
        fcntl.flock(lock, fcntl.LOCK_SH)  # "in use": no sweep deletes it
        print("PLANTED", flush=True)
        time.sleep(300)
    """)
    attacker = subprocess.Popen(node.command(node.attacker, node.python, "-c", plant), stdout=subprocess.PIPE,
                                text=True, env=node.env(node.attacker), cwd="/")
    try:
        assert attacker.stdout is not None and attacker.stdout.readline().strip() == "PLANTED"
        result = _read_all(node, cfg)
    finally:
        attacker.kill()
        attacker.communicate(timeout=30)
    assert sorted(result["values"]) == [0, 1, 2], f"the victim was served the attacker's sample: {result}"


# -- 3. destroy another user's file ---------------------------------------------------------------------------
def test_a_planted_link_cannot_make_another_user_overwrite_a_file(node: Node, make_config: Any, mongo_uri: str) -> None:
    cfg = make_config(SWAP_CAP=3)
    _fill(cfg, 3)
    precious = node.home(node.victim) / "thesis.tex"
    precious.write_text("four years of work\n")
    os.chown(precious, node.victim, node.victim)
    os.chmod(node.home(node.victim), 0o711)  # the attacker can name the file (not list or read the home)
    base = _old_base(node, cfg, mongo_uri)
    node.run(node.attacker, f"""
        import os
        os.symlink({str(precious)!r}, {str(base) + ".data"!r})
        os.symlink({str(precious)!r}, {str(node.shm / f"wirehead-{node.victim}")!r})
    """)
    result = _read_all(node, cfg)
    assert precious.read_bytes() == b"four years of work\n", "the victim overwrote its own file through a link"
    assert sorted(result["values"]) == [0, 1, 2]


# -- 4. recover another user's password from a name ------------------------------------------------------------
def test_no_name_depends_on_the_password(node: Node, make_config: Any, mongo_uri: str) -> None:
    cfg = make_config(SWAP_CAP=3)
    _fill(cfg, 3)
    # the same cache under two passwords has the same names: nothing in a name is derived from a secret
    uris = [f"mongodb://ann:{pw}@db.example:27017/?authSource=admin" for pw in ("correct-horse", "battery-staple")]
    keys = {nodecache.cache_key(u, cfg.dbname, (cfg.write_collection, cfg.read_collection)) for u in uris}
    assert len(keys) == 1, "the node cache's names change with the password: they are derived from it"
    # the session's server requires one (the embedded server's credential)
    assert "@" in mongo_uri, f"the session server {mongo_uri} has no password to protect"
    password = mongo_uri.split("@")[0].rsplit(":", 1)[1]
    # and what the attacker can list while the victim reads: no password, no hash of the URI that holds it
    script = READ_ALL.replace('print("RESULT"', 'import time; print("READY", flush=True); time.sleep(5); print("RESULT"')
    proc = subprocess.Popen(node.command(node.victim, node.python, "-c", script, json.dumps(cfg.to_dict())),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=node.env(node.victim),
                            cwd=str(node.home(node.victim)))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        listed = node.run(node.attacker, f"""
            import os
            for top, dirs, files in os.walk({str(node.shm)!r}):
                for name in dirs + files:
                    print(name)
        """).stdout
    finally:
        proc.communicate(timeout=60)
    full = "|".join([mongo_uri, cfg.dbname, cfg.write_collection, cfg.read_collection]).encode()
    digests = [h(data).hexdigest()[:12] for h in (hashlib.sha1, hashlib.sha256, hashlib.md5)
               for data in (full, mongo_uri.encode(), password.encode())]
    assert f"wirehead-{node.victim}" in listed
    for bad in [password, *digests]:
        assert bad not in listed, f"{bad!r} in what another user lists: {listed}"


# -- 5. kill another user's processes -------------------------------------------------------------------------
START_SHARED = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from wirehead import server
uri = server.shared_uri()
print("RESULT", json.dumps({"port": int(uri.rsplit(":", 1)[1].strip("/")), "pid": server.shared_record()["pid"]}))
"""

STOP_SHARED = "from wirehead import server; server.stop_shared()"


def test_planted_server_records_cannot_make_another_user_kill_a_process(node: Node) -> None:
    sleeper = node.sleeper(node.victim)
    try:
        pid = _sleep_pid(sleeper)
        start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        record = {"pid": pid, "start": start, "uri": "mongodb://127.0.0.1:1/", "engine": "secantus",
                  "dbpath": "/nonexistent/data", "home": "/nonexistent", "started": time.time()}
        node.run(node.attacker, f"""
            import json, os
            d = os.path.join({str(node.tmp)!r}, "wirehead-{node.victim}", "shared-servers")
            os.makedirs(d)
            for p in (d, os.path.dirname(d)):
                os.chmod(p, 0o777)
            with open(os.path.join(d, "{pid}.json"), "w") as f:
                f.write({json.dumps(record)!r})
            os.chmod(os.path.join(d, "{pid}.json"), 0o666)
        """)
        res = node.run(node.victim, START_SHARED)
        try:
            assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE, \
                f"the victim's process {pid} was killed by a planted record:\n{res.stderr[-3000:]}"
            assert "not using the list of shared servers" in res.stderr, res.stderr
        finally:
            node.run(node.victim, STOP_SHARED)
    finally:
        sleeper.kill()
        sleeper.wait(30)


# -- 6. read or drop another user's cache through the embedded server --------------------------------------------
def test_another_user_cannot_use_the_embedded_server(node: Node) -> None:
    res = node.run(node.victim, START_SHARED + textwrap.dedent("""
        import pymongo
        pymongo.MongoClient(uri).wirehead.write.insert_one({"_id": "secret", "data": b"victim"})
    """))
    port = json.loads(res.stdout.split("RESULT", 1)[1])["port"]
    try:
        attack = node.run(node.attacker, f"""
            import pymongo
            from pymongo.errors import OperationFailure
            client = pymongo.MongoClient("mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=10000)
            done = []
            for what, call in [("list", lambda: client.list_database_names()),
                               ("read", lambda: client.wirehead.write.find_one({{}})),
                               ("insert", lambda: client.wirehead.write.insert_one({{"x": 1}})),
                               ("drop", lambda: client.drop_database("wirehead"))]:
                try:
                    call()
                    done.append(what)
                except OperationFailure:
                    pass
            print("DONE", done)
        """)
        assert "DONE []" in attack.stdout, attack.stdout
        assert (node.home(node.victim) / ".wirehead" / "data" / "credential.json").stat().st_mode & 0o077 == 0
    finally:
        node.run(node.victim, STOP_SHARED)


# -- 7. a stale record (pid reused) never leads to a wait or a signal --------------------------------------------
STALE = """
import json, subprocess, sys, time
from pathlib import Path
from wirehead import server
home = server.wirehead_home()
home.mkdir(mode=0o700, exist_ok=True)
pid = int(sys.argv[1])
(home / "server.json").write_text(json.dumps({"uri": "mongodb://127.0.0.1:1/", "pid": pid, "engine": "secantus",
                                              "dbpath": str(home / "data"), "started": time.time() - 1e6}))
status = subprocess.run([sys.executable, "-m", "wirehead", "server", "status"], capture_output=True, text=True)
stop = subprocess.run([sys.executable, "-m", "wirehead", "server", "stop"], capture_output=True, text=True)
(home / "server.json").write_text(json.dumps({"uri": "mongodb://127.0.0.1:1/", "pid": pid, "start": 1,
                                              "engine": "secantus", "dbpath": str(home / "data"), "started": 0}))
t0 = time.monotonic()
uri = server.shared_uri()
took = time.monotonic() - t0
server.stop_shared()
print("RESULT", json.dumps({"status": [status.returncode, status.stdout], "stop": [stop.returncode, stop.stdout],
                            "took": took}))
"""


def test_a_stale_server_record_never_signals_the_process_that_has_its_pid_now(node: Node) -> None:
    sleeper = node.sleeper(node.victim)  # an unrelated process of the user that has the recorded pid now
    try:
        pid = _sleep_pid(sleeper)
        res = node.run(node.victim, STALE, str(pid), timeout=180)
        result = json.loads(res.stdout.split("RESULT", 1)[1])
        assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE, \
            f"process {pid} was signalled through a stale record: {result}\n{res.stderr[-3000:]}"
        assert result["status"][0] == 3 and "no shared local server is running" in result["status"][1], result
        assert "no shared local server was running" in result["stop"][1], result
        assert result["took"] < 60  # a new server, not ~13 s of pings and "frozen"
    finally:
        sleeper.kill()
        sleeper.wait(30)
