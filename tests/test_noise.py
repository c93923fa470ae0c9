"""RandomAffineNoise (noisy BN): the per-step shift and scale are counter-based
draws in the stated ranges, the forward is s * x + m per channel, the backward
s * dy, eval is the identity, and ref and cpu agree."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.ops.dropout import splitmix64
from conftest import assert_close, check_grads


def test_draws_are_the_stated_formula():
    layer = tn.RandomAffineNoise(5, shift=0.7, scale=3.0, seed=21)
    key = splitmix64(np.uint64(21) ^ splitmix64(np.uint64(4)))
    with np.errstate(over="ignore"):
        u = (splitmix64(key + np.arange(10, dtype=np.uint64)) >> np.uint64(11)) * 2.0**-53
    s, m = layer.noise(4)
    assert_close(m, 0.7 * (2 * u[:5] - 1), 0, 0, "m")
    assert_close(s, 1 + 2.0 * u[5:], 0, 0, "s")


def test_draws_change_every_step_and_stay_in_range():
    layer = tn.RandomAffineNoise(64, shift=0.5, scale=2.0, seed=1)
    draws = [layer.noise(t) for t in range(50)]
    s = np.stack([d[0] for d in draws])
    m = np.stack([d[1] for d in draws])
    assert s.min() >= 1 and s.max() <= 2 and np.abs(m).max() <= 0.5
    assert s.std() > 0.2 and m.std() > 0.2
    assert not np.array_equal(draws[0][0], draws[1][0])


@pytest.mark.parametrize("backend", ["ref", "cpu"])
@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 2, 3)])
def test_forward_backward(rng, backend, shape):
    layer = tn.RandomAffineNoise(4, seed=3).to(np.float64)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    s, m = layer.noise(0)
    bc = (1, 4) + (1,) * (len(shape) - 2)
    with tn.use_backend(backend):
        y = layer.forward(x)
        dx = layer.backward(dy)
    assert_close(y, x * s.reshape(bc) + m.reshape(bc), 1e-12, 1e-12, "y")
    assert_close(dx, dy * s.reshape(bc), 1e-12, 1e-12, "dx")
    assert layer.step == 1


@pytest.mark.parametrize("backend", ["ref", "cpu"])
def test_gradcheck(rng, backend):
    with tn.use_backend(backend):
        check_grads(tn.RandomAffineNoise(4, seed=3), rng.standard_normal((3, 4, 3, 3)))


def test_eval_is_identity(rng):
    layer = tn.RandomAffineNoise(4, seed=3).eval()
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert_close(layer.forward(x), x, 0, 0, "y")
    assert_close(layer.backward(x), x, 0, 0, "dx")
    assert layer.step == 0 and layer.state_dict() == {}


def test_bad_arguments():
    with pytest.raises(ValueError, match="RandomAffineNoise: scale must be >= 1"):
        tn.RandomAffineNoise(3, scale=0.5)
    with pytest.raises(ValueError, match="RandomAffineNoise: shift"):
        tn.RandomAffineNoise(3, shift=-1)
    with pytest.raises(ValueError, match="C=3"):
        tn.RandomAffineNoise(3).forward(np.ones((2, 4), np.float32))
