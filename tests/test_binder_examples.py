"""Binder files and examples: the environment parses, binder/start launches mongod on loopback and
hands over, the example scripts parse, the Python examples import, and the one-machine examples run
end to end against the test server with every process gone afterwards.

binder/start is run with a stub ``mongod`` (a Python script that records its arguments and listens
on the port it is given), so no real MongoDB and no network are needed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

import psutil
import pytest
import yaml

from helpers import ROOT, child_env, drop_database, gone
from wirehead.server import free_port

pytestmark = pytest.mark.slow  # slow: real processes, kernels or browsers for long; `-m "not slow"` skips

BINDER = ROOT / "binder"
START = BINDER / "start"
EXAMPLES = ROOT / "examples"

#: The handed-over command: prints what it got and exits with a code of its own.
HANDOVER = [sys.executable, "-c",
            "import os, sys; print('URI=' + str(os.environ.get('WIREHEAD_MONGO_URI'))); "
            "print('PID=%d' % os.getpid()); sys.exit(7)"]

STUB_MONGOD = """#!{python}
# stub mongod for tests: records its arguments, then listens on --bind_ip:--port (at most 60 s)
import json, os, socket, sys, time
args = sys.argv[1:]
record = os.environ["STUB_MONGOD_RECORD"]
with open(record + ".tmp", "w") as f:
    json.dump({{"args": args, "pid": os.getpid()}}, f)
os.replace(record + ".tmp", record)
if os.environ.get("STUB_MONGOD_FAIL"):
    sys.exit(3)
host = args[args.index("--bind_ip") + 1].split(",")[0]
port = int(args[args.index("--port") + 1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(16)
s.settimeout(0.5)
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        c, _ = s.accept()
        c.close()
    except socket.timeout:
        pass
"""


def _kill_pid(pid: Optional[int]) -> None:
    if pid is None:
        return
    try:
        p = psutil.Process(pid)
        p.kill()
        p.wait(5)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        pass


def _run_start(cmd: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str, str, int]:
    """Run binder/start CMD; return (exit code, stdout, stderr, pid of start)."""
    proc = subprocess.Popen([str(START), *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _handed(out: str) -> tuple[str, int]:
    lines = dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
    return lines["URI"], int(lines["PID"])


@pytest.fixture
def stub_mongod(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A directory with a stub ``mongod``, and the environment to run binder/start with it."""
    bindir = tmp_path / "stubbin"
    bindir.mkdir()
    stub = bindir / "mongod"
    stub.write_text(STUB_MONGOD.format(python=sys.executable))
    stub.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    record = tmp_path / "mongod-args.json"
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(home),
           "STUB_MONGOD_RECORD": str(record), "WIREHEAD_BINDER_PORT": str(free_port()),
           "WIREHEAD_BINDER_TIMEOUT": "30"}
    info: dict[str, Any] = {"env": env, "home": home, "record": record}
    try:
        yield info
    finally:
        if record.exists():
            _kill_pid(json.loads(record.read_text())["pid"])


# -- binder/ ----------------------------------------------------------------------------------
def test_environment_yml_parses_and_names_mongodb() -> None:
    env = yaml.safe_load((BINDER / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    deps = env["dependencies"]
    names = [d.split("=")[0].split(" ")[0] for d in deps if isinstance(d, str)]
    assert "mongodb" in names and "pip" in names
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "torch" in pip
    post = (BINDER / "postBuild").read_text()
    assert '.[notebook' in post and "pip install" in post
    for script in (START, BINDER / "postBuild"):
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"


def test_start_launches_mongod_on_loopback_and_hands_over(stub_mongod: dict[str, Any]) -> None:
    env, home = stub_mongod["env"], stub_mongod["home"]
    code, out, err, start_pid = _run_start(HANDOVER, env)
    assert code == 7, (out, err)
    uri, pid = _handed(out)
    assert pid == start_pid, "the command must replace the script (exec), not run as its child"

    args = json.loads(stub_mongod["record"].read_text())["args"]
    assert args[args.index("--bind_ip") + 1] == "127.0.0.1"
    assert not any("0.0.0.0" in a or a == "--bind_ip_all" for a in args), args
    port = int(args[args.index("--port") + 1])
    assert port == int(env["WIREHEAD_BINDER_PORT"])
    assert uri == f"mongodb://127.0.0.1:{port}/"
    dbpath = Path(args[args.index("--dbpath") + 1])
    assert dbpath == home / ".wirehead-binder" / "db" and dbpath.is_dir()
    assert Path(args[args.index("--logpath") + 1]).parent == home / ".wirehead-binder"
    # the server is still there for the notebooks after the hand-over
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_start_takes_the_next_port_when_the_first_is_busy(stub_mongod: dict[str, Any]) -> None:
    env = stub_mongod["env"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        env["WIREHEAD_BINDER_PORT"] = str(taken)
        code, out, err, _ = _run_start(HANDOVER, env)
    assert code == 7, (out, err)
    args = json.loads(stub_mongod["record"].read_text())["args"]
    port = int(args[args.index("--port") + 1])
    assert port > taken
    assert _handed(out)[0] == f"mongodb://127.0.0.1:{port}/", err


@contextlib.contextmanager
def _two_ports() -> Iterator[int]:
    """A free port that a socket listens on, and the next one that a second socket holds without listening
    (as an outgoing connection's port would: nothing answers on it, yet nobody else can bind it), while the
    block runs; yields the first port.  Both sockets are the ones that hold the ports (a retry makes new ones:
    a socket replaced inside a loop was closed on return, once, in CI, and mongod then took the "taken" port)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as listening, socket.socket() as bound:
            try:
                listening.bind(("127.0.0.1", port))
                bound.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            listening.listen(1)
            yield port
            return
    pytest.skip("found no two free ports in a row")


def test_start_moves_on_when_mongod_finds_its_port_taken(stub_mongod: dict[str, Any]) -> None:
    env = stub_mongod["env"]
    with _two_ports() as taken:
        env["WIREHEAD_BINDER_PORT"] = str(taken)
        code, out, err, _ = _run_start(HANDOVER, env)
    assert code == 7, (out, err)
    args = json.loads(stub_mongod["record"].read_text())["args"]
    port = int(args[args.index("--port") + 1])
    assert port > taken + 1, err
    assert _handed(out)[0] == f"mongodb://127.0.0.1:{port}/", err
    assert f"port {taken + 1} was taken" in err


def test_start_hands_over_without_uri_when_mongod_dies(stub_mongod: dict[str, Any]) -> None:
    env = dict(stub_mongod["env"], STUB_MONGOD_FAIL="1")
    t0 = time.monotonic()
    code, out, err, _ = _run_start(HANDOVER, env)
    assert code == 7, (out, err)
    assert _handed(out)[0] == "None"
    assert "exited" in err and "embedded default" in err
    assert time.monotonic() - t0 < 20, "a dead mongod must be noticed, not waited for until the deadline"


def test_start_keeps_a_uri_that_is_already_set(stub_mongod: dict[str, Any]) -> None:
    env = dict(stub_mongod["env"], WIREHEAD_MONGO_URI="mongodb://db.example:27017/")
    code, out, err, _ = _run_start(HANDOVER, env)
    assert code == 7, (out, err)
    assert _handed(out)[0] == "mongodb://db.example:27017/"
    assert not stub_mongod["record"].exists(), "no mongod may be started when a URI is given"


def test_start_without_mongod_still_hands_over(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "env", "sleep", "mkdir", "cat"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    assert shutil.which("mongod", path=str(bindir)) is None
    home = tmp_path / "home"
    home.mkdir()
    code, out, err, start_pid = _run_start(HANDOVER, {"PATH": str(bindir), "HOME": str(home)})
    assert code == 7, (out, err)
    uri, pid = _handed(out)
    assert uri == "None" and pid == start_pid
    assert "no mongod" in err


# -- examples/ --------------------------------------------------------------------------------
SHELL_SCRIPTS = sorted([*EXAMPLES.rglob("*.sh"), *EXAMPLES.rglob("*.sbatch"), START, BINDER / "postBuild"])
PY_FILES = sorted(EXAMPLES.rglob("*.py"))


def test_the_expected_examples_exist() -> None:
    names = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.is_file()}
    for want in ("slurm/mongodb.sbatch", "slurm/generators.sbatch", "slurm/train.sbatch", "slurm/config.yaml",
                 "slurm/my_synth.py", "slurm/train.py", "local/run_local.py", "unit/config.yaml",
                 "unit/manager.py", "unit/generator.py", "unit/loader.py", "unit/test.sh"):
        assert want in names


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_scripts_parse(script: Path) -> None:
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("script", sorted(EXAMPLES.rglob("*.sbatch")), ids=lambda p: p.name)
def test_sbatch_scripts_say_what_to_change(script: Path) -> None:
    text = script.read_text()
    head = text[:text.index("\n#SBATCH --")]
    assert "CHANGE FOR A NEW CLUSTER" in head
    for word in ("--partition", "--account", "WIREHEAD_SHARED"):
        assert word in head, f"{script.name} does not say how to change {word}"
    assert "0.0.0.0" not in text.replace("never to 0.0.0.0", "")


def test_generator_array_job_seeds_from_the_task_id() -> None:
    text = (EXAMPLES / "slurm" / "generators.sbatch").read_text()
    assert "#SBATCH --array=0-63" in text
    assert "--factory my_synth:factory" in text


def _import(path: Path) -> Any:
    """Import an example file under a unique module name with its directory on sys.path."""
    name = f"_example_{path.parent.name}_{path.stem}_{uuid.uuid4().hex[:6]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import does: dataclasses (and pickling) look their module up there
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
        sys.modules.pop(name, None)
    return module


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_python_examples_import_without_running(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIREHEAD_MONGO_URI", "mongodb://127.0.0.1:1/")  # nothing may connect on import
    _import(path)


def test_example_configs_load() -> None:
    from wirehead import WireheadConfig

    for rel in ("slurm/config.yaml", "local/config.yaml", "unit/config.yaml"):
        cfg = WireheadConfig.from_yaml(EXAMPLES / rel)
        assert cfg.mongohost is None and cfg.mongo_uri is None, f"{rel} must leave the server to the jobs"
    assert WireheadConfig.from_yaml(EXAMPLES / "slurm" / "config.yaml").sample == ("image", "label")
    assert WireheadConfig.from_yaml(EXAMPLES / "unit" / "config.yaml").sample == ("data", "label")


def test_slurm_factory_yields_samples_seeded_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    my_synth = _import(EXAMPLES / "slurm" / "my_synth.py")
    monkeypatch.setattr(my_synth, "SHAPE", 16)
    monkeypatch.setenv("WIREHEAD_SEED_BASE", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert my_synth.seed_for(1) == 3006
    image, label = next(iter(my_synth.factory(rank=1)))
    assert image.shape == label.shape == (16, 16, 16)
    assert image.dtype.name == "float32" and label.dtype.name == "uint8"
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    other, _ = next(iter(my_synth.factory(rank=1)))
    assert not (other == image).all(), "two array tasks must not make the same samples"


# -- end to end on the test server ------------------------------------------------------------
def _marked(token: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``token`` (children and grandchildren of a run)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get("WIREHEAD_EXAMPLE_TOKEN") == token \
                    and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def _run_marked(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session; afterwards no process of it may be left (they are killed)."""
    token = env["WIREHEAD_EXAMPLE_TOKEN"]
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    deadline = time.monotonic() + 10
    left = _marked(token)
    while left and time.monotonic() < deadline:  # reparented children may still be exiting
        time.sleep(0.2)
        left = _marked(token)
    for p in left:
        _kill_pid(p.pid)
    assert not left, f"processes left behind: {[(p.pid, p.name()) for p in left]}\nstderr: {err[-3000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_run_local_end_to_end(mongo_uri: str, dbname: str) -> None:
    token = uuid.uuid4().hex
    env = child_env(mongo_uri, WIREHEAD_EXAMPLE_TOKEN=token)
    try:
        r = _run_marked([sys.executable, str(EXAMPLES / "local" / "run_local.py"), "--dbname", dbname,
                         "--steps", "12", "--generators", "2", "--shape", "24"], EXAMPLES / "local", env, 90)
    finally:
        drop_database(mongo_uri, dbname)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained 12 steps" in r.stdout and "all processes stopped" in r.stdout, r.stdout
    pids = [int(x) for x in next(ln for ln in r.stdout.splitlines() if ln.startswith("PIDS ")).split()[1:]]
    assert len(pids) == 3  # a manager and two generators
    assert gone(*pids), "run_local.py left a child running"


def test_unit_example_test_sh_end_to_end(mongo_uri: str) -> None:
    token = uuid.uuid4().hex
    env = child_env(mongo_uri, WIREHEAD_EXAMPLE_TOKEN=token, PYTHON=sys.executable)
    try:
        r = _run_marked([str(EXAMPLES / "unit" / "test.sh")], EXAMPLES / "unit", env, 90)
    finally:
        drop_database(mongo_uri, "unit-test")
    assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
    assert "Fetched successfully" in r.stdout
    assert "torch.Size([64, 64, 64]) torch.float64" in r.stdout, "the dtype must survive the cache"
