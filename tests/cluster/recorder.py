"""The processes of the fault scenarios, each recording its history as JSON lines (Jepsen's habit).

    python recorder.py gen     CONFIG OUT   # a generator: "attempt" before each push, "commit" once push() returned
    python recorder.py train   CONFIG OUT   # a trainer: every sample it was served ("read"), every failed read ("error")
    python recorder.py audit   CONFIG OUT   # the server's view, polled: every generation's members (decoded), storage
                                            # and the swap lease's holder

Every sample carries its identity inside its arrays: the first 16 bytes of the label map are a random uid, and
its checksum is the CRC-32 of both arrays' bytes, so a reader proves what it was served without trusting
wirehead's own ids.  The jobs run under SLURM (a node of the cluster in a box) with WIREHEAD_MONGO_URI set;
SIGTERM ends each after its current step with exit code 0, as ``wirehead generate`` does.  :mod:`checker`
reads the histories.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (12, 12, 12)
stop = threading.Event()


def checksum(image: np.ndarray, label: np.ndarray) -> int:
    """The checksum a generator records and a trainer recomputes."""
    return zlib.crc32(np.ascontiguousarray(label).tobytes(), zlib.crc32(np.ascontiguousarray(image).tobytes()))


def uid_of(label: np.ndarray) -> str:
    return bytes(np.ascontiguousarray(label).reshape(-1)[:16].tobytes()).hex()


class History:
    """One process's history file ``OUT/<kind>-<host>-<pid>.jsonl``, each line flushed and fsync'd."""

    def __init__(self, out: str, kind: str) -> None:
        self.path = Path(out) / f"{kind}-{socket.gethostname()}-{os.getpid()}.jsonl"
        self.f = open(self.path, "a")

    def write(self, **event: Any) -> None:
        event["t"] = time.time()
        self.f.write(json.dumps(event) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())


def sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    image = rng.random(SHAPE, dtype=np.float32)
    label = rng.integers(0, 8, SHAPE, dtype=np.uint8)
    label.reshape(-1)[:16] = np.frombuffer(uuid.uuid4().bytes, dtype=np.uint8)
    return image, label


def gen(config: str, out: str) -> int:
    from wirehead import WireheadGenerator

    history = History(out, "gen")
    rng = np.random.default_rng()
    pause = float(os.environ.get("RECORDER_PAUSE", "0.2"))  # seconds between samples: a slow generator
    with WireheadGenerator(None, config_path=config, name=f"rec-{socket.gethostname()}-{os.getpid()}") as g:
        while not stop.is_set():
            image, label = sample(rng)
            uid, crc = uid_of(label), checksum(image, label)
            history.write(ev="attempt", uid=uid, crc=crc)
            sid = g.push((image, label))
            history.write(ev="commit", uid=uid, crc=crc, sid=sid)
            stop.wait(pause)
    history.write(ev="exit", code=0)
    return 0


def train(config: str, out: str) -> int:
    from wirehead import MongoheadDataset

    history = History(out, "train")
    pause = float(os.environ.get("RECORDER_PAUSE", "0.05"))
    ds = MongoheadDataset(config_path=config)
    try:
        while not stop.is_set():
            try:
                n = len(ds)
                s = ds[random.randrange(n)]
                image, label = s["image"].numpy(), s["label"].numpy()
                history.write(ev="read", uid=uid_of(label), crc=checksum(image, label), n=n)
            except Exception as e:  # noqa: BLE001 - every failed read is part of the history
                history.write(ev="error", err=f"{type(e).__name__}: {e}"[:500])
                if stop.wait(0.5):
                    break
            stop.wait(pause)
    finally:
        ds.close()
    history.write(ev="exit", code=0)
    return 0


def audit(config: str, out: str) -> int:
    """Poll the server: each generation document's members (each member decoded once: uid and checksum),
    and the number of samples whose chunks the server holds, until SIGTERM."""
    from wirehead import WireheadConfig
    from wirehead.chunks import decode
    from wirehead.connect import open_store
    from wirehead.errors import StoreError

    history = History(out, "audit")
    store = open_store(WireheadConfig.load(config))
    known: dict[str, tuple[str, int]] = {}
    seen: dict[int, int] = {}

    def poll() -> None:
        docs = store.gen_docs()
        for doc in docs:
            new = [sid for sid in doc.members if sid not in known]
            if new:
                for sid, (manifest, chunks) in store.get_samples(new).items():
                    if len(chunks) != manifest.get("nchunks", len(chunks)):
                        continue  # being rewritten (a fenced writer): decoded at the next poll
                    arrays = decode(manifest["meta"], b"".join(chunks))
                    known[sid] = (uid_of(arrays["label"]), checksum(arrays["image"], arrays["label"]))
            if seen.get(doc.gen) != len(doc.members) and all(sid in known for sid in doc.members):
                seen[doc.gen] = len(doc.members)
                history.write(ev="gen", gen=doc.gen, members=[[sid, *known[sid]] for sid in doc.members])
        stored = len(store.chunks.distinct("sid", {"i": 0}))
        state = store.state()
        history.write(ev="storage", samples=stored, gens=len(docs), holder=state.lease_holder)

    while True:
        last = stop.is_set()  # after SIGTERM: one more poll, so the last commits are seen
        try:
            poll()
        except StoreError as e:
            history.write(ev="unreachable", err=str(e)[:200])
        if last:
            break
        stop.wait(0.2)
    store.close()
    history.write(ev="exit", code=0)
    return 0


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    role, config, out = argv
    return {"gen": gen, "train": train, "audit": audit}[role](config, out)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
