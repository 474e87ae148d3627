"""Every notebook in notebooks/ runs top to bottom against the test server, with no cell error.

The kernel is this interpreter (a kernelspec written to a temporary JUPYTER_PATH), so the test
works on a fresh machine where wirehead and ipykernel were pip-installed into a venv, whatever
other "python3" kernels the user has.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import psutil
import pytest

from helpers import drop_database

pytestmark = pytest.mark.slow  # slow: real processes, kernels or browsers for long; `-m "not slow"` skips

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "wirehead-test-python"
DBNAMES = {"01_quickstart": "wirehead_quickstart", "02_slice_viewer": "wirehead_slice_viewer",
           "03_existing_mongodb": "wirehead_existing", "04_train_on_synthetic_brains": "wirehead_synthetic_brains"}
#: Training steps of notebook 04 here (its full run is 500; the environment variable sets it).
EXAMPLE_STEPS = "4"
#: Peak PSS allowed to a notebook's kernel and worker processes (not the server): notebook 04 fits Binder's 1 GB.
#: Every notebook's peak is printed (`pytest -s`).
MEMORY_LIMITS = {"04_train_on_synthetic_brains": 1 << 30}


def _database_exists(uri: str, dbname: str) -> bool:
    import pymongo

    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000)
    try:
        return dbname in client.list_database_names()
    finally:
        client.close()


def test_every_notebook_is_collected() -> None:
    assert {p.stem for p in NOTEBOOKS} == set(DBNAMES)


@pytest.fixture
def kernel_env(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec for this interpreter, and the test server as the notebooks' server."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "wirehead test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH", "")]))
    monkeypatch.setenv("WIREHEAD_MONGO_URI", mongo_uri)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("WIREHEAD_EXAMPLE_STEPS", EXAMPLE_STEPS)
    return mongo_uri


class PeakMemory:
    """The peak proportional set size (PSS: shared pages counted once in all) of a process and its descendants,
    polled every 0.2 s in a thread from :meth:`watch` until :meth:`stop`."""

    def __init__(self) -> None:
        self.peak = 0
        self.at_peak: dict[str, int] = {}
        """PSS per process at the peak: ``"pid name": bytes``."""
        self.cell = ""
        """The first line of the cell running (set by the caller); :attr:`peak_cell` is the one at the peak."""
        self.peak_cell = ""
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def watch(self, pid: int) -> None:
        self._thread = threading.Thread(target=self._poll, args=(pid,), daemon=True)
        self._thread.start()

    def _poll(self, pid: int) -> None:
        try:
            root = psutil.Process(pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            each = {}
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            for proc in procs:
                try:
                    each[f"{proc.pid} {proc.name()}"] = proc.memory_full_info().pss
                except psutil.Error:
                    pass
            if sum(each.values()) > self.peak:
                self.peak, self.at_peak, self.peak_cell = sum(each.values()), each, self.cell
            self._stop.wait(0.2)

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.peak


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, kernel_env: str, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} is stored with outputs"
    drop_database(kernel_env, DBNAMES[path.stem])
    memory = PeakMemory()
    client = nbclient.NotebookClient(nb, timeout=150, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(tmp_path)}},
                                     on_notebook_start=lambda **_: memory.watch(client.km.provisioner.pid),
                                     on_cell_start=lambda cell, **_: setattr(memory, "cell", cell.source[:40]))
    tmp_before = set(Path(tempfile.gettempdir()).glob("wirehead-nb*"))
    t0 = time.monotonic()
    try:
        client.execute()  # raises CellExecutionError on the first cell error
        left = _database_exists(kernel_env, DBNAMES[path.stem])
    finally:
        peak = memory.stop()
        drop_database(kernel_env, DBNAMES[path.stem])
    each = ", ".join(f"{name}: {pss / 2**20:.0f}" for name, pss in memory.at_peak.items())
    each += f"; in the cell {memory.peak_cell!r}"
    print(f"{path.name}: peak PSS of the kernel and its worker processes {peak / 2**20:.0f} MiB ({each})")
    limit = MEMORY_LIMITS.get(path.stem)
    assert peak > 0 and (limit is None or peak < limit), \
        f"{path.name} used {peak / 2**20:.0f} MiB (kernel and workers, PSS: {each})"
    # a run against WIREHEAD_MONGO_URI leaves no database (the next run starts empty) and no /tmp folder
    assert not left, f"{path.name} left its database {DBNAMES[path.stem]!r} on the server"
    new_tmp = set(Path(tempfile.gettempdir()).glob("wirehead-nb*")) - tmp_before  # the notebooks' own folders
    assert not [p for p in new_tmp if p.exists()], f"{path.name} left {sorted(new_tmp)}"
    took = time.monotonic() - t0
    assert took < 120, f"{path.name} took {took:.0f} s; notebooks must run in under two minutes"
    outputs: list[Any] = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # the widgets left a static picture for nbconvert/HTML
    assert any("image/png" in o.get("data", {}) for o in outputs), "no cell displayed an image"
