"""GPU lab: the reference CNN's training step on the cuda backend, beside torch CUDA.

The reference CNN (tinynet.cli.build_cnn) for each normalization, float32,
one step = forward, softmax cross-entropy, zero_grad, backward, Adam step,
the batch already on the device. Timed by CUDA events (median), at batch 512
and 64, with the kernel launches of one step: numba.cuda launches plus
cuBLAS GEMM calls (device.matmul); CuPy's own small kernels (dtype casts,
copies of non-contiguous views) are not counted. Then one MNIST epoch at
batch 64 through ``tn.fit`` (the data uploaded once), when the MNIST files
are found.

    python -m kernels.gpu_step --check    # one step at batch 2 against the ref backend
                                          # (about 3 minutes under the simulator)
    python -m kernels.gpu_step --bench    # a GPU
"""
import time

import numpy as np

from kernels.common import GpuRow, event_time, lab_main, torch_cuda, torch_time

NORMS = ("batch", "layer", "instance", "group")
BATCHES = (512, 64)


def _inputs(batch, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 1, 28, 28)).astype(np.float32),
            rng.integers(0, 10, batch).astype(np.int64))


def tinynet_step(norm, x, y, device):
    """A closure running one training step of build_cnn(norm) on ``device``; and the model."""
    import tinynet as tn
    from tinynet.cli import build_cnn
    tn.init.seed(0)
    model = build_cnn(norm).to(device)
    loss_fn = tn.SoftmaxCrossEntropy()
    opt = tn.optim.Adam(model.parameters(), lr=1e-3)
    if device == "cuda":
        x, y = tn.to_device(x), tn.to_device(y)

    def step():
        loss = loss_fn.forward(model.forward(x), y)
        model.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        return loss
    return step, model


def count_launches(fn):
    """(numba.cuda launches, device.matmul calls) made by one call of ``fn``."""
    from tinynet.backends import cuda_device as device
    counts = [0, 0]

    def count_gemm(a, b):
        counts[1] += 1

    def count(py_func, args):
        counts[0] += 1
    with device.watch_launches(count), device.watch_gemms(count_gemm):
        fn()
    return tuple(counts)


def _torch_step(torch, norm, x, y):
    nn = torch.nn

    def norm_layer(c, hw):
        return {"batch": lambda: nn.BatchNorm2d(c), "layer": lambda: nn.LayerNorm((c, hw, hw)),
                "instance": lambda: nn.InstanceNorm2d(c, affine=True),
                "group": lambda: nn.GroupNorm(8, c)}[norm]()
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), norm_layer(32, 28), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), norm_layer(64, 14), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 10)).cuda()
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()

    def step():
        loss = loss_fn(model(tx), ty)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def check():
    """One step of build_cnn on the cuda backend against the same step on ref: the
    loss and every gradient (Adam's first step is lr * sign(grad) wherever the
    gradient is rounding noise, so the updated parameters are not compared)."""
    import tinynet as tn
    x, y = _inputs(2)
    losses, grads = [], []
    for backend, device in (("ref", "cpu"), ("cuda", "cuda")):
        with tn.use_backend(backend):
            step, model = tinynet_step("batch", x, y, device)
            losses.append(float(step()))
            grads.append([tn.to_host(p.grad) for p in model.parameters()])
    assert abs(losses[0] - losses[1]) < 1e-4 * max(1.0, abs(losses[0])), losses
    for g_ref, g in zip(*grads):
        np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-5 * max(1.0, np.abs(g_ref).max()))


def _mnist_epoch():
    """Seconds of one MNIST epoch at batch 64 on the cuda backend, or None without the data."""
    import tinynet as tn
    from tinynet.cli import build_cnn
    try:
        images, labels = tn.data.load_mnist("train", download=False)
    except (OSError, RuntimeError, ValueError):
        return None
    x = (images.astype(np.float32) / 255.0)[:, None]
    tn.init.seed(0)
    model = build_cnn("batch").to("cuda")
    opt = tn.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    tn.fit(model, tn.SoftmaxCrossEntropy(), opt, (x, labels.astype(np.int64)), epochs=1,
           batch_size=64, progress=False)
    return time.perf_counter() - t0


def bench():
    import tinynet as tn
    tn.set_backend("cuda")
    torch = torch_cuda()
    rows = []
    for batch in BATCHES:
        x, y = _inputs(batch)
        for norm in NORMS:
            step, _ = tinynet_step(norm, x, y, "cuda")
            seconds = event_time(step, warmup=3, repeat=20)
            launches, gemms = count_launches(step)
            t_torch = torch_time(torch, _torch_step(torch, norm, x, y)) if torch else None
            rows.append(GpuRow(f"CNN step, batch {batch}, {norm} norm",
                               f"tinynet cuda [{launches} launches + {gemms} GEMMs]", seconds,
                               torch_seconds=t_torch))
    epoch = _mnist_epoch()
    if epoch is not None:
        rows.append(GpuRow("MNIST epoch, batch 64, batch norm (tn.fit)", "tinynet cuda", epoch))
    return rows


def main(argv=None):
    return lab_main("gpu_step", check, bench, argv, device="cuda")


if __name__ == "__main__":
    main()
