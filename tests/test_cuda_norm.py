"""cuda normalization family (GPU or CUDA simulator) against the reference.

One stats kernel and one backward reduction serve every layout; each layout
of docs/architecture.md's table runs here on odd shapes, in both dtypes,
with and without gamma/beta, with fixed statistics and without dx. With the
small blocks of ``small_blocks``, sets of up to 16 members fit one block
(the fused paths: batch-2d, batch-small, group, instance, layer) and
longer ones are split into parts (batch-4d, group-long).
"""
import numpy as np
import pytest

from cudasim import FLOATS, D, H, assert_matches, requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [requires_cuda, pytest.mark.usefixtures("small_blocks")]

# (name, (N, C, L), groups, per_channel)
LAYOUTS = [("batch-4d", (3, 6, 7), 1, True), ("batch-2d", (5, 6, 1), 1, True),
           ("batch-small", (2, 6, 5), 1, True),
           ("group", (3, 6, 7), 3, False), ("instance", (2, 6, 5), 6, False),
           ("layer", (3, 11, 1), 1, False), ("group-long", (2, 4, 40), 2, False)]
IDS = [layout[0] for layout in LAYOUTS]


def _data(rng, shape, offset=2.0):
    N, C, L = shape
    x = offset + 1.5 * rng.standard_normal(shape)
    return x, rng.standard_normal(shape), 1 + 0.3 * rng.standard_normal(C), \
        rng.standard_normal(C)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name,shape,groups,per_channel", LAYOUTS, ids=IDS)
def test_train_forward_and_backward_match_ref(rng, dtype, name, shape, groups, per_channel):
    from tinynet.backends import cuda, ref
    x, dy, gamma, beta = _data(rng, shape)
    got = cuda.norm_forward_train(D(x, dtype), D(gamma, dtype), D(beta, dtype), groups,
                                  per_channel, 1e-5)
    want = ref.norm_forward_train(x.astype(dtype), gamma.astype(dtype), beta.astype(dtype),
                                  groups, per_channel, 1e-5)
    assert_matches(got[0], want[0], dtype, "y")
    for what, g, w in zip(("mean", "var", "rstd"), got[1:], want[1:]):
        assert_matches(g, w, np.float64, what, out_dtype=np.float64)
    mean, rstd = want[1], want[3]
    got = cuda.norm_backward(D(x, dtype), D(dy, dtype), D(mean), D(rstd), D(gamma, dtype),
                             groups, per_channel)
    want = ref.norm_backward(x.astype(dtype), dy.astype(dtype), mean, rstd, gamma.astype(dtype),
                             groups, per_channel)
    for what, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
        assert_matches(g, w, dtype, what, scale=10)


@pytest.mark.parametrize("name,shape,groups,per_channel", LAYOUTS, ids=IDS)
def test_branches_without_affine_and_without_dx(rng, name, shape, groups, per_channel):
    from tinynet.backends import cuda, ref
    x, dy, gamma, _ = _data(rng, shape)
    mean, var, rstd = ref.norm_stats(x, groups, per_channel, 1e-3)
    for what, g, w in zip(("mean", "var", "rstd"), cuda.norm_stats(D(x), groups, per_channel,
                                                                   1e-3), (mean, var, rstd)):
        assert_matches(g, w, np.float64, what)
    assert_matches(cuda.norm_forward(D(x), D(mean), D(rstd), None, None, groups, per_channel),
                   ref.norm_forward(x, mean, rstd, None, None, groups, per_channel),
                   np.float64, "y without gamma and beta")
    dx, dgamma, dbeta = cuda.norm_backward(D(x), D(dy), D(mean), D(rstd), None, groups,
                                           per_channel)
    assert dgamma is None and dbeta is None
    assert_matches(dx, ref.norm_backward(x, dy, mean, rstd, None, groups, per_channel)[0],
                   np.float64, "dx without gamma")
    got = cuda.norm_backward(D(x), D(dy), D(mean), D(rstd), D(gamma), groups, per_channel,
                             need_dx=False)
    want = ref.norm_backward(x, dy, mean, rstd, gamma, groups, per_channel, need_dx=False)
    assert got[0] is None
    for what, g, w in zip(("dgamma", "dbeta"), got[1:], want[1:]):
        assert_matches(g, w, np.float64, what)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(3, 6, 7), (5, 6, 1)])
def test_batchnorm_eval_with_running_stats(rng, dtype, shape):
    """Eval mode: float32 running statistics in, fixed statistics in the backward."""
    from tinynet.backends import cuda, ref
    x, dy, gamma, beta = _data(rng, shape)
    C = shape[1]
    running_mean = rng.standard_normal(C).astype(dtype)
    rstd = (1 / np.sqrt(rng.uniform(0.5, 2, C) + 1e-5)).astype(dtype)
    args = (D(gamma, dtype), D(beta, dtype), 1, True)
    y = cuda.norm_forward(D(x, dtype), D(running_mean), D(rstd), *args)
    assert_matches(y, ref.norm_forward(x.astype(dtype), running_mean, rstd, gamma.astype(dtype),
                                       beta.astype(dtype), 1, True), dtype, "y")
    got = cuda.norm_backward(D(x, dtype), D(dy, dtype), D(running_mean), D(rstd),
                             D(gamma, dtype), 1, True, fixed_stats=True)
    want = ref.norm_backward(x.astype(dtype), dy.astype(dtype), running_mean, rstd,
                             gamma.astype(dtype), 1, True, fixed_stats=True)
    for what, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
        assert_matches(g, w, dtype, what, scale=10)


@pytest.mark.parametrize("per_channel,groups", [(True, 1), (False, 2)])
def test_float32_variance_at_a_large_offset(rng, per_channel, groups):
    """mean 100, std 0.1: a one-pass E[x^2] - E[x]^2 in float32 would be far off."""
    from tinynet.backends import cuda, ref
    x = (100 + 0.1 * rng.standard_normal((4, 4, 9))).astype(np.float32)
    _, var, _ = cuda.norm_stats(D(x), groups, per_channel, 1e-5)
    _, want, _ = ref.norm_stats(x, groups, per_channel, 1e-5)
    np.testing.assert_allclose(H(var), want, rtol=1e-9)


def test_bad_groups_raise_as_ref():
    from tinynet.backends import cuda
    with pytest.raises(ValueError, match="norm_stats: groups must be a positive divisor of C=6"):
        cuda.norm_stats(D(np.ones((2, 6, 3))), 4, False, 1e-5)


@pytest.mark.parametrize("name,shape,groups,per_channel,launches",
                         [("instance", (2, 6, 5), 6, False, 1),
                          ("batch-4d", (3, 6, 7), 1, True, 3)])
def test_sets_that_fit_a_block_run_the_forward_in_one_launch(rng, name, shape, groups,
                                                             per_channel, launches):
    from kernels.gpu_step import count_launches
    from tinynet.backends import cuda
    x, _, gamma, beta = _data(rng, shape)
    xd, gd, bd = D(x), D(gamma), D(beta)
    counted = count_launches(lambda: cuda.norm_forward_train(xd, gd, bd, groups, per_channel,
                                                             1e-5))
    assert counted == (launches, 0)
