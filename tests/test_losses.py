"""Losses: SoftmaxCrossEntropy, MSELoss and accuracy; values, gradients, errors, torch."""
import warnings

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from conftest import assert_close


def numeric_grad(f, x, h=1e-6):
    """Central differences of the scalar function f at x (float64)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old
        g[i] = (plus - minus) / (2 * h)
    return g


def logits_labels(rng, n=5, k=7, dtype=np.float64):
    return (2 * rng.standard_normal((n, k))).astype(dtype), rng.integers(0, k, size=n)


# -- SoftmaxCrossEntropy ------------------------------------------------------------

def test_xent_value_by_hand():
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 0.5, 3.0]])
    labels = np.array([0, 1])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -(logp[0, 0] + logp[1, 1]) / 2
    loss = tn.SoftmaxCrossEntropy().forward(logits, labels)
    assert isinstance(loss, float)
    assert_close(loss, expected, rtol=1e-14)


def test_xent_smoothing_value_by_hand():
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 0.5, 3.0]])
    labels = np.array([0, 1])
    eps, k = 0.2, 3
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    q = np.full((2, k), eps / k)
    q[[0, 1], labels] += 1 - eps
    f = tn.SoftmaxCrossEntropy(label_smoothing=eps)
    assert_close(f.forward(logits, labels), -(q * logp).sum() / 2, rtol=1e-14)
    assert_close(f.backward(), (np.exp(logp) - q) / 2, rtol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_xent_numerical_gradient(eps, rng):
    logits, labels = logits_labels(rng)
    f = tn.SoftmaxCrossEntropy(label_smoothing=eps)
    f.forward(logits, labels)
    analytic = f.backward()
    numeric = numeric_grad(lambda z: tn.SoftmaxCrossEntropy(eps).forward(z, labels), logits)
    assert_close(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_xent_call_is_forward(rng):
    logits, labels = logits_labels(rng)
    f = tn.SoftmaxCrossEntropy()
    assert f(logits, labels) == f.forward(logits, labels)


def test_xent_keeps_dtype_and_inputs(rng):
    logits, labels = logits_labels(rng, dtype=np.float32)
    logits0 = logits.copy()
    f = tn.SoftmaxCrossEntropy()
    f.forward(logits, labels)
    dlogits = f.backward()
    assert dlogits.dtype == np.float32 and dlogits.shape == logits.shape
    assert np.array_equal(logits, logits0)
    # Each row of dlogits sums to 0: sum(p) = sum(q) = 1.
    assert_close(dlogits.sum(axis=1), np.zeros(5), atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_xent_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [-1e4, -1e4, -1e4]], dtype=dtype)
    labels = np.array([0, 0, 2])
    f = tn.SoftmaxCrossEntropy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = f.forward(logits, labels)
        dlogits = f.backward()
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    # Row losses: 0, 1e4 + log 2, log 3.
    assert_close(loss, (1e4 + np.log(2) + np.log(3)) / 3, rtol=1e-6)


def test_xent_nan_row_gives_nan_loss():
    logits = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 1.0]])
    f = tn.SoftmaxCrossEntropy()
    loss = f.forward(logits, np.array([2, 1]))
    assert np.isnan(loss)
    dlogits = f.backward()
    assert np.all(np.isfinite(dlogits[0])) and np.all(np.isnan(dlogits[1]))


@pytest.mark.parametrize("bad", [-1, 3, 100])
def test_xent_label_out_of_range_raises(bad):
    logits = np.zeros((3, 3))
    with pytest.raises(ValueError, match=f"label {bad} at index 1"):
        tn.SoftmaxCrossEntropy().forward(logits, np.array([0, bad, 2]))


def test_xent_bad_types_and_shapes_raise():
    f = tn.SoftmaxCrossEntropy()
    logits = np.zeros((3, 4))
    with pytest.raises(TypeError, match="labels"):
        f.forward(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="logits"):
        f.forward(np.zeros((3, 4), dtype=np.int64), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="logits"):
        f.forward([[0.0, 1.0]], np.array([0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\)"):
        f.forward(logits, np.array([[0], [1], [2]]))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\)"):
        f.forward(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        f.forward(np.zeros(4), np.array([0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, K\)"):
        f.forward(np.zeros((0, 4)), np.zeros(0, dtype=np.int64))


@pytest.mark.parametrize("eps", [-0.1, 1.0, 2.0])
def test_xent_bad_label_smoothing_raises(eps):
    with pytest.raises(ValueError, match="label_smoothing"):
        tn.SoftmaxCrossEntropy(label_smoothing=eps)


def test_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="SoftmaxCrossEntropy.backward called before forward"):
        tn.SoftmaxCrossEntropy().backward()
    with pytest.raises(RuntimeError, match="MSELoss.backward called before forward"):
        tn.MSELoss().backward()


def test_failed_forward_keeps_no_stale_gradient(rng):
    logits, labels = logits_labels(rng)
    f = tn.SoftmaxCrossEntropy()
    f.forward(logits, labels)
    with pytest.raises(ValueError):
        f.forward(logits, labels + 100)
    with pytest.raises(RuntimeError):
        f.backward()
    g = tn.MSELoss()
    g.forward(logits, logits)
    with pytest.raises(ValueError):
        g.forward(logits, logits[:2])
    with pytest.raises(RuntimeError):
        g.backward()


def test_xent_ref_ops_directly(rng):
    logits, labels = logits_labels(rng, n=4, k=3)
    loss, probs = ref.softmax_xent_forward(logits, labels, 0.0)
    e = np.exp(logits)
    assert_close(probs, e / e.sum(axis=1, keepdims=True), rtol=1e-12)
    assert_close(loss, -np.mean(np.log(probs[np.arange(4), labels])), rtol=1e-12)
    onehot = np.eye(3)[labels]
    assert_close(ref.softmax_xent_backward(probs, labels, 0.0), (probs - onehot) / 4, rtol=1e-12)


def test_reprs():
    assert repr(tn.SoftmaxCrossEntropy()) == "SoftmaxCrossEntropy()"
    assert repr(tn.SoftmaxCrossEntropy(0.1)) == "SoftmaxCrossEntropy(label_smoothing=0.1)"
    assert repr(tn.MSELoss()) == "MSELoss()"


# -- MSELoss -------------------------------------------------------------------------

def test_mse_value_and_gradient_by_hand():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    target = np.array([[1.5, 2.0], [2.0, 4.0]])
    f = tn.MSELoss()
    loss = f(pred, target)
    assert isinstance(loss, float)
    assert_close(loss, (0.25 + 1.0) / 4, rtol=1e-14)
    assert_close(f.backward(), 2 * (pred - target) / 4, rtol=1e-14)


def test_mse_numerical_gradient(rng):
    pred = rng.standard_normal((3, 4, 2))
    target = rng.standard_normal((3, 4, 2))
    f = tn.MSELoss()
    f.forward(pred, target)
    numeric = numeric_grad(lambda z: tn.MSELoss().forward(z, target), pred)
    assert_close(f.backward(), numeric, rtol=1e-6, atol=1e-8)


def test_mse_keeps_dtype(rng):
    pred = rng.standard_normal((4, 3)).astype(np.float32)
    target = rng.standard_normal((4, 3)).astype(np.float32)
    f = tn.MSELoss()
    f.forward(pred, target)
    assert f.backward().dtype == np.float32


def test_mse_shape_mismatch_raises():
    f = tn.MSELoss()
    with pytest.raises(ValueError, match="MSELoss: target must have pred's shape"):
        f.forward(np.zeros((3,)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="MSELoss"):
        f.forward(np.zeros((3, 2)), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="MSELoss: target"):
        f.forward(np.zeros(3), np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="MSELoss: pred"):
        f.forward([0.0, 1.0], np.zeros(2))


# -- accuracy ---------------------------------------------------------------------------

def test_accuracy():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert tn.accuracy(logits, np.array([1, 0, 0, 1])) == 0.5
    assert tn.accuracy(logits, np.array([1, 0, 1, 0])) == 1.0
    assert isinstance(tn.accuracy(logits, np.array([0, 0, 0, 0])), float)
    assert "accuracy" in tn.losses.__all__
    with pytest.raises(ValueError, match="accuracy"):
        tn.accuracy(logits, np.array([1, 0]))


# -- torch ------------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
def test_xent_against_torch(eps, rng):
    torch = pytest.importorskip("torch")
    logits, labels = logits_labels(rng, n=6, k=5)
    xt = torch.tensor(logits, requires_grad=True)
    lt = torch.nn.CrossEntropyLoss(label_smoothing=eps)(xt, torch.tensor(labels))
    lt.backward()
    f = tn.SoftmaxCrossEntropy(label_smoothing=eps)
    assert_close(f.forward(logits, labels), lt.item(), rtol=1e-12)
    assert_close(f.backward(), xt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_xent_huge_logits_against_torch():
    torch = pytest.importorskip("torch")
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]])
    labels = np.array([1, 2])
    xt = torch.tensor(logits, requires_grad=True)
    lt = torch.nn.CrossEntropyLoss()(xt, torch.tensor(labels))
    lt.backward()
    f = tn.SoftmaxCrossEntropy()
    assert_close(f.forward(logits, labels), lt.item(), rtol=1e-12)
    assert_close(f.backward(), xt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_mse_against_torch(rng):
    torch = pytest.importorskip("torch")
    pred = rng.standard_normal((3, 4, 5))
    target = rng.standard_normal((3, 4, 5))
    pt = torch.tensor(pred, requires_grad=True)
    lt = torch.nn.MSELoss()(pt, torch.tensor(target))
    lt.backward()
    f = tn.MSELoss()
    assert_close(f.forward(pred, target), lt.item(), rtol=1e-12)
    assert_close(f.backward(), pt.grad.numpy(), rtol=1e-12, atol=1e-15)
