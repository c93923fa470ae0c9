"""Conv2D (tinynet.ops.conv) on every backend: im2col / col2im and the
convolution, plain and grouped, against the float64 reference over the odd
cases of tinynet.ops.conv.cases, against the loop oracle and against torch,
and the Conv2D layer (gradients, torch parity, bad input). The grouped
layer's own tests are tests/test_conv_groups.py."""
import importlib
import math

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from tinynet.ops import conv
from tinynet.ops.contract import REGISTRY
from tinynet.ops.conv import cpu as cpu_conv
from tinynet.ops.conv.cases import (CASES, GROUPED_CASES, GROUPED_SHAPES, LAYER_SHAPES,
                                    SHAPES)
from conftest import assert_close, check_grads
from harness import FLOATS

NAIVE = tuple(case for case in CASES if case.name in (
    "c1-same", "c1-s2-p0", "c1-k3x2-p1", "c1-k3x2-s2x1-p0x2", "k3-p0", "k3-s2-p1",
    "k2x3-s2x1-p1x0", "k3x1-s1x2-p0x1", "k3x2-p1", "k3x2-s2x1-p0x2", "c6-same", "c7-p0",
    "k3-s2-p1-nodx", "k3-s2-p1-nobias", "k3-s2-p1-nobias-nodx")) + tuple(
    case for case in GROUPED_CASES if case.name in (
        "dw3-same", "dw3-p3x2-wide", "dw5x3-same", "dw3-s2-p1", "dw2x3-s2x1-p1x0",
        "dw3x2-m3-s1x2-p1x0", "g2-same", "g2-s2-p0", "g4-k3x2-s2x1-p0x2", "g4-m3-same",
        "dw3-same-nodx", "g2-same-nobias-nodx"))
"""The cases on which every backend is also compared with the loop oracle."""


def _ids(cases):
    return [case.name for case in cases]


def _inputs(rng, case, dtype=np.float64):
    """x, W (scaled by 1/sqrt(C*KH*KW)) and b (None without a bias) of ``case``, host arrays."""
    x = rng.standard_normal(case.x_shape)
    W = rng.standard_normal(case.w_shape) / np.sqrt(case.K)
    b = rng.standard_normal(case.F) if case.bias else None
    return tuple(None if a is None else a.astype(dtype) for a in (x, W, b))


def _f64(*arrays):
    return tuple(None if a is None else np.asarray(a, np.float64) for a in arrays)


# -- the contract -------------------------------------------------------------

@pytest.mark.parametrize("H, K, s, p, expected", [(5, 3, 1, 0, 3), (7, 3, 2, 1, 4), (6, 3, 2, 0, 2),
                                                  (4, 4, 3, 0, 1), (1, 3, 1, 1, 1)])
def test_conv2d_output_size(H, K, s, p, expected):
    assert conv.conv2d_output_size(H, H, K, K, (s, s), (p, p)) == (expected, expected)
    assert ref.conv2d_output_size is conv.conv2d_output_size


def test_conv2d_output_size_rejects_too_small():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        conv.conv2d_output_size(2, 5, 3, 3, (1, 1), (0, 0))


def test_cases_cover_every_branch():
    """Both cpu schedules, both cpu im2col paths, both cuda paths, every option;
    for groups > 1 both grouped cpu schedules and every branch of the direct
    kernels, both cuda paths, and every option."""
    assert {cpu_conv.schedule(case.K) for case in SHAPES} == set(cpu_conv.SCHEDULES)
    assert all(case.groups == 1 for case in SHAPES)
    assert all(case.groups > 1 for case in GROUPED_SHAPES)
    assert {cpu_conv.schedule(case.K, case.groups, case.Cg) for case in GROUPED_SHAPES} \
        == set(cpu_conv.GROUPED_SCHEDULES)
    direct = [case for case in GROUPED_SHAPES if case.Cg == 1]
    # stride 1 with a 3x3 kernel (one pass), with another kernel (tap by tap), other strides
    assert {(case.stride == (1, 1), case.kernel == (3, 3)) for case in direct} \
        == {(True, True), (True, False), (False, True), (False, False)}
    assert {case.F == case.C for case in direct} == {True, False}  # a channel multiplier
    assert {case.groups for case in GROUPED_SHAPES} >= {2, 3, 4}
    assert {(case.bias, case.need_dx) for case in GROUPED_CASES} == {
        (True, True), (True, False), (False, True), (False, False)}
    assert len({case.name for case in CASES + GROUPED_CASES}) == len(CASES + GROUPED_CASES)
    same_width = [case.stride == (1, 1) and conv.conv2d_output_size(
        case.H, case.W, case.KH, case.KW, case.stride, case.padding)[1] == case.W
        for case in SHAPES]
    assert any(same_width) and not all(same_width)
    assert {case.C == 1 for case in SHAPES} == {True, False}
    assert {(case.bias, case.need_dx) for case in CASES} == {(True, True), (True, False),
                                                             (False, True), (False, False)}


def test_every_op_is_implemented(backend):
    names = sorted(name for name in conv.__all__ if name in REGISTRY)
    module = importlib.import_module(f"tinynet.ops.conv.{backend.name}")
    assert sorted(set(module.__all__) & set(REGISTRY)) == names
    for name in names:
        assert getattr(backend.ops, name).__module__ == f"tinynet.ops.conv.{backend.name}", name


@pytest.mark.parametrize("op_name", ["conv2d_forward", "conv2d_backward"])
def test_bad_groups_are_refused(backend, op_name):
    x = backend.put(np.zeros((2, 4, 5, 5), np.float32))
    dy = backend.put(np.zeros((2, 6, 3, 3), np.float32))

    def call(W, groups):
        W = backend.put(np.zeros(W, np.float32))
        if op_name == "conv2d_forward":
            return backend.ops.conv2d_forward(x, W, None, (1, 1), (0, 0), groups)
        return backend.ops.conv2d_backward(dy, x, W, None, (1, 1), (0, 0), True, True, groups)
    with pytest.raises(ValueError, match=f"{op_name}: groups=3 must divide in_channels=4 and "
                                         "out_channels=6"):
        call((6, 1, 3, 3), 3)
    with pytest.raises(ValueError, match=rf"{op_name}: x must have shape \(N, 6, H, W\) for "
                                         rf"W \(6, 3, 3, 3\) and groups=2"):
        call((6, 3, 3, 3), 2)
    with pytest.raises(ValueError, match=f"{op_name}: groups must be >= 1"):
        call((6, 4, 3, 3), 0)
    with pytest.raises(TypeError, match=f"{op_name}: groups must be an int"):
        call((6, 2, 3, 3), 2.0)


# -- im2col and col2im --------------------------------------------------------

def test_im2col_small_example(backend):
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    cols = backend.get(backend.ops.im2col(backend.put(x), 2, 2, (1, 1), (0, 0)))
    # Rows are the taps (0,0), (0,1), (1,0), (1,1); columns the output positions.
    expected = np.array([[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]], dtype=float)
    assert cols.shape == (1, 4, 4)
    assert np.array_equal(cols[0], expected)
    padded = backend.get(backend.ops.im2col(backend.put(x), 3, 3, (2, 2), (1, 1)))
    assert padded.shape == (1, 9, 4)
    # Output (0, 0) sees the top-left corner of the padded image.
    assert np.array_equal(padded[0, :, 0], [0, 0, 0, 0, 0, 1, 0, 3, 4])


def test_col2im_sums_overlapping_windows(backend):
    ones = backend.put(np.ones((1, 4, 4)))
    counts = backend.get(backend.ops.col2im(ones, (1, 1, 3, 3), 2, 2, (1, 1), (0, 0)))
    # How many 2x2 windows cover each pixel of a 3x3 image.
    assert np.array_equal(counts[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", SHAPES, ids=_ids(SHAPES))
def test_im2col_and_col2im_match_ref(backend, rng, case, dtype):
    x, _, _ = _inputs(rng, case, dtype)
    args = (*case.kernel, case.stride, case.padding)
    cols = backend.get(backend.ops.im2col(backend.put(x), *args))
    assert cols.dtype == dtype
    assert np.array_equal(cols, ref.im2col(x, *args))
    c = rng.standard_normal(cols.shape).astype(dtype)
    c_in = backend.put(c)
    back = backend.ops.col2im(c_in, x.shape, *args)
    assert np.array_equal(backend.get(c_in), c), "col2im wrote to its input"
    back_ref = ref.col2im(c.astype(np.float64), x.shape, *args)
    backend.assert_matches(back, back_ref, dtype, "col2im")
    # The adjoint: <col2im(c), x> = <c, im2col(x)>.
    lhs = np.sum(backend.get(back).astype(np.float64) * x)
    rhs = np.sum(c.astype(np.float64) * cols)
    assert abs(lhs - rhs) <= backend.tol(dtype)["rtol"] * max(1.0, abs(lhs))


def test_col2im_rejects_wrong_cols_shape(backend):
    with pytest.raises(ValueError, match="col2im"):
        backend.ops.col2im(backend.put(np.zeros((1, 4, 5))), (1, 1, 3, 3), 2, 2, (1, 1), (0, 0))


# -- the convolution ----------------------------------------------------------

def _check_against(oracle_forward, oracle_backward, backend, rng, case, dtype):
    """The backend's forward and backward on ``case`` in ``dtype`` against an
    oracle run on the same inputs in float64."""
    x, W, b = _inputs(rng, case, dtype)
    y, cache = backend.ops.conv2d_forward(backend.put(x), backend.put(W), backend.put(b),
                                          case.stride, case.padding, case.groups)
    y_want, _ = oracle_forward(*_f64(x, W, b), case.stride, case.padding, case.groups)
    backend.assert_matches(y, y_want, dtype, "y")
    dy = rng.standard_normal(y_want.shape).astype(dtype)
    grads = backend.ops.conv2d_backward(backend.put(dy), backend.put(x), backend.put(W), cache,
                                        case.stride, case.padding, case.bias, case.need_dx,
                                        case.groups)
    grads_want = oracle_backward(*_f64(dy, x, W), None, case.stride, case.padding, case.bias,
                                 case.need_dx, case.groups)
    for name, g, g_want in zip(("dx", "dW", "db"), grads, grads_want):
        backend.assert_matches(g, g_want, dtype, name)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", CASES + GROUPED_CASES, ids=_ids(CASES + GROUPED_CASES))
def test_conv_matches_ref(backend, rng, case, dtype):
    _check_against(ref.conv2d_forward, ref.conv2d_backward, backend, rng, case, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", NAIVE, ids=_ids(NAIVE))
def test_conv_matches_naive_oracle(backend, rng, case, dtype):
    _check_against(ref.conv2d_naive_forward, ref.conv2d_naive_backward, backend, rng, case, dtype)


@pytest.mark.parametrize("case", LAYER_SHAPES[1:3], ids=_ids(LAYER_SHAPES[1:3]))
def test_naive_oracle_matches_torch(rng, case):
    torch = pytest.importorskip("torch")
    x, W, b = _inputs(rng, case)
    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    yt = torch.nn.functional.conv2d(xt, Wt, bt, stride=case.stride, padding=case.padding)
    dy = rng.standard_normal(yt.shape)
    yt.backward(torch.tensor(dy))
    y, _ = ref.conv2d_naive_forward(x, W, b, case.stride, case.padding)
    dx, dW, db = ref.conv2d_naive_backward(dy, x, W, None, case.stride, case.padding, True, True)
    assert_close(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12, what="y")
    assert_close(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12, what="dx")
    assert_close(dW, Wt.grad.numpy(), rtol=1e-12, atol=1e-12, what="dW")
    assert_close(db, bt.grad.numpy(), rtol=1e-12, atol=1e-12, what="db")
    dx, _, db = ref.conv2d_naive_backward(dy, x, W, None, case.stride, case.padding, False, False)
    assert dx is None and db is None


@pytest.mark.parametrize("case", LAYER_SHAPES, ids=_ids(LAYER_SHAPES))
def test_im2col_matches_torch_unfold(rng, case):
    torch = pytest.importorskip("torch")
    x, _, _ = _inputs(rng, case)
    cols = ref.im2col(x, *case.kernel, case.stride, case.padding)
    expected = torch.nn.functional.unfold(torch.tensor(x), case.kernel, padding=case.padding,
                                          stride=case.stride)
    assert np.array_equal(cols, expected.numpy())


CACHE_SHAPES = tuple(case for case in SHAPES + GROUPED_SHAPES
                     if case.name in ("c1-same", "k3-s2-p1", "c6-same", "dw3-same", "dw3-s2-p1",
                                      "dw3-m2-same", "g2-same"))


@pytest.mark.parametrize("case", CACHE_SHAPES, ids=_ids(CACHE_SHAPES))
def test_backward_without_cache_and_inputs_untouched(backend, rng, case):
    x, W, b = _inputs(rng, case)
    conv_args = (case.stride, case.padding)
    arrays = [backend.put(a) for a in (x, W, b)]
    y, cache = backend.ops.conv2d_forward(*arrays, *conv_args, case.groups)
    dy = rng.standard_normal(backend.get(y).shape)
    arrays.append(backend.put(dy))
    copies = [backend.get(a).copy() for a in arrays]
    cache_copy = None if cache is None else backend.get(cache).copy()
    x_, W_, _, dy_ = arrays
    with_cache = backend.ops.conv2d_backward(dy_, x_, W_, cache, *conv_args, True, True,
                                             case.groups)
    without = backend.ops.conv2d_backward(dy_, x_, W_, None, *conv_args, True, True,
                                          case.groups)
    for name, g, g2 in zip(("dx", "dW", "db"), with_cache, without):
        assert_close(backend.get(g), backend.get(g2), rtol=1e-13, atol=1e-13, what=name)
    dx, dW, db = backend.ops.conv2d_backward(dy_, x_, W_, None, *conv_args, False, False,
                                             case.groups)
    assert dx is None and db is None
    assert_close(backend.get(dW), backend.get(with_cache[1]), rtol=1e-13, atol=1e-13, what="dW")
    for a, a_copy in zip(arrays, copies):
        assert np.array_equal(backend.get(a), a_copy)
    if cache is not None:
        assert np.array_equal(backend.get(cache), cache_copy)


def test_cache_is_what_the_backend_documents(backend, rng):
    """ref: the columns (N, C*KH*KW, P); cpu: the columns with a ones row when
    groups == 1 and K <= SMALL_K, else None; cuda: the columns (C*KH*KW, N*P),
    None with one input channel per group (C == groups)."""
    for case in CACHE_SHAPES:
        x, W, b = _inputs(rng, case)
        OH, OW = conv.conv2d_output_size(case.H, case.W, *case.kernel, case.stride, case.padding)
        P, rows = OH * OW, case.C * case.KH * case.KW
        _, cache = backend.ops.conv2d_forward(backend.put(x), backend.put(W), backend.put(b),
                                              case.stride, case.padding, case.groups)
        if backend.name == "ref":
            want = (case.N, rows, P)
        elif backend.name == "cpu":
            small = case.groups == 1 and case.K <= cpu_conv.SMALL_K
            want = (case.N, case.K + 1, P) if small else None
        else:
            want = None if case.Cg == 1 else (rows, case.N * P)
        assert (None if cache is None else tuple(cache.shape)) == want, case.name


def test_cached_columns_without_a_bias_still_give_db(backend, rng):
    # A forward without a bias caches no ones row (cpu); asking for db then rebuilds it.
    case = SHAPES[0]
    x, W, _ = _inputs(rng, case)
    y, cache = backend.ops.conv2d_forward(backend.put(x), backend.put(W), None, case.stride,
                                          case.padding)
    dy = rng.standard_normal(backend.get(y).shape)
    _, dW, db = backend.ops.conv2d_backward(backend.put(dy), backend.put(x), backend.put(W),
                                            cache, case.stride, case.padding, True, False)
    backend.assert_matches(db, dy.sum(axis=(0, 2, 3)), np.float64, "db")
    _, dW_ref, _ = ref.conv2d_backward(dy, x, W, None, case.stride, case.padding, False, False)
    backend.assert_matches(dW, dW_ref, np.float64, "dW")


NAN_SHAPES = tuple(case for case in SHAPES if case.name in ("c1-same", "c6-same", "c6-s2-p1",
                                                           "c7-p0", "c9-k5-p1-widened"))


@pytest.mark.parametrize("case", NAN_SHAPES, ids=_ids(NAN_SHAPES))
def test_nan_propagates(backend, rng, case):
    x, W, b = _inputs(rng, case, np.float32)
    x[1, 0, 2, 2] = np.nan
    y, cache = backend.ops.conv2d_forward(backend.put(x), backend.put(W), backend.put(b),
                                          case.stride, case.padding)
    y = backend.get(y)
    y_ref, _ = ref.conv2d_forward(x, W, b, case.stride, case.padding)
    assert np.array_equal(np.isnan(y), np.isnan(y_ref)) and np.isnan(y).any()
    dy = np.ones_like(y)
    grads = backend.ops.conv2d_backward(backend.put(dy), backend.put(x), backend.put(W), cache,
                                        case.stride, case.padding, True, True)
    grads = [backend.get(g) for g in grads]
    grads_ref = ref.conv2d_backward(dy, x, W, None, case.stride, case.padding, True, True)
    for name, g, g_ref in zip(("dx", "dW", "db"), grads, grads_ref):
        assert np.array_equal(np.isnan(g), np.isnan(g_ref)), name
    assert np.isnan(grads[1][:, 0]).any() and np.isfinite(grads[1][:, 1:]).all()


GROUPED_NAN_SHAPES = tuple(case for case in GROUPED_SHAPES if case.name in (
    "dw3-same", "dw3-p0", "dw5x3-same", "dw3-s2-p1", "dw3x2-m3-s1x2-p1x0", "g2-same",
    "g2-s2-p0")) + tuple(case for case in SHAPES if case.name in ("c7-p0", "c9-k5-p1-widened"))
"""The grouped ones, and the ungrouped convolutions the cpu computes widened."""


@pytest.mark.parametrize("where", ["x", "x-edge", "W"])
@pytest.mark.parametrize("case", GROUPED_NAN_SHAPES, ids=_ids(GROUPED_NAN_SHAPES))
def test_nan_reaches_what_it_reaches_in_the_reference(backend, rng, case, where):
    """A NaN in x (inside the image, or in the last row and column that an
    output reads) or in W reaches exactly the outputs and gradients it
    reaches in the reference: those of its own group, and within them only
    the taps and pixels that read it."""
    x, W, b = _inputs(rng, case, np.float32)
    args = (case.stride, case.padding)
    OH, OW = conv.conv2d_output_size(case.H, case.W, *case.kernel, *args)
    if where == "x":
        x[1, case.C - 1, min(2, case.H - 1), min(2, case.W - 1)] = np.nan  # the last group
    elif where == "x-edge":
        h = min(case.H - 1, (OH - 1) * case.stride[0] + case.KH - 1 - case.padding[0])
        w = min(case.W - 1, (OW - 1) * case.stride[1] + case.KW - 1 - case.padding[1])
        x[1, case.C - 1, h, w] = np.nan
    else:
        W[case.F - 1, 0, case.KH - 1, 0] = np.nan
    y, cache = backend.ops.conv2d_forward(backend.put(x), backend.put(W), backend.put(b), *args,
                                          case.groups)
    y_ref, _ = ref.conv2d_forward(x, W, b, *args, case.groups)
    assert np.array_equal(np.isnan(backend.get(y)), np.isnan(y_ref)) and np.isnan(y_ref).any()
    dy = np.ones_like(y_ref)
    grads = backend.ops.conv2d_backward(backend.put(dy), backend.put(x), backend.put(W), cache,
                                        *args, True, True, case.groups)
    grads_ref = ref.conv2d_backward(dy, x, W, None, *args, True, True, case.groups)
    for name, g, g_ref in zip(("dx", "dW", "db"), grads, grads_ref):
        assert np.array_equal(np.isnan(backend.get(g)), np.isnan(g_ref)), name
    nan_grad = grads_ref[1] if where.startswith("x") else grads_ref[0]
    assert np.isnan(nan_grad).any() and not np.isnan(nan_grad).all()


TORCH_SHAPES = LAYER_SHAPES[:2] + GROUPED_SHAPES
"""groups 1, 2, 3, 4 and depthwise, strides 1 and 2, paddings 0 and 1, odd sizes."""


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", TORCH_SHAPES, ids=_ids(TORCH_SHAPES))
def test_conv_ops_match_torch(backend, rng, case, dtype):
    """y, dx, dW and db of conv2d_forward / conv2d_backward against
    torch.nn.functional.conv2d(groups=...), computed in float64 on the same
    (dtype-rounded) inputs."""
    torch = pytest.importorskip("torch", reason="torch is the conformance oracle of this test")
    x, W, b = _inputs(rng, case, dtype)
    xt, Wt, bt = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, W, b))
    yt = torch.nn.functional.conv2d(xt, Wt, bt, stride=case.stride, padding=case.padding,
                                    groups=case.groups)
    dy = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(dy.astype(np.float64)))
    y, cache = backend.ops.conv2d_forward(backend.put(x), backend.put(W), backend.put(b),
                                          case.stride, case.padding, case.groups)
    backend.assert_matches(y, yt.detach().numpy(), dtype, "y")
    grads = backend.ops.conv2d_backward(backend.put(dy), backend.put(x), backend.put(W), cache,
                                        case.stride, case.padding, True, True, case.groups)
    for name, g, want in zip(("dx", "dW", "db"), grads, (xt.grad, Wt.grad, bt.grad)):
        backend.assert_matches(g, want.numpy(), dtype, name)


# -- the Conv2D layer ---------------------------------------------------------

def _layer_step(backend, layer, x, dy):
    """layer.forward(x) and layer.backward(dy) on ``backend``; (y, dx, dW, db) on the host."""
    with backend.active():
        layer.to(backend.device)
        y = layer.forward(backend.put(x))
        dx = layer.backward(backend.put(dy))
        grads = [p.grad for p in layer.parameters()]
        return [backend.get(a) for a in [y, dx] + grads]


def test_layer_skips_dx(backend, rng):
    layer = tn.Conv2D(1, 4, 3, padding=1)
    layer.requires_input_grad = False
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    _, dx, dW, _ = _layer_step(backend, layer, x, np.ones((2, 4, 6, 6), np.float32))
    assert dx is None
    assert np.any(dW != 0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", LAYER_SHAPES, ids=_ids(LAYER_SHAPES))
def test_conv_matches_torch_conv2d(backend, rng, case, bias):
    torch = pytest.importorskip("torch")
    kw = dict(stride=case.stride, padding=case.padding, bias=bias)
    tconv = torch.nn.Conv2d(case.C, case.F, case.kernel, **kw).double()
    layer = tn.Conv2D(case.C, case.F, case.kernel, **kw).to(np.float64)
    layer.weight.data[...] = tconv.weight.detach().numpy()
    if bias:
        layer.bias.data[...] = tconv.bias.detach().numpy()
    x = rng.standard_normal(case.x_shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = tconv(xt)
    dy = rng.standard_normal(yt.shape)
    yt.backward(torch.tensor(dy))
    y, dx, dW, *db = _layer_step(backend, layer, x, dy)
    assert_close(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12, what="y")
    assert_close(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12, what="dx")
    assert_close(dW, tconv.weight.grad.numpy(), rtol=1e-12, atol=1e-12, what="dW")
    if bias:
        assert_close(db[0], tconv.bias.grad.numpy(), rtol=1e-12, atol=1e-12, what="db")


def test_conv_parameters():
    layer = tn.Conv2D(3, 4, (2, 3))
    assert layer.weight.shape == (4, 3, 2, 3) and layer.bias.shape == (4,)
    assert layer.weight.dtype == np.float32
    assert layer.weight.name == "weight" and layer.bias.name == "bias"
    assert layer.parameters() == [layer.weight, layer.bias]
    bound = 1.0 / math.sqrt(3 * 2 * 3)  # torch's default init: U(-b, b), b = 1/sqrt(fan_in)
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.bias.data).max() <= bound
    assert np.all(tn.Conv2D(3, 4, (2, 3), init="he_uniform").bias.data == 0)
    assert layer.kernel_size == (2, 3) and layer.stride == (1, 1) and layer.padding == (0, 0)
    layer = tn.Conv2D(3, 4, 3, stride=(2, 1), padding=[1, 0], bias=False)
    assert layer.stride == (2, 1) and layer.padding == (1, 0)
    assert layer.bias is None and layer.parameters() == [layer.weight]


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3), dict(kernel_size=3, padding=1),
                                    dict(kernel_size=(2, 3), stride=2, bias=False),
                                    dict(kernel_size=(3, 1), stride=(1, 2), padding=(0, 1))])
def test_conv_repr_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    expected = repr(torch.nn.Conv2d(3, 8, **kwargs)).replace("Conv2d", "Conv2D")
    assert repr(tn.Conv2D(3, 8, **kwargs)) == expected


@pytest.mark.parametrize("kwargs, error", [
    (dict(kernel_size=0), ValueError), (dict(kernel_size=(3, 0)), ValueError),
    (dict(kernel_size=3, stride=0), ValueError), (dict(kernel_size=3, padding=-1), ValueError),
    (dict(kernel_size=(3, 3, 3)), TypeError), (dict(kernel_size=2.5), TypeError),
    (dict(kernel_size=3, stride="2"), TypeError)])
def test_conv_bad_constructor(kwargs, error):
    with pytest.raises(error, match="Conv2D"):
        tn.Conv2D(3, 4, **kwargs)


@pytest.mark.parametrize("case", LAYER_SHAPES, ids=_ids(LAYER_SHAPES))
def test_conv_gradcheck(rng, case):
    layer = tn.Conv2D(case.C, case.F, case.kernel, stride=case.stride, padding=case.padding)
    check_grads(layer, rng.standard_normal(case.x_shape))


def test_conv_gradcheck_without_bias(rng):
    layer = tn.Conv2D(3, 2, 3, stride=2, padding=1, bias=False)
    check_grads(layer, rng.standard_normal((2, 3, 5, 5)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_conv_keeps_dtype(rng, dtype):
    layer = tn.Conv2D(3, 4, 3, padding=1).to(dtype)
    y = layer.forward(rng.standard_normal((2, 3, 5, 5)).astype(dtype))
    dx = layer.backward(np.ones(y.shape, dtype=dtype))
    assert y.dtype == dx.dtype == layer.weight.grad.dtype == layer.bias.grad.dtype == dtype


@pytest.mark.parametrize("shape", [(3, 5, 5), (2, 3, 5, 5, 1), (2, 4, 5, 5)])
def test_conv_rejects_wrong_shape(rng, shape):
    layer = tn.Conv2D(3, 4, 3)
    with pytest.raises(ValueError, match=r"Conv2D.*\(N, 3, H, W\)"):
        layer.forward(rng.standard_normal(shape).astype(np.float32))


def test_conv_rejects_input_smaller_than_kernel():
    with pytest.raises(ValueError, match="Conv2D.*smaller than the kernel"):
        tn.Conv2D(3, 4, 3).forward(np.ones((2, 3, 2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="Conv2D.*smaller than the kernel"):
        tn.Conv2D(3, 4, (1, 4)).forward(np.ones((2, 3, 5, 3), dtype=np.float32))
    # Padding makes a 1x1 input big enough for a 3x3 kernel.
    assert tn.Conv2D(3, 4, 3, padding=1).forward(np.ones((2, 3, 1, 1), dtype=np.float32)).shape \
        == (2, 4, 1, 1)


def test_conv_rejects_wrong_dtype(rng):
    layer = tn.Conv2D(3, 4, 3)
    with pytest.raises(TypeError, match="Conv2D"):
        layer.forward(rng.standard_normal((2, 3, 5, 5)))


def test_conv_backward_before_forward():
    with pytest.raises(RuntimeError, match="Conv2D"):
        tn.Conv2D(3, 4, 3).backward(np.ones((2, 4, 3, 3), dtype=np.float32))


def test_conv_rejects_bad_dy(rng):
    layer = tn.Conv2D(3, 4, 3)
    layer.forward(rng.standard_normal((2, 3, 5, 5)).astype(np.float32))
    with pytest.raises(ValueError, match=r"Conv2D.*\(2, 4, 3, 3\)"):
        layer.backward(np.ones((2, 4, 5, 5), dtype=np.float32))
    with pytest.raises(TypeError, match="Conv2D"):
        layer.backward(np.ones((2, 4, 3, 3), dtype=np.float64))


def test_conv_without_input_grad(rng):
    x = rng.standard_normal((2, 3, 5, 5))
    dy = rng.standard_normal((2, 4, 3, 3))
    full = tn.Conv2D(3, 4, 3, stride=2, padding=1).to(np.float64)
    full.forward(x)
    full.backward(dy)
    layer = tn.Conv2D(3, 4, 3, stride=2, padding=1).to(np.float64)
    layer.weight.data[...] = full.weight.data
    layer.requires_input_grad = False
    layer.forward(x)
    assert layer.backward(dy) is None
    assert np.any(layer.weight.grad != 0)
    assert_close(layer.weight.grad, full.weight.grad, what="dW")
    assert_close(layer.bias.grad, full.bias.grad, what="db")


def test_conv_backward_accumulates(backend, rng):
    # Two backward calls after one forward: dx twice the same, dW and db added up.
    layer = tn.Conv2D(3, 4, 3, padding=1).to(np.float64)
    x = rng.standard_normal((2, 3, 5, 5))
    dy = backend.put(rng.standard_normal((2, 4, 5, 5)))
    with backend.active():
        layer.to(backend.device)
        layer.forward(backend.put(x))
        first = [backend.get(a).copy() for a in [layer.backward(dy), layer.weight.grad,
                                                  layer.bias.grad]]
        second = [backend.get(a) for a in [layer.backward(dy), layer.weight.grad,
                                           layer.bias.grad]]
    assert_close(second[0], first[0], what="dx is not accumulated")
    assert_close(second[1], 2 * first[1], what="dW")
    assert_close(second[2], 2 * first[2], what="db")


def test_small_cnn_gradcheck(rng):
    tn.init.seed(3)
    model = tn.Sequential(tn.Conv2D(2, 3, 3, padding=1), tn.MaxPool2D(2), tn.Flatten(),
                          tn.Dense(3 * 2 * 2, 4))
    check_grads(model, rng.standard_normal((2, 2, 5, 5)))


def test_small_cnn_matches_torch(rng):
    torch = pytest.importorskip("torch")
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.MaxPool2d(2),
                                 torch.nn.Flatten(), torch.nn.Linear(12, 4)).double()
    model = tn.Sequential(tn.Conv2D(2, 3, 3, padding=1), tn.MaxPool2D(2), tn.Flatten(),
                          tn.Dense(12, 4)).to(np.float64)
    model.load_state_dict(tmodel.state_dict())
    x = rng.standard_normal((2, 2, 5, 5))
    xt = torch.tensor(x, requires_grad=True)
    yt = tmodel(xt)
    dy = rng.standard_normal(yt.shape)
    yt.backward(torch.tensor(dy))
    assert_close(model.forward(x), yt.detach().numpy(), rtol=1e-12, atol=1e-12, what="y")
    assert_close(model.backward(dy), xt.grad.numpy(), rtol=1e-12, atol=1e-12, what="dx")
    for (name, p), tp in zip(model.named_parameters(), tmodel.parameters()):
        assert_close(p.grad, tp.grad.numpy(), rtol=1e-12, atol=1e-12, what=name)
