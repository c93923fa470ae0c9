"""DropConnect: the mask is Dropout's counter-based mask on the weights, fresh
each step; inverted scaling; eval is the plain Dense; gradients pass
gradcheck; ref and cpu agree; state_dict keys are the Dense's."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from conftest import assert_close, check_grads


def test_training_forward_uses_the_mask_of_seed_and_step(rng):
    dense = tn.Dense(6, 5).to(np.float64)
    dc = tn.DropConnect(dense, 0.4, seed=11)
    x = rng.standard_normal((3, 6))
    for step in range(3):
        keep = ref.dropout_mask((5, 6), 0.4, 11, step)
        expected = x @ (dense.weight.data * keep / 0.6).T + dense.bias.data
        assert_close(dc.forward(x), expected, 1e-12, 1e-12, f"y at step {step}")
    assert dc.step == 3
    assert not np.array_equal(ref.dropout_mask((5, 6), 0.4, 11, 0),
                              ref.dropout_mask((5, 6), 0.4, 11, 1))


def test_eval_is_the_plain_dense(rng):
    dense = tn.Dense(6, 5)
    dc = tn.DropConnect(dense, 0.5, seed=1).eval()
    x = rng.standard_normal((4, 6)).astype(np.float32)
    assert_close(dc.forward(x), dense.forward(x), 0, 0, "y")
    assert dc.step == 0
    dy = rng.standard_normal((4, 5)).astype(np.float32)
    assert_close(dc.backward(dy), dense.backward(dy), 0, 0, "dx")


def test_expected_weight_is_unchanged(rng):
    """Averaged over many steps, the masked weight is W (inverted scaling)."""
    dense = tn.Dense(4, 3).to(np.float64)
    dc = tn.DropConnect(dense, 0.3, seed=5)
    eye = np.eye(4)
    mean = np.mean([dc.forward(eye) - dense.bias.data for _ in range(4000)], axis=0)
    assert_close(mean, dense.weight.data.T, 0, 0.05 * np.abs(dense.weight.data).max(), "E[W]")


@pytest.mark.parametrize("backend", ["ref", "cpu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(rng, backend, bias, training):
    dc = tn.DropConnect(tn.Dense(5, 4, bias=bias), 0.3, seed=2).train(training)
    with tn.use_backend(backend):
        check_grads(dc, rng.standard_normal((3, 5)))


def test_backward_masks_the_weight_gradient(rng):
    dc = tn.DropConnect(tn.Dense(5, 4), 0.5, seed=9).to(np.float64)
    x, dy = rng.standard_normal((3, 5)), rng.standard_normal((3, 4))
    dc.forward(x)
    dc.backward(dy)
    keep = ref.dropout_mask((4, 5), 0.5, 9, 0)
    assert_close(dc.weight.grad, (dy.T @ x) * keep * 2.0, 1e-12, 1e-12, "dW")
    assert np.all(dc.weight.grad[keep == 0] == 0)


def test_cpu_matches_ref(rng):
    x = rng.standard_normal((7, 13)).astype(np.float32)
    dy = rng.standard_normal((7, 9)).astype(np.float32)
    out = {}
    for backend in ("ref", "cpu"):
        tn.init.seed(0)
        dc = tn.DropConnect(tn.Dense(13, 9), 0.25, seed=3)
        with tn.use_backend(backend):
            y = dc.forward(x)
            dx = dc.backward(dy)
        out[backend] = (y, dx, dc.weight.grad.copy(), dc.bias.grad.copy())
    for a, b, what in zip(out["ref"], out["cpu"], ("y", "dx", "dW", "db")):
        assert_close(a, b, 1e-5, 1e-5, what)


def test_state_dict_keys_are_the_dense_ones():
    dense = tn.Dense(5, 4)
    dc = tn.DropConnect(dense, 0.5, seed=0)
    assert list(dc.state_dict()) == ["weight", "bias"]
    assert dc.weight is dense.weight and dc.bias is dense.bias
    model = tn.Sequential(dc, tn.ReLU())
    assert list(model.state_dict()) == ["0.weight", "0.bias"]
    plain = tn.Sequential(tn.Dense(5, 4), tn.ReLU())
    plain.load_state_dict(model.state_dict())


def test_bad_arguments():
    with pytest.raises(TypeError, match="DropConnect: dense must be a tn.Dense"):
        tn.DropConnect(tn.Conv2D(1, 1, 1), 0.5)
    with pytest.raises(ValueError, match="DropConnect: p"):
        tn.DropConnect(tn.Dense(2, 2), 1.0)
    with pytest.raises(ValueError, match="DropConnect: seed"):
        tn.DropConnect(tn.Dense(2, 2), 0.5, seed=-1)
    with pytest.raises(ValueError, match="DropConnect: input must have shape"):
        tn.DropConnect(tn.Dense(2, 2), 0.5).forward(np.ones((3, 3), np.float32))
