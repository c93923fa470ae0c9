"""Recorder: statistics of every watched layer's arrays every k steps, from
hooks that leave the model's results and classes unchanged."""
import json

import numpy as np
import pytest

import tinynet as tn
from conftest import assert_close


def model_and_data(rng):
    tn.init.seed(0)
    model = tn.Sequential(tn.Dense(6, 8), tn.ReLU(), tn.Sequential(tn.Dense(8, 3)))
    return model, rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 3, 5)


def step(model, x, y, loss_fn):
    out = model.forward(x)
    loss_fn.forward(out, y)
    model.zero_grad()
    return out, model.backward(loss_fn.backward())


def test_records_match_direct_statistics(rng):
    model, x, y = model_and_data(rng)
    loss_fn = tn.SoftmaxCrossEntropy()
    rec = tn.Recorder(model, every=2, kinds=("x", "y", "dy", "dx"), percentiles=(10, 50),
                      bins=7)
    with rec:
        for _ in range(5):
            step(model, x, y, loss_fn)
    assert sorted({r["step"] for r in rec.records}) == [0, 2, 4]
    assert [n for n, _ in rec.watched] == ["0", "1", "2.0"]
    # Layer "1" (ReLU) at step 4: its x is Dense 0's output.
    h = model[0].forward(x)
    r = rec.select(layer="1", kind="x")[-1]
    assert r["step"] == 4 and r["type"] == "ReLU"
    assert_close(r["mean"], h.astype(np.float64).mean(), 1e-12, 1e-12, "mean")
    assert_close(r["std"], h.astype(np.float64).std(), 1e-12, 1e-12, "std")
    assert_close(r["percentiles"]["10"], np.percentile(h.astype(np.float64), 10), 1e-12, 1e-12)
    counts, edges = np.histogram(h.astype(np.float64), bins=7)
    assert r["hist"] == counts.tolist()
    assert_close(r["edges"], edges, 1e-12, 1e-12, "edges")
    # The last layer's dy is the loss gradient.
    logits = model.forward(x)
    loss_fn.forward(logits, y)
    r = rec.select(layer="2.0", kind="dy")[-1]
    assert_close(r["mean"], loss_fn.backward().astype(np.float64).mean(), 1e-7, 1e-9, "dy mean")
    assert len(rec.records) == 3 * 3 * 4
    json.loads(rec.to_json())


def test_results_unchanged_and_hooks_removed(rng):
    model, x, y = model_and_data(rng)
    loss_fn = tn.SoftmaxCrossEntropy()
    ref_out, ref_dx = step(model, x, y, loss_fn)
    rec = tn.Recorder(model, every=1, layers=["0"], kinds=("y",))
    with rec:
        out, dx = step(model, x, y, loss_fn)
        model.eval()
        model.forward(x)
        model.train()
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, ref_dx)
    assert rec.step == 1 and len(rec.records) == 1 and rec.records[0]["layer"] == "0"
    for layer in [model, model[0], model[1], model[2], model[2][0]]:
        assert "forward" not in vars(layer) and "backward" not in vars(layer)


def test_fixed_hist_range_shares_bins(rng):
    model, x, y = model_and_data(rng)
    rec = tn.Recorder(model, kinds=("y",), bins=4, hist_range=(-1.0, 1.0))
    with rec:
        model.forward(x)
    for r in rec.records:
        assert r["edges"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
        assert sum(r["hist"]) == r_size(model, r["layer"], x)


def r_size(model, name, x):
    h = x
    for n, layer in [("0", model[0]), ("1", model[1]), ("2.0", model[2][0])]:
        h = layer.forward(h)
        if n == name:
            return h.size


def test_bad_arguments(rng):
    model, _, _ = model_and_data(rng)
    with pytest.raises(ValueError, match="Recorder: no layer named '9'"):
        tn.Recorder(model, layers=["9"])
    with pytest.raises(ValueError, match="Recorder: kinds"):
        tn.Recorder(model, kinds=("w",))
    with pytest.raises(ValueError, match="Recorder: every"):
        tn.Recorder(model, every=0)
    with pytest.raises(TypeError, match="Recorder: model must be a Sequential"):
        tn.Recorder(tn.ReLU())
