"""Dropout: the contract's splitmix64, the mask and the ops on every backend
against the reference (bit for bit), and the Dropout layer."""
import warnings

import numpy as np
import pytest

import tinynet as tn
from conftest import assert_close, check_grads
from harness import FLOATS, Backend
from tinynet.backends import ref
from tinynet.ops.dropout import MAX_U64, splitmix64
from tinynet.ops.dropout.cases import MASKS, SHAPES

GOLDEN = 0x9E3779B97F4A7C15
HOST = ["ref", "cpu"]


def splitmix64_py(z):
    """SplitMix64 on Python ints, written independently of the numpy version."""
    z = (z + GOLDEN) & MAX_U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MAX_U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MAX_U64
    return z ^ (z >> 31)


def mask(backend, shape, p, seed, step):
    """``backend``'s dropout mask as a numpy array."""
    return backend.get(backend.ops.dropout_mask(shape, p, seed, step))


def assert_bits(backend, got, want, what):
    """``got`` (of ``backend``) equals ``want`` bit for bit; on cuda NaN by position
    only, since a GPU writes its own NaN bits."""
    got = backend.get(got)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    if backend.name == "cuda":
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8), err_msg=what)


# -- splitmix64 ------------------------------------------------------------------------

def test_splitmix64_first_output_from_state_zero():
    assert int(splitmix64(0)) == 0xE220A8397B1DCDAF


def test_splitmix64_matches_reference_sequences():
    # Output k of the generator seeded with s is splitmix64(s + k * GOLDEN).
    states = np.array([(k * GOLDEN) & MAX_U64 for k in range(4)], dtype=np.uint64)
    assert [int(v) for v in splitmix64(states)] == [
        0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]
    # The published test vector for seed 1234567.
    states = np.array([(1234567 + k * GOLDEN) & MAX_U64 for k in range(5)], dtype=np.uint64)
    assert [int(v) for v in splitmix64(states)] == [
        6457827717110365317, 3203168211198807973, 9817491932198370423,
        4593380528125082431, 16408922859458223821]


def test_splitmix64_wraps_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = splitmix64(np.array([MAX_U64, 2**63, 12345], dtype=np.uint64))
        s = splitmix64(MAX_U64)
    assert h.dtype == np.uint64
    assert [int(v) for v in h] == [splitmix64_py(MAX_U64), splitmix64_py(2**63),
                                   splitmix64_py(12345)]
    assert isinstance(s, np.uint64) and int(s) == splitmix64_py(MAX_U64)
    assert splitmix64(np.zeros((5, 1), np.uint64)).shape == (5, 1)


# -- the mask ------------------------------------------------------------------------------

@pytest.mark.parametrize("m", MASKS, ids=[m.name for m in MASKS])
@pytest.mark.parametrize("case", SHAPES, ids=[s.name for s in SHAPES])
def test_mask_is_the_refs_bit_for_bit(backend, case, m):
    keep = mask(backend, case.shape, m.p, m.seed, m.step)
    assert keep.dtype == np.uint8 and keep.shape == case.shape
    np.testing.assert_array_equal(keep, ref.dropout_mask(case.shape, m.p, m.seed, m.step))


def test_mask_follows_the_documented_formula(backend):
    seed, step, p = 2**63 + 99, 7, 0.3
    key = splitmix64_py(seed ^ splitmix64_py(step))
    expected = [int((splitmix64_py((key + i) & MAX_U64) >> 11) * 2.0**-53 >= p)
                for i in range(50)]
    keep = mask(backend, (5, 10), p, seed, step)
    assert keep.dtype == np.uint8 and keep.shape == (5, 10)
    assert keep.ravel().tolist() == expected


def test_mask_threshold_is_exact_at_the_boundary(backend):
    # Take p equal to some element's u exactly: u >= p keeps it; the next
    # float above drops it. Every backend's test must agree with the float test.
    seed, step, n = 9, 4, 64
    key = splitmix64(np.uint64(seed) ^ splitmix64(step))
    with np.errstate(over="ignore"):
        h = splitmix64(key + np.arange(n, dtype=np.uint64))
    u = (h >> np.uint64(11)) * 2.0**-53
    i = int(np.argmin(np.abs(u - 0.5)))
    p = float(u[i])
    assert mask(backend, (n,), p, seed, step)[i] == 1
    assert mask(backend, (n,), np.nextafter(p, 1.0), seed, step)[i] == 0
    for q in (p, np.nextafter(p, 1.0), np.nextafter(p, 0.0)):
        np.testing.assert_array_equal(mask(backend, (n,), q, seed, step),
                                      ref.dropout_mask((n,), q, seed, step))


def test_mask_same_for_same_seed_and_step(backend):
    assert np.array_equal(mask(backend, (3, 6, 5, 5), 0.5, 42, 3),
                          mask(backend, (3, 6, 5, 5), 0.5, 42, 3))


def test_mask_changes_with_step_and_seed(backend):
    a = mask(backend, (1000,), 0.5, 42, 3)
    assert not np.array_equal(a, mask(backend, (1000,), 0.5, 42, 4))
    assert not np.array_equal(a, mask(backend, (1000,), 0.5, 43, 3))


def test_mask_depends_only_on_flat_index(backend):
    flat = mask(backend, (60,), 0.4, 5, 2)
    assert np.array_equal(mask(backend, (3, 4, 5), 0.4, 5, 2).ravel(), flat)
    # A longer mask starts with the shorter one: element i needs only i.
    assert np.array_equal(mask(backend, (100,), 0.4, 5, 2)[:60], flat)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("name", HOST)
def test_kept_fraction_is_one_minus_p(name, p):
    n = 10**6
    keep = Backend(name).ops.dropout_mask((n,), p, 2024, 1)
    se = np.sqrt(p * (1 - p) / n)
    assert abs(keep.mean() - (1 - p)) < 5 * se


def test_mask_p_zero_keeps_everything(backend):
    assert mask(backend, (4, 5), 0.0, 1, 0).all()


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, float("nan")])
def test_bad_p_raises(backend, p):
    with pytest.raises(ValueError, match="dropout: p must be in"):
        backend.ops.dropout_mask((3,), p, 0, 0)
    with pytest.raises(ValueError, match="dropout: p must be in"):
        backend.ops.dropout_forward(backend.put(np.zeros(3)), p, 0, 0)
    with pytest.raises(ValueError, match="dropout: p must be in"):
        backend.ops.dropout_backward(backend.put(np.zeros(3)), backend.put(np.ones(3, np.uint8)),
                                     p)


def test_bad_counters_and_arrays_raise(backend):
    ops = backend.ops
    with pytest.raises(ValueError, match="seed"):
        ops.dropout_mask((3,), 0.5, -1, 0)
    with pytest.raises(ValueError, match="seed"):
        ops.dropout_forward(backend.put(np.zeros(3)), 0.5, -1, 0)
    with pytest.raises(ValueError, match="step"):
        ops.dropout_mask((3,), 0.5, 0, 2**64)
    with pytest.raises(TypeError, match="dropout: seed must be an integer"):
        ops.dropout_mask((3,), 0.5, 1.5, 0)
    with pytest.raises(TypeError, match="dropout_forward: x must be float32 or float64"):
        ops.dropout_forward(backend.put(np.zeros(3, np.int32)), 0.5, 0, 0)
    with pytest.raises(ValueError, match="dropout_backward: keep must have dy's shape"):
        ops.dropout_backward(backend.put(np.zeros((2, 3))), backend.put(np.ones((3, 2), np.uint8)),
                             0.5)


# -- forward and backward --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", SHAPES, ids=[s.name for s in SHAPES])
def test_forward_backward_are_the_refs_bits(backend, case, dtype, rng):
    x, dy = case.draw(rng, dtype)
    with np.errstate(invalid="ignore"):
        y_ref, keep_ref = ref.dropout_forward(x, 0.35, 31, 5)
        dx_ref = ref.dropout_backward(dy, keep_ref, 0.35)
        y, keep = backend.ops.dropout_forward(backend.put(x), 0.35, 31, 5)
        dx = backend.ops.dropout_backward(backend.put(dy), keep, 0.35)
    keep = backend.get(keep)
    assert keep.dtype == np.uint8
    np.testing.assert_array_equal(keep, keep_ref)
    assert_bits(backend, y, y_ref, "y")
    assert_bits(backend, dx, dx_ref, "dx")


@pytest.mark.parametrize("dtype", FLOATS)
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


@pytest.mark.parametrize("name", HOST)
def test_expected_output_is_input(name):
    n, p = 10**6, 0.5
    y, _ = Backend(name).ops.dropout_forward(np.full(n, 2.0), p, 77, 0)
    se = 2.0 * np.sqrt(p / (1 - p) / n)
    assert abs(y.mean() - 2.0) < 5 * se


def test_forward_p_zero_is_identity_and_inputs_untouched(backend, rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    xb = backend.put(x)
    y, keep = backend.ops.dropout_forward(xb, 0.0, 3, 0)
    assert np.array_equal(backend.get(y), x) and backend.get(keep).all()
    # Overwriting y leaves x as it was: y is a fresh array.
    y[...] = 7
    assert np.array_equal(backend.get(xb), x)


@pytest.mark.parametrize("name", HOST)
def test_noncontiguous_input(name, rng):
    x = rng.standard_normal((6, 10))[:, ::2]
    y, keep = Backend(name).ops.dropout_forward(x, 0.5, 8, 1)
    y_ref, keep_ref = ref.dropout_forward(np.ascontiguousarray(x), 0.5, 8, 1)
    np.testing.assert_array_equal(keep, keep_ref)
    np.testing.assert_array_equal(y, y_ref)


# -- the Dropout layer ---------------------------------------------------------------------

def test_layer_matches_the_ref_layer(backend, rng):
    x = rng.standard_normal((3, 6, 5, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    out = {}
    for b in (backend, Backend("ref")):
        with b.active():
            layer = tn.Dropout(0.3, seed=11)
            layer.forward(b.put(x))
            out[b.name] = b.get(layer.forward(b.put(x))), b.get(layer.backward(b.put(dy)))
    for a, b in zip(out[backend.name], out["ref"]):
        np.testing.assert_array_equal(a, b)


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
