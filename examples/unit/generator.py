"""The seed's examples/unit generator: pushes random (data, label) volumes into the cache.

The seed pushed 256^3 float64 arrays (128 MiB each); 64^3 keeps this test light.  Set
UNIT_SHAPE=256 for the seed's size.  Arrays keep their dtype (float64 here) end to end.
Stops cleanly on Ctrl-C or SIGTERM after the sample in hand.
"""

import os
import signal

import numpy as np

from wirehead import WireheadGenerator

WIREHEAD_CONFIG = "config.yaml"
SHAPE = (int(os.environ.get("UNIT_SHAPE", "64")),) * 3


def create_generator():
    while True:
        img = np.random.rand(*SHAPE)
        lab = np.random.rand(*SHAPE)
        yield (img, lab)


if __name__ == "__main__":
    brain_generator = create_generator()
    wirehead_runtime = WireheadGenerator(
        generator=brain_generator,     # any iterable of samples
        config_path=WIREHEAD_CONFIG,   # the shared config
    )
    signal.signal(signal.SIGTERM, lambda *_: wirehead_runtime.stop())
    signal.signal(signal.SIGINT, lambda *_: wirehead_runtime.stop())
    wirehead_runtime.run_generator()
