"""Dropout: the splitmix64 counter-based mask, the reference ops and the layer."""
import warnings

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from conftest import check_grads, assert_close

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = 2**64 - 1


def splitmix64_py(z):
    """SplitMix64 on Python ints, written independently of the numpy version."""
    z = (z + GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


# -- splitmix64 ------------------------------------------------------------------

def test_splitmix64_first_output_from_state_zero():
    assert int(ref.splitmix64(0)) == 0xE220A8397B1DCDAF


def test_splitmix64_matches_reference_sequences():
    # Output k of the generator seeded with s is splitmix64(s + k * GOLDEN).
    states = np.array([(k * GOLDEN) & MASK64 for k in range(4)], dtype=np.uint64)
    assert [int(v) for v in ref.splitmix64(states)] == [
        0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]
    # The published test vector for seed 1234567.
    states = np.array([(1234567 + k * GOLDEN) & MASK64 for k in range(5)], dtype=np.uint64)
    assert [int(v) for v in ref.splitmix64(states)] == [
        6457827717110365317, 3203168211198807973, 9817491932198370423,
        4593380528125082431, 16408922859458223821]


def test_splitmix64_wraps_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = ref.splitmix64(np.array([MASK64, 2**63, 12345], dtype=np.uint64))
        s = ref.splitmix64(MASK64)
    assert h.dtype == np.uint64
    assert [int(v) for v in h] == [splitmix64_py(MASK64), splitmix64_py(2**63),
                                   splitmix64_py(12345)]
    assert int(s) == splitmix64_py(MASK64)


# -- dropout_mask ----------------------------------------------------------------

def test_mask_follows_the_documented_formula():
    seed, step, p = 2**63 + 99, 7, 0.3
    key = splitmix64_py(seed ^ splitmix64_py(step))
    expected = [int((splitmix64_py((key + i) & MASK64) >> 11) * 2.0**-53 >= p)
                for i in range(50)]
    keep = ref.dropout_mask((5, 10), p, seed, step)
    assert keep.dtype == np.uint8 and keep.shape == (5, 10)
    assert keep.ravel().tolist() == expected


def test_mask_same_for_same_seed_and_step():
    a = ref.dropout_mask((3, 6, 5, 5), 0.5, 42, 3)
    b = ref.dropout_mask((3, 6, 5, 5), 0.5, 42, 3)
    assert np.array_equal(a, b)


def test_mask_changes_with_step_and_seed():
    a = ref.dropout_mask((1000,), 0.5, 42, 3)
    assert not np.array_equal(a, ref.dropout_mask((1000,), 0.5, 42, 4))
    assert not np.array_equal(a, ref.dropout_mask((1000,), 0.5, 43, 3))


def test_mask_depends_only_on_flat_index():
    flat = ref.dropout_mask((60,), 0.4, 5, 2)
    assert np.array_equal(ref.dropout_mask((3, 4, 5), 0.4, 5, 2).ravel(), flat)
    # A longer mask starts with the shorter one: element i needs only i.
    assert np.array_equal(ref.dropout_mask((100,), 0.4, 5, 2)[:60], flat)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_is_one_minus_p(p):
    n = 10**6
    keep = ref.dropout_mask((n,), p, 2024, 1)
    se = np.sqrt(p * (1 - p) / n)
    assert abs(keep.mean() - (1 - p)) < 5 * se


def test_mask_p_zero_keeps_everything():
    assert ref.dropout_mask((4, 5), 0.0, 1, 0).all()


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, float("nan")])
def test_mask_bad_p_raises(p):
    with pytest.raises(ValueError, match="p must be in"):
        ref.dropout_mask((3,), p, 0, 0)


def test_mask_bad_counters_raise():
    with pytest.raises(ValueError, match="seed"):
        ref.dropout_mask((3,), 0.5, -1, 0)
    with pytest.raises(ValueError, match="step"):
        ref.dropout_mask((3,), 0.5, 0, 2**64)
    with pytest.raises(TypeError, match="seed"):
        ref.dropout_mask((3,), 0.5, 1.5, 0)


# -- dropout_forward / dropout_backward --------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_backward_equations(dtype, rng):
    x = rng.standard_normal((3, 7)).astype(dtype)
    dy = rng.standard_normal((3, 7)).astype(dtype)
    y, keep = ref.dropout_forward(x, 0.25, 9, 4)
    assert np.array_equal(keep, ref.dropout_mask(x.shape, 0.25, 9, 4))
    assert y.dtype == dtype and keep.dtype == np.uint8
    assert_close(y, x * keep / 0.75, rtol=1e-6)
    dx = ref.dropout_backward(dy, keep, 0.25)
    assert dx.dtype == dtype
    assert_close(dx, dy * keep / 0.75, rtol=1e-6)
    assert np.all(y[keep == 0] == 0)


def test_expected_output_is_input():
    n, p = 10**6, 0.5
    x = np.full(n, 2.0)
    y, _ = ref.dropout_forward(x, p, 77, 0)
    se = 2.0 * np.sqrt(p / (1 - p) / n)
    assert abs(y.mean() - 2.0) < 5 * se


def test_forward_p_zero_is_identity(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    y, keep = ref.dropout_forward(x, 0.0, 3, 0)
    assert np.array_equal(y, x) and keep.all()


# -- Dropout layer -------------------------------------------------------------------

def test_layer_train_uses_seed_and_step(rng):
    x = rng.standard_normal((3, 6, 5, 5))
    layer = tn.Dropout(0.3, seed=11)
    assert layer.step == 0
    y0 = layer.forward(x)
    y1 = layer.forward(x)
    assert layer.step == 2
    assert_close(y0, ref.dropout_forward(x, 0.3, 11, 0)[0])
    assert_close(y1, ref.dropout_forward(x, 0.3, 11, 1)[0])
    assert not np.array_equal(y0, y1)


def test_layer_same_seed_and_step_reproduce(rng):
    x = rng.standard_normal((4, 9))
    a, b = tn.Dropout(0.5, seed=5), tn.Dropout(0.5, seed=5)
    b.step = 3
    a.forward(x), a.forward(x), a.forward(x)
    assert np.array_equal(a.forward(x), b.forward(x))


def test_layer_backward_uses_the_forward_mask(rng):
    x = rng.standard_normal((3, 8))
    dy = rng.standard_normal((3, 8))
    layer = tn.Dropout(0.4, seed=1)
    y = layer.forward(x)
    dx = layer.backward(dy)
    keep = ref.dropout_mask(x.shape, 0.4, 1, 0)
    assert_close(dx, dy * keep / 0.6)
    assert np.array_equal(y == 0, dx == 0)


def test_layer_eval_is_identity(rng):
    x = rng.standard_normal((3, 8)).astype(np.float32)
    dy = rng.standard_normal((3, 8)).astype(np.float32)
    layer = tn.Dropout(0.5, seed=1).eval()
    y = layer.forward(x)
    dx = layer.backward(dy)
    assert np.array_equal(y, x) and y.dtype == np.float32
    assert np.array_equal(dx, dy) and dx is not dy
    assert layer.step == 0


def test_layer_p_zero_is_identity_in_training(rng):
    x = rng.standard_normal((3, 8))
    layer = tn.Dropout(0.0, seed=1)
    assert np.array_equal(layer.forward(x), x)
    assert np.array_equal(layer.backward(x), x)


@pytest.mark.parametrize("p", [1.0, -0.1, 2.0, float("nan")])
def test_layer_bad_p_raises(p):
    with pytest.raises(ValueError, match="Dropout: p"):
        tn.Dropout(p)


def test_layer_bad_seed_raises():
    with pytest.raises(ValueError, match="Dropout: seed"):
        tn.Dropout(0.5, seed=-1)
    with pytest.raises(TypeError, match="Dropout: seed"):
        tn.Dropout(0.5, seed=1.5)


def test_default_seed_follows_init_seed():
    tn.init.seed(123)
    a = tn.Dropout(0.5)
    tn.init.seed(123)
    b = tn.Dropout(0.5)
    c = tn.Dropout(0.5)
    assert a.seed == b.seed
    assert c.seed != b.seed


def test_layer_contract_errors(rng):
    layer = tn.Dropout(0.5, seed=0)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((2, 3)))
    layer.forward(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match="Dropout"):
        layer.backward(np.ones((3, 2)))
    with pytest.raises(TypeError, match="Dropout"):
        layer.forward(np.ones((2, 3), dtype=np.int32))


def test_layer_requires_input_grad_false(rng):
    layer = tn.Dropout(0.5, seed=0)
    layer.requires_input_grad = False
    layer.forward(rng.standard_normal((2, 3)))
    assert layer.backward(np.ones((2, 3))) is None


def test_layer_repr_and_no_parameters():
    layer = tn.Dropout(0.25, seed=0)
    assert repr(layer) == "Dropout(p=0.25)"
    assert layer.parameters() == [] and layer.state_dict() == {}


def test_gradcheck_train_mode(rng):
    layer = tn.Dropout(0.4, seed=8)
    layer.step = 5
    check_grads(layer, rng.standard_normal((3, 6, 5)))
    assert layer.step == 5


def test_gradcheck_eval_mode(rng):
    check_grads(tn.Dropout(0.4, seed=8).eval(), rng.standard_normal((3, 6, 5)))
