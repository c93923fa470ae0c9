"""The machine experiments: thread pools against BLAS (``threads``), each layer inside
the training step against alone (``instep``), and first-step latency (``latency``)."""
