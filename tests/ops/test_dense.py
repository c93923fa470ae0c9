"""Dense (tinynet.ops.dense) on every backend: the ops against the float64
reference over the odd cases of tinynet.ops.dense.cases, with and without the
bias and dx, against the formulas, db summed in float64, NaN; and the Dense
and Flatten layers (parameters, initialization, gradients, torch parity, bad
input)."""
import importlib
import math

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from tinynet.ops import dense
from tinynet.ops.contract import REGISTRY
from tinynet.ops.dense.cases import CASES, DenseCase
from conftest import assert_close, check_grads
from harness import FLOATS, PARAMS


def _backends(*names):
    """The ``backend`` fixture's params of ``names`` only, for indirect parametrization."""
    return [p for p in PARAMS if getattr(p, "values", (p,))[0] in names]


BY_CASE = pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
# Formula tolerances of a float32 or float64 result.
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _inputs(rng, case, dtype):
    """x, W scaled by 1/sqrt(I), b and dy of ``case``, host arrays of ``dtype``."""
    arrays = (rng.standard_normal(case.x_shape),
              rng.standard_normal(case.w_shape) / np.sqrt(case.in_features),
              rng.standard_normal(case.out_features), rng.standard_normal(case.y_shape))
    return tuple(a.astype(dtype) for a in arrays)


def _f64(*arrays):
    return tuple(None if a is None else a.astype(np.float64) for a in arrays)


def _dense64(in_features, out_features, bias=True):
    return tn.Dense(in_features, out_features, bias=bias).to(np.float64)


# -- the ops -------------------------------------------------------------------

def test_every_op_is_implemented(backend):
    module = importlib.import_module(f"tinynet.ops.dense.{backend.name}")
    assert set(module.__all__) == set(dense.__all__) & set(REGISTRY) == {"dense_forward",
                                                                          "dense_backward"}
    for name in module.__all__:
        fn = getattr(backend.ops, name)
        assert (fn.__module__, fn.contract_ref) == (module.__name__, REGISTRY[name]), name
        assert backend.name == "ref" or fn is not getattr(ref, name), name


@BY_CASE
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bias", [True, False])
def test_dense_forward_matches_ref(backend, rng, case, dtype, bias):
    x, W, b, _ = _inputs(rng, case, dtype)
    b = b if bias else None
    b_dev = backend.put(b)
    y = backend.ops.dense_forward(backend.put(x), backend.put(W), b_dev)
    backend.assert_matches(y, ref.dense_forward(*_f64(x, W, b)), dtype, "y")
    if bias:
        assert np.array_equal(backend.get(b_dev), b), "b was written"


@BY_CASE
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("need_dx", [True, False])
def test_dense_backward_matches_ref(backend, rng, case, dtype, bias, need_dx):
    x, W, _, dy = _inputs(rng, case, dtype)
    grads = backend.ops.dense_backward(backend.put(x), backend.put(W), backend.put(dy), bias,
                                       need_dx)
    grads_ref = ref.dense_backward(*_f64(x, W, dy), bias, need_dx)
    for name, g, g_ref in zip(("dx", "dW", "db"), grads, grads_ref):
        backend.assert_matches(g, g_ref, dtype, name)


@pytest.mark.parametrize("dtype", FLOATS)
def test_dense_forward_is_x_Wt_plus_b(backend, rng, dtype):
    x = rng.standard_normal((3, 5)).astype(dtype)
    W = rng.standard_normal((4, 5)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    y = backend.get(backend.ops.dense_forward(backend.put(x), backend.put(W), backend.put(b)))
    expected = np.array([[sum(float(x[n, i]) * float(W[o, i]) for i in range(5)) + float(b[o])
                          for o in range(4)] for n in range(3)])
    assert y.dtype == dtype and y.shape == (3, 4)
    assert_close(y, expected, **TOL[dtype])
    y = backend.ops.dense_forward(backend.put(x), backend.put(W), None)
    assert_close(backend.get(y), expected - b.astype(np.float64), **TOL[dtype])


@pytest.mark.parametrize("dtype", FLOATS)
def test_dense_backward_is_dy_W_and_dyT_x(backend, rng, dtype):
    x = rng.standard_normal((3, 5)).astype(dtype)
    W = rng.standard_normal((4, 5)).astype(dtype)
    dy = rng.standard_normal((3, 4)).astype(dtype)
    dx, dW, db = (backend.get(g) for g in backend.ops.dense_backward(
        backend.put(x), backend.put(W), backend.put(dy), True, True))
    assert dx.dtype == dW.dtype == db.dtype == dtype
    assert_close(dx, dy.astype(np.float64) @ W, what="dx", **TOL[dtype])
    assert_close(dW, dy.astype(np.float64).T @ x, what="dW", **TOL[dtype])
    assert_close(db, dy.astype(np.float64).sum(axis=0), what="db", **TOL[dtype])


def test_dense_backward_skips_dx_and_db(backend, rng):
    x, W, dy = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal((3, 4))
    dx, dW, db = backend.ops.dense_backward(backend.put(x), backend.put(W), backend.put(dy),
                                            False, False)
    assert dx is None and db is None
    assert_close(backend.get(dW), dy.T @ x)


@pytest.mark.parametrize("backend", _backends("ref", "cpu"), indirect=True)
def test_dense_accepts_non_contiguous_inputs(backend, rng):
    x, W, b, dy = _inputs(rng, DenseCase("6x8x5", 6, 8, 5), np.float64)
    xt = np.asfortranarray(x)
    assert_close(backend.ops.dense_forward(xt, W, b), ref.dense_forward(x, W, b), **TOL[np.float64])
    grads = backend.ops.dense_backward(xt, np.asfortranarray(W), np.asfortranarray(dy), True, True)
    for g, g_ref in zip(grads, ref.dense_backward(x, W, dy, True, True)):
        assert_close(g, g_ref, **TOL[np.float64])


@pytest.mark.parametrize("backend", _backends("cpu", "cuda"), indirect=True)
def test_bias_grad_sums_in_float64(backend):
    # 2**24 followed by ones: a float32 running sum stays at 2**24.
    dy = np.ones((1001, 2), dtype=np.float32)
    dy[0] = 2.0 ** 24
    x, W = np.ones((1001, 3), np.float32), np.ones((2, 3), np.float32)
    _, _, db = backend.ops.dense_backward(backend.put(x), backend.put(W), backend.put(dy), True,
                                          False)
    db = backend.get(db)
    assert db.dtype == np.float32
    assert db[0] == db[1] == 2.0 ** 24 + 1000


def test_nan_propagates(backend, rng):
    x, W, b, dy = _inputs(rng, DenseCase("3x5x4", 3, 5, 4), np.float32)
    x[1, 2] = np.nan
    y = backend.get(backend.ops.dense_forward(backend.put(x), backend.put(W), backend.put(b)))
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
    dx, dW, db = (backend.get(g) for g in backend.ops.dense_backward(
        backend.put(x), backend.put(W), backend.put(dy), True, True))
    assert np.isnan(dW[:, 2]).all() and np.isfinite(db).all() and np.isfinite(dx).all()


@pytest.mark.parametrize("backend", _backends("cuda"), indirect=True)
def test_dense_rejects_host_arrays(backend, rng):
    x, W = rng.standard_normal((2, 3)), rng.standard_normal((4, 3))
    with pytest.raises(TypeError, match="dense_forward: x .*host.*device arrays"):
        backend.ops.dense_forward(x, backend.put(W), None)


# -- the Dense layer -------------------------------------------------------------

def test_dense_parameters():
    layer = tn.Dense(5, 4)
    assert layer.weight.shape == (4, 5) and layer.bias.shape == (4,)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    assert layer.weight.name == "weight" and layer.bias.name == "bias"
    assert layer.parameters() == [layer.weight, layer.bias]
    assert list(layer.state_dict()) == ["weight", "bias"]
    assert np.abs(layer.bias.data).max() <= 1.0 / math.sqrt(5)  # torch's default init
    assert np.all(tn.Dense(5, 4, init="he_uniform").bias.data == 0)
    assert np.all(layer.weight.grad == 0) and np.all(layer.bias.grad == 0)
    no_bias = tn.Dense(5, 4, bias=False)
    assert no_bias.bias is None and no_bias.parameters() == [no_bias.weight]


@pytest.mark.parametrize("init, bound", [("torch", 1.0 / math.sqrt(50)),
                                         ("he_uniform", math.sqrt(6.0 / 50))])
def test_dense_weight_init(init, bound):
    tn.init.seed(7)
    layer = tn.Dense(50, 400, init=init)
    w = layer.weight.data
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3.0)) < 0.05 * bound
    tn.init.seed(7)
    assert np.array_equal(tn.Dense(50, 400, init=init).weight.data, w)


def test_dense_extra_repr():
    assert repr(tn.Dense(3, 4)) == "Dense(in_features=3, out_features=4, bias=True)"
    assert repr(tn.Dense(3, 4, bias=False)) == "Dense(in_features=3, out_features=4, bias=False)"


@pytest.mark.parametrize("args, error", [((0, 4), ValueError), ((3, -1), ValueError),
                                         ((3.0, 4), TypeError), ((True, 4), TypeError)])
def test_dense_bad_constructor(args, error):
    with pytest.raises(error, match="Dense"):
        tn.Dense(*args)


@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradcheck(rng, bias):
    layer = tn.Dense(5, 4, bias=bias)
    check_grads(layer, rng.standard_normal((3, 5)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_dense_keeps_dtype(backend, rng, dtype):
    with backend.active():
        layer = tn.Dense(5, 4).to(dtype).to(backend.device)
        y = layer.forward(backend.put(rng.standard_normal((3, 5)), dtype))
        dx = layer.backward(backend.put(np.ones((3, 4)), dtype))
    assert y.dtype == dx.dtype == layer.weight.grad.dtype == dtype


@pytest.mark.parametrize("bias", [True, False])
def test_dense_matches_torch_linear(backend, rng, bias):
    torch = pytest.importorskip("torch")
    lin = torch.nn.Linear(5, 4, bias=bias).double()
    x = rng.standard_normal((3, 5))
    dy = rng.standard_normal((3, 4))
    xt = torch.tensor(x, requires_grad=True)
    yt = lin(xt)
    yt.backward(torch.tensor(dy))
    y_t = yt.detach().numpy()
    with backend.active():
        layer = _dense64(5, 4, bias=bias)
        layer.weight.data[...] = lin.weight.detach().numpy()
        if bias:
            layer.bias.data[...] = lin.bias.detach().numpy()
        layer.to(backend.device)
        y = backend.get(layer.forward(backend.put(x)))
        dx = backend.get(layer.backward(backend.put(dy)))
    tol = dict(rtol=1e-12, atol=1e-12)
    assert_close(y, y_t, what="y", **tol)
    assert_close(dx, xt.grad.numpy(), what="dx", **tol)
    assert_close(backend.get(layer.weight.grad), lin.weight.grad.numpy(), what="dW", **tol)
    if bias:
        assert_close(backend.get(layer.bias.grad), lin.bias.grad.numpy(), what="db", **tol)


@pytest.mark.parametrize("shape", [(5,), (3, 5, 1), (3, 4)])
def test_dense_rejects_wrong_shape(rng, shape):
    layer = tn.Dense(5, 4)
    with pytest.raises(ValueError, match=r"Dense.*\(N, 5\)"):
        layer.forward(rng.standard_normal(shape).astype(np.float32))


def test_dense_rejects_wrong_dtype(rng):
    layer = tn.Dense(5, 4)
    with pytest.raises(TypeError, match="Dense"):
        layer.forward(rng.standard_normal((3, 5)))
    with pytest.raises(TypeError, match="Dense"):
        layer.forward(np.ones((3, 5), dtype=np.int64))


def test_dense_backward_before_forward():
    with pytest.raises(RuntimeError, match="Dense"):
        tn.Dense(5, 4).backward(np.ones((3, 4), dtype=np.float32))


def test_dense_rejects_bad_dy(rng):
    layer = tn.Dense(5, 4)
    layer.forward(rng.standard_normal((3, 5)).astype(np.float32))
    with pytest.raises(ValueError, match=r"Dense.*\(3, 4\)"):
        layer.backward(np.ones((3, 5), dtype=np.float32))
    with pytest.raises(TypeError, match="Dense"):
        layer.backward(np.ones((3, 4), dtype=np.float64))


def test_dense_without_input_grad(backend, rng):
    x = rng.standard_normal((3, 5))
    dy = rng.standard_normal((3, 4))
    with backend.active():
        full = _dense64(5, 4).to(backend.device)
        full.forward(backend.put(x))
        full.backward(backend.put(dy))
        layer = _dense64(5, 4).to(backend.device)
        layer.weight.data[...] = full.weight.data
        layer.requires_input_grad = False
        layer.forward(backend.put(x))
        assert layer.backward(backend.put(dy)) is None
    dW, db = backend.get(layer.weight.grad), backend.get(layer.bias.grad)
    assert_close(dW, backend.get(full.weight.grad), what="dW")
    assert_close(db, backend.get(full.bias.grad), what="db")
    assert np.any(dW != 0)


def test_dense_float32_without_input_grad(backend, rng):
    with backend.active():
        layer = tn.Dense(5, 4).to(backend.device)
        layer.requires_input_grad = False
        y = layer.forward(backend.put(rng.standard_normal((3, 5)), np.float32))
        assert layer.backward(backend.put(np.ones(y.shape, np.float32))) is None
    assert np.all(backend.get(layer.bias.grad) == 3)


def test_dense_backward_accumulates(rng):
    layer = _dense64(5, 4)
    x = rng.standard_normal((3, 5))
    dy = rng.standard_normal((3, 4))
    layer.forward(x)
    dx1 = layer.backward(dy)
    dW1, db1 = layer.weight.grad.copy(), layer.bias.grad.copy()
    dx2 = layer.backward(dy)
    assert_close(dx2, dx1, what="dx is not accumulated")
    assert_close(layer.weight.grad, 2 * dW1, what="dW")
    assert_close(layer.bias.grad, 2 * db1, what="db")
    layer.zero_grad()
    assert np.all(layer.weight.grad == 0) and np.all(layer.bias.grad == 0)


# -- the Flatten layer -----------------------------------------------------------

def test_flatten_forward_backward(rng):
    x = rng.standard_normal((3, 2, 4, 5)).astype(np.float32)
    layer = tn.Flatten()
    y = layer.forward(x)
    assert y.shape == (3, 40) and y.dtype == np.float32
    assert np.array_equal(y, x.reshape(3, 40))
    dy = rng.standard_normal((3, 40)).astype(np.float32)
    dx = layer.backward(dy)
    assert dx.shape == x.shape and np.array_equal(dx, dy.reshape(x.shape))
    assert not np.shares_memory(dx, dy)
    assert repr(layer) == "Flatten()"


def test_flatten_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 1, 4))
    assert np.array_equal(tn.Flatten().forward(x), torch.nn.Flatten()(torch.tensor(x)).numpy())


def test_flatten_gradcheck(rng):
    check_grads(tn.Flatten(), rng.standard_normal((3, 2, 3)))


def test_flatten_bad_input():
    layer = tn.Flatten()
    with pytest.raises(ValueError, match="Flatten"):
        layer.forward(np.ones(5, dtype=np.float32))
    with pytest.raises(RuntimeError, match="Flatten"):
        layer.backward(np.ones((3, 4), dtype=np.float32))
    layer.forward(np.ones((3, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="Flatten"):
        layer.backward(np.ones((3, 5), dtype=np.float32))
    with pytest.raises(TypeError, match="Flatten"):
        layer.backward(np.ones((3, 4), dtype=np.float64))


def test_flatten_without_input_grad():
    layer = tn.Flatten()
    layer.requires_input_grad = False
    layer.forward(np.ones((3, 2, 2)))
    assert layer.backward(np.ones((3, 4))) is None


def test_flatten_then_dense_gradcheck(rng):
    model = tn.Sequential(tn.Flatten(), tn.Dense(12, 4))
    check_grads(model, rng.standard_normal((3, 3, 2, 2)))


def test_cpu_cases_cover_every_gemm_path():
    # The cpu backend runs small products as one numpy matmul and larger ones
    # split over numba's pool, by rows of y (N >= O) or by its columns: the
    # cases above (run on every backend) must reach all three.
    from tinynet.ops.dense.cpu import SMALL_MACS
    macs = {case: case.N * case.in_features * case.out_features for case in CASES}
    big = [case for case in CASES if macs[case] >= SMALL_MACS]
    assert any(case.N >= case.out_features for case in big)
    assert any(case.N < case.out_features for case in big)
    assert any(macs[case] < SMALL_MACS for case in CASES)
