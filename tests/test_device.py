"""Devices: tn.to_device / tn.to_host, model.to("cuda"), device checks, a step on the device.

These run the cuda backend, so they need a GPU or numba's CUDA simulator,
which must be switched on before numba is imported:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/test_device.py

Without either they are skipped with the reason the cuda backend gives,
except the test that a cuda request then fails clearly (run in a child
process without the simulator). Shapes are tiny: the simulator runs every
GPU thread as a Python thread.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import cuda as cuda_backend
from tinynet.data.device import DeviceLoader

from conftest import REPO


def _cuda_unavailable_reason():
    try:
        cuda_backend.check_available()
    except RuntimeError as e:
        return str(e)
    return None


REASON = _cuda_unavailable_reason()
requires_cuda = pytest.mark.skipif(REASON is not None,
                                   reason=f"needs the cuda backend: {REASON}")


@pytest.fixture
def on_cuda(monkeypatch):
    """The cuda backend active for one test, with small blocks under the simulator."""
    from tinynet.backends import cuda_device as device
    from tinynet.ops.norm import cuda as norm
    if device.SIMULATOR:
        monkeypatch.setattr(device, "BLOCK", 8)
        monkeypatch.setattr(device, "BLOCK_REDUCE", 4)
        monkeypatch.setattr(device, "MAX_BLOCKS", 3)
        monkeypatch.setattr(norm, "TARGET_BLOCKS", 8)
    with tn.use_backend("cuda") as backend:
        yield backend


def small_model(norm=True):
    tn.init.seed(3)
    layers = [tn.Conv2D(1, 2, 3, padding=1)]
    if norm:
        layers.append(tn.BatchNorm(2))
    layers += [tn.ReLU(), tn.MaxPool2D(2), tn.Flatten(), tn.Dense(2 * 2 * 2, 3)]
    return tn.Sequential(*layers)


def batch(rng, n=3):
    x = rng.standard_normal((n, 1, 5, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=n).astype(np.int64)
    return x, y


def test_cuda_without_gpu_or_simulator_is_a_clear_runtime_error():
    """In a fresh process without the simulator: set_backend, to_device and model.to fail."""
    script = """
import json
import numpy as np
import tinynet as tn
out = {}
for what, call in [("set_backend", lambda: tn.set_backend("cuda")),
                   ("to_device", lambda: tn.to_device(np.zeros(3))),
                   ("model.to", lambda: tn.Sequential(tn.Dense(2, 2)).to("cuda"))]:
    try:
        call()
        out[what] = None
    except Exception as e:
        out[what] = [type(e).__name__, str(e)]
print(json.dumps(out))
"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = REPO
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    if out["set_backend"] is None:
        pytest.skip("a usable GPU is present, so a cuda request succeeds here")
    for what, (kind, message) in out.items():
        assert kind == "RuntimeError", (what, kind, message)
        assert "backend 'cuda' is not available" in message, (what, message)
        # The reason says what to install or change.
        assert "NUMBA_ENABLE_CUDASIM=1" in message or "pip install" in message, message


@pytest.mark.parametrize("name", ["ref", "cpu"])
def test_host_backends_have_the_device_interface(name):
    backend = tn.backends._load(name)
    assert backend.NAME == name and backend.DEVICE == "cpu"
    assert backend.array_module() is np
    x = np.arange(6.0).reshape(2, 3)
    assert backend.is_native(x) and not backend.is_native([1.0, 2.0])
    a = backend.asarray(x.T, np.float32)
    assert a.flags.c_contiguous and a.dtype == np.float32
    assert backend.asarray(np.array(3)).shape == ()


def test_host_model_to_cpu_moves_nothing():
    model = small_model()
    arrays = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
    assert model.to("cpu") is model and model.device == "cpu"
    after = [p.data for p in model.parameters()] + [b for _, b in model.named_buffers()]
    assert all(a is b for a, b in zip(arrays, after))
    assert tn.to_device(np.zeros(3), "cpu").shape == (3,)
    with pytest.raises(TypeError, match="Dense.to: dtype must be float32 or float64, or a device"):
        tn.Dense(2, 2).to("tpu")


@requires_cuda
def test_to_device_and_to_host_round_trip(on_cuda):
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    labels = np.array([2, 0, 1], dtype=np.int64)
    for a in (x, labels):
        d = tn.to_device(a)
        assert on_cuda.is_native(d) and tn.backends.device_of(d) == "cuda"
        assert d.dtype == a.dtype and d.shape == a.shape
        h = tn.to_host(d)
        assert type(h) is np.ndarray and h.dtype == a.dtype
        np.testing.assert_array_equal(h, a)
        h[...] = 0  # a copy: the device array keeps its values
        np.testing.assert_array_equal(tn.to_host(d), a)
    # A host array stays where it is; a device array is not copied again.
    assert tn.to_host(x) is x
    d = tn.to_device(x)
    assert tn.to_device(d) is d


@requires_cuda
def test_model_to_round_trip_keeps_the_state(on_cuda, rng):
    model = small_model()
    x, _ = batch(rng)
    with tn.use_backend("cpu"):
        model.forward(x)  # running statistics that are not the initial ones
    before = model.state_dict()
    assert model.to("cuda") is model
    assert model.device == "cuda"
    for p in model.parameters():
        assert on_cuda.is_native(p.data) and on_cuda.is_native(p.grad)
    for name, b in model.named_buffers():
        # Running statistics move; the integer batch counter stays on the host.
        assert on_cuda.is_native(b) == (b.dtype.kind == "f"), name
    on_device = model.state_dict()
    assert model.to("cpu") is model and model.device == "cpu"
    after = model.state_dict()
    for key, value in before.items():
        assert type(on_device[key]) is np.ndarray and type(after[key]) is np.ndarray, key
        np.testing.assert_array_equal(on_device[key], value, err_msg=key)
        np.testing.assert_array_equal(after[key], value, err_msg=key)
        assert after[key].dtype == value.dtype, key
    for p in model.parameters():
        assert type(p.data) is np.ndarray and type(p.grad) is np.ndarray


@requires_cuda
def test_state_dict_of_a_trained_device_model_is_numpy(on_cuda, rng):
    model = small_model().to("cuda")
    x, y = batch(rng)
    loss_fn = tn.SoftmaxCrossEntropy()
    loss_fn.forward(model.forward(tn.to_device(x)), tn.to_device(y))
    model.backward(loss_fn.backward())
    sd = model.state_dict()
    assert all(type(v) is np.ndarray for v in sd.values())
    # The batch moved the running statistics, and state_dict holds copies.
    assert int(sd["1.num_batches_tracked"]) == 1
    assert not np.array_equal(sd["1.running_mean"], np.zeros(2, np.float32))
    sd["0.weight"][...] = 0
    assert not np.array_equal(tn.to_host(model[0].weight.data), sd["0.weight"])


@requires_cuda
def test_save_and_load_from_a_device_model(on_cuda, rng, tmp_path):
    model = small_model().to("cuda")
    x, _ = batch(rng)
    model.forward(tn.to_device(x))  # running statistics move
    path = tmp_path / "model.npz"
    model.save(path)
    host = small_model(norm=True)
    with tn.use_backend("cpu"):
        host.load(path)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(host.state_dict()[key], value, err_msg=key)
    # Loading into a device model keeps it on the device.
    other = small_model().to("cuda")
    other[0].weight.data[...] = 0
    other.load(path)
    assert other.device == "cuda" and on_cuda.is_native(other[1].running_mean)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[key], value, err_msg=key)
    y_model = tn.to_host(model.eval().forward(tn.to_device(x)))
    y_other = tn.to_host(other.eval().forward(tn.to_device(x)))
    np.testing.assert_array_equal(y_model, y_other)


@requires_cuda
def test_layer_to_dtype_works_on_the_device(on_cuda, rng):
    model = small_model().to("cuda").to(np.float64)
    assert model.dtype == np.float64 and model.device == "cuda"
    assert model[1].running_var.dtype == np.float64 and on_cuda.is_native(model[1].running_var)
    x, _ = batch(rng)
    y = model.forward(tn.to_device(x.astype(np.float64)))
    assert y.dtype == np.float64 and on_cuda.is_native(y)


@requires_cuda
def test_mixed_devices_raise_naming_the_layer_and_both_devices(on_cuda, rng):
    x, y = batch(rng)
    model = small_model().to("cuda")
    # A host array into a device model.
    with pytest.raises(tn.DeviceMismatchError, match=r"Conv2D: input \(on cpu\).*runs on cuda"):
        model.forward(x)
    # A device model under the cpu backend.
    with tn.use_backend("cpu"):
        with pytest.raises(tn.DeviceMismatchError,
                           match=r"Conv2D: the parameters \(on cuda\).*'cpu', which runs on cpu"):
            model.forward(x)
    # A device array into a host model, under the cpu backend.
    host = small_model()
    with tn.use_backend("cpu"):
        with pytest.raises(tn.DeviceMismatchError, match=r"Conv2D: input \(on cuda\).*cpu"):
            host.forward(tn.to_device(x))
    # A host model under the cuda backend.
    with pytest.raises(tn.DeviceMismatchError, match=r"Conv2D: the parameters \(on cpu\)"):
        host.forward(tn.to_device(x))
    # A parameter-free layer checks its input too.
    with pytest.raises(tn.DeviceMismatchError, match=r"ReLU: input \(on cpu\)"):
        tn.ReLU().forward(x)
    # dy from the wrong device.
    logits = model.forward(tn.to_device(x))
    with pytest.raises(tn.DeviceMismatchError, match=r"Dense.*dy \(on cpu\)"):
        model.backward(np.ones(logits.shape, np.float32))
    # Host labels into a loss on the device.
    with pytest.raises(tn.DeviceMismatchError, match=r"SoftmaxCrossEntropy: labels \(on cpu\)"):
        tn.SoftmaxCrossEntropy().forward(logits, y)
    # A device model's optimizer stepped under the cpu backend.
    opt = tn.optim.SGD(model.parameters(), lr=0.1)
    with tn.use_backend("cpu"):
        with pytest.raises(tn.DeviceMismatchError, match=r"SGD.step: params\[0\] \(on cuda\)"):
            opt.step()
    # The errors are RuntimeErrors (and TypeErrors): nothing was copied silently.
    assert issubclass(tn.DeviceMismatchError, RuntimeError)


OPTIMIZERS = [
    lambda ps: tn.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
    lambda ps: tn.optim.Adam(ps, lr=1e-2, weight_decay=1e-3),
    lambda ps: tn.optim.AdamW(ps, lr=1e-2),
]


@requires_cuda
@pytest.mark.parametrize("make_opt", OPTIMIZERS, ids=["sgd-nesterov", "adam", "adamw"])
def test_optimizer_steps_on_the_device_equal_the_cpu_steps(on_cuda, rng, make_opt):
    shapes = [(3, 5), (7,)]
    data = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    host = [tn.Parameter(d) for d in data]
    dev = [tn.Parameter(d).to_("cuda") for d in data]
    host_opt, dev_opt = make_opt(host), make_opt(dev)
    for step_grads in grads:
        for p, q, g in zip(host, dev, step_grads):
            p.grad[...] = g
            q.grad[...] = tn.to_device(g)
        with tn.use_backend("cpu"):
            host_opt.step()
        dev_opt.step()
    for p, q in zip(host, dev):
        assert on_cuda.is_native(q.data)
        np.testing.assert_allclose(tn.to_host(q.data), p.data, rtol=1e-6, atol=1e-7)
    for s_host, s_dev in zip(host_opt.state, dev_opt.state):
        for name in s_host:
            assert on_cuda.is_native(s_dev[name]), name
            np.testing.assert_allclose(tn.to_host(s_dev[name]), s_host[name], rtol=1e-6,
                                       atol=1e-7, err_msg=name)
    # zero_grad stays on the device; the optimizer's state_dict is numpy.
    dev_opt.zero_grad()
    assert all(on_cuda.is_native(p.grad) and not tn.to_host(p.grad).any() for p in dev)
    host_state = host_opt.state_dict()
    for key, value in dev_opt.state_dict().items():
        assert type(value) is np.ndarray, key
        np.testing.assert_allclose(value, host_state[key], rtol=1e-6, atol=1e-7, err_msg=key)


@requires_cuda
def test_a_training_step_on_the_device_equals_the_cpu_step(on_cuda, rng):
    x, y = batch(rng)
    host, dev = small_model(norm=False), small_model(norm=False).to("cuda")
    host_opt = tn.optim.Adam(host.parameters(), lr=1e-2)
    dev_opt = tn.optim.Adam(dev.parameters(), lr=1e-2)
    loss_fn = tn.SoftmaxCrossEntropy()
    xd, yd = tn.to_device(x), tn.to_device(y)
    for _ in range(2):
        with tn.use_backend("cpu"):
            host_loss = loss_fn.forward(host.forward(x), y)
            host.zero_grad()
            host.backward(loss_fn.backward())
            host_opt.step()
        dev_loss = loss_fn.forward(dev.forward(xd), yd)
        dev.zero_grad()
        dev.backward(loss_fn.backward())
        dev_opt.step()
        np.testing.assert_allclose(float(dev_loss), host_loss, rtol=1e-5)
    for key, value in host.state_dict().items():
        np.testing.assert_allclose(dev.state_dict()[key], value, rtol=1e-4, atol=1e-5,
                                   err_msg=key)


@requires_cuda
def test_losses_return_device_scalars(on_cuda, rng):
    x, y = batch(rng)
    logits = tn.to_device(x.reshape(3, -1)[:, :4])
    loss = tn.SoftmaxCrossEntropy().forward(logits, tn.to_device(y % 4))
    assert on_cuda.is_native(loss) and loss.shape == ()
    with tn.use_backend("cpu"):
        expected = tn.SoftmaxCrossEntropy().forward(x.reshape(3, -1)[:, :4], y % 4)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    f = tn.MSELoss()
    mse = f.forward(logits, logits * 0.5)
    assert on_cuda.is_native(mse)
    np.testing.assert_allclose(float(mse), np.mean((0.5 * x.reshape(3, -1)[:, :4]) ** 2),
                               rtol=1e-6)
    assert on_cuda.is_native(f.backward())
    assert tn.accuracy(logits, tn.to_device(y % 4)) == np.mean(
        np.argmax(x.reshape(3, -1)[:, :4], axis=1) == y % 4)


@requires_cuda
@pytest.mark.parametrize("shuffle", [True, False])
def test_device_loader_gives_the_host_loaders_batches(on_cuda, rng, shuffle):
    x = rng.standard_normal((7, 3)).astype(np.float32)
    y = np.arange(7, dtype=np.int32)
    host = tn.data.DataLoader(x, y, batch_size=3, shuffle=shuffle, seed=5)
    device = DeviceLoader(tn.data.DataLoader(x, y, batch_size=3, shuffle=shuffle, seed=5))
    assert len(device) == len(host) == 3
    for _ in range(2):  # two epochs: the order changes with the epoch counter
        for (xh, yh), (xd, yd) in zip(host, device):
            assert on_cuda.is_native(xd) and on_cuda.is_native(yd) and yd.dtype == np.int64
            np.testing.assert_array_equal(tn.to_host(xd), xh)
            np.testing.assert_array_equal(tn.to_host(yd), yh)
    assert device.epoch == host.epoch == 2


@requires_cuda
def test_fit_on_the_device(on_cuda, rng):
    x, y = batch(rng, n=6)
    model = small_model().to("cuda")
    opt = tn.optim.SGD(model.parameters(), lr=0.05)
    history = tn.fit(model, tn.SoftmaxCrossEntropy(), opt, (x, y), epochs=2, batch_size=3,
                     val_data=(x, y), progress=False)
    assert len(history) == 2
    for record in history.records:
        assert np.isfinite(record["train_loss"]) and 0 <= record["train_acc"] <= 1
        assert np.isfinite(record["val_loss"]) and 0 <= record["val_acc"] <= 1
    assert model.device == "cuda"


@requires_cuda
def test_fit_with_a_host_augmentation_matches_the_cpu(on_cuda, rng):
    """Augmented batches are made on the host and uploaded; the run is the cpu run."""
    x, y = batch(rng, n=6)
    histories, states = [], []
    for device in ("cpu", "cuda"):
        model = small_model().to(device)
        opt = tn.optim.SGD(model.parameters(), lr=0.05)
        loader = tn.data.DataLoader(x, y, batch_size=3, shuffle=True, seed=1,
                                    augment=tn.data.RandomShift(1))
        with tn.use_backend("cpu" if device == "cpu" else "cuda"):
            histories.append(tn.fit(model, tn.SoftmaxCrossEntropy(), opt, loader, epochs=2,
                                    progress=False))
        states.append(model.state_dict())
    np.testing.assert_allclose(histories[1]["train_loss"], histories[0]["train_loss"],
                               rtol=1e-5)
    for key, value in states[0].items():
        np.testing.assert_allclose(states[1][key], value, rtol=1e-4, atol=1e-5, err_msg=key)


@requires_cuda
def test_fit_checkpoint_resumes_onto_the_device(on_cuda, rng, tmp_path):
    x, y = batch(rng, n=4)
    ckpt = tmp_path / "ckpt.npz"
    model = small_model().to("cuda")
    opt = tn.optim.Adam(model.parameters(), lr=1e-2)
    tn.fit(model, tn.SoftmaxCrossEntropy(), opt, (x, y), epochs=1, batch_size=2,
           checkpoint=ckpt, progress=False)
    fresh = small_model().to("cuda")
    fresh_opt = tn.optim.Adam(fresh.parameters(), lr=1e-2)
    history = tn.fit(fresh, tn.SoftmaxCrossEntropy(), fresh_opt, (x, y), epochs=1,
                     batch_size=2, checkpoint=ckpt, resume=True, progress=False)
    assert len(history) == 1 and fresh.device == "cuda"
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value, err_msg=key)
    assert fresh_opt.step_count == opt.step_count == 2
    for s_model, s_fresh in zip(opt.state, fresh_opt.state):
        for name in s_model:
            assert on_cuda.is_native(s_fresh[name])
            np.testing.assert_array_equal(tn.to_host(s_fresh[name]), tn.to_host(s_model[name]))


DATA = os.environ.get("TINYNET_DATA_DIR", os.path.join(REPO, "..", "shared", "data"))


@requires_cuda
@pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "mnist")),
                    reason=f"needs the MNIST files in {DATA}/mnist")
def test_tinynet_train_backend_cuda_on_a_tiny_subset(on_cuda, tmp_path, capsys):
    from tinynet import cli
    rc = cli.main(["train", "--backend", "cuda", "--data-dir", DATA, "--limit", "2",
                   "--val-split", "1", "--test-limit", "1", "--batch-size", "2", "--epochs", "1",
                   "--schedule", "none", "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["backend"] == "cuda" and result["epochs"] == 1
    # One validation and one test image: each accuracy is 0 or 1.
    assert np.isfinite(result["test_loss"]) and result["test_acc"] in (0.0, 1.0)
    assert result["val_acc"] in (0.0, 1.0)
    assert (tmp_path / "checkpoint.safetensors").exists()
