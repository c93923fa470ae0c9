"""The cpu backend's fused optimizer steps against the ref backend: every
option of SGD, Adam and AdamW, float32 and float64, arrays on both sides of
the serial / parallel size threshold, NaN, and bad input."""
import numpy as np
import pytest

from tinynet.backends import cpu, ref
from tinynet.backends.cpu.optim import SERIAL_BELOW

# Odd shapes, an empty one and two above the threshold (the parallel kernel).
SHAPES = [(7,), (3, 5, 2), (0,), (SERIAL_BELOW + 1,), (257, 263)]
SHAPE_IDS = ["7", "3x5x2", "empty", "threshold+1", "257x263"]
DTYPES = [np.float32, np.float64]
STEPS = 4

SGD_CASES = [
    dict(lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=False),
    dict(lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False),
    dict(lr=0.05, momentum=0.8, weight_decay=0.0, nesterov=True),
    dict(lr=0.1, momentum=0.0, weight_decay=0.01, nesterov=False),
    dict(lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True),
]
ADAM_CASES = [
    dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False),
    dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1, decoupled=False),
    dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=True),
    dict(lr=0.02, beta1=0.5, beta2=0.9, eps=1e-8, weight_decay=0.3, decoupled=True),
]


def _ids(cases):
    return ["-".join(f"{k}={v}" for k, v in kw.items()) for kw in cases]


def _tol(dtype):
    # float32 results against the float64 reference, float64 against float64.
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)


def _values(rng, shape, dtype, count):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(count)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("kw", SGD_CASES, ids=_ids(SGD_CASES))
def test_sgd_step_matches_ref(rng, kw, shape, dtype):
    param = rng.standard_normal(shape).astype(dtype)
    grads = _values(rng, shape, dtype, STEPS)
    use_buf = kw["momentum"] != 0
    buf = np.zeros_like(param) if use_buf else None
    param_ref = param.astype(np.float64)
    buf_ref = np.zeros_like(param_ref) if use_buf else None
    param_id = id(param)
    for g in grads:
        cpu.sgd_step(param, g, buf, **kw)
        ref.sgd_step(param_ref, g.astype(np.float64), buf_ref, **kw)
    assert id(param) == param_id and param.dtype == dtype
    np.testing.assert_allclose(param, param_ref, err_msg="param", **_tol(dtype))
    if use_buf:
        assert buf.dtype == dtype
        np.testing.assert_allclose(buf, buf_ref, err_msg="buf", **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("kw", ADAM_CASES, ids=_ids(ADAM_CASES))
def test_adam_step_matches_ref(rng, kw, shape, dtype):
    param = rng.standard_normal(shape).astype(dtype)
    grads = _values(rng, shape, dtype, STEPS)
    m, v = np.zeros_like(param), np.zeros_like(param)
    param_ref = param.astype(np.float64)
    m_ref, v_ref = np.zeros_like(param_ref), np.zeros_like(param_ref)
    for t, g in enumerate(grads, start=1):
        cpu.adam_step(param, g, m, v, t, **kw)
        ref.adam_step(param_ref, g.astype(np.float64), m_ref, v_ref, t, **kw)
    for got, want, what in ((param, param_ref, "param"), (m, m_ref, "m"), (v, v_ref, "v")):
        assert got.dtype == dtype, what
        np.testing.assert_allclose(got, want, err_msg=what, **_tol(dtype))


@pytest.mark.parametrize("kw", ADAM_CASES, ids=_ids(ADAM_CASES))
def test_float32_adam_matches_float32_ref_closely(rng, kw):
    # Both compute in float32 with the same float32 scalars.
    param = rng.standard_normal(1001).astype(np.float32)
    param_ref = param.copy()
    m, v, m_ref, v_ref = (np.zeros_like(param) for _ in range(4))
    for t in range(1, STEPS + 1):
        g = rng.standard_normal(1001).astype(np.float32)
        cpu.adam_step(param, g, m, v, t, **kw)
        ref.adam_step(param_ref, g, m_ref, v_ref, t, **kw)
    np.testing.assert_allclose(param, param_ref, rtol=2e-6, atol=1e-7)


def test_ops_do_not_write_grad(rng):
    for shape in [(7,), (SERIAL_BELOW + 1,)]:
        param, grad = _values(rng, shape, np.float32, 2)
        grad_before = grad.copy()
        cpu.sgd_step(param, grad, np.zeros_like(param), 0.1, 0.9, 0.1, True)
        cpu.adam_step(param, grad, np.zeros_like(param), np.zeros_like(param), 1,
                      0.1, 0.9, 0.999, 1e-8, 0.1, False)
        np.testing.assert_array_equal(grad, grad_before)


def test_grad_of_another_dtype_is_cast_like_ref(rng):
    param = rng.standard_normal(9).astype(np.float32)
    grad = rng.standard_normal(9)
    param_ref = param.copy()
    cpu.sgd_step(param, grad, None, 0.1, 0.0, 0.0, False)
    ref.sgd_step(param_ref, grad, None, 0.1, 0.0, 0.0, False)
    assert param.dtype == np.float32
    np.testing.assert_allclose(param, param_ref, rtol=1e-6, atol=1e-7)


def test_nan_propagates_as_in_ref():
    param = np.array([1.0, 2.0, 3.0, 0.0])
    grad = np.array([np.nan, 1.0, np.inf, 0.0])
    m, v = np.zeros(4), np.zeros(4)
    param_ref, m_ref, v_ref = param.copy(), m.copy(), v.copy()
    # eps = 0 with g = 0 gives 0 / 0 in the last element.
    cpu.adam_step(param, grad, m, v, 1, 0.1, 0.9, 0.999, 0.0, 0.0, False)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref.adam_step(param_ref, grad, m_ref, v_ref, 1, 0.1, 0.9, 0.999, 0.0, 0.0, False)
    np.testing.assert_array_equal(np.isnan(param), np.isnan(param_ref))
    assert np.isnan(param[0]) and np.isnan(param[3])
    np.testing.assert_array_equal(param[1], param_ref[1])
    param, buf = np.array([1.0, 2.0]), np.zeros(2)
    cpu.sgd_step(param, np.array([np.nan, 1.0]), buf, 0.1, 0.9, 0.0, False)
    assert np.isnan(param[0]) and np.isnan(buf[0]) and param[1] == 1.9


def test_adam_first_step_is_lr_times_sign():
    param = np.zeros(2, dtype=np.float32)
    m, v = np.zeros(2, np.float32), np.zeros(2, np.float32)
    cpu.adam_step(param, np.array([3.0, -0.5], np.float32), m, v, 1, 0.01, 0.9, 0.999, 0.0,
                  0.0, False)
    np.testing.assert_allclose(param, [-0.01, 0.01], rtol=1e-6)


def test_ops_reject_bad_arrays(rng):
    param = rng.standard_normal((4, 6))
    grad = np.zeros_like(param)
    with pytest.raises(ValueError, match="sgd_step: param must be C-contiguous"):
        cpu.sgd_step(param.T, grad.T, None, 0.1, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="sgd_step: grad"):
        cpu.sgd_step(param, grad[:2], None, 0.1, 0.0, 0.0, False)
    with pytest.raises(TypeError, match="sgd_step: buf"):
        cpu.sgd_step(param, grad, np.zeros((4, 6), np.float32), 0.1, 0.9, 0.0, False)
    with pytest.raises(TypeError, match="adam_step: param"):
        cpu.adam_step(param.astype(np.int64), grad, grad, grad, 1, 0.1, 0.9, 0.999, 1e-8, 0.0,
                      False)
    with pytest.raises(ValueError, match="adam_step: v"):
        cpu.adam_step(param, grad, np.zeros_like(param), np.zeros((6, 4)), 1, 0.1, 0.9, 0.999,
                      1e-8, 0.0, False)


def test_cpu_optim_ops_are_numba_kernels():
    import tinynet.backends.cpu.optim as module
    for name in module.__all__:
        assert getattr(cpu, name).__module__ == "tinynet.backends.cpu.optim"
        assert getattr(cpu, name) is not getattr(ref, name)
