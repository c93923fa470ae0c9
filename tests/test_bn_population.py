"""recompute_batchnorm_stats: every BatchNorm gets the exact mean and unbiased
variance of its input over a data set, checked against numpy directly."""
import numpy as np
import pytest

import tinynet as tn
from conftest import assert_close


def test_recompute_batchnorm_stats_is_the_exact_population(rng):
    tn.init.seed(1)
    model = tn.Sequential(tn.Conv2D(1, 3, 3), tn.BatchNorm(3), tn.ReLU(),
                          tn.Sequential(tn.Conv2D(3, 2, 3), tn.BatchNorm(2, momentum=None)),
                          tn.Flatten(), tn.Dense(2 * 3 * 3, 4), tn.BatchNorm(4)).to(np.float64)
    x = rng.standard_normal((37, 1, 7, 7)) * 2 + 1
    for _ in range(3):
        model.forward(x[:8])
    tracked = model[1].num_batches_tracked.copy()
    tn.recompute_batchnorm_stats(model, x, batch_size=5)
    assert not model.training and model[1].num_batches_tracked == tracked
    # Direct numpy: each BN's input over the whole set, earlier BNs already set, eval mode.
    h1 = model[0].forward(x)
    assert_close(model[1].running_mean, h1.mean(axis=(0, 2, 3)), 1e-12, 1e-12, "bn1 mean")
    assert_close(model[1].running_var, h1.var(axis=(0, 2, 3), ddof=1), 1e-12, 1e-12, "bn1 var")
    h3 = model[3][0].forward(model[2].forward(model[1].forward(h1)))
    assert_close(model[3][1].running_mean, h3.mean(axis=(0, 2, 3)), 1e-12, 1e-12, "bn2 mean")
    assert_close(model[3][1].running_var, h3.var(axis=(0, 2, 3), ddof=1), 1e-12, 1e-12)
    h5 = model[5].forward(model[4].forward(model[3].forward(model[2].forward(model[1].forward(h1)))))
    assert_close(model[6].running_mean, h5.mean(axis=0), 1e-12, 1e-12, "bn3 mean")
    assert_close(model[6].running_var, h5.var(axis=0, ddof=1), 1e-12, 1e-12, "bn3 var")
    # The batch size does not change the result.
    before = [model[1].running_var.copy(), model[6].running_var.copy()]
    tn.recompute_batchnorm_stats(model, x, batch_size=37)
    assert_close(model[1].running_var, before[0], 1e-12, 1e-12, "batch size")
    assert_close(model[6].running_var, before[1], 1e-12, 1e-12, "batch size")


def test_recompute_batchnorm_stats_errors(rng):
    model = tn.Sequential(tn.BatchNorm(3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        tn.recompute_batchnorm_stats(model, np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        tn.recompute_batchnorm_stats(model, np.ones((4, 3), np.float32), batch_size=0)


def test_recompute_skips_batchnorms_without_running_stats(rng):
    model = tn.Sequential(tn.BatchNorm(3, track_running_stats=False), tn.BatchNorm(3)).to(np.float64)
    x = rng.standard_normal((20, 3)) * 3 + 2
    tn.recompute_batchnorm_stats(model, x, batch_size=7)
    assert model[0].running_mean is None
    # The second BN sees the first one's output normalized with each batch's statistics.
    h = np.concatenate([model[0].forward(x[s:s + 7]) for s in range(0, 20, 7)])
    assert_close(model[1].running_mean, h.mean(axis=0), 1e-12, 1e-12, "mean")
    assert_close(model[1].running_var, h.var(axis=0, ddof=1), 1e-12, 1e-12, "var")
