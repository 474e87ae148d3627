"""Fixtures of the cluster tests: one SLURM cluster in a box per module, torn down also when a test fails.

Every test under tests/cluster is marked ``slow`` and ``cluster`` here, and skipped with the reason when a
cluster cannot run on this machine (not root, no namespaces, slurm-wlm or munge missing).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import pytest

from cluster.harness import Cluster, unavailable

#: Nodes of the test cluster: n1 the server, n2 and n3 generators, n4 the trainer.
NODES = 4


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A running cluster of NODES nodes (``n1``…), partition ``debug``; everything it ran is gone after."""
    reason = unavailable()
    if reason:
        pytest.skip(f"no cluster in a box here: {reason}")
    c = Cluster(NODES)
    c.up()
    try:
        with c.down_on_sigterm():  # a run stopped with SIGTERM (a CI's time limit) leaves nothing either
            yield c
    finally:
        c.down()


@pytest.fixture
def job_env(tmp_path: Path) -> dict[str, str]:
    """The environment jobs are submitted with: this Python's bin first on PATH (wirehead, python), a shared
    directory of this test, and no server URI of the test session's own."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(tmp_path, 0o755)
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "WIREHEAD_SHARED": str(shared),
           "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1",
           "SBATCH_PARTITION": "debug"}  # the CHANGE_ME partition of the examples, overridden as documented
    return env


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    """A copy of examples/slurm, as a user copies it (files unchanged); jobs write their logs here."""
    src = Path(__file__).resolve().parents[2] / "examples" / "slurm"
    dst = tmp_path / "slurm"
    shutil.copytree(src, dst)
    return dst
