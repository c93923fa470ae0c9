"""cpu dropout kernels: the mask is the ref's splitmix64 mask bit for bit, for any
shape, p, seed, step and thread count; y and dx are the ref's bits."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import cpu, ref, use_backend
from conftest import REPO

MAX_U64 = 2**64 - 1
SHAPES = [(1,), (7,), (17, 13), (3, 7, 5, 3), (1001,), (2, 3, 4, 5, 6)]
MASK_CASES = [(0.5, 0, 0), (0.3, 2**63 + 99, 7), (0.1, 12345, MAX_U64), (0.9, MAX_U64, 3),
              (0.0, 5, 2), (1e-300, 1, 1), (1 - 2**-53, 77, 0)]


@pytest.mark.parametrize("p,seed,step", MASK_CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_mask_is_the_refs_bit_for_bit(shape, p, seed, step):
    keep = cpu.dropout_mask(shape, p, seed, step)
    expected = ref.dropout_mask(shape, p, seed, step)
    assert keep.dtype == np.uint8 and keep.shape == shape
    np.testing.assert_array_equal(keep, expected)


def test_mask_threshold_is_exact_at_the_boundary():
    # Take p equal to some element's u exactly: u >= p keeps it; the next
    # float above drops it. The integer threshold must agree with the float test.
    seed, step, n = 9, 4, 64
    key = ref.splitmix64(np.uint64(seed) ^ ref.splitmix64(step))
    with np.errstate(over="ignore"):
        h = ref.splitmix64(key + np.arange(n, dtype=np.uint64))
    u = (h >> np.uint64(11)) * 2.0**-53
    i = int(np.argmin(np.abs(u - 0.5)))
    p = float(u[i])
    assert cpu.dropout_mask((n,), p, seed, step)[i] == 1
    assert cpu.dropout_mask((n,), np.nextafter(p, 1.0), seed, step)[i] == 0
    for q in (p, np.nextafter(p, 1.0), np.nextafter(p, 0.0)):
        np.testing.assert_array_equal(cpu.dropout_mask((n,), q, seed, step),
                                      ref.dropout_mask((n,), q, seed, step))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_is_one_minus_p(p):
    n = 10**6
    keep = cpu.dropout_mask((n,), p, 2024, 1)
    se = np.sqrt(p * (1 - p) / n)
    assert abs(keep.mean() - (1 - p)) < 5 * se


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_backward_are_the_refs_bits(shape, dtype, rng):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[:3] = [np.nan, np.inf, -np.inf][:x.size]
    with np.errstate(invalid="ignore"):
        y_ref, keep_ref = ref.dropout_forward(x, 0.35, 31, 5)
        dx_ref = ref.dropout_backward(dy, keep_ref, 0.35)
    y, keep = cpu.dropout_forward(x, 0.35, 31, 5)
    dx = cpu.dropout_backward(dy, keep, 0.35)
    assert y.dtype == dtype and dx.dtype == dtype and keep.dtype == np.uint8
    np.testing.assert_array_equal(keep, keep_ref)
    np.testing.assert_array_equal(y.view(np.uint8), y_ref.view(np.uint8))
    np.testing.assert_array_equal(dx.view(np.uint8), dx_ref.view(np.uint8))


def test_forward_p_zero_is_identity_and_inputs_untouched(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    x0 = x.copy()
    y, keep = cpu.dropout_forward(x, 0.0, 3, 0)
    assert np.array_equal(y, x) and keep.all() and not np.shares_memory(y, x)
    assert np.array_equal(x, x0)


def test_noncontiguous_input(rng):
    x = rng.standard_normal((6, 10))[:, ::2]
    y, keep = cpu.dropout_forward(x, 0.5, 8, 1)
    y_ref, keep_ref = ref.dropout_forward(np.ascontiguousarray(x), 0.5, 8, 1)
    np.testing.assert_array_equal(keep, keep_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_splitmix64_matches_ref():
    z = np.array([0, 1, 12345, 2**63, MAX_U64], dtype=np.uint64).reshape(5, 1)
    np.testing.assert_array_equal(cpu.splitmix64(z), ref.splitmix64(z))
    s = cpu.splitmix64(0)
    assert isinstance(s, np.uint64) and int(s) == 0xE220A8397B1DCDAF
    assert int(cpu.splitmix64(MAX_U64)) == int(ref.splitmix64(MAX_U64))


@pytest.mark.parametrize("p", [1.0, -0.1, float("nan")])
def test_bad_p_raises(p):
    with pytest.raises(ValueError, match="p must be in"):
        cpu.dropout_mask((3,), p, 0, 0)
    with pytest.raises(ValueError, match="p must be in"):
        cpu.dropout_forward(np.zeros(3), p, 0, 0)
    with pytest.raises(ValueError, match="p must be in"):
        cpu.dropout_backward(np.zeros(3), np.ones(3, np.uint8), p)


def test_bad_counters_and_arrays_raise():
    with pytest.raises(ValueError, match="seed"):
        cpu.dropout_forward(np.zeros(3), 0.5, -1, 0)
    with pytest.raises(ValueError, match="step"):
        cpu.dropout_mask((3,), 0.5, 0, 2**64)
    with pytest.raises(TypeError, match="seed"):
        cpu.dropout_mask((3,), 0.5, 1.5, 0)
    with pytest.raises(TypeError, match="dropout_forward: x must be float32 or float64"):
        cpu.dropout_forward(np.zeros(3, np.int32), 0.5, 0, 0)
    with pytest.raises(ValueError, match="dropout_backward: keep must have dy's shape"):
        cpu.dropout_backward(np.zeros((2, 3)), np.ones((3, 2), np.uint8), 0.5)


def test_layer_on_cpu_matches_layer_on_ref(rng):
    x = rng.standard_normal((3, 6, 5, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    out = {}
    for name in ("cpu", "ref"):
        with use_backend(name):
            layer = tn.Dropout(0.3, seed=11)
            layer.forward(x)
            out[name] = layer.forward(x), layer.backward(dy)
    for a, b in zip(out["cpu"], out["ref"]):
        np.testing.assert_array_equal(a, b)


_CHILD = textwrap.dedent("""
    import hashlib, numba, numpy as np
    from tinynet.backends import cpu
    x = np.linspace(-3, 3, 7 * 14285, dtype=np.float32).reshape(7, 14285)
    y, keep = cpu.dropout_forward(x, 0.4, 2**63 + 5, 17)
    dx = cpu.dropout_backward(y, keep, 0.4)
    mask = cpu.dropout_mask((3, 33335), 0.7, 1, 2)
    digest = hashlib.sha256(y.tobytes() + keep.tobytes() + dx.tobytes() + mask.tobytes())
    print(numba.get_num_threads(), digest.hexdigest())
""")


def _child_digest(threads):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads is None:
        env.pop("NUMBA_NUM_THREADS", None)
    else:
        env["NUMBA_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    n, digest = out.stdout.split()
    return int(n), digest


def test_same_mask_and_outputs_for_any_thread_count():
    one, digest_one = _child_digest(1)
    default, digest_default = _child_digest(None)
    assert one == 1
    assert digest_one == digest_default, f"1 thread and {default} threads disagree"
