"""The optimizer steps and the optimizers.

The ops: every backend's sgd_step / adam_step against the float64 reference
over tinynet.ops.optim.cases (every option, float32 and float64, arrays on
both sides of the cpu's serial / parallel threshold), grad left as it was,
NaN, and bad input. The classes (tn.optim): torch.optim's trajectories,
state dicts and resuming, the schedules, and their argument checks.
"""
import math

import numpy as np
import pytest

import tinynet as tn
from cudasim import SIMULATOR
from harness import FLOATS
from tinynet.backends import ref
from tinynet.ops.optim import cases
from tinynet.optim import SGD, Adam, AdamW, CosineWarmup, OneCycleLR, StepLR

STEPS = 4
# A float32 or float64 result against the float64 reference.
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-13, atol=1e-13)}
# Under the simulator every GPU thread is a Python thread: larger arrays take minutes.
SIMULATOR_MAX = 2000

SHAPE_IDS = [case.name for case in cases.SHAPES]
SGD_IDS = [case.name for case in cases.SGD]
ADAM_IDS = [case.name for case in cases.ADAM]


def put(backend, a, dtype=None):
    """A fresh copy of the host array ``a`` (cast to ``dtype``) on ``backend``; the
    ops update their arrays in place, so the host array must not be shared."""
    return None if a is None else backend.put(np.array(a, dtype=dtype, copy=True))


def skip_large_on_simulator(backend, shape):
    if backend.name == "cuda" and SIMULATOR and math.prod(shape) > SIMULATOR_MAX:
        pytest.skip(f"{math.prod(shape)} elements: too slow under the CUDA simulator "
                    f"(runs on a GPU)")


def assert_state(backend, got, want, dtype, what):
    """A state array of ``backend`` (in place, of ``dtype``) against the float64 reference."""
    got = backend.get(got)
    assert got.dtype == dtype, f"{backend.name} {what}: dtype {got.dtype}"
    np.testing.assert_allclose(got, want, err_msg=f"{backend.name} {what}",
                               **TOL[np.dtype(dtype).type])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", cases.SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("options", cases.SGD, ids=SGD_IDS)
def test_sgd_step_matches_ref(backend, rng, options, shape, dtype):
    skip_large_on_simulator(backend, shape.shape)
    use_buf = options.momentum != 0
    param_ref = rng.standard_normal(shape.shape).astype(dtype).astype(np.float64)
    buf_ref = np.zeros_like(param_ref) if use_buf else None
    param, buf = put(backend, param_ref, dtype), put(backend, buf_ref, dtype)
    for _ in range(STEPS):
        g = rng.standard_normal(shape.shape).astype(dtype)
        grad = put(backend, g)
        assert backend.ops.sgd_step(param, grad, buf, **options.kwargs()) is None
        ref.sgd_step(param_ref, g.astype(np.float64), buf_ref, **options.kwargs())
        np.testing.assert_array_equal(backend.get(grad), g, err_msg="grad was written")
    assert_state(backend, param, param_ref, dtype, "param")
    if use_buf:
        assert_state(backend, buf, buf_ref, dtype, "buf")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", cases.SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("options", cases.ADAM, ids=ADAM_IDS)
def test_adam_step_matches_ref(backend, rng, options, shape, dtype):
    skip_large_on_simulator(backend, shape.shape)
    param_ref = rng.standard_normal(shape.shape).astype(dtype).astype(np.float64)
    m_ref, v_ref = np.zeros_like(param_ref), np.zeros_like(param_ref)
    param, m, v = (put(backend, a, dtype) for a in (param_ref, m_ref, v_ref))
    for t in range(1, STEPS + 1):
        g = rng.standard_normal(shape.shape).astype(dtype)
        assert backend.ops.adam_step(param, put(backend, g), m, v, t, **options.kwargs()) is None
        ref.adam_step(param_ref, g.astype(np.float64), m_ref, v_ref, t, **options.kwargs())
    for got, want, what in ((param, param_ref, "param"), (m, m_ref, "m"), (v, v_ref, "v")):
        assert_state(backend, got, want, dtype, what)


@pytest.mark.parametrize("options", cases.ADAM, ids=ADAM_IDS)
def test_float32_adam_matches_float32_ref_closely(backend, rng, options):
    if backend.name == "ref":
        pytest.skip("the reference itself")
    # Both compute in float32 with the same float32 scalars.
    param_ref = rng.standard_normal(1001).astype(np.float32)
    m_ref, v_ref = np.zeros_like(param_ref), np.zeros_like(param_ref)
    param, m, v = (put(backend, a) for a in (param_ref, m_ref, v_ref))
    for t in range(1, STEPS + 1):
        g = rng.standard_normal(1001).astype(np.float32)
        backend.ops.adam_step(param, put(backend, g), m, v, t, **options.kwargs())
        ref.adam_step(param_ref, g, m_ref, v_ref, t, **options.kwargs())
    np.testing.assert_allclose(backend.get(param), param_ref, rtol=2e-6, atol=1e-7)


# One array each side of the cpu's serial / parallel threshold.
GRAD_SHAPES = [case for case in cases.SHAPES if case.name in ("7", "threshold+1")]


@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=[case.name for case in GRAD_SHAPES])
def test_ops_do_not_write_grad(backend, rng, shape):
    skip_large_on_simulator(backend, shape.shape)
    param, g = (rng.standard_normal(shape.shape).astype(np.float32) for _ in range(2))
    p, grad = put(backend, param), put(backend, g)
    ops = backend.ops
    ops.sgd_step(p, grad, put(backend, np.zeros_like(param)), 0.1, 0.9, 0.1, True)
    ops.sgd_step(p, grad, None, 0.1, 0.0, 0.1, False)
    for decoupled in (False, True):
        ops.adam_step(p, grad, put(backend, np.zeros_like(param)),
                      put(backend, np.zeros_like(param)), 1, 0.1, 0.9, 0.999, 1e-8, 0.1, decoupled)
    np.testing.assert_array_equal(backend.get(grad), g)


def test_a_grad_of_another_dtype(backend, rng):
    """ref and cpu cast a float64 grad to a float32 parameter's dtype, as torch;
    cuda asks for a grad of the parameter's dtype (a Parameter's grad has it)."""
    param = rng.standard_normal(9).astype(np.float32)
    grad = rng.standard_normal(9)
    p = put(backend, param)
    if backend.name == "cuda":
        with pytest.raises(ValueError, match=r"sgd_step: grad must have param's shape \(9,\) "
                                             r"and dtype float32"):
            backend.ops.sgd_step(p, put(backend, grad), None, 0.1, 0.0, 0.0, False)
        return
    backend.ops.sgd_step(p, put(backend, grad), None, 0.1, 0.0, 0.0, False)
    ref.sgd_step(param, grad, None, 0.1, 0.0, 0.0, False)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, param, rtol=1e-6, atol=1e-7)


# Under the simulator the kernel's threads divide 0 by 0 outside np.errstate.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_propagates_as_in_ref(backend):
    param_ref = np.array([1.0, 2.0, 3.0, 0.0])
    grad = np.array([np.nan, 1.0, np.inf, 0.0])
    m_ref, v_ref = np.zeros(4), np.zeros(4)
    param, m, v = (put(backend, a) for a in (param_ref, m_ref, v_ref))
    # eps = 0 with g = 0 gives 0 / 0 in the last element.
    with np.errstate(invalid="ignore", divide="ignore"):
        backend.ops.adam_step(param, put(backend, grad), m, v, 1, 0.1, 0.9, 0.999, 0.0, 0.0,
                              False)
        ref.adam_step(param_ref, grad, m_ref, v_ref, 1, 0.1, 0.9, 0.999, 0.0, 0.0, False)
    param = backend.get(param)
    np.testing.assert_array_equal(np.isnan(param), np.isnan(param_ref))
    assert np.isnan(param[0]) and np.isnan(param[3])
    np.testing.assert_array_equal(param[1], param_ref[1])
    param, buf = put(backend, [1.0, 2.0]), put(backend, np.zeros(2))
    backend.ops.sgd_step(param, put(backend, [np.nan, 1.0]), buf, 0.1, 0.9, 0.0, False)
    param, buf = backend.get(param), backend.get(buf)
    assert np.isnan(param[0]) and np.isnan(buf[0]) and param[1] == 1.9


def test_adam_first_step_is_lr_times_sign(backend):
    """At t = 1, m / sqrt(v) after bias correction is sign(g)."""
    param = put(backend, np.zeros(2, np.float32))
    m, v = put(backend, np.zeros(2, np.float32)), put(backend, np.zeros(2, np.float32))
    backend.ops.adam_step(param, put(backend, np.array([3.0, -0.5], np.float32)), m, v, 1, 0.01,
                          0.9, 0.999, 0.0, 0.0, False)
    param = backend.get(param)
    assert param.dtype == np.float32
    np.testing.assert_allclose(param, [-0.01, 0.01], rtol=1e-6)


def test_ops_reject_bad_arrays(backend, rng):
    ops = backend.ops
    host = rng.standard_normal((4, 6))
    param, grad = put(backend, host), put(backend, np.zeros_like(host))
    if backend.name != "ref":
        # The reference takes any layout; a kernel updates a flat view in place.
        with pytest.raises(ValueError, match="sgd_step: param must be C-contiguous"):
            ops.sgd_step(param.T, grad.T, None, 0.1, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="sgd_step: grad"):
        ops.sgd_step(param, grad[:2], None, 0.1, 0.0, 0.0, False)
    with pytest.raises(TypeError, match="sgd_step: buf"):
        ops.sgd_step(param, grad, put(backend, np.zeros((4, 6), np.float32)), 0.1, 0.9, 0.0,
                     False)
    with pytest.raises(ValueError, match="sgd_step: buf must have param's shape"):
        ops.sgd_step(param, grad, put(backend, np.zeros(3)), 0.1, 0.9, 0.0, False)
    with pytest.raises(TypeError, match="adam_step: param"):
        ops.adam_step(put(backend, host.astype(np.int64)), grad, grad, grad, 1, 0.1, 0.9, 0.999,
                      1e-8, 0.0, False)
    with pytest.raises(ValueError, match="adam_step: v"):
        ops.adam_step(param, grad, put(backend, np.zeros_like(host)),
                      put(backend, np.zeros((6, 4))), 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False)


def test_ops_come_from_the_family_module(backend):
    for name in ("sgd_step", "adam_step"):
        op = getattr(backend.ops, name)
        assert op.__module__ == f"tinynet.ops.optim.{backend.name}", name
        assert (op is getattr(ref, name)) == (backend.name == "ref"), name


# The optimizer classes.

SHAPES = [(3, 4), (5,), (2, 3, 2, 1)]
TRAJECTORY_STEPS = 20

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, betas=(0.5, 0.9), weight_decay=0.3)),
]
CASE_IDS = [f"{kind}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for kind, kw in CASES]


def make_values(dtype, seed=0):
    """Initial parameter values and a fixed sequence of TRAJECTORY_STEPS gradients."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES]
             for _ in range(TRAJECTORY_STEPS)]
    return values, grads


def make_tinynet(backend, kind, kw, values):
    """Parameters with ``values`` on ``backend``'s device and an optimizer ``kind`` of them."""
    params = [tn.Parameter(v).to_(backend.device) for v in values]
    return params, getattr(tn.optim, kind)(params, **kw)


def run_tinynet(backend, params, opt, grads, schedule=None):
    """Step ``opt`` through ``grads`` on ``backend``; the parameter values after each step."""
    out = []
    with backend.active():
        for step_grads in grads:
            opt.zero_grad()
            for p, g in zip(params, step_grads):
                p.grad += backend.put(g)
            opt.step()
            if schedule is not None:
                schedule.step()
            out.append([np.array(backend.get(p.data)) for p in params])
    return out


def run_torch(torch, kind, kw, values, grads):
    params = [torch.nn.Parameter(torch.tensor(v)) for v in values]
    opt = getattr(torch.optim, kind)(params, **kw)
    out = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = torch.tensor(g)
        opt.step()
        out.append([p.detach().numpy().copy() for p in params])
    return out


def run_both(backend, kind, kw, dtype):
    """The optimizer ``kind`` on ``backend`` and torch's through the same gradients:
    (initial values, tinynet's optimizer, its values after each step, torch's)."""
    torch = pytest.importorskip("torch")
    values, grads = make_values(dtype)
    params, opt = make_tinynet(backend, kind, kw, values)
    ours = run_tinynet(backend, params, opt, grads)
    return values, opt, ours, run_torch(torch, kind, kw, values, grads)


@pytest.mark.parametrize("kind, kw", CASES, ids=CASE_IDS)
def test_trajectory_matches_torch_float64(backend, kind, kw):
    values, _, ours, theirs = run_both(backend, kind, kw, np.float64)
    for t, (a, b) in enumerate(zip(ours, theirs)):
        for i, (pa, pb) in enumerate(zip(a, b)):
            np.testing.assert_allclose(pa, pb, rtol=1e-12, atol=1e-12,
                                       err_msg=f"{kind} step {t + 1} param {i}")
    # the parameters actually moved
    assert not np.allclose(ours[-1][0], values[0])


@pytest.mark.parametrize("kind, kw", CASES, ids=CASE_IDS)
def test_float32_stays_float32_and_tracks_torch(backend, kind, kw):
    _, opt, ours, theirs = run_both(backend, kind, kw, np.float32)
    for p in opt.params:
        assert p.data.dtype == np.float32 and p.grad.dtype == np.float32
    for state in opt.state:
        for array in state.values():
            assert array.dtype == np.float32
    for pa, pb in zip(ours[-1], theirs[-1]):
        np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-5)


def test_sgd_first_momentum_step_is_plain_sgd():
    """The buffer starts at zeros, so step 1 is p - lr * g, as torch's buf = g."""
    p = tn.Parameter(np.array([1.0, -2.0]))
    opt = SGD([p], lr=0.5, momentum=0.9)
    p.grad[...] = [0.2, 0.4]
    opt.step()
    np.testing.assert_array_equal(p.data, [0.9, -2.2])
    np.testing.assert_array_equal(opt.state[0]["momentum_buffer"], [0.2, 0.4])


def test_zero_grad_clears_grads(rng):
    params = [tn.Parameter(rng.standard_normal(s)) for s in SHAPES]
    for p in params:
        p.grad += 1.0
    SGD(params, lr=0.1).zero_grad()
    for p in params:
        assert np.all(p.grad == 0)


def test_zero_lr_leaves_params_unchanged(rng):
    p = tn.Parameter(rng.standard_normal((3, 2)))
    before = p.data.copy()
    p.grad += 1.0
    opt = Adam([p], lr=0.0)
    opt.step()
    np.testing.assert_array_equal(p.data, before)
    assert opt.step_count == 1


def test_state_follows_a_dtype_cast_after_creation(rng):
    p = tn.Parameter(rng.standard_normal(4).astype(np.float32))
    opt = Adam([p], lr=0.1)
    p.astype_(np.float64)
    p.grad += 1.0
    opt.step()
    assert p.data.dtype == np.float64
    assert opt.state[0]["exp_avg"].dtype == np.float64
    assert opt.state[0]["exp_avg_sq"].dtype == np.float64


def test_step_rejects_a_grad_of_the_wrong_shape():
    p = tn.Parameter(np.zeros((2, 3)))
    p.grad = np.zeros(3)
    opt = SGD([p], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[0\].*\(2, 3\)"):
        opt.step()
    assert opt.step_count == 0


def test_state_dict_keys_and_types():
    params = [tn.Parameter(np.zeros((2, 3))), tn.Parameter(np.zeros(4))]
    assert set(SGD(params, lr=0.1).state_dict()) == {"step", "lr"}
    assert set(SGD(params, lr=0.1, momentum=0.5).state_dict()) == {
        "step", "lr", "0.momentum_buffer", "1.momentum_buffer"}
    sd = Adam(params).state_dict()
    assert set(sd) == {"step", "lr", "0.exp_avg", "0.exp_avg_sq", "1.exp_avg", "1.exp_avg_sq"}
    assert sd["step"].shape == () and sd["step"].dtype == np.int64
    assert sd["lr"].shape == () and sd["lr"].dtype == np.float64
    assert sd["0.exp_avg"].shape == (2, 3)


def save_and_load(tmp_path, name, state):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **state)
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("kind, kw", [CASES[4], CASES[6], CASES[8]], ids=["SGD", "Adam", "AdamW"])
def test_resume_from_npz_matches_an_uninterrupted_run(backend, tmp_path, kind, kw):
    values, grads = make_values(np.float64)
    k = 7

    params, opt = make_tinynet(backend, kind, kw, values)
    schedule = CosineWarmup(opt, warmup_steps=3, total_steps=15, min_lr=1e-4)
    full = run_tinynet(backend, params, opt, grads, schedule)

    params, opt = make_tinynet(backend, kind, kw, values)
    schedule = CosineWarmup(opt, warmup_steps=3, total_steps=15, min_lr=1e-4)
    run_tinynet(backend, params, opt, grads[:k], schedule)
    opt_state = save_and_load(tmp_path, "opt", opt.state_dict())
    schedule_state = save_and_load(tmp_path, "schedule", schedule.state_dict())

    # a fresh process: parameters restored from the checkpoint, a new optimizer
    params, opt = make_tinynet(backend, kind, kw, [backend.get(p.data) for p in params])
    schedule = CosineWarmup(opt, warmup_steps=3, total_steps=15, min_lr=1e-4)
    opt.load_state_dict(opt_state)
    schedule.load_state_dict(schedule_state)
    assert opt.step_count == k and schedule.last_step == k
    resumed = run_tinynet(backend, params, opt, grads[k:], schedule)

    for t, (a, b) in enumerate(zip(full[k:], resumed)):
        for pa, pb in zip(a, b):
            np.testing.assert_array_equal(pa, pb, err_msg=f"step {k + t + 1}")


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=-0.1),
    lambda ps: Adam(ps, lr=-1e-3),
    lambda ps: AdamW(ps, lr=-1e-3),
    lambda ps: SGD(ps, lr=float("nan")),
], ids=["SGD", "Adam", "AdamW", "SGD-nan"])
def test_negative_lr_is_rejected(make):
    with pytest.raises(ValueError, match="lr must be >= 0"):
        make([tn.Parameter(np.zeros(2))])


def test_nesterov_requires_momentum():
    with pytest.raises(ValueError, match="nesterov.*momentum"):
        SGD([tn.Parameter(np.zeros(2))], lr=0.1, nesterov=True)


@pytest.mark.parametrize("betas, bad", [((1.0, 0.999), 0), ((-0.1, 0.9), 0),
                                        ((0.9, 1.0), 1), ((0.9, 1.5), 1)])
@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_betas_outside_0_1_are_rejected(cls, betas, bad):
    with pytest.raises(ValueError, match=rf"betas\[{bad}\] must be in \[0, 1\)"):
        cls([tn.Parameter(np.zeros(2))], betas=betas)


@pytest.mark.parametrize("make, error, match", [
    (lambda ps: SGD(ps, lr=0.1, momentum=-0.5), ValueError, "momentum"),
    (lambda ps: SGD(ps, lr=0.1, weight_decay=-1.0), ValueError, "weight_decay"),
    (lambda ps: Adam(ps, eps=-1e-8), ValueError, "eps"),
    (lambda ps: AdamW(ps, weight_decay=-0.1), ValueError, "weight_decay"),
    (lambda ps: Adam(ps, betas=0.9), TypeError, "betas"),
    (lambda ps: SGD(ps, lr="0.1"), TypeError, "lr"),
    (lambda ps: SGD(ps[0], lr=0.1), TypeError, "single Parameter"),
    (lambda ps: SGD([], lr=0.1), ValueError, "empty"),
    (lambda ps: SGD([np.zeros(2)], lr=0.1), TypeError, r"params\[0\]"),
    (lambda ps: SGD(ps + ps, lr=0.1), ValueError, "more than once"),
])
def test_bad_arguments_are_rejected(make, error, match):
    with pytest.raises(error, match=match):
        make([tn.Parameter(np.zeros(2))])


def adam_with_state():
    params = [tn.Parameter(np.ones((2, 3))), tn.Parameter(np.ones(4))]
    opt = Adam(params, lr=0.1)
    for p in params:
        p.grad += 1.0
    opt.step()
    return opt


def test_load_state_dict_names_a_missing_key():
    opt = adam_with_state()
    state = opt.state_dict()
    del state["1.exp_avg"]
    before = opt.state_dict()
    with pytest.raises(KeyError, match="1.exp_avg"):
        adam_with_state().load_state_dict(state)
    fresh = Adam([tn.Parameter(np.ones((2, 3))), tn.Parameter(np.ones(4))])
    with pytest.raises(KeyError, match="missing key '1.exp_avg'"):
        fresh.load_state_dict(state)
    assert fresh.step_count == 0 and np.all(fresh.state[0]["exp_avg"] == 0)
    assert before.keys() == opt.state_dict().keys()


def test_load_state_dict_names_a_misshaped_key():
    state = adam_with_state().state_dict()
    state["0.exp_avg_sq"] = np.zeros((3, 2))
    fresh = Adam([tn.Parameter(np.ones((2, 3))), tn.Parameter(np.ones(4))])
    with pytest.raises(ValueError, match=r"'0.exp_avg_sq' has shape \(3, 2\), expected \(2, 3\)"):
        fresh.load_state_dict(state)
    assert fresh.step_count == 0 and np.all(fresh.state[0]["exp_avg"] == 0)


def test_load_state_dict_names_an_unexpected_key():
    state = adam_with_state().state_dict()
    fresh = SGD([tn.Parameter(np.ones((2, 3))), tn.Parameter(np.ones(4))], lr=0.1)
    with pytest.raises(KeyError, match="unexpected key '0.exp_avg'"):
        fresh.load_state_dict(state)


def test_load_state_dict_rejects_a_bad_step():
    state = adam_with_state().state_dict()
    state["step"] = np.array(-1)
    with pytest.raises(ValueError, match="'step'"):
        adam_with_state().load_state_dict(state)


def test_load_state_dict_casts_to_the_parameter_dtype():
    state = adam_with_state().state_dict()
    fresh = Adam([tn.Parameter(np.ones((2, 3), np.float32)), tn.Parameter(np.ones(4, np.float32))])
    fresh.load_state_dict(state)
    assert fresh.state[0]["exp_avg"].dtype == np.float32
    assert fresh.step_count == 1 and fresh.lr == 0.1


def test_repr_shows_hyperparameters():
    p = [tn.Parameter(np.zeros(2))]
    assert repr(SGD(p, lr=0.1, momentum=0.9)) == (
        "SGD(lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False)")
    assert "weight_decay=0.01" in repr(AdamW(p))


# The learning-rate schedules.

def test_steplr_matches_torch():
    torch = pytest.importorskip("torch")
    opt = SGD([tn.Parameter(np.zeros(2))], lr=0.5)
    schedule = StepLR(opt, step_size=3, gamma=0.5)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.5)
    tschedule = torch.optim.lr_scheduler.StepLR(topt, step_size=3, gamma=0.5)
    ours, theirs = [schedule.last_lr], [tschedule.get_last_lr()[0]]
    for _ in range(12):
        topt.step()
        tschedule.step()
        schedule.step()
        assert opt.lr == schedule.last_lr == schedule.get_lr()
        ours.append(schedule.last_lr)
        theirs.append(tschedule.get_last_lr()[0])
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    assert ours[-1] == pytest.approx(0.5 * 0.5 ** 4)


def cosine_warmup_lr(n, base_lr, W, T, min_lr):
    """CosineWarmup's schedule, written out."""
    if n < W:
        return base_lr * (n + 1) / W
    if n > T:
        return min_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * (n - W) / (T - W)))


@pytest.mark.parametrize("W, T, min_lr", [(4, 12, 0.0), (3, 10, 0.01), (0, 6, 0.0)])
def test_cosine_warmup_matches_formula_and_torch_lambdalr(W, T, min_lr):
    torch = pytest.importorskip("torch")
    base_lr = 0.1
    opt = SGD([tn.Parameter(np.zeros(2))], lr=base_lr)
    schedule = CosineWarmup(opt, warmup_steps=W, total_steps=T, min_lr=min_lr)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=base_lr)
    tschedule = torch.optim.lr_scheduler.LambdaLR(
        topt, lambda n: cosine_warmup_lr(n, base_lr, W, T, min_lr) / base_lr)
    ours, formula, theirs = [], [], []
    for n in range(T + 4):
        if n > 0:
            topt.step()
            tschedule.step()
            schedule.step()
        assert opt.lr == schedule.last_lr
        ours.append(schedule.last_lr)
        formula.append(cosine_warmup_lr(n, base_lr, W, T, min_lr))
        theirs.append(tschedule.get_last_lr()[0])
    np.testing.assert_allclose(ours, formula, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    # shape: warm-up ends at base_lr, the cosine ends at min_lr and stays there
    assert ours[max(W - 1, 0)] == pytest.approx(base_lr)
    assert ours[W] == pytest.approx(base_lr)
    assert ours[T] == pytest.approx(min_lr) and ours[-1] == min_lr
    if W > 0:
        assert ours[0] == pytest.approx(base_lr / W)
        assert np.all(np.diff(ours[:W]) > 0)
    assert np.all(np.diff(ours[W:T + 1]) < 0)


ONE_CYCLE = [dict(max_lr=0.01, total_steps=235),
             dict(max_lr=0.5, total_steps=20, pct_start=0.25, anneal_strategy="linear"),
             dict(max_lr=2e-3, total_steps=17, pct_start=0.5, div_factor=10.0,
                  final_div_factor=100.0)]


@pytest.mark.parametrize("options", ONE_CYCLE, ids=["speedrun", "linear", "halves"])
def test_one_cycle_matches_torch(options):
    """Every lr of the cycle, on both sides of the peak and at its last step, as
    torch's OneCycleLR (cycle_momentum=False) gives it; torch's initial lr is
    replaced by max_lr / div_factor on both sides."""
    torch = pytest.importorskip("torch")
    opt = Adam([tn.Parameter(np.zeros(2))], lr=123.0)
    schedule = OneCycleLR(opt, **options)
    topt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=123.0)
    tschedule = torch.optim.lr_scheduler.OneCycleLR(topt, cycle_momentum=False, **options)
    ours, theirs = [opt.lr], [tschedule.get_last_lr()[0]]
    for _ in range(options["total_steps"]):
        topt.step()
        tschedule.step()
        schedule.step()
        ours.append(opt.lr)
        theirs.append(tschedule.get_last_lr()[0])
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-18)
    assert ours[0] == pytest.approx(options["max_lr"] / options.get("div_factor", 25.0))
    # The rise ends at step e1 = pct_start * total_steps - 1: the peak is max_lr when e1
    # is a whole step, and below it otherwise.
    e1 = options.get("pct_start", 0.3) * options["total_steps"] - 1
    assert max(ours) <= options["max_lr"] * (1 + 1e-12)
    if e1 == int(e1):
        assert ours[int(e1)] == pytest.approx(options["max_lr"])
    with pytest.raises(ValueError, match="total_steps"):
        schedule.step()
    with pytest.raises(ValueError):
        tschedule.step()


def test_one_cycle_shape_without_torch():
    """The speedrun's cycle written out: up for 30% of the steps, down to
    lr0 / 1e4 at the last one (the formula of tinynet.optim's docstring)."""
    opt = SGD([tn.Parameter(np.zeros(2))], lr=0.1)
    schedule = OneCycleLR(opt, max_lr=0.01, total_steps=100)
    lrs = [opt.lr] + [schedule.step() or opt.lr for _ in range(99)]
    e1 = 0.3 * 100 - 1
    peak = int(np.argmax(lrs))
    assert peak == 29 and lrs[peak] == pytest.approx(0.01)
    assert np.all(np.diff(lrs[:30]) > 0) and np.all(np.diff(lrs[29:]) < 0)
    assert lrs[0] == pytest.approx(4e-4) and lrs[-1] == pytest.approx(4e-8)
    t = (50 - e1) / (99 - e1)
    assert lrs[50] == pytest.approx(4e-8 + (0.01 - 4e-8) * (1 + math.cos(math.pi * t)) / 2)


@pytest.mark.parametrize("make", [
    lambda opt: StepLR(opt, step_size=2, gamma=0.3),
    lambda opt: CosineWarmup(opt, warmup_steps=2, total_steps=9, min_lr=0.001),
    lambda opt: OneCycleLR(opt, max_lr=0.1, total_steps=12),
], ids=["StepLR", "CosineWarmup", "OneCycleLR"])
def test_schedule_resume_from_npz(tmp_path, make):
    opt = SGD([tn.Parameter(np.zeros(2))], lr=0.1)
    schedule = make(opt)
    full = []
    for _ in range(12):
        schedule.step()
        full.append(opt.lr)

    opt = SGD([tn.Parameter(np.zeros(2))], lr=0.1)
    schedule = make(opt)
    for _ in range(5):
        schedule.step()
    state = save_and_load(tmp_path, "schedule", schedule.state_dict())
    opt = SGD([tn.Parameter(np.zeros(2))], lr=0.1)
    schedule = make(opt)
    schedule.load_state_dict(state)
    assert opt.lr == full[4]
    resumed = []
    for _ in range(7):
        schedule.step()
        resumed.append(opt.lr)
    assert resumed == full[5:]


def test_schedule_load_state_dict_names_the_bad_key():
    schedule = StepLR(SGD([tn.Parameter(np.zeros(2))], lr=0.1), step_size=2)
    state = schedule.state_dict()
    del state["base_lr"]
    with pytest.raises(KeyError, match="missing key 'base_lr'"):
        schedule.load_state_dict(state)
    state = schedule.state_dict()
    state["last_step"] = np.array([3])
    with pytest.raises(ValueError, match="'last_step' has shape"):
        schedule.load_state_dict(state)


@pytest.mark.parametrize("make, error, match", [
    (lambda opt: StepLR(opt, step_size=0), ValueError, "step_size"),
    (lambda opt: StepLR(opt, step_size=2.5), TypeError, "step_size"),
    (lambda opt: StepLR(opt, step_size=2, gamma=-0.1), ValueError, "gamma"),
    (lambda opt: StepLR(object(), step_size=2), TypeError, "optimizer"),
    (lambda opt: CosineWarmup(opt, warmup_steps=-1, total_steps=5), ValueError, "warmup_steps"),
    (lambda opt: CosineWarmup(opt, warmup_steps=5, total_steps=5), ValueError, "total_steps"),
    (lambda opt: CosineWarmup(opt, 2, 5, min_lr=0.5), ValueError, "min_lr"),
    (lambda opt: OneCycleLR(opt, max_lr=0.0, total_steps=10), ValueError, "max_lr"),
    (lambda opt: OneCycleLR(opt, max_lr=0.1, total_steps=10.0), TypeError, "total_steps"),
    (lambda opt: OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=1.0), ValueError,
     "pct_start"),
    (lambda opt: OneCycleLR(opt, max_lr=0.1, total_steps=3, pct_start=0.3), ValueError,
     "both phases"),
    (lambda opt: OneCycleLR(opt, max_lr=0.1, total_steps=10, anneal_strategy="cosine"),
     ValueError, "anneal_strategy"),
    (lambda opt: OneCycleLR(opt, max_lr=0.1, total_steps=10, div_factor=-1), ValueError,
     "div_factor"),
    (lambda opt: OneCycleLR(object(), max_lr=0.1, total_steps=10), TypeError, "optimizer"),
])
def test_bad_schedule_arguments_are_rejected(make, error, match):
    with pytest.raises(error, match=match):
        make(SGD([tn.Parameter(np.zeros(2))], lr=0.1))
