"""New layers on the cuda backend (GPU or CUDA simulator): one training forward
and backward on the device gives the host's y, dx and gradients."""
import numpy as np
import pytest

import tinynet as tn
from cudasim import requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [requires_cuda, pytest.mark.usefixtures("small_blocks")]


def _step(layer, x, dy):
    """One forward and backward; (y, dx, every grad) as host arrays."""
    layer.zero_grad()
    y = layer.forward(x)
    dx = layer.backward(dy)
    return [tn.to_host(a) for a in [y, dx] + [p.grad for p in layer.parameters()]]


@pytest.mark.parametrize("make, shape", [
    (lambda: tn.WeightNorm(tn.Dense(6, 4)), (4, 6)),
    (lambda: tn.WeightNorm(tn.Conv2D(2, 3, 3, padding=1)), (4, 2, 5, 5)),
    (lambda: tn.MeanOnlyBatchNorm(3), (4, 3, 5, 5)),
    (lambda: tn.DropConnect(tn.Dense(6, 4), 0.5, seed=3), (4, 6)),
    (lambda: tn.RandomAffineNoise(3, seed=5), (4, 3, 5, 5))],
    ids=["weightnorm-dense", "weightnorm-conv", "mean-only-bn", "dropconnect", "noise"])
def test_layers_on_the_device_match_the_host(rng, make, shape):
    tn.init.seed(0)
    layer = make().to(np.float64)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(layer.forward(x).shape)
    step = getattr(layer, "step", None)
    want = _step(layer, x, dy)
    if step is not None:
        layer.step = step  # the same mask / noise draw on the device
    layer.to("cuda")
    with tn.use_backend("cuda"):
        got = _step(layer, tn.to_device(x), tn.to_device(dy))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
