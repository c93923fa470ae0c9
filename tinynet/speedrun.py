"""The public MNIST speedrun recipe, in tinynet: ``tinynet speedrun``.

The recipe ("99% on MNIST in 0.76 s", PyTorch on a laptop GPU), exactly:

- the model ``tinynet.zoo.build_speedrun``: conv 1->24 5x5, maxpool 2, ReLU;
  conv 24->32 3x3, maxpool 2, ReLU; dense 800->256, ReLU; dense 256->10;
  torch's default initialization;
- Adam, lr 0.01, betas (0.7, 0.9), no weight decay;
- a one-cycle schedule over exactly one epoch (``OneCycleLR`` with torch's
  defaults: 30% rising from lr/25, cosine, down to lr/25/1e4; no momentum
  cycling);
- batch 256, shuffled, the last batch short (235 steps over 60,000 images);
- the data preloaded as normalized float32 arrays; loading is not timed.

``train_speedrun`` returns the training time (the loop over the epoch's
batches, from the first step to the last; the data already in memory and the
model built) and the test accuracy on the 10,000 test images, measured after
the clock stops. kernels/speedrun.py runs it beside the same recipe in torch.
"""
import math
import time

import numpy as np

from . import backends, data, init, losses, optim, zoo

__all__ = ["RECIPE", "load_data", "train_speedrun"]

RECIPE = {"model": "speedrun", "batch_size": 256, "epochs": 1, "lr": 0.01,
          "betas": (0.7, 0.9), "pct_start": 0.3, "div_factor": 25.0,
          "final_div_factor": 1e4, "normalization": data.NORMALIZATION["mnist"]}


def load_data(data_dir=None):
    """MNIST as the recipe preloads it: ((x_train, y_train), (x_test, y_test)),
    x float32 (N, 1, 28, 28) normalized with MNIST's mean and std, y int64 (N,)."""
    mean, std = RECIPE["normalization"]
    out = []
    for split in ("train", "test"):
        images, labels = data.load_mnist(split, root=data_dir)
        out.append((data.prepare_images(images, mean, std), labels.astype(np.int64)))
    return tuple(out)


def _synchronize():
    """Wait for the GPU's queued kernels on the cuda backend (numba's and CuPy's
    share the primary context); nothing on the host backends."""
    if backends.backend_name() == "cuda":
        from numba import cuda
        cuda.synchronize()


def train_speedrun(seed=0, train=None, test=None, data_dir=None, progress=None):
    """Train the recipe once and measure it.

    Parameters
    ----------
    seed : int
        Seeds the initial weights and the data order.
    train, test : (x, y), optional
        Preloaded data (``load_data()``); loaded here when not given.
    data_dir : str, optional
        The data root when loading.
    progress : callable, optional
        ``progress(step, total)`` after every step (not timed out of the clock;
        keep it cheap).

    Returns
    -------
    dict
        "seed", "train_s" (seconds of the training loop), "first_step_s" (of
        which the first step, where a new process loads its kernels), "steps", "test_acc",
        "final_loss" (the last batch's training loss), "backend".
    """
    if train is None or test is None:
        train, test = load_data(data_dir)
    init.seed(seed)
    backend = backends.get_backend()
    model = zoo.build("speedrun", "none").to(backend.DEVICE)
    optimizer = optim.Adam(model.parameters(), lr=RECIPE["lr"], betas=RECIPE["betas"])
    loader = data.DataLoader(*train, batch_size=RECIPE["batch_size"], shuffle=True, seed=seed)
    total = len(loader) * RECIPE["epochs"]
    assert total == math.ceil(len(train[0]) / RECIPE["batch_size"]) * RECIPE["epochs"]
    scheduler = optim.OneCycleLR(optimizer, max_lr=RECIPE["lr"], total_steps=total,
                                 pct_start=RECIPE["pct_start"], div_factor=RECIPE["div_factor"],
                                 final_div_factor=RECIPE["final_div_factor"])
    loss_fn = losses.SoftmaxCrossEntropy()
    step, first = 0, None
    t0 = time.perf_counter()
    for _ in range(RECIPE["epochs"]):
        for xb, yb in loader:
            xb, yb = backend.asarray(xb), backend.asarray(yb)  # on the model's device
            loss = loss_fn.forward(model.forward(xb), yb)
            model.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
            scheduler.step()
            step += 1
            if first is None:  # a new process loads (or compiles) its kernels here
                _synchronize()
                first = time.perf_counter() - t0
            if progress is not None:
                progress(step, total)
    _synchronize()  # on a GPU the last kernels may still be running
    train_s = time.perf_counter() - t0
    model.eval()
    correct = 0
    x_test, y_test = test
    for s in range(0, len(x_test), 1000):
        logits = backends.to_host(model.forward(backend.asarray(x_test[s:s + 1000])))
        correct += int(np.sum(np.argmax(logits, axis=1) == y_test[s:s + 1000]))
    return {"seed": seed, "train_s": train_s, "first_step_s": first, "steps": step,
            "test_acc": correct / len(x_test), "final_loss": float(loss),
            "backend": backends.backend_name()}
