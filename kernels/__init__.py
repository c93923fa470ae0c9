"""The kernel lab: one runnable file per op family, e.g. ``python -m kernels.norm``.

torch, when installed, is imported here before tinynet, so that it keeps its
own OpenMP defaults: ``import tinynet`` sets OMP_WAIT_POLICY=PASSIVE for
OpenMP runtimes loaded after it (see tinynet/threads.py), and the comparison
should be against torch as users run it.
"""
try:
    import torch  # noqa: F401
except ImportError:
    pass
