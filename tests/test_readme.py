"""Every Python code block of the README runs, in order, against the test server: the README cannot drift."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, child_env, drop_database

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
CONFIG = re.search(r"<!-- config.yaml -->\n```yaml\n(.*?)```", README, flags=re.S)


def test_readme_has_the_blocks_this_test_runs() -> None:
    assert len(BLOCKS) >= 5 and CONFIG is not None


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
@pytest.mark.timeout(600)
def test_every_python_block_runs(mongo_uri: str, tmp_path: Path) -> None:
    assert CONFIG is not None
    (tmp_path / "config.yaml").write_text(CONFIG.group(1))
    env = child_env(mongo_uri, MPLBACKEND="Agg")
    dbs = {"wirehead", *re.findall(r'DBNAME:\s*"?([\w-]+)', CONFIG.group(1))}
    try:
        for i, code in enumerate(BLOCKS):
            script = tmp_path / f"block_{i}.py"
            script.write_text(code)
            run = subprocess.run([sys.executable, script.name], cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=240)
            assert run.returncode == 0, f"README python block {i} failed:\n{code}\n--- stderr:\n{run.stderr[-3000:]}"
    finally:
        for db in dbs:
            drop_database(mongo_uri, db)
