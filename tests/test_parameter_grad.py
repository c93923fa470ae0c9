"""Parameter's gradient: accumulate_grad and the lazy zero_grad."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.parameter import Parameter


def test_zero_grad_reads_as_zeros_and_keeps_the_array():
    p = Parameter(np.ones((2, 3), np.float32))
    p.grad[...] = 5
    array = p.grad
    p.zero_grad()
    assert p.grad is array  # a read fills the zeros in place
    np.testing.assert_array_equal(p.grad, np.zeros((2, 3), np.float32))


def test_fresh_gradient_after_zero_grad_becomes_grad_without_a_copy():
    p = Parameter(np.ones((2, 3), np.float32))
    p.grad[...] = 5
    p.zero_grad()
    g = np.full((2, 3), 2, np.float32)
    p.accumulate_grad(g, fresh=True)
    assert p.grad is g
    p.accumulate_grad(np.ones((2, 3), np.float32), fresh=True)  # not zeroed now: adds
    np.testing.assert_array_equal(p.grad, np.full((2, 3), 3, np.float32))


@pytest.mark.parametrize("fresh", [False, True])
def test_accumulate_adds_to_what_is_there(fresh):
    p = Parameter(np.ones(4, np.float64))
    p.grad[...] = 1
    g = np.arange(4.0)
    p.accumulate_grad(g, fresh=fresh)
    np.testing.assert_array_equal(p.grad, 1 + np.arange(4.0))
    assert p.grad is not g


@pytest.mark.parametrize("g", [np.ones(4, np.float64),                       # another dtype
                               np.ones((4, 2), np.float32)[:, 0],            # not contiguous
                               ])
def test_zeroed_grad_takes_only_a_matching_fresh_array(g):
    p = Parameter(np.zeros(4, np.float32))
    p.grad[...] = 7
    p.zero_grad()
    p.accumulate_grad(g, fresh=True)
    assert p.grad is not g and p.grad.dtype == np.float32 and p.grad.flags.c_contiguous
    np.testing.assert_array_equal(p.grad, np.ones(4, np.float32))


def test_not_fresh_after_zero_grad_copies():
    p = Parameter(np.zeros(3, np.float32))
    p.zero_grad()
    g = np.ones(3, np.float32)
    p.accumulate_grad(g)
    assert p.grad is not g
    g[...] = 9  # the caller's array stays the caller's
    np.testing.assert_array_equal(p.grad, np.ones(3, np.float32))


@pytest.mark.parametrize("make", [lambda: tn.Dense(5, 3), lambda: tn.Conv2D(2, 3, 3, padding=1)])
def test_layer_gradients_accumulate_over_two_backwards_after_zero_grad(make, rng):
    layer = make()
    shape = (4, 5) if isinstance(layer, tn.Dense) else (4, 2, 5, 5)
    x = rng.standard_normal(shape).astype(np.float32)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    layer.zero_grad()
    layer.backward(dy)
    once = [p.grad.copy() for p in layer.parameters()]
    layer.forward(x)
    layer.backward(dy)
    for p, g in zip(layer.parameters(), once):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-6, atol=1e-6)
    layer.zero_grad()
    for p in layer.parameters():
        assert not p.grad.any()
