import math

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends.ref import adam_step, sgd_step
from tinynet.optim import SGD, Adam, AdamW, CosineWarmup, StepLR

SHAPES = [(3, 4), (5,), (2, 3, 2, 1)]
STEPS = 20

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


@pytest.fixture(params=["ref", "cpu"])
def backend(request):
    """Run the test under each CPU backend that loads here."""
    if request.param not in tn.available_backends():
        pytest.skip(f"backend {request.param!r} does not load here")
    with tn.use_backend(request.param):
        yield request.param


def make_values(dtype, seed=0):
    """Initial parameter values and a fixed sequence of STEPS gradients."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(STEPS)]
    return values, grads


def make_tinynet(kind, kw, values):
    params = [tn.Parameter(v) for v in values]
    return params, getattr(tn.optim, kind)(params, **kw)


def run_tinynet(params, opt, grads, schedule=None):
    """Step ``opt`` through ``grads``; the parameter values after each step."""
    out = []
    for step_grads in grads:
        opt.zero_grad()
        for p, g in zip(params, step_grads):
            p.grad += g
        opt.step()
        if schedule is not None:
            schedule.step()
        out.append([p.data.copy() for p in params])
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


@pytest.mark.parametrize("kind, kw", CASES, ids=CASE_IDS)
def test_trajectory_matches_torch_float64(backend, kind, kw):
    torch = pytest.importorskip("torch")
    values, grads = make_values(np.float64)
    params, opt = make_tinynet(kind, kw, values)
    ours = run_tinynet(params, opt, grads)
    theirs = run_torch(torch, kind, kw, values, grads)
    for t, (a, b) in enumerate(zip(ours, theirs)):
        for i, (pa, pb) in enumerate(zip(a, b)):
            np.testing.assert_allclose(pa, pb, rtol=1e-12, atol=1e-12,
                                       err_msg=f"{kind} step {t + 1} param {i}")
    # the parameters actually moved
    assert not np.allclose(ours[-1][0], values[0])


@pytest.mark.parametrize("kind, kw", CASES, ids=CASE_IDS)
def test_float32_stays_float32_and_tracks_torch(backend, kind, kw):
    torch = pytest.importorskip("torch")
    values, grads = make_values(np.float32)
    params, opt = make_tinynet(kind, kw, values)
    ours = run_tinynet(params, opt, grads)
    theirs = run_torch(torch, kind, kw, values, grads)
    for p in params:
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


def test_ref_ops_do_not_write_grad(rng):
    param, grad = rng.standard_normal(7), rng.standard_normal(7)
    grad_before = grad.copy()
    sgd_step(param, grad, np.zeros(7), 0.1, 0.9, 0.1, True)
    sgd_step(param, grad, None, 0.1, 0.0, 0.1, False)
    adam_step(param, grad, np.zeros(7), np.zeros(7), 1, 0.1, 0.9, 0.999, 1e-8, 0.1, False)
    adam_step(param, grad, np.zeros(7), np.zeros(7), 1, 0.1, 0.9, 0.999, 1e-8, 0.1, True)
    np.testing.assert_array_equal(grad, grad_before)


def test_ref_adam_first_step_is_lr_times_sign():
    """At t = 1, m / sqrt(v) after bias correction is sign(g)."""
    param = np.array([0.0, 0.0], dtype=np.float32)
    m, v = np.zeros(2, np.float32), np.zeros(2, np.float32)
    adam_step(param, np.array([3.0, -0.5], np.float32), m, v, 1, 0.01, 0.9, 0.999, 0.0, 0.0, False)
    assert param.dtype == np.float32
    np.testing.assert_allclose(param, [-0.01, 0.01], rtol=1e-6)


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

    params, opt = make_tinynet(kind, kw, values)
    schedule = CosineWarmup(opt, warmup_steps=3, total_steps=15, min_lr=1e-4)
    full = run_tinynet(params, opt, grads, schedule)

    params, opt = make_tinynet(kind, kw, values)
    schedule = CosineWarmup(opt, warmup_steps=3, total_steps=15, min_lr=1e-4)
    run_tinynet(params, opt, grads[:k], schedule)
    opt_state = save_and_load(tmp_path, "opt", opt.state_dict())
    schedule_state = save_and_load(tmp_path, "schedule", schedule.state_dict())

    # a fresh process: parameters restored from the checkpoint, a new optimizer
    params, opt = make_tinynet(kind, kw, [p.data for p in params])
    schedule = CosineWarmup(opt, warmup_steps=3, total_steps=15, min_lr=1e-4)
    opt.load_state_dict(opt_state)
    schedule.load_state_dict(schedule_state)
    assert opt.step_count == k and schedule.last_step == k
    resumed = run_tinynet(params, opt, grads[k:], schedule)

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


@pytest.mark.parametrize("make", [
    lambda opt: StepLR(opt, step_size=2, gamma=0.3),
    lambda opt: CosineWarmup(opt, warmup_steps=2, total_steps=9, min_lr=0.001),
], ids=["StepLR", "CosineWarmup"])
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
])
def test_bad_schedule_arguments_are_rejected(make, error, match):
    with pytest.raises(error, match=match):
        make(SGD([tn.Parameter(np.zeros(2))], lr=0.1))


def test_repr_shows_hyperparameters():
    p = [tn.Parameter(np.zeros(2))]
    assert repr(SGD(p, lr=0.1, momentum=0.9)) == (
        "SGD(lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False)")
    assert "weight_decay=0.01" in repr(AdamW(p))
