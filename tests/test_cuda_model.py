"""Whole training steps of the reference CNN's architecture on the cuda backend
(GPU or CUDA simulator) against the same steps on the ref backend.

The model is tinynet.cli.build_cnn's layer sequence (conv-norm-relu-pool
twice, flatten, dense-relu, dropout, dense) with fewer channels on 8x8
images, so the simulator stays quick; each of the four normalizations, with
SGD (momentum, Nesterov, weight decay) and with Adam. BatchNorm's running
statistics and eval mode are compared too.
"""
import numpy as np
import pytest

import tinynet as tn

from cudasim import requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [requires_cuda, pytest.mark.usefixtures("small_blocks"),
              # numpy warns on the uint64 wraparound of dropout's hash (simulator only).
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

NORMS = {"batch": lambda c, hw: tn.BatchNorm(c), "layer": lambda c, hw: tn.LayerNorm((c, hw, hw)),
         "instance": lambda c, hw: tn.InstanceNorm(c), "group": lambda c, hw: tn.GroupNorm(2, c)}
OPTIMIZERS = {"sgd": lambda ps: tn.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3,
                                             nesterov=True),
              "adam": lambda ps: tn.optim.Adam(ps, lr=1e-2)}


def tiny_cnn(norm):
    tn.init.seed(0)
    return tn.Sequential(
        tn.Conv2D(1, 4, 3, padding=1), NORMS[norm](4, 8), tn.ReLU(), tn.MaxPool2D(2),
        tn.Conv2D(4, 6, 3, padding=1), NORMS[norm](6, 4), tn.ReLU(), tn.MaxPool2D(2),
        tn.Flatten(), tn.Dense(6 * 2 * 2, 8), tn.ReLU(), tn.Dropout(0.5, seed=5), tn.Dense(8, 3))


def _data(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 1, 8, 8)).astype(np.float32),
            rng.integers(0, 3, n).astype(np.int64))


def _train(backend, norm, opt_name, steps=2):
    """Losses, final grads and the state_dict after ``steps`` steps on ``backend``."""
    x, y = _data()
    with tn.use_backend(backend):
        model = tiny_cnn(norm)
        if backend == "cuda":
            model.to("cuda")
            x, y = tn.to_device(x), tn.to_device(y)
        opt = OPTIMIZERS[opt_name](model.parameters())
        loss_fn = tn.SoftmaxCrossEntropy()
        losses = []
        for _ in range(steps):
            losses.append(float(loss_fn.forward(model.forward(x), y)))
            model.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
        grads = [tn.to_host(p.grad) for p in model.parameters()]
        return losses, grads, model.state_dict(), model


def _follows_rounding_noise(key):
    """A conv bias feeding a normalization has zero gradient in exact arithmetic, so
    Adam's normalized step follows the sign of rounding noise there, and so does a
    BatchNorm running mean, which includes that bias. Nothing downstream depends
    on either in training mode (the norm subtracts the mean), which the losses
    and gradients check."""
    return key in ("0.bias", "4.bias", "1.running_mean", "5.running_mean")


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_training_steps_match_ref(norm, opt_name):
    losses_ref, grads_ref, state_ref, _ = _train("ref", norm, opt_name)
    losses, grads, state, _ = _train("cuda", norm, opt_name)
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-5 * max(1.0, np.abs(g_ref).max()))
    assert state.keys() == state_ref.keys()
    for key, value in state.items():
        assert isinstance(value, np.ndarray), f"{key} is not a host array"
        if opt_name == "adam" and _follows_rounding_noise(key):
            continue
        np.testing.assert_allclose(value, state_ref[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_batchnorm_running_stats_and_eval_mode_match_ref():
    *_, model_ref = _train("ref", "batch", "sgd")
    *_, model = _train("cuda", "batch", "sgd")
    for key in ("1.running_mean", "1.running_var", "5.running_mean", "5.running_var"):
        np.testing.assert_allclose(model.state_dict()[key], model_ref.state_dict()[key],
                                   rtol=1e-5, atol=1e-6, err_msg=key)
    x, _ = _data(seed=1)
    dy = np.random.default_rng(2).standard_normal((3, 3)).astype(np.float32)
    outs = []
    for backend, m in (("ref", model_ref), ("cuda", model)):
        with tn.use_backend(backend):
            m.eval()
            m.zero_grad()
            xd = tn.to_device(x) if backend == "cuda" else x
            out = m.forward(xd)
            m.backward(tn.to_device(dy) if backend == "cuda" else dy)
            outs.append((tn.to_host(out), [tn.to_host(p.grad) for p in m.parameters()]))
    np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-4, atol=1e-5)
    for g, g_ref in zip(outs[1][1], outs[0][1]):
        np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-5 * max(1.0, np.abs(g_ref).max()))


def _numba_type(a):
    import numba
    if hasattr(a, "__cuda_array_interface__") and not isinstance(a, np.ndarray):
        from numba import cuda
        a = cuda.as_cuda_array(a)
    return numba.typeof(a)


@pytest.mark.parametrize("norm,opt_name,dtype", [("batch", "adam", np.float32),
                                                 ("group", "sgd", np.float32),
                                                 ("layer", "adam", np.float64)])
def test_training_launches_only_signatures_the_ptx_check_compiles(norm, opt_name, dtype):
    """Every kernel launch of a training step has argument types that are one of
    the kernel's declared signatures, which tests/test_cuda_ptx.py compiles."""
    from numba.core import sigutils
    from tinynet.backends import cuda_device as device
    declared = {k.py_func: {sigutils.normalize_signature(s)[0]
                            for s in device.signatures_of(k.signatures)}
                for k in device.KERNELS}
    seen = {}

    def record(py_func, args):
        seen.setdefault(py_func, set()).add(tuple(_numba_type(a) for a in args))
    x, y = _data()
    with tn.use_backend("cuda"):
        model = tiny_cnn(norm).to(dtype).to("cuda")
        opt = OPTIMIZERS[opt_name](model.parameters())
        loss_fn = tn.SoftmaxCrossEntropy()
        xd, yd = tn.to_device(x.astype(dtype)), tn.to_device(y)
        with device.watch_launches(record):
            loss_fn.forward(model.forward(xd), yd)
            model.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
    assert len(seen) >= 10
    for py_func, types in seen.items():
        assert py_func in declared, f"{py_func.__name__} is not a declared cuda kernel"
        undeclared = types - declared[py_func]
        assert not undeclared, f"{py_func.__name__} launched with undeclared types {undeclared}"
