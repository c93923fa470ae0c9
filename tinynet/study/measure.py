"""Measurements on a model at one point of training, which leave it as it was.

- ``loss_and_grads``: the loss on a batch and every parameter's gradient,
  with the buffers (running statistics) and mask counters restored after.
- ``ics``: Santurkar et al.'s internal covariate shift of each linear layer
  (https://arxiv.org/abs/1805.11604, Definition 2.1): with G_i the gradient
  of layer i's weight and G'_i the same gradient after the layers before i
  took their SGD step (lr times their gradient) on the same batch,
  ICS_i = ||G_i - G'_i||_2, reported with cos(G_i, G'_i).
- ``landscape``: along the gradient direction g at the current point theta,
  for each step size eta the loss L(theta - eta g) and the gradient
  g_eta = grad L(theta - eta g); from them (Santurkar et al., section 3.1)
      loss range               max_eta L - min_eta L
      gradient predictiveness  max_eta ||g_eta - g||
      effective beta           max_eta ||g_eta - g|| / ||eta g||
"""
import numpy as np

import tinynet as tn

__all__ = ["linear_layers", "snapshot", "restore", "loss_and_grads", "ics", "landscape"]


def linear_layers(model):
    """The Dense, Conv2D, WeightNorm and DropConnect layers of ``model``, in order."""
    return [l for l in model.layers if isinstance(l, (tn.Dense, tn.Conv2D, tn.WeightNorm,
                                                      tn.DropConnect))]


def snapshot(model):
    """What a training forward changes: the state_dict and the layers' mask counters."""
    return model.state_dict(), [getattr(l, "step", None) for l in model.layers]


def restore(model, snap):
    """Put back what ``snapshot`` saved."""
    state, steps = snap
    model.load_state_dict(state)
    for layer, step in zip(model.layers, steps):
        if step is not None:
            layer.step = step


def loss_and_grads(model, xb, yb):
    """(loss, {id(p): grad copy}) in training mode; buffers and counters restored."""
    snap = snapshot(model)
    loss_fn = tn.SoftmaxCrossEntropy()
    with np.errstate(all="ignore"):
        loss = float(loss_fn.forward(model.forward(xb), yb))
        model.zero_grad()
        model.backward(loss_fn.backward())
    grads = {id(p): p.grad.astype(np.float64).ravel().copy() for p in model.parameters()}
    model.zero_grad()
    restore(model, snap)
    return loss, grads


def _weight_grad(layer, grads):
    p = layer.weight_v if isinstance(layer, tn.WeightNorm) else layer.weight
    return grads[id(p)]


def ics(model, xb, yb, lr):
    """[(l2, cos)] for each linear layer (the first has no layers before it: 0, 1)."""
    _, grads = loss_and_grads(model, xb, yb)
    out = []
    for layer in linear_layers(model):
        before = model.layers[:model.layers.index(layer)]
        params = [p for l in before for p in l.parameters()]
        saved = [p.data.copy() for p in params]
        for p in params:
            p.data -= (lr * grads[id(p)]).reshape(p.shape).astype(p.data.dtype)
        _, shifted = loss_and_grads(model, xb, yb)
        for p, data in zip(params, saved):
            p.data[...] = data
        g, g2 = _weight_grad(layer, grads), _weight_grad(layer, shifted)
        denom = np.linalg.norm(g) * np.linalg.norm(g2)
        out.append((float(np.linalg.norm(g - g2)), float(g @ g2 / denom) if denom > 0 else 1.0))
    return out


def landscape(model, xb, yb, etas):
    """Loss range, gradient predictiveness and effective beta along -g, and the losses."""
    params = model.parameters()
    loss0, grads = loss_and_grads(model, xb, yb)
    g = np.concatenate([grads[id(p)] for p in params])
    saved = [p.data.copy() for p in params]
    losses, changes, betas = [], [], []
    for eta in etas:
        for p, data in zip(params, saved):
            p.data[...] = data - (eta * grads[id(p)]).reshape(p.shape).astype(data.dtype)
        loss, moved = loss_and_grads(model, xb, yb)
        g_eta = np.concatenate([moved[id(p)] for p in params])
        losses.append(loss)
        change = float(np.linalg.norm(g_eta - g))
        changes.append(change)
        betas.append(change / (eta * float(np.linalg.norm(g))))
    for p, data in zip(params, saved):
        p.data[...] = data
    finite = [v for v in losses if np.isfinite(v)]
    return {"loss0": loss0, "losses": losses,
            "loss_range": (max(finite) - min(finite)) if finite else float("nan"),
            "grad_pred": max(changes), "beta": max(betas)}
