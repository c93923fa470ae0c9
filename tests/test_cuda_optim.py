"""cuda optimizer steps (GPU or CUDA simulator) against the reference, in place."""
import numpy as np
import pytest

from cudasim import FLOATS, D, H, requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [requires_cuda, pytest.mark.usefixtures("small_blocks")]


def _close(got, want, dtype, what):
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(H(got), want, rtol=tol, atol=tol, err_msg=what)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("momentum,weight_decay,nesterov",
                         [(0.0, 0.0, False), (0.9, 0.0, False), (0.9, 0.01, True),
                          (0.0, 0.05, False)])
def test_sgd_matches_ref_over_steps(rng, dtype, momentum, weight_decay, nesterov):
    from tinynet.backends import cuda, ref
    p = rng.standard_normal((5, 3)).astype(dtype)
    buf = np.zeros_like(p) if momentum else None
    pd, bufd = D(p), (D(buf) if momentum else None)
    for _ in range(3):
        g = rng.standard_normal(p.shape).astype(dtype)
        gd = D(g)
        cuda.sgd_step(pd, gd, bufd, 0.1, momentum, weight_decay, nesterov)
        ref.sgd_step(p, g, buf, 0.1, momentum, weight_decay, nesterov)
        np.testing.assert_array_equal(H(gd), g)
    _close(pd, p, dtype, "param")
    if momentum:
        _close(bufd, buf, dtype, "buf")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam_matches_ref_over_steps(rng, dtype, weight_decay, decoupled):
    from tinynet.backends import cuda, ref
    p = rng.standard_normal(7).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    pd, md, vd = D(p), D(m), D(v)
    for step in range(1, 4):
        g = rng.standard_normal(p.shape).astype(dtype)
        cuda.adam_step(pd, D(g), md, vd, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled)
        ref.adam_step(p, g, m, v, step, 1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled)
    for name, got, want in (("param", pd, p), ("m", md, m), ("v", vd, v)):
        _close(got, want, dtype, name)


def test_state_must_match_param(rng):
    from tinynet.backends import cuda
    p = D(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="sgd_step: buf must have param's shape"):
        cuda.sgd_step(p, D(np.zeros(4, np.float32)), D(np.zeros(3, np.float32)), 0.1, 0.9, 0.0,
                      False)
