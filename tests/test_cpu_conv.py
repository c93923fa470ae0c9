"""The cpu backend's Conv2D ops against the ref backend and the loop oracle:
odd shapes, stride 1 and 2, padding 0 and more, non-square kernels, both
schedules (per-sample for few input channels, chunked otherwise), with and
without bias and dx, float32 and float64."""
import numpy as np
import pytest

from tinynet.backends import cpu, ref
from tinynet.backends.cpu import conv as cpu_conv
from conftest import assert_close

# (N, C, H, W, F, (KH, KW), stride, padding). C*KH*KW <= SMALL_K takes the
# per-sample schedule, above it the chunked one; stride 1 with OW == W takes
# the shifted-tap im2col, everything else the row-by-row one.
CASES = [
    (3, 1, 7, 9, 5, (3, 3), (1, 1), (1, 1)),
    (2, 1, 6, 5, 4, (3, 3), (2, 2), (0, 0)),
    (3, 2, 5, 7, 3, (2, 3), (2, 1), (1, 0)),
    (2, 3, 7, 5, 4, (3, 5), (1, 1), (1, 2)),
    (3, 6, 7, 9, 5, (3, 3), (1, 1), (1, 1)),
    (2, 7, 6, 5, 3, (3, 3), (1, 1), (0, 0)),
    (3, 6, 7, 7, 2, (3, 3), (2, 2), (1, 1)),
    (2, 9, 5, 6, 4, (5, 3), (1, 1), (0, 1)),
    (3, 8, 7, 5, 3, (3, 1), (1, 2), (0, 1)),
    (2, 5, 4, 4, 3, (3, 3), (2, 1), (2, 1)),
    (2, 6, 1, 2, 3, (3, 3), (1, 1), (1, 1)),
]
IDS = ["small-same", "small-s2p0", "small-k2x3", "small-k3x5-same", "chunked-same",
       "chunked-p0", "chunked-s2", "chunked-k5x3-same-width", "chunked-k3x1-s1x2",
       "chunked-s2x1-p2x1", "chunked-1x2-image"]
DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _inputs(rng, case, dtype):
    N, C, H, W, F, kernel, _, _ = case
    x = rng.standard_normal((N, C, H, W))
    Wt = rng.standard_normal((F, C) + kernel) / np.sqrt(C * kernel[0] * kernel[1])
    b = rng.standard_normal(F)
    return x.astype(dtype), Wt.astype(dtype), b.astype(dtype)


def test_cases_cover_both_schedules():
    small = [c[1] * c[5][0] * c[5][1] <= cpu_conv.SMALL_K for c in CASES]
    assert any(small) and not all(small)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_forward_matches_ref(rng, case, dtype, bias):
    x, W, b = _inputs(rng, case, dtype)
    b = b if bias else None
    stride, padding = case[6:]
    y, _ = cpu.conv2d_forward(x, W, b, stride, padding)
    b64 = None if b is None else b.astype(np.float64)
    y_ref, _ = ref.conv2d_forward(x.astype(np.float64), W.astype(np.float64), b64, stride,
                                  padding)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert_close(y, y_ref, what="y", **_tol(dtype))


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_conv_backward_matches_ref(rng, case, dtype, bias, need_dx):
    x, W, b = _inputs(rng, case, dtype)
    stride, padding = case[6:]
    y, cache = cpu.conv2d_forward(x, W, b if bias else None, stride, padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    grads = cpu.conv2d_backward(dy, x, W, cache, stride, padding, bias, need_dx)
    grads_ref = ref.conv2d_backward(dy.astype(np.float64), x.astype(np.float64),
                                    W.astype(np.float64), None, stride, padding, bias, need_dx)
    for name, g, g_ref in zip(("dx", "dW", "db"), grads, grads_ref):
        if g_ref is None:
            assert g is None, name
            continue
        assert g.dtype == dtype and g.shape == g_ref.shape, name
        assert_close(g, g_ref, what=name, **_tol(dtype))


@pytest.mark.parametrize("case", CASES[:2] + CASES[4:6], ids=IDS[:2] + IDS[4:6])
def test_conv_matches_naive_oracle(rng, case):
    x, W, b = _inputs(rng, case, np.float64)
    stride, padding = case[6:]
    y, cache = cpu.conv2d_forward(x, W, b, stride, padding)
    y_naive, _ = ref.conv2d_naive_forward(x, W, b, stride, padding)
    assert_close(y, y_naive, rtol=1e-12, atol=1e-12, what="y")
    dy = rng.standard_normal(y.shape)
    grads = cpu.conv2d_backward(dy, x, W, cache, stride, padding, True, True)
    grads_naive = ref.conv2d_naive_backward(dy, x, W, None, stride, padding, True, True)
    for name, g, g_naive in zip(("dx", "dW", "db"), grads, grads_naive):
        assert_close(g, g_naive, rtol=1e-12, atol=1e-12, what=name)


@pytest.mark.parametrize("case", [CASES[0], CASES[4]], ids=[IDS[0], IDS[4]])
def test_conv_backward_without_cache_and_inputs_untouched(rng, case):
    x, W, b = _inputs(rng, case, np.float64)
    stride, padding = case[6:]
    y, cache = cpu.conv2d_forward(x, W, b, stride, padding)
    dy = rng.standard_normal(y.shape)
    copies = [a.copy() for a in (x, W, b, dy)]
    cache_copy = None if cache is None else cache.copy()
    with_cache = cpu.conv2d_backward(dy, x, W, cache, stride, padding, True, True)
    without = cpu.conv2d_backward(dy, x, W, None, stride, padding, True, True)
    for name, g, g2 in zip(("dx", "dW", "db"), with_cache, without):
        assert_close(g, g2, rtol=1e-13, atol=1e-13, what=name)
    for a, a_copy in zip((x, W, b, dy), copies):
        assert np.array_equal(a, a_copy)
    if cache is not None:
        assert np.array_equal(cache, cache_copy)


def test_per_sample_cache_without_ones_row_gives_db(rng):
    # A forward without bias caches no ones row; asking for db then recomputes it.
    x, W, _ = _inputs(rng, CASES[0], np.float64)
    stride, padding = CASES[0][6:]
    y, cache = cpu.conv2d_forward(x, W, None, stride, padding)
    dy = rng.standard_normal(y.shape)
    _, dW, db = cpu.conv2d_backward(dy, x, W, cache, stride, padding, True, False)
    assert_close(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12, what="db")
    _, dW_ref, _ = ref.conv2d_backward(dy, x, W, None, stride, padding, False, False)
    assert_close(dW, dW_ref, rtol=1e-12, atol=1e-12, what="dW")


@pytest.mark.parametrize("dtype", DTYPES)
def test_chunks_with_a_remainder(rng, monkeypatch, dtype):
    # Chunks of 2 samples over a batch of 5: 2 + 2 + 1.
    case = (5, 6, 5, 6, 3, (3, 3), (1, 1), (1, 1))
    x, W, b = _inputs(rng, case, dtype)
    K, P = 6 * 9, 5 * 6
    monkeypatch.setattr(cpu_conv, "CHUNK_BYTES", 2 * K * P * x.itemsize)
    assert cpu_conv._chunk_size(5, K, P, x.itemsize) == 2
    y, cache = cpu.conv2d_forward(x, W, b, (1, 1), (1, 1))
    dy = rng.standard_normal(y.shape).astype(dtype)
    grads = cpu.conv2d_backward(dy, x, W, cache, (1, 1), (1, 1), True, True)
    x64, W64, dy64 = (a.astype(np.float64) for a in (x, W, dy))
    y_ref, _ = ref.conv2d_forward(x64, W64, b.astype(np.float64), (1, 1), (1, 1))
    grads_ref = ref.conv2d_backward(dy64, x64, W64, None, (1, 1), (1, 1), True, True)
    assert_close(y, y_ref, what="y", **_tol(dtype))
    for name, g, g_ref in zip(("dx", "dW", "db"), grads, grads_ref):
        assert_close(g, g_ref, what=name, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_im2col_and_col2im_match_ref(rng, case, dtype):
    x, _, _ = _inputs(rng, case, dtype)
    kernel, stride, padding = case[5:]
    cols = cpu.im2col(x, *kernel, stride, padding)
    assert cols.dtype == dtype
    assert np.array_equal(cols, ref.im2col(x, *kernel, stride, padding))
    c = rng.standard_normal(cols.shape).astype(dtype)
    c_copy = c.copy()
    back = cpu.col2im(c, x.shape, *kernel, stride, padding)
    assert np.array_equal(c, c_copy), "col2im wrote to its input"
    back_ref = ref.col2im(c.astype(np.float64), x.shape, *kernel, stride, padding)
    assert back.dtype == dtype and back.shape == x.shape
    assert_close(back, back_ref, what="col2im", **_tol(dtype))


def test_col2im_rejects_wrong_cols_shape():
    with pytest.raises(ValueError, match="col2im"):
        cpu.col2im(np.zeros((1, 4, 5)), (1, 1, 3, 3), 2, 2, (1, 1), (0, 0))


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[6]], ids=[IDS[0], IDS[4], IDS[6]])
def test_nan_propagates(rng, case):
    x, W, b = _inputs(rng, case, np.float32)
    stride, padding = case[6:]
    x[1, 0, 2, 2] = np.nan
    y, cache = cpu.conv2d_forward(x, W, b, stride, padding)
    y_ref, _ = ref.conv2d_forward(x, W, b, stride, padding)
    assert np.array_equal(np.isnan(y), np.isnan(y_ref)) and np.isnan(y).any()
    dy = np.ones_like(y)
    grads = cpu.conv2d_backward(dy, x, W, cache, stride, padding, True, True)
    grads_ref = ref.conv2d_backward(dy, x, W, None, stride, padding, True, True)
    for name, g, g_ref in zip(("dx", "dW", "db"), grads, grads_ref):
        assert np.array_equal(np.isnan(g), np.isnan(g_ref)), name
    assert np.isnan(grads[1][:, 0]).any() and np.isfinite(grads[1][:, 1:]).all()


def test_layer_on_cpu_backend_skips_dx(rng):
    import tinynet as tn
    with tn.use_backend("cpu"):
        layer = tn.Conv2D(1, 4, 3, padding=1)
        layer.requires_input_grad = False
        x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
        y = layer.forward(x)
        assert layer.backward(np.ones_like(y)) is None
        assert np.any(layer.weight.grad != 0)


def test_every_op_is_a_cpu_implementation():
    names = [n for n in ref.conv.__all__
             if not n.startswith("conv2d_naive") and n != "conv2d_output_size"]
    assert sorted(cpu_conv.__all__) == sorted(names)
    for name in names:
        assert getattr(cpu, name).__module__ == "tinynet.backends.cpu.conv", name
