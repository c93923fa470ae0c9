"""End to end: train on a subset of the real MNIST and reach a target accuracy."""
import os

import numpy as np
import pytest

import tinynet as tn
from conftest import REPO

SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
                                reason="the real MNIST is not in ../shared/data/mnist")


def test_cnn_learns_mnist_subset():
    (x, y) = tn.data.load_mnist("train", root=SHARED_DATA)
    (xt, yt) = tn.data.load_mnist("test", root=SHARED_DATA)
    x, y = tn.data.prepare_images(x[:12000]), y[:12000]
    xt, yt = tn.data.prepare_images(xt[:2000]), yt[:2000]
    tn.init.seed(0)
    model = tn.Sequential(
        tn.Conv2D(1, 8, 3, padding=1), tn.BatchNorm(8), tn.ReLU(), tn.MaxPool2D(2),
        tn.Conv2D(8, 16, 3, padding=1), tn.BatchNorm(16), tn.ReLU(), tn.MaxPool2D(2),
        tn.Flatten(), tn.Dense(16 * 7 * 7, 10))
    model.requires_input_grad = False
    opt = tn.optim.Adam(model.parameters(), lr=2e-3)
    history = tn.fit(model, tn.SoftmaxCrossEntropy(), opt, (x, y), epochs=2, val_data=(xt, yt),
                     batch_size=64, progress=False)
    assert history["val_acc"][-1] >= 0.95, history.records
    assert np.isfinite(history["train_loss"]).all()
