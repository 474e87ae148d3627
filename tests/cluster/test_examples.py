"""examples/slurm run as a user runs them: ./submit.sh on the cluster in a box, only environment and sbatch
options changed (a small config, small shapes, two array tasks); scancel stops everything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cluster.harness import Cluster

CONFIG = """\
DBNAME: wirehead_cluster_example
SWAP_CAP: 4
SAMPLE: [image, label]
COMPRESSION: {image: none, label: zstd}
CONNECT_TIMEOUT: 20
RETRY_DEADLINE: 60
GRACE_SECONDS: 30
HEARTBEAT_SECONDS: 2
READ_TIMEOUT: 120
"""


def submit(cluster: Cluster, example_dir: Path, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """./submit.sh as a user runs it; returns ({"mongodb": id, "generators": id, "train": id}, the stop line)."""
    out = cluster.run(["./submit.sh", "--partition=debug"], cwd=example_dir, env=env, timeout=60).stdout
    m = re.search(r"submitted: mongodb (\d+), generators (\d+), train (\d+)", out)
    stop = re.search(r"stop everything with: (.*)", out)
    assert m and stop, out
    return dict(zip(("mongodb", "generators", "train"), m.groups())), stop.group(1)


def logs(example_dir: Path) -> str:
    """The jobs' output files, for failure messages."""
    return "\n".join(f"===== {f.name}\n{f.read_text()[-1500:]}" for f in sorted(example_dir.glob("*.out")))


def test_submit_trains_across_swaps_and_scancel_stops_everything(cluster: Cluster, example_dir: Path,
                                                                  job_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "cache.yaml").write_text(CONFIG)
    env = {**job_env, "CONFIG": str(tmp_path / "cache.yaml"), "WIREHEAD_SYNTH_SHAPE": "24", "MONGO_PORT": "27017",
           "MONGO_DBPATH": str(tmp_path / "db"),
           # each generator task takes a whole node, so the two land on two nodes: n1 server, n2 n3, n4 trainer
           "MONGODB_SBATCH_ARGS": "--cpus-per-task=8",
           "GENERATORS_SBATCH_ARGS": "--array=0-1 --cpus-per-task=8",
           "TRAIN_ARGS": "--steps 12 --batch-size 2 --workers 0 --log-every 1"}
    jobs, stop_line = submit(cluster, example_dir, env)
    shared = Path(job_env["WIREHEAD_SHARED"])
    # the trainer ends by itself after its steps; its log shows it read across swaps
    done = cluster.wait_jobs(lambda js: js.get(jobs["train"], {}).get("state") in ("COMPLETED", "FAILED")
                             or any(j["state"] == "FAILED" for j in js.values()), 240, "the training job to end")
    train_log = (example_dir / f"wirehead-train-{jobs['train']}.out").read_text()
    assert done[jobs["train"]]["state"] == "COMPLETED", train_log
    generations = {int(g) for g in re.findall(r"read generation (\d+)", train_log)}
    assert len(generations) >= 2, train_log
    assert "trained 12 steps on 24 samples" in train_log
    placed = cluster.jobs()
    nodes = {k: v["node"] for k, v in placed.items()}
    server_node = nodes[jobs["mongodb"]]
    gen_nodes = {v["node"] for v in placed.values() if v["array"] == jobs["generators"]}
    assert len(gen_nodes) == 2 and server_node not in gen_nodes and done[jobs["train"]]["node"] not in gen_nodes
    address = (shared / "mongodb.address").read_text().strip()
    assert address == f"{cluster.address(server_node)}:27017"  # the node's private address, never loopback
    assert (shared / "mongodb.credentials").stat().st_mode & 0o077 == 0
    # the server requires the credentials: a client without them is refused
    probe = cluster.on_node(done[jobs["train"]]["node"], ["python", "-c", (
        "import pymongo, sys\n"
        f"c = pymongo.MongoClient('mongodb://{address}/', serverSelectionTimeoutMS=5000)\n"
        "try:\n    c.wirehead_cluster_example.list_collection_names()\nexcept pymongo.errors.OperationFailure as e:\n"
        "    print('refused', e.code)\n")], env={"PATH": job_env["PATH"]})
    assert probe.stdout.strip() == "refused 13", probe.stdout + probe.stderr

    cluster.run(["bash", "-c", stop_line], timeout=120)  # the line submit.sh printed
    ended = cluster.wait_jobs(lambda js: all(v["state"] not in ("RUNNING", "PENDING", "COMPLETING")
                                             for v in js.values()), 60, "every job to end")
    for job_id, job in ended.items():
        if job_id == jobs["train"]:
            continue
        # scancel: SLURM shows CANCELLED; the scripts stopped cleanly (exit 0) before any SIGKILL
        assert job["state"] == "CANCELLED" and job["exit"] == "0:0", (job_id, job, logs(example_dir))
    server_log = (example_dir / f"wirehead-mongodb-{jobs['mongodb']}.out").read_text()
    assert "stopped" in server_log
    assert not (shared / "mongodb.address").exists() and not (shared / "mongodb.credentials").exists()
    for node in cluster.nodes:
        assert cluster.settled(node) == {"processes": {}, "shm": []}, node


def test_the_embedded_server_is_refused_a_cluster_address_without_authentication(
        capsys: pytest.CaptureFixture[str]) -> None:
    from wirehead.cli import main

    assert main(["server", "--host", "10.77.0.11", "--port", "27999", "--no-auth"]) == 2
    assert "drop --no-auth" in capsys.readouterr().err
