"""A SLURM cluster in a box: N namespaced nodes, munge, slurmctld and one slurmd per node, on this machine.

Each node is a network namespace (``<prefix>-n<i>``, address ``<subnet>.1<i>``) with its own hostname (a UTS
namespace) and its own ``/dev/shm`` (a mount namespace with a private tmpfs), so wirehead's node cache is per
node as on real hardware.  The nodes hang on a bridge that lives in one more namespace, ``<prefix>-ctl``
(address ``<subnet>.1``, hostname ``ctl``): the controller and the "login node" where ``sbatch`` runs.  No
address of the subnet exists outside these namespaces, and nothing here touches the host's own network.

``slurmd`` runs jobs with ``proctrack/linuxproc`` (cgroups are not delegated here); :meth:`Cluster.down`
therefore kills every process left in a node's namespaces itself, and :meth:`Cluster.leftovers` lists what a
job left behind (processes other than ``slurmd``, files in the node's ``/dev/shm``), for tests to assert on.

Use as a context manager (``with Cluster(3) as c: c.sbatch(...)``), the ``cluster`` fixture of
``tests/cluster/conftest.py``, or ``python -m tests.cluster up|down|status|shell`` (see ``__main__.py``).
:func:`unavailable` says why a cluster cannot run here (not root, no namespaces, packages missing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from wirehead.supervise import process_start, same_process

log = logging.getLogger(__name__)

__all__ = ["Cluster", "ClusterError", "unavailable", "registered", "recorded", "REQUIRED", "STATE_DIR"]

#: The executables a cluster needs, with the Debian package that has them.
REQUIRED = {"slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "sbatch": "slurm-wlm", "munged": "munge",
            "ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux", "iptables": "iptables"}
#: Where ``python -m tests.cluster up`` records the clusters it started, so ``down`` finds them.
STATE_DIR = Path("/run/wirehead-cluster")
START_TIMEOUT = 60.0
KILL_WAIT = 30  # seconds SLURM gives a cancelled job's processes before SIGKILL (KillWait)


class ClusterError(RuntimeError):
    """The cluster could not be built or a command on it failed."""


def unavailable() -> Optional[str]:
    """Why a cluster cannot run on this machine, or ``None`` when it can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces, slurmd)"
    missing = sorted({pkg for exe, pkg in REQUIRED.items() if shutil.which(exe) is None})
    if missing:
        return f"packages missing: {' '.join(missing)} (apt-get install {' '.join(missing)})"
    probe = subprocess.run(["unshare", "--net", "--uts", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"no namespaces here (unshare --net --uts --mount: {probe.stderr.strip() or probe.returncode})"
    return None


def _run(cmd: Sequence[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _ns_inode(pid: int, kind: str = "net") -> Optional[int]:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _described(pid: int, cmd: str) -> str:
    """``cmd`` with what the kernel says of the process (state, parent, where it sleeps): why a leftover is left."""
    try:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        wchan = Path(f"/proc/{pid}/wchan").read_text().strip() or "-"
    except OSError:
        return cmd
    return f"{cmd} [{status.get('State', '?').strip()}; ppid {status.get('PPid', '?').strip()}; wchan {wchan}]"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class Cluster:
    """``nodes`` namespaced SLURM nodes ``n1..nN`` in partition ``debug`` (the default), each with ``cpus``
    CPUs, ``memory_mb`` of memory and ``gpus`` fake GPUs (gres), as slurmctld sees them.

    Not thread-safe; one cluster per ``prefix`` at a time on a machine.
    """

    def __init__(self, nodes: int = 3, *, prefix: str = "whc", subnet: str = "10.77.0", cpus: int = 8,
                 memory_mb: int = 131072, gpus: int = 1, workdir: Optional[os.PathLike | str] = None,
                 shm_mb: int = 512, slurm_timeout: int = 300) -> None:
        if not 1 <= nodes <= 80:
            raise ValueError(f"nodes must be in 1..80, got {nodes}")
        if not prefix.isalnum() or len(prefix) > 6:
            raise ValueError(f"prefix must be alphanumeric, at most 6 characters, got {prefix!r}")
        self.n, self.prefix, self.subnet = nodes, prefix, subnet
        self.cpus, self.memory_mb, self.gpus, self.shm_mb = cpus, memory_mb, gpus, shm_mb
        self.slurm_timeout = slurm_timeout
        self._given_workdir = Path(workdir) if workdir is not None else None
        self.workdir: Optional[Path] = None
        self.procs: dict[str, subprocess.Popen] = {}
        self._recorded: dict[str, int] = {}  # daemons a previous process started (python -m tests.cluster up)
        self._logs: list[Any] = []

    @classmethod
    def attach(cls, state: dict[str, Any]) -> "Cluster":
        """The cluster another process started and recorded (see :func:`registered`), to use or stop."""
        c = cls(state["nodes"], prefix=state["prefix"], subnet=state["subnet"])
        c.workdir = Path(state["workdir"])
        c._recorded = {k: int(v) for k, v in state.get("pids", {}).items()}
        return c

    # -- names ----------------------------------------------------------------------------
    @property
    def nodes(self) -> list[str]:
        """Node names, ``n1`` … ``nN``."""
        return [f"n{i}" for i in range(1, self.n + 1)]

    def address(self, node: str) -> str:
        """A node's private address (``ctl``: the controller's)."""
        return f"{self.subnet}.1" if node == "ctl" else f"{self.subnet}.{10 + int(node[1:])}"

    def netns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    @property
    def conf(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment of a client command (sbatch, squeue, …) on the login node."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # -- lifecycle ----------------------------------------------------------------------
    def up(self) -> "Cluster":
        """Build the cluster and wait until every node is idle (at most START_TIMEOUT).  On any failure
        everything built so far is torn down before the error is raised.

        Raises:
            ClusterError: it cannot run here (the reason of :func:`unavailable`) or did not come up.
        """
        reason = unavailable()
        if reason:
            raise ClusterError(f"cannot build a cluster: {reason}")
        stale = self._existing_netns()
        if stale and self._clear_abandoned():
            stale = self._existing_netns()
        if stale:
            raise ClusterError(f"namespaces {stale} exist already: another cluster with prefix {self.prefix!r} "
                               f"runs (python -m tests.cluster down --prefix {self.prefix})")
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _clear_abandoned(self) -> bool:
        """Tear down the recorded cluster of this prefix when the process that built it died without doing so
        (killed, or stopped by a signal it does not handle) and did not keep it up on purpose (``python -m
        tests.cluster up``); True when there was one."""
        state = recorded(self.prefix)
        if state is None or state.get("kept") or "owner" not in state:
            return False
        if same_process(state["owner"], state.get("owner_started")):
            return False  # its owner still runs: not ours to stop
        log.warning("cluster %s: its owner (pid %s) is gone and left it up; tearing it down", self.prefix,
                    state["owner"])
        Cluster.attach(state).down()
        return True

    @contextlib.contextmanager
    def down_on_sigterm(self) -> Iterator["Cluster"]:
        """Inside, a SIGTERM to this process tears the cluster down before the process dies of it (the default
        action would skip every ``finally``); in the main thread only, elsewhere it does nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def on_term(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGTERM, previous)
            log.warning("cluster %s: SIGTERM; tearing it down", self.prefix)
            self.down()
            os.kill(os.getpid(), signal.SIGTERM)

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)

    def keep(self) -> None:
        """Leave the daemons running after this process exits (``python -m tests.cluster up``): they are
        recorded for :meth:`down` in another process, and no later start clears them as abandoned."""
        self._save_state(kept=True)
        self.procs.clear()

    def _build(self) -> None:
        self.workdir = self._given_workdir or Path(tempfile.mkdtemp(prefix=f"wirehead-cluster-{self.prefix}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)  # jobs read the config; nothing secret here but the munge key (0600)
        self._save_state()
        self._network()
        self._write_config()
        self._start_munge()
        self._start("slurmctld", "ctl", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        for node in self.nodes:
            self._start(f"slurmd-{node}", node, ["slurmd", "-D", "-N", node, "-f", str(self.conf)])
        self._save_state()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ClusterError(f"{name} exited with {proc.returncode} during start-up; log:\n"
                                       f"{self._tail(name)}")
            idle = self.node_states()
            if len(idle) == self.n and all(s == "idle" for s in idle.values()):
                log.info("cluster %s up: %s", self.prefix, idle)
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"the nodes were not idle within {START_TIMEOUT:.0f} s: {idle}; slurmctld log:\n"
                                   f"{self._tail('slurmctld')}")
            time.sleep(0.2)

    def _existing_netns(self) -> list[str]:
        out = _run(["ip", "netns", "list"], check=False).stdout
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        return [n for n in names if n.startswith(f"{self.prefix}-")]

    def _network(self) -> None:
        ctl = self.netns("ctl")
        _run(["ip", "netns", "add", ctl])
        _run(["ip", "-n", ctl, "link", "set", "lo", "up"])
        _run(["ip", "-n", ctl, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", ctl, "addr", "add", f"{self.address('ctl')}/24", "dev", "br0"])
        _run(["ip", "-n", ctl, "link", "set", "br0", "up"])
        for i, node in enumerate(self.nodes, 1):
            ns = self.netns(node)
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            # the pair is made inside the node's namespace, then one end moves to the switch
            _run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{i}"])
            _run(["ip", "-n", ns, "link", "set", f"v{i}", "netns", ctl])
            _run(["ip", "-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ctl, "link", "set", f"v{i}", "master", "br0"])
            _run(["ip", "-n", ctl, "link", "set", f"v{i}", "up"])

    def _write_config(self) -> None:
        w = self.workdir
        assert w is not None
        for sub in ("ctld", "spool", "munge", "gpu", "log"):
            (w / sub).mkdir(exist_ok=True)
        os.chmod(w / "munge", 0o700)
        for node in self.nodes:
            (w / "spool" / node).mkdir(exist_ok=True)
        for g in range(self.gpus):
            (w / "gpu" / f"nvidia{g}").touch()
        ctl = self.address("ctl")
        first, last = self.nodes[0][1:], self.nodes[-1][1:]
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        lines = [
            "ClusterName=wirehead",
            f"SlurmctldHost=ctl({ctl})",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={w}/munge/munge.socket",
            f"StateSaveLocation={w}/ctld",
            f"SlurmdSpoolDir={w}/spool/%n",
            f"SlurmctldPidFile={w}/slurmctld.pid",
            f"SlurmdPidFile={w}/spool/%n/slurmd.pid",
            f"SlurmctldLogFile={w}/log/slurmctld.log",
            f"SlurmdLogFile={w}/log/slurmd-%n.log",
            "SlurmctldDebug=info", "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill", "MpiDefault=none", "ReturnToService=2",
            # a node may be cut off (a partition scenario) for longer than a real cluster tolerates
            f"SlurmdTimeout={self.slurm_timeout}", "InactiveLimit=0", f"KillWait={KILL_WAIT}", "MinJobAge=300",
            "JobRequeue=0",  # a job of a node that died ends NODE_FAIL (as the scenarios expect), not requeued
            "SchedulerParameters=sched_interval=1",
            "SlurmdParameters=config_overrides",  # nodes report the CPUs/memory/GPUs below, not the host's
            "GresTypes=gpu",
            f"NodeName=n[{first}-{last}] NodeAddr={self.subnet}.[{10 + int(first)}-{10 + int(last)}] "
            f"CPUs={self.cpus} RealMemory={self.memory_mb}{gres} State=UNKNOWN",
            f"PartitionName=debug Nodes=n[{first}-{last}] Default=YES MaxTime=INFINITE State=UP "
            f"OverSubscribe=NO",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        gres_conf = [f"NodeName=n[{first}-{last}] Name=gpu File={w}/gpu/nvidia[0-{self.gpus - 1}]"] if self.gpus else []
        (w / "gres.conf").write_text("\n".join(gres_conf) + "\n")
        (w / "cgroup.conf").write_text("")

    def _start_munge(self) -> None:
        w = self.workdir
        assert w is not None
        key = w / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        os.chmod(key, 0o600)
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={w}/munge/munge.socket",
                               f"--key-file={key}", f"--pid-file={w}/munge/munged.pid",
                               f"--log-file={w}/log/munged.log", f"--seed-file={w}/munge/munged.seed"])
        deadline = time.monotonic() + 20
        while not (w / "munge" / "munge.socket").exists():
            if self.procs["munged"].poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"munged did not start: {self._tail('munged')}")
            time.sleep(0.05)

    def _start(self, name: str, node: str, argv: list[str]) -> None:
        """Start a daemon inside ``node``'s network namespace with its own hostname and /dev/shm."""
        script = (f"hostname {node} && mount --make-rprivate / && "
                  f"mount -t tmpfs -o mode=1777,size={self.shm_mb}m wh-shm-{node} /dev/shm && exec \"$@\"")
        self._spawn(name, ["nsenter", f"--net=/run/netns/{self.netns(node)}", "unshare", "--uts", "--mount",
                           "--propagation", "private", "sh", "-c", script, name, *argv])

    def _spawn(self, name: str, argv: list[str]) -> None:
        assert self.workdir is not None
        out = open(self.workdir / "log" / f"{name}.out", "ab")
        self._logs.append(out)
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, env={**os.environ, "SLURM_CONF": str(self.conf)})

    def _tail(self, name: str, n: int = 3000) -> str:
        if self.workdir is None:
            return ""
        text = ""
        for path in (self.workdir / "log" / f"{name}.out", self.workdir / "log" / f"{name}.log"):
            with contextlib.suppress(OSError):
                text += path.read_bytes()[-n:].decode(errors="replace")
        return text

    def _save_state(self, kept: bool = False) -> None:
        if self.workdir is None:
            return
        with contextlib.suppress(OSError):
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            state = {"prefix": self.prefix, "nodes": self.n, "subnet": self.subnet, "workdir": str(self.workdir),
                     "pids": {k: p.pid for k, p in self.procs.items()}, "owner": os.getpid(),
                     "owner_started": process_start(os.getpid()), "kept": kept}
            (STATE_DIR / f"{self.prefix}.json").write_text(json.dumps(state))

    def down(self) -> None:
        """Stop everything: every process in the nodes' namespaces (jobs included), the daemons, the
        namespaces, the work directory.  Safe to call twice and after a failed :meth:`up`."""
        for node in [*self.nodes, "ctl"]:
            self._kill_netns(node)
        for name, proc in self.procs.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs.clear()
        for pid in self._recorded.values():  # munged lives outside the namespaces
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self._recorded.clear()
        for f in self._logs:
            f.close()
        self._logs.clear()
        for ns in self._existing_netns():
            self._kill_netns(ns[len(self.prefix) + 1:])
            _run(["ip", "netns", "del", ns], check=False)
        if self.workdir is not None and self._given_workdir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            (STATE_DIR / f"{self.prefix}.json").unlink()

    def __enter__(self) -> "Cluster":
        return self.up()

    def __exit__(self, *exc: Any) -> None:
        self.down()

    # -- looking at and acting on the nodes ------------------------------------------------
    def _netns_inode(self, node: str) -> Optional[int]:
        try:
            return os.stat(f"/run/netns/{self.netns(node)}").st_ino
        except OSError:
            return None

    def processes(self, node: str) -> dict[int, str]:
        """``{pid: command line}`` of every process in ``node``'s network namespace."""
        ino = self._netns_inode(node)
        if ino is None:
            return {}
        return {pid: _cmdline(pid) for pid in _pids() if _ns_inode(pid) == ino}

    def _kill_netns(self, node: str, sig: int = signal.SIGKILL) -> list[int]:
        pids = list(self.processes(node))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    def slurmd_pid(self, node: str) -> int:
        for pid, cmd in self.processes(node).items():
            if cmd.startswith("slurmd ") and f"-N {node}" in cmd:
                return pid
        raise ClusterError(f"no slurmd runs on {node}")

    def leftovers(self, node: str) -> dict[str, Any]:
        """What runs or lies on ``node`` besides its ``slurmd``: ``{"processes": {pid: cmd}, "shm": [names]}``
        (``/dev/shm`` as the node sees it).  Empty lists mean nothing was left behind."""
        procs = {pid: _described(pid, cmd) for pid, cmd in self.processes(node).items()
                 if not cmd.startswith(("slurmd ", "nsenter ", "unshare ", "sh -c hostname"))}
        shm: list[str] = []
        with contextlib.suppress(ClusterError, OSError):
            root = Path(f"/proc/{self.slurmd_pid(node)}/root/dev/shm")
            shm = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        return {"processes": procs, "shm": shm}

    def settled(self, node: str, timeout: float = KILL_WAIT + 5) -> dict[str, Any]:
        """:meth:`leftovers` of ``node`` once its jobs' processes had their time to end: SLURM shows a job
        CANCELLED at once, while its processes still stop (a server shutting down cleanly); it allows them
        KillWait seconds before SIGKILL.  Polls until nothing is left or ``timeout`` passes; returns the last look."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.leftovers(node)
            if (not left["processes"] and not left["shm"]) or time.monotonic() >= deadline:
                return left
            time.sleep(0.2)

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60,
            env: Optional[dict[str, str]] = None, cwd: Optional[os.PathLike | str] = None) -> subprocess.CompletedProcess:
        """Run a command on the login node (the controller's namespace) with this cluster's SLURM_CONF."""
        cmd = ["nsenter", f"--net=/run/netns/{self.netns('ctl')}", *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env or {})}, cwd=cwd)
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def popen(self, argv: Sequence[str], *, env: Optional[dict[str, str]] = None, **kw: Any) -> subprocess.Popen:
        """Start a command on the login node in the background (the caller stops it)."""
        cmd = ["nsenter", f"--net=/run/netns/{self.netns('ctl')}", *argv]
        return subprocess.Popen(cmd, env={**self.env, **(env or {})}, start_new_session=True, **kw)

    def on_node(self, node: str, argv: Sequence[str], *, check: bool = True, timeout: float = 60,
                env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
        """Run a command on ``node`` (its network, hostname and /dev/shm), outside SLURM."""
        cmd = ["nsenter", "-t", str(self.slurmd_pid(node)), "--net", "--uts", "--mount", *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**self.env, **(env or {})})
        if check and proc.returncode != 0:
            raise ClusterError(f"on {node}: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def popen_on(self, node: str, argv: Sequence[str], *, env: Optional[dict[str, str]] = None,
                 **kw: Any) -> subprocess.Popen:
        """Start a command on ``node`` (its network, hostname and /dev/shm), outside SLURM, in the background.
        The caller stops it; :meth:`down` kills it anyway, with every other process of the node."""
        cmd = ["nsenter", "-t", str(self.slurmd_pid(node)), "--net", "--uts", "--mount", *argv]
        return subprocess.Popen(cmd, env={**self.env, **(env or {})}, start_new_session=True, **kw)

    def node_states(self) -> dict[str, str]:
        """``{node: state}`` as ``sinfo`` reports it (``idle``, ``alloc``, ``down*``, …)."""
        proc = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False, timeout=15)
        states = {}
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def sbatch(self, *args: str, env: Optional[dict[str, str]] = None, cwd: Optional[os.PathLike | str] = None) -> str:
        """Submit a job; return its id."""
        out = self.run(["sbatch", "--parsable", *args], env=env, cwd=cwd).stdout.strip()
        return out.split(";")[0]

    def jobs(self) -> dict[str, dict[str, str]]:
        """``{job id: {"state", "node", "name", "exit"}}`` of every job slurmctld still knows (MinJobAge)."""
        proc = self.run(["scontrol", "-o", "show", "job"], check=False, timeout=15)
        jobs = {}
        for line in proc.stdout.splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if "JobId" in fields:
                jobs[fields["JobId"]] = {"state": fields.get("JobState", ""), "node": fields.get("NodeList", ""),
                                         "name": fields.get("JobName", ""), "exit": fields.get("ExitCode", ""),
                                         "array": fields.get("ArrayJobId", "")}
        return jobs

    def wait_jobs(self, predicate: Any, timeout: float, what: str) -> dict[str, dict[str, str]]:
        """Poll :meth:`jobs` until ``predicate(jobs)`` is true; raise ClusterError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs()
            if predicate(jobs):
                return jobs
            if time.monotonic() > deadline:
                raise ClusterError(f"waited {timeout:.0f} s for {what}; jobs: {jobs}")
            time.sleep(0.5)

    def link(self, node: str, up: bool) -> None:
        """Cut ``node`` off the network (``up=False``: its link is down) or heal it."""
        i = int(node[1:])
        _run(["ip", "-n", self.netns("ctl"), "link", "set", f"v{i}", "up" if up else "down"])

    def loss(self, node: str, fraction: float) -> None:
        """Drop ``fraction`` of the packets ``node`` sends and receives, at random (iptables' statistic match;
        ``tc netem`` is not everywhere); 0 removes the loss."""
        ns = self.netns(node)
        for chain in ("INPUT", "OUTPUT"):
            _run(["ip", "netns", "exec", ns, "iptables", "-F", chain])
            if fraction > 0:
                _run(["ip", "netns", "exec", ns, "iptables", "-A", chain, "-m", "statistic", "--mode", "random",
                      "--probability", f"{fraction:g}", "-j", "DROP"])

    def cap(self, node: str, rate: Optional[str]) -> None:
        """Cap ``node``'s link to ``rate`` (``tc`` units: ``"1gbit"``) both ways with a token bucket (``tc tbf``
        on both ends of its veth pair; ``tc netem`` is not everywhere); ``None`` removes the cap."""
        i = int(node[1:])
        for ns, dev in ((self.netns("ctl"), f"v{i}"), (self.netns(node), "eth0")):
            _run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], check=False)  # none there: fine
            if rate is not None:
                # a burst of 1 MiB (>= rate / HZ at 1 Gbit/s) and a queue of 20 ms: TCP sees the rate, not drops
                _run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "1mb",
                      "latency", "20ms"])

    def link_bytes(self, node: str) -> dict[str, int]:
        """Bytes that crossed ``node``'s link so far, counted on the switch's end of its veth pair:
        ``{"to_node": …, "from_node": …}`` (Ethernet frames: headers and every protocol included)."""
        i = int(node[1:])
        out = _run(["ip", "-n", self.netns("ctl"), "-j", "-s", "link", "show", "dev", f"v{i}"]).stdout
        stats = json.loads(out)[0]["stats64"]
        return {"to_node": int(stats["tx"]["bytes"]), "from_node": int(stats["rx"]["bytes"])}

    def kill_node(self, node: str) -> list[int]:
        """A node dies: its link goes down and every process on it is SIGKILLed (slurmd too)."""
        self.link(node, False)
        return self._kill_netns(node)

    def revive(self, node: str) -> None:
        """A dead node boots again: link up, a fresh /dev/shm, its slurmd started; waits until it is idle."""
        self.link(node, True)
        self.procs.pop(f"slurmd-{node}", None)
        self._start(f"slurmd-{node}", node, ["slurmd", "-D", "-N", node, "-f", str(self.conf)])
        self.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=False)
        deadline = time.monotonic() + START_TIMEOUT
        while self.node_states().get(node) != "idle":
            if time.monotonic() > deadline:
                raise ClusterError(f"{node} did not come back within {START_TIMEOUT:.0f} s: {self.node_states()}")
            time.sleep(0.5)


def registered() -> Iterator[dict[str, Any]]:
    """The clusters recorded on this machine (each records itself while it runs; ``python -m tests.cluster up``
    keeps its record after it exits)."""
    if STATE_DIR.is_dir():
        for path in sorted(STATE_DIR.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                yield json.loads(path.read_text())


def recorded(prefix: str) -> Optional[dict[str, Any]]:
    """The recorded state of the cluster of ``prefix`` (:meth:`Cluster.attach` takes it), or None."""
    return next((state for state in registered() if state.get("prefix") == prefix), None)
