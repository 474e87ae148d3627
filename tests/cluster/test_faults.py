"""Faults a cluster has, each a scenario on the cluster in a box, each judged by the invariant checker.

Every scenario runs the example's server job (embedded server with authentication, and the manager) on n1,
recording generators (recorder.py) on n2 and n3, a recording trainer on n4, and the auditor on the login
node; it injects its fault, lets the cache run on, stops everything with scancel, and then checks the whole
history (checker.py) plus the jobs' exit codes and that nothing is left on any node.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import quote_plus

import pytest

from cluster.checker import Histories, check
from cluster.harness import Cluster

RECORDER = Path(__file__).with_name("recorder.py")
KEYS = dict(SWAP_CAP=4, REUSE_CAP=3, REUSE_POLICY="wait", RETIRED_GENERATIONS=2, GRACE_SECONDS=4,
            HEARTBEAT_SECONDS=1, ORPHAN_SECONDS=4, DEAD_AFTER_SECONDS=6, RETRY_DEADLINE=12, CONNECT_TIMEOUT=10,
            READ_TIMEOUT=120)
GENERATOR_NODES = ("n2", "n3")
TRAINER_NODE = "n4"


class Run:
    """One scenario's jobs and histories."""

    def __init__(self, cluster: Cluster, example_dir: Path, env: dict[str, str], tmp: Path, **keys: Any) -> None:
        self.cluster, self.example_dir, self.tmp = cluster, example_dir, tmp
        self.keys = {**KEYS, **keys}
        self.config = tmp / "cache.yaml"
        self.config.write_text(f"DBNAME: faults\nSAMPLE: [image, label]\n" +
                               "".join(f"{k}: {json.dumps(v)}\n" for k, v in self.keys.items()))
        self.out = tmp / "history"
        self.out.mkdir()
        self.shared = Path(env["WIREHEAD_SHARED"])
        self.env = {**env, "CONFIG": str(self.config), "EXAMPLE_DIR": str(example_dir), "MONGO_PORT": "27017",
                    "STARTUP_TIMEOUT": "60", "MONGO_DBPATH": str(tmp / "db")}
        self.jobs: dict[str, str] = {}
        self.may_fail: set[str] = set()  # jobs the scenario expects to fail
        self.auditor: Optional[subprocess.Popen] = None

    def job(self, name: str, node: str, role: str, env: Optional[dict[str, str]] = None,
            command: Optional[str] = None) -> str:
        """A job on ``node`` running a recorder ``role`` (or ``command``) against the server job's cache."""
        script = self.tmp / f"{role}.sh"
        command = command or f"python {RECORDER} {role} {self.config} {self.out}"
        script.write_text(f"#!/bin/bash\nset -euo pipefail\nsource {self.example_dir}/cache_address.sh\n"
                          f"wirehead_cache_uri\nexec {command}\n")
        self.jobs[name] = self.cluster.sbatch(f"--job-name={name}", f"--nodelist={node}", "--cpus-per-task=2",
                                              f"--output={self.tmp}/{name}-%j.out", str(script),
                                              env={**self.env, **(env or {})}, cwd=self.tmp)
        return self.jobs[name]

    def server(self, name: str = "server") -> str:
        """The example's server job on n1."""
        self.jobs[name] = self.cluster.sbatch("--nodelist=n1", "--cpus-per-task=8", f"--output={self.tmp}/{name}-%j.out",
                                              "mongodb.sbatch", env=self.env, cwd=self.example_dir)
        return self.jobs[name]

    def start(self, trainer: bool = True) -> None:
        self.server()
        deadline = time.monotonic() + 90
        while not (self.shared / "mongodb.address").exists():
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.2)
        if "WIREHEAD_MONGO_USERNAME" in self.env:  # exported before sbatch: the documented alternative
            user, password = self.env["WIREHEAD_MONGO_USERNAME"], self.env["WIREHEAD_MONGO_PASSWORD"]
        else:
            user, password = (self.shared / "mongodb.credentials").read_text().split()
        uri = (f"mongodb://{quote_plus(user)}:{quote_plus(password)}@"
               f"{(self.shared / 'mongodb.address').read_text().strip()}/?authSource=admin")
        self.auditor = self.cluster.popen([sys.executable, str(RECORDER), "audit", str(self.config), str(self.out)],
                                          env={**self.env, "WIREHEAD_MONGO_URI": uri})
        for node in GENERATOR_NODES:
            self.job(f"gen-{node}", node, "gen")
        if trainer:
            self.job("train", TRAINER_NODE, "train")

    def events(self, kind: str, ev: str) -> list[dict[str, Any]]:
        return Histories.load(self.out).of(kind, ev)

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        checked = 0.0
        while not predicate():
            assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}\n{self.logs()}"
            if time.monotonic() - checked > 3:  # a job that failed unexpectedly ends the wait at once
                checked = time.monotonic()
                states = self.cluster.jobs()
                failed = [n for n, j in self.jobs.items() if n not in self.may_fail
                          and states.get(j, {}).get("state") in ("FAILED", "NODE_FAIL", "TIMEOUT")]
                assert not failed, f"jobs {failed} failed while waiting for {what}\n{self.logs()}"
            time.sleep(0.3)

    def progress(self, gens: int = 2, reads: int = 3, timeout: float = 90) -> None:
        """Wait until the auditor saw ``gens`` more generations and the trainer made ``reads`` more reads."""
        g0 = max((e["gen"] for e in self.events("audit", "gen")), default=0)
        r0 = len(self.events("train", "read"))
        self.wait(f"{gens} generations and {reads} reads", lambda: (
            max((e["gen"] for e in self.events("audit", "gen")), default=0) >= g0 + gens
            and len(self.events("train", "read")) >= r0 + reads), timeout)

    def state(self, name: str) -> dict[str, str]:
        return self.cluster.jobs().get(self.jobs[name], {})

    def stop(self) -> dict[str, dict[str, str]]:
        """scancel the recorders, then the server; stop the auditor; return every job's final state."""
        recorders = [j for n, j in self.jobs.items() if not n.startswith("server")]
        self.cluster.run(["scancel", *recorders])
        self.cluster.wait_jobs(lambda js: all(js[j]["state"] not in ("RUNNING", "PENDING", "COMPLETING", "SUSPENDED")
                                              for j in recorders), 60, "the recorders to end")
        if self.auditor is not None:
            self.auditor.send_signal(signal.SIGTERM)
            self.auditor.wait(30)
        servers = [j for n, j in self.jobs.items() if n.startswith("server")]
        self.cluster.run(["scancel", *servers])
        final = self.cluster.wait_jobs(lambda js: all(js[j]["state"] not in ("RUNNING", "COMPLETING") for j in servers),
                                       60, "the server jobs to end")
        return {name: final[j] for name, j in self.jobs.items()}

    def check(self, generators: int = 2, **kw: Any) -> list[str]:
        return check(Histories.load(self.out), swap_cap=self.keys["SWAP_CAP"],
                     retired_generations=self.keys["RETIRED_GENERATIONS"], reuse_cap=self.keys["REUSE_CAP"],
                     generators=generators, **kw)

    def logs(self) -> str:
        return "\n".join(f"===== {f.name}\n{f.read_text()[-2000:]}" for f in sorted(self.tmp.glob("*.out")))

    def nothing_left(self) -> None:
        for node in self.cluster.nodes:
            assert self.cluster.settled(node) == {"processes": {}, "shm": []}, (node, self.logs())

    def kill(self) -> None:
        """Last resort when a scenario failed: every job cancelled at once, the auditor killed."""
        if self.jobs:
            self.cluster.run(["scancel", *self.jobs.values()], check=False)
        if self.auditor is not None and self.auditor.poll() is None:
            self.auditor.kill()
            self.auditor.wait(10)


@pytest.fixture
def run(cluster: Cluster, example_dir: Path, job_env: dict[str, str], tmp_path: Path,
        request: pytest.FixtureRequest) -> Any:
    marker = request.node.get_closest_marker("keys")
    r = Run(cluster, example_dir, job_env, tmp_path, **(marker.kwargs if marker else {}))
    try:
        yield r
    finally:
        r.kill()
        cluster.wait_jobs(lambda js: all(js.get(j, {}).get("state") not in ("RUNNING", "PENDING", "COMPLETING",
                                                                           "SUSPENDED") for j in r.jobs.values()),
                          90, "every job of the scenario to end")


CLEAN_STOP = {"state": "CANCELLED", "exit": "0:0"}


def ended(job: dict[str, str]) -> dict[str, str]:
    return {"state": job["state"], "exit": job["exit"]}


def unclean(final: dict[str, dict[str, str]], *expected: str) -> dict[str, dict[str, str]]:
    """The jobs (other than ``expected``) that did not end as a clean stop does: CANCELLED, exit code 0:0."""
    return {name: ended(job) for name, job in final.items() if name not in expected and ended(job) != CLEAN_STOP}


def test_generator_job_suspended_past_orphan_seconds_then_resumed(run: Run) -> None:
    run.start()
    run.progress()
    run.cluster.run(["scontrol", "suspend", run.jobs["gen-n2"]])
    assert run.state("gen-n2")["state"] == "SUSPENDED"
    suspended = time.time()
    # the other generator keeps the cache going; the suspended one's heartbeat is silent past ORPHAN_SECONDS
    run.wait("ORPHAN_SECONDS of silence and more swaps", lambda: time.time() - suspended > 2 * KEYS["ORPHAN_SECONDS"])
    run.progress(gens=2, reads=3)
    run.cluster.run(["scontrol", "resume", run.jobs["gen-n2"]])
    resumed = time.time()
    # the resumed generator commits again (fenced, it rewrites its sample in hand under a new id)
    run.wait("a commit of the resumed generator", lambda: any(
        e["t"] > resumed and "n2" in e["process"] for e in run.events("gen", "commit")))
    run.progress(gens=2, reads=3)
    final = run.stop()
    assert unclean(final) == {}, run.logs()
    assert run.check() == []
    run.nothing_left()


def test_scancel_of_generators_mid_write_and_of_the_trainer_mid_epoch(run: Run) -> None:
    run.start()
    run.progress()
    # generators that never pause are always writing; the trainer is always reading
    run.job("gen-fast", "n2", "gen", env={"RECORDER_PAUSE": "0"})
    run.wait("the fast generator's first commit", lambda: len({e["process"] for e in run.events("gen", "commit")}) >= 3)
    run.cluster.run(["scancel", run.jobs["gen-fast"], run.jobs["gen-n3"], run.jobs["train"]])
    run.cluster.wait_jobs(lambda js: all(js[run.jobs[n]]["state"] == "CANCELLED" for n in ("gen-fast", "gen-n3", "train")),
                          60, "the cancelled jobs to end")
    for name in ("gen-fast", "gen-n3", "train"):
        assert ended(run.state(name)) == CLEAN_STOP, (name, run.state(name), run.logs())
    # a new trainer on another node and the remaining generator carry on
    run.job("train-2", "n3", "train")
    run.progress(gens=2, reads=3)
    final = run.stop()
    assert unclean(final) == {}, run.logs()
    assert run.check(generators=3) == []
    run.nothing_left()


def test_a_generator_node_dies(run: Run) -> None:
    run.start()
    run.progress()
    run.may_fail.add("gen-n3")
    run.cluster.kill_node("n3")  # every process on it SIGKILLed, its link down
    died = time.time()
    run.progress(gens=3, reads=3)
    # what slurmctld does after SlurmdTimeout without word from the node: mark it down, its jobs NODE_FAIL
    run.cluster.run(["scontrol", "update", "NodeName=n3", "State=DOWN", "Reason=died"])
    run.wait("SLURM to end the dead node's job", lambda: run.state("gen-n3").get("state") not in ("RUNNING", ""), 60)
    dead = run.state("gen-n3")
    run.cluster.revive("n3")
    final = run.stop()
    assert dead["state"] == "NODE_FAIL", dead
    assert unclean(final, "gen-n3") == {}, run.logs()
    # what the dead generator left (at most its sample in flight) is swept: the storage bound holds throughout
    assert run.check() == []
    assert any(e["t"] < died and "n3" in e["process"] for e in run.events("gen", "commit"))
    run.nothing_left()


def test_a_generator_node_cut_off_past_retry_deadline_then_healed(run: Run) -> None:
    run.start()
    run.progress()
    run.may_fail.add("gen-n2")
    run.cluster.link("n2", False)
    cut = time.time()
    run.progress(gens=2, reads=3)
    # past RETRY_DEADLINE the generator's push() gives up (StoreUnavailable) and its process ends; SLURM
    # hears of it (FAILED, exit code 1) once the node is back
    run.wait("the cut-off generator to give up", lambda: not any(
        "recorder.py gen" in cmd for cmd in run.cluster.processes("n2").values()), KEYS["RETRY_DEADLINE"] + 60)
    assert time.time() - cut >= KEYS["RETRY_DEADLINE"]
    run.cluster.link("n2", True)
    run.wait("SLURM to hear that the job failed", lambda: run.state("gen-n2").get("state") == "FAILED", 60)
    # healed: a generator started there again feeds the same cache
    run.job("gen-n2-again", "n2", "gen")
    healed = time.time()
    run.wait("a commit from the healed node", lambda: any(
        e["t"] > healed and "n2" in e["process"] for e in run.events("gen", "commit")))
    run.progress(gens=2, reads=3)
    final = run.stop()
    assert ended(final["gen-n2"]) == {"state": "FAILED", "exit": "1:0"}, (final["gen-n2"], run.logs())
    assert unclean(final, "gen-n2") == {}, run.logs()
    assert run.check(generators=3) == []
    run.nothing_left()


def test_the_trainer_suspended_cut_off_and_on_a_lossy_link(run: Run) -> None:
    run.start()
    run.progress()
    # suspended past GRACE_SECONDS: the generation it read is deleted meanwhile; after resume it reads on
    run.cluster.run(["scontrol", "suspend", run.jobs["train"]])
    suspended = time.time()
    run.wait("swaps while the trainer is suspended", lambda: time.time() - suspended > 2 * KEYS["ORPHAN_SECONDS"])
    run.progress(gens=2, reads=0)
    run.cluster.run(["scontrol", "resume", run.jobs["train"]])
    run.progress(gens=1, reads=5)
    # cut off mid-epoch for half of RETRY_DEADLINE: its reads wait and retry, none fails
    run.cluster.link(TRAINER_NODE, False)
    cut = time.time()
    run.wait("half of RETRY_DEADLINE", lambda: time.time() - cut > KEYS["RETRY_DEADLINE"] / 2)
    run.cluster.link(TRAINER_NODE, True)
    run.progress(gens=1, reads=5)
    # 5 % of the trainer node's packets lost, both ways
    run.cluster.loss(TRAINER_NODE, 0.05)
    try:
        run.progress(gens=2, reads=20)
    finally:
        run.cluster.loss(TRAINER_NODE, 0)
    final = run.stop()
    assert unclean(final) == {}, run.logs()
    assert run.check() == []
    run.nothing_left()


@pytest.mark.keys(RETRY_DEADLINE=60)
def test_the_server_killed_and_restarted_on_its_data(run: Run) -> None:
    # the credentials exported before sbatch (the documented alternative to a generated one), so a server
    # job started again accepts the clients' credentials; the database directory is kept (MONGO_KEEP_DB)
    run.env.update(WIREHEAD_MONGO_USERNAME="trainer-lab", WIREHEAD_MONGO_PASSWORD="cluster-test-password",
                   MONGO_KEEP_DB="1")
    run.start()
    run.progress()
    servers = [pid for pid, cmd in run.cluster.processes("n1").items()
               if "secantusd-py" in cmd and "--auth" in cmd and "_watchdog" not in cmd]
    assert len(servers) == 1, run.cluster.processes("n1")
    os.kill(servers[0], signal.SIGKILL)
    killed = time.time()
    run.may_fail.add("server")
    run.wait("the server job to fail", lambda: run.state("server").get("state") == "FAILED", 60)
    run.server("server-again")
    run.wait("the generators and the trainer to carry on", lambda: any(
        e["t"] > killed for e in run.events("gen", "commit")) and any(e["t"] > killed for e in run.events("train", "read")),
        KEYS["RETRY_DEADLINE"] + 60)
    run.progress(gens=2, reads=3)
    final = run.stop()
    assert ended(final["server"]) == {"state": "FAILED", "exit": "1:0"}, (final["server"], run.logs())
    assert unclean(final, "server") == {}, run.logs()
    assert run.check() == []
    run.nothing_left()


@pytest.mark.keys(LEASE_SECONDS=3, RETRY_DEADLINE=30)
def test_the_manager_holding_the_swap_lease_cut_off_then_healed(run: Run) -> None:
    # two managers as jobs of their own (not in the server job), next to the generators on n2 and n3
    run.env["RUN_MANAGER"] = "0"
    run.start()
    for node in GENERATOR_NODES:
        run.job(f"manager-{node}", node, "manager", command=f"wirehead manager {run.config}")

    def holder() -> str:
        seen = [e for e in run.events("audit", "storage") if e.get("holder")]
        return seen[-1]["holder"] if seen else ""

    run.wait("a manager to hold the swap lease", lambda: holder().startswith("manager@"))
    run.progress()
    first = holder().split("@")[1].split(":")[0]
    other = next(n for n in GENERATOR_NODES if n != first)
    run.cluster.link(first, False)
    cut = time.time()
    # the lease expires (LEASE_SECONDS) and the other manager takes over the swapping
    run.wait("the other manager to take the lease", lambda: holder().startswith(f"manager@{other}:"), 30)
    run.progress(gens=2, reads=3)
    assert time.time() - cut < run.keys["RETRY_DEADLINE"]  # healed before the cut-off generator gives up
    run.cluster.link(first, True)
    # healed: the first manager comes back to a state that moved on; it must not swap on what it saw before
    run.progress(gens=3, reads=3)
    final = run.stop()
    assert unclean(final) == {}, run.logs()
    assert run.check() == []
    run.nothing_left()
