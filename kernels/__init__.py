"""The kernel lab: one runnable benchmark per op, e.g. ``python -m kernels.threads``."""
