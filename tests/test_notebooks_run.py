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
import time
from pathlib import Path
from typing import Any

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
           "03_existing_mongodb": "wirehead_existing"}


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
    return mongo_uri


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, kernel_env: str, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} is stored with outputs"
    drop_database(kernel_env, DBNAMES[path.stem])
    client = nbclient.NotebookClient(nb, timeout=150, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(tmp_path)}})
    tmp_before = set(Path(tempfile.gettempdir()).glob("wirehead-nb*"))
    t0 = time.monotonic()
    try:
        client.execute()  # raises CellExecutionError on the first cell error
        left = _database_exists(kernel_env, DBNAMES[path.stem])
    finally:
        drop_database(kernel_env, DBNAMES[path.stem])
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
