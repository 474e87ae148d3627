"""A SLURM cluster in a box (namespaced nodes on this machine): the harness, its fixtures and the scenarios.

``python -m tests.cluster up`` starts one for a developer; see :mod:`.harness` and ``__main__.py``.
"""
