"""The study's measurements: gradients with the model's state restored, ICS and
the landscape quantities, each against a direct computation."""
import numpy as np

import tinynet as tn
from tinynet.study import measure
from conftest import assert_close


def model_and_batch(rng):
    tn.init.seed(3)
    model = tn.Sequential(tn.Dense(5, 6), tn.BatchNorm(6), tn.ReLU(), tn.Dropout(0.3, seed=1),
                          tn.Dense(6, 3)).to(np.float64)
    return model, rng.standard_normal((8, 5)), rng.integers(0, 3, 8)


def direct_grads(model, x, y):
    loss_fn = tn.SoftmaxCrossEntropy()
    snap = measure.snapshot(model)
    loss = loss_fn.forward(model.forward(x), y)
    model.zero_grad()
    model.backward(loss_fn.backward())
    grads = [p.grad.copy() for p in model.parameters()]
    measure.restore(model, snap)
    return loss, grads


def test_loss_and_grads_restore_the_state(rng):
    model, x, y = model_and_batch(rng)
    before = model.state_dict()
    loss, grads = measure.loss_and_grads(model, x, y)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert model[3].step == 0
    assert not any(p.grad.any() for p in model.parameters())
    loss_d, grads_d = direct_grads(model, x, y)
    assert_close(loss, loss_d, 1e-12, 1e-12, "loss")
    for p, g in zip(model.parameters(), grads_d):
        assert_close(grads[id(p)], g.ravel(), 1e-12, 1e-12, "grad")


def test_ics_against_a_direct_update(rng):
    model, x, y = model_and_batch(rng)
    lr = 0.3
    values = measure.ics(model, x, y, lr)
    assert len(values) == 2
    assert values[0] == (0.0, 1.0)
    _, g = direct_grads(model, x, y)
    params = model.parameters()
    saved = [p.data.copy() for p in params]
    for p, gp in zip(params[:4], g[:4]):          # Dense 0 and BatchNorm 1 take their step
        p.data -= lr * gp
    _, g2 = direct_grads(model, x, y)
    for p, d in zip(params, saved):
        p.data[...] = d
    G, G2 = g[4].ravel(), g2[4].ravel()
    assert_close(values[1][0], np.linalg.norm(G - G2), 1e-10, 1e-12, "l2")
    assert_close(values[1][1], G @ G2 / np.linalg.norm(G) / np.linalg.norm(G2), 1e-10, 1e-12)
    assert values[1][0] > 0
    l2, cos = measure.ics(model, x, y, 0.0)[1]
    assert l2 == 0.0 and abs(cos - 1.0) < 1e-12


def test_landscape_against_direct_steps(rng):
    model, x, y = model_and_batch(rng)
    etas = [0.01, 0.1, 1.0]
    out = measure.landscape(model, x, y, etas)
    loss0, g = direct_grads(model, x, y)
    gflat = np.concatenate([a.ravel() for a in g])
    params = model.parameters()
    saved = [p.data.copy() for p in params]
    losses, changes = [], []
    for eta in etas:
        for p, d, gp in zip(params, saved, g):
            p.data[...] = d - eta * gp
        loss, g_eta = direct_grads(model, x, y)
        losses.append(loss)
        changes.append(np.linalg.norm(np.concatenate([a.ravel() for a in g_eta]) - gflat))
    for p, d in zip(params, saved):
        p.data[...] = d
    assert_close(out["loss0"], loss0, 1e-12, 1e-12, "loss0")
    assert_close(out["losses"], losses, 1e-10, 1e-12, "losses")
    assert_close(out["loss_range"], max(losses) - min(losses), 1e-10, 1e-12, "range")
    assert_close(out["grad_pred"], max(changes), 1e-10, 1e-12, "predictiveness")
    beta = max(c / (e * np.linalg.norm(gflat)) for c, e in zip(changes, etas))
    assert_close(out["beta"], beta, 1e-10, 1e-12, "beta")
    for p, d in zip(params, saved):
        assert np.array_equal(p.data, d)
