"""The cpu backend's two Conv2D schedules (tinynet.ops.conv.cpu.SCHEDULES)
run on every shape, whatever K, and the chunked schedule's chunks, through
their public ``chunk_bytes`` argument: a batch split into chunks with and
without a remainder."""
import numpy as np
import pytest

from tinynet.backends import ref
from tinynet.ops.conv import cpu as cpu_conv
from tinynet.ops.conv.cases import CASES, ConvCase
from harness import FLOATS, Backend

CPU = Backend("cpu")
REMAINDER = ConvCase("n5-c6-same", 5, 6, 5, 6, 3, 3, 3, (1, 1), (1, 1))
"""K = 54 > SMALL_K: the chunked schedule is conv2d_forward's own for it."""


def _inputs(rng, case, dtype):
    x = rng.standard_normal(case.x_shape)
    W = rng.standard_normal(case.w_shape) / np.sqrt(case.K)
    b = rng.standard_normal(case.F) if case.bias else None
    return tuple(None if a is None else a.astype(dtype) for a in (x, W, b))


def _check(forward, backward, rng, case, dtype, **kw):
    """forward and backward on ``case`` against the float64 reference."""
    x, W, b = _inputs(rng, case, dtype)
    y, cache = forward(x, W, b, case.stride, case.padding, **kw)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    y_ref, _ = ref.conv2d_forward(x64, W64, b64, case.stride, case.padding)
    CPU.assert_matches(y, y_ref, dtype, "y")
    dy = rng.standard_normal(y_ref.shape)
    grads = backward(dy.astype(dtype), x, W, cache, case.stride, case.padding, case.bias,
                     case.need_dx, **kw)
    grads_ref = ref.conv2d_backward(dy, x64, W64, None, case.stride, case.padding, case.bias,
                                    case.need_dx)
    for name, g, g_ref in zip(("dx", "dW", "db"), grads, grads_ref):
        CPU.assert_matches(g, g_ref, dtype, name)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.parametrize("name", sorted(cpu_conv.SCHEDULES))
def test_schedule_matches_ref(rng, name, case, dtype):
    _check(*cpu_conv.SCHEDULES[name], rng, case, dtype)


def test_schedule_follows_small_k():
    assert cpu_conv.schedule(cpu_conv.SMALL_K) == "samples"
    assert cpu_conv.schedule(cpu_conv.SMALL_K + 1) == "chunks"
    assert cpu_conv.schedule(REMAINDER.K) == "chunks"


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("nb", [1, 2, 3, 5], ids=["1x5", "2+2+1", "3+2", "5"])
def test_chunks_with_a_remainder(rng, nb, dtype):
    # chunk_bytes of nb samples' columns: the batch of 5 runs in chunks of nb,
    # the last one holding what remains (the ids).
    K, P = REMAINDER.K, REMAINDER.H * REMAINDER.W
    itemsize = np.dtype(dtype).itemsize
    chunk_bytes = nb * K * P * itemsize
    assert cpu_conv.chunk_samples(REMAINDER.N, K, P, itemsize, chunk_bytes) == nb
    assert cpu_conv.chunk_samples(REMAINDER.N, K, P, itemsize, chunk_bytes + K * P - 1) == nb
    _check(cpu_conv.forward_chunks, cpu_conv.backward_chunks, rng, REMAINDER, dtype,
           chunk_bytes=chunk_bytes)


def test_chunk_samples_bounds():
    # At least one sample per chunk, at most the batch.
    assert cpu_conv.chunk_samples(5, 54, 30, 4, 1) == 1
    assert cpu_conv.chunk_samples(5, 54, 30, 4, 1 << 30) == 5
