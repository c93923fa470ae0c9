"""The kernel lab: one runnable file per op family, e.g. ``python -m kernels.norm``."""
