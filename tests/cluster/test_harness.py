"""The cluster in a box itself: namespaced nodes with their own hostname, address and /dev/shm; clean teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.harness import STATE_DIR, Cluster, ClusterError, _cmdline, _pids, recorded


def test_nodes_are_separate_machines(cluster: Cluster) -> None:
    # one task per node: each reports its hostname, its address and what it sees in /dev/shm
    script = "touch /dev/shm/mark-$(hostname); echo $(hostname) $(hostname -I) $(ls /dev/shm | tr '\\n' ,)"
    out = cluster.run(["srun", f"-N{cluster.n}", "--ntasks-per-node=1", "sh", "-c", script], timeout=60).stdout
    rows = sorted(line.split() for line in out.splitlines())
    assert [r[0] for r in rows] == cluster.nodes
    assert [r[1] for r in rows] == [cluster.address(n) for n in cluster.nodes]
    assert [r[2] for r in rows] == [f"mark-{n}," for n in cluster.nodes]  # each node sees only its own file
    assert not any(p.name.startswith("mark-") for p in __import__("pathlib").Path("/dev/shm").iterdir())
    for node in cluster.nodes:
        assert cluster.leftovers(node)["shm"] == [f"mark-{node}"]
        cluster.on_node(node, ["sh", "-c", "rm -f /dev/shm/mark-*"])
        assert cluster.leftovers(node) == {"processes": {}, "shm": []}


def test_fake_gpus_and_the_examples_resources_fit(cluster: Cluster) -> None:
    out = cluster.run(["srun", "-N1", "--gres=gpu:1", "--cpus-per-task=8", "--mem=96G", "hostname"], timeout=60)
    assert out.stdout.strip() in cluster.nodes


def test_a_node_cut_off_cannot_reach_the_others_and_heals(cluster: Cluster) -> None:
    a, b = cluster.nodes[0], cluster.nodes[1]
    ping = ["bash", "-c", f"(exec 3<>/dev/tcp/{cluster.address(b)}/6818) 2>/dev/null && echo reached"]
    assert cluster.on_node(a, ping, check=False).stdout.strip() == "reached"
    cluster.link(b, False)
    try:
        assert cluster.on_node(a, ["timeout", "3", *ping], check=False).stdout.strip() == ""
    finally:
        cluster.link(b, True)
    assert cluster.on_node(a, ping, check=False).stdout.strip() == "reached"


def test_leftovers_name_a_job_process_and_down_ends_it(tmp_path: Path) -> None:
    c = Cluster(1, prefix="whct")
    c.up()
    try:
        # the first sleep leaves the job's tree
        job = c.sbatch(f"--output={tmp_path}/%j.out", "--wrap", "(setsid sleep 300 &); sleep 300", cwd=tmp_path)
        c.wait_jobs(lambda jobs: jobs.get(job, {}).get("state") == "RUNNING", 30, "the job to run")
        # linuxproc loses the orphaned sleep when the job is cancelled: leftovers() must show it
        c.run(["scancel", job])
        c.wait_jobs(lambda jobs: jobs[job]["state"] == "CANCELLED", 30, "the cancel")
        left = c.leftovers("n1")["processes"]
        pids = list(left)
        # named with what the kernel says of it (why it is left: its state, its parent, where it sleeps)
        assert any("sleep 300" in cmd and "; ppid " in cmd for cmd in left.values()), left
    finally:
        c.down()
    assert all(not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
               for pid in pids)
    assert "whct-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert c.workdir is not None and not c.workdir.exists()


def test_a_failed_start_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    c = Cluster(2, prefix="whcf")
    monkeypatch.setattr("cluster.harness.START_TIMEOUT", 0.0)  # the nodes can never be idle in time
    with pytest.raises(ClusterError, match="not idle"):
        c.up()
    assert "whcf-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert c.workdir is not None and not c.workdir.exists()
    assert all(p.poll() is not None for p in c.procs.values())


def test_unavailable_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from cluster import harness

    monkeypatch.setattr(harness.shutil, "which", lambda exe: None if exe == "munged" else "/bin/" + exe)
    assert harness.unavailable() == "packages missing: munge (apt-get install munge)"
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    assert "needs root" in (harness.unavailable() or "")


def test_a_capped_link_and_its_byte_counter(cluster: Cluster) -> None:
    a, b = cluster.nodes[0], cluster.nodes[1]

    def qdiscs() -> str:
        return "".join(subprocess.run(["tc", "-n", ns, "qdisc", "show", "dev", dev], capture_output=True,
                                      text=True).stdout
                       for ns, dev in ((cluster.netns("ctl"), f"v{b[1:]}"), (cluster.netns(b), "eth0")))

    cluster.cap(b, "1gbit")
    try:
        assert qdiscs().count("tbf") == 2 and qdiscs().count("rate 1Gbit") == 2, qdiscs()  # both ways
        # 2 MB sent from a to b cross b's link: its counter grows by at least that much
        listener = cluster.popen_on(b, ["python3", "-c", "import socket, sys\n"
                                        "s = socket.create_server(('', 5009)); print('up', flush=True)\n"
                                        "c, _ = s.accept(); n = 0\n"
                                        "while (k := len(c.recv(1 << 16))): n += k\n"
                                        "print(n)"], stdout=subprocess.PIPE, text=True)
        try:
            assert listener.stdout is not None and listener.stdout.readline().strip() == "up"
            before = cluster.link_bytes(b)
            cluster.on_node(a, ["bash", "-c", f"head -c 2000000 /dev/zero > /dev/tcp/{cluster.address(b)}/5009"])
            assert int(listener.communicate(timeout=30)[0]) == 2_000_000
        finally:
            listener.kill()
            listener.wait(10)
        after = cluster.link_bytes(b)
        assert after["to_node"] - before["to_node"] >= 2_000_000
        assert 0 < after["from_node"] - before["from_node"] < 1_000_000  # acknowledgements only
    finally:
        cluster.cap(b, None)
    assert "tbf" not in qdiscs()


def _cluster_in_a_child(prefix: str, *, on_sigterm: bool) -> subprocess.Popen:
    """A process that builds a one-node cluster (tearing it down on SIGTERM when ``on_sigterm``), says "up" and
    sleeps; the test kills it."""
    body = (f"c = Cluster(1, prefix={prefix!r}); c.up()\n"
            + ("with c.down_on_sigterm():\n    print('up', flush=True); time.sleep(120)\n" if on_sigterm else
               "print('up', flush=True); time.sleep(120)\n"))
    code = f"import sys, time\nsys.path.insert(0, {str(Path(__file__).parents[1])!r})\n" \
           f"from cluster.harness import Cluster\n{body}"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "up", "the child's cluster did not start"
    return child


def _down(prefix: str) -> None:
    """Stop what a cluster of ``prefix`` left, its recorded daemons (munged) included."""
    state = recorded(prefix)
    if state is not None:
        Cluster.attach(state).down()
    Cluster(1, prefix=prefix).down()


def _daemons(prefix: str) -> list[int]:
    """Pids of munged and the SLURM daemons whose command line names a work directory of ``prefix``."""
    return [pid for pid in _pids() if f"wirehead-cluster-{prefix}-" in _cmdline(pid)]


def test_a_cluster_whose_owner_was_killed_is_cleared_by_the_next_start() -> None:
    child = _cluster_in_a_child("whck", on_sigterm=False)
    try:
        # while its owner lives, a second start of the same prefix refuses and leaves it alone
        with pytest.raises(ClusterError, match="runs"):
            Cluster(1, prefix="whck").up()
        assert "whck-n1" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        old = _daemons("whck")
        assert old, "the child's daemons are not running"
        child.kill()  # SIGKILL: no teardown ran; its daemons, namespaces and work directory are left
        child.wait(10)
        c = Cluster(1, prefix="whck")
        c.up()  # clears the dead owner's cluster, then builds its own
        try:
            assert not [pid for pid in old if pid in _daemons("whck")], "the dead owner's daemons still run"
            assert c.node_states() == {"n1": "idle"}
        finally:
            c.down()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        _down("whck")
    assert "whck-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not _daemons("whck")


def test_a_terminated_owner_tears_its_cluster_down() -> None:
    child = _cluster_in_a_child("whcs", on_sigterm=True)
    try:
        assert _daemons("whcs")
        child.terminate()
        assert child.wait(60) == -signal.SIGTERM  # it still dies of the signal, after the teardown
        assert "whcs-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not _daemons("whcs")
        assert not (STATE_DIR / "whcs.json").exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        _down("whcs")
