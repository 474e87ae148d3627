"""The sample factory of the SLURM example: PLUG SYNTHSEG (or any generator) IN HERE.

``wirehead generate config.yaml --factory my_synth:factory`` imports this module (the job's
working directory is importable) and iterates over ``factory(rank)``: each item is one sample,
a tuple in the config's SAMPLE order (``image, label``) of numpy arrays or torch tensors.

The seed of every generator differs: array task ``$SLURM_ARRAY_TASK_ID`` and process ``rank``
(``--processes``) give ``seed = WIREHEAD_SEED_BASE + 1000 * task + rank``.

Out of the box this yields wirehead's built-in SynthSeg-like volumes (numpy only), so the whole
pipeline can be tried before SynthSeg is installed.  Replace the body of :func:`samples` with
SynthSeg's brain generator (a sketch is below).  Keep TensorFlow imports inside the function:
this module is imported by ``wirehead generate`` before any work starts.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

#: Edge length of the cubic volumes; SynthSeg makes 256^3.  Override with WIREHEAD_SYNTH_SHAPE=128.
SHAPE = int(os.environ.get("WIREHEAD_SYNTH_SHAPE", "256"))


def seed_for(rank: int = 0) -> int:
    """A seed unique to this array task and process."""
    base = int(os.environ.get("WIREHEAD_SEED_BASE", "0"))
    task = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    return base + 1000 * task + rank


def samples(seed: int, shape: tuple[int, int, int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(image, label)`` pairs forever.  >>> THE PLACE TO PLUG IN SYNTHSEG <<<

    SynthSeg sketch (https://github.com/BBillot/SynthSeg; check the arguments of your version)::

        import tensorflow as tf
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)   # share the GPU politely
        from SynthSeg.brain_generator import BrainGenerator

        np.random.seed(seed)
        tf.random.set_seed(seed)
        brain_generator = BrainGenerator("/path/to/training_label_maps")
        while True:
            image, label = brain_generator.generate_brain()
            yield image.astype(np.float32), label.astype(np.uint8)
    """
    from wirehead.synth import synth_generator

    yield from synth_generator(shape, seed=seed)


def factory(rank: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """What ``--factory my_synth:factory`` calls, once per generator process."""
    return samples(seed_for(rank), (SHAPE, SHAPE, SHAPE))
