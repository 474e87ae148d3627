"""The seed README's three snippets, each as its own script with a seed-style config.yaml, run unchanged."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from helpers import child_env, drop_database

MANAGER = '''
from wirehead import WireheadManager

if __name__ == "__main__":
    wirehead_runtime = WireheadManager(config_path="config.yaml")
    wirehead_runtime.run_manager()
'''

GENERATOR = '''
import numpy as np
from wirehead import WireheadGenerator 

def create_generator():
    while True: 
        img = np.random.rand(256,256,256)
        lab = np.random.rand(256,256,256)
        yield (img, lab)

if __name__ == "__main__":
    brain_generator     = create_generator()
    wirehead_runtime    = WireheadGenerator(
        generator = brain_generator,
        config_path = "config.yaml" 
    )
    wirehead_runtime.run_generator()
'''

DATASET = '''
import torch
from wirehead import MongoheadDataset

dataset = MongoheadDataset(config_path = "config.yaml")

idx = [0] 
data = dataset[idx]
sample, label = data[0]['input'], data[0]['label']
'''

CHECK = '''
assert sample.shape == (256, 256, 256) and sample.dtype == torch.float64, (sample.shape, sample.dtype)
assert label.shape == (256, 256, 256) and 0 < float(sample.mean()) < 1
print("SEED DATASET OK")
'''


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
@pytest.mark.timeout(300)
def test_seed_snippets_run_unchanged(mongo_uri: str, dbname: str, tmp_path: Path) -> None:
    url = urlparse(mongo_uri)
    if url.query or "," in (url.netloc or ""):
        pytest.fail(f"the seed config names one host and a port (credentials through the environment); the "
                    f"test server's URI has options or several hosts ({url.query or url.netloc}): run this test "
                    "against a single-host server", pytrace=False)
    (tmp_path / "config.yaml").write_text(textwrap.dedent(f"""\
        MONGOHOST: "{url.hostname}"
        DBNAME: "{dbname}"
        PORT: {url.port or 27017}
        SWAP_CAP: 2
        SAMPLE: ["a", "b"]
        WRITE_COLLECTION: "write"
        READ_COLLECTION: "read"
        COUNTER_COLLECTION: "counters"
        TEMP_COLLECTION: "temp"
        CHUNKSIZE: 10
        """))
    for name, code in (("manager.py", MANAGER), ("generator.py", GENERATOR), ("loader.py", DATASET + CHECK)):
        (tmp_path / name).write_text(code)
    env = child_env()
    env.pop("WIREHEAD_MONGO_URI", None)
    if url.username:  # a server with users: the seed's config stays as it is, credentials come from the env
        env["WIREHEAD_MONGO_USERNAME"] = unquote(url.username)
        env["WIREHEAD_MONGO_PASSWORD"] = unquote(url.password or "")
    procs = []
    try:
        for name in ("manager.py", "generator.py"):
            procs.append(subprocess.Popen([sys.executable, name], cwd=tmp_path, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        loader = subprocess.run([sys.executable, "loader.py"], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=240)
        assert loader.returncode == 0, loader.stderr[-3000:]
        assert "SEED DATASET OK" in loader.stdout
        for p in procs:
            assert p.poll() is None, p.stderr.read()[-3000:] if p.stderr else ""  # both still running
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
            if p.stderr:
                p.stderr.close()
        drop_database(mongo_uri, dbname)
