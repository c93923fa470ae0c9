"""The op contract: each op declared once, in its family's contract, and implemented by every backend.

The registry is read, not restated: every op that a family's contract
(tinynet/ops/<family>/__init__.py) declares is registered; every registered op
is implemented by ref and cpu (and by cuda when that backend loads here) in
that family's backend module, takes its docstring from the declaration and
runs its check, so one bad input gives one message on every backend.
"""
import importlib
import inspect

import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import cpu, ref
from tinynet.ops import FAMILIES, contract

DECLARED = {name: f"tinynet.ops.{family}" for family in FAMILIES
            for name, value in vars(importlib.import_module(f"tinynet.ops.{family}")).items()
            if getattr(value, "contract_ref", None) is value}
"""op name -> the family contract that declares it, read from the contracts."""


def _cuda_or_skip():
    try:
        return tn.backends._load("cuda")
    except RuntimeError as e:
        pytest.skip(f"the cuda backend does not load here: {e}")


def _backend(name):
    return _cuda_or_skip() if name == "cuda" else {"ref": ref, "cpu": cpu}[name]


def test_the_registry_holds_what_the_family_contracts_declare():
    assert len(DECLARED) >= 30
    assert set(contract.REGISTRY) == set(DECLARED)
    for name, declaration in contract.REGISTRY.items():
        assert declaration.__module__ == DECLARED[name], name
    # The naive convolution is a ref-only oracle, not an op of the contract.
    assert "conv2d_naive_forward" not in contract.REGISTRY


def test_a_declaration_runs_nowhere():
    with pytest.raises(TypeError, match=r"declaration of an op.*get_backend\(\)\.relu_forward"):
        contract.REGISTRY["relu_forward"](np.zeros(3, np.float32))


@pytest.mark.parametrize("name", ["ref", "cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_every_op_is_implemented_in_its_family_folder(name):
    backend = _backend(name)
    assert contract.implementations(backend) == sorted(contract.REGISTRY)
    for op_name, family in DECLARED.items():
        fn = getattr(backend, op_name)
        assert fn.contract_ref is contract.REGISTRY[op_name], f"{name}.{op_name}"
        assert fn.__module__ == f"{family}.{name}", f"{name}.{op_name}: {fn.__module__}"


@pytest.mark.parametrize("name", ["ref", "cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_backend_docstrings_come_from_the_declaration(name):
    backend = _backend(name)
    for op_name, family in DECLARED.items():
        fn = getattr(backend, op_name)
        doc = inspect.cleandoc(contract.REGISTRY[op_name].__doc__)
        assert fn.__doc__.startswith(f"[{name} backend: implements {family}.{op_name}]"), op_name
        assert doc in fn.__doc__, op_name


def test_every_op_has_a_docstring_and_a_check_with_its_signature():
    for op_name, fn in contract.REGISTRY.items():
        assert "Parameters\n    ----------" in fn.__doc__, op_name
        check = fn.contract_check
        assert check is not None, f"{op_name} has no argument check"
        # The check takes the op's arguments by position and by keyword.
        op_params = list(inspect.signature(fn).parameters)
        inspect.signature(check).bind(op_name, *op_params)
        inspect.signature(check).bind(op_name, **{p: None for p in op_params})


def f32(*shape):
    return np.zeros(shape, np.float32)


def f64(*shape):
    return np.zeros(shape, np.float64)


def i64(*shape):
    return np.zeros(shape, np.int64)


# (op, arguments, exception, message pattern): inputs every backend must reject alike.
BAD = [
    ("relu_forward", (i64(2, 3),), TypeError, "relu_forward: x must be float32 or float64"),
    ("leaky_relu_backward", (f32(2, 3), f32(3, 2), 0.1), ValueError,
     r"leaky_relu_backward: dy must have the shape of the cached tensor \(2, 3\)"),
    ("sigmoid_backward", (f32(2, 3), i64(2, 3)), TypeError, "sigmoid_backward: dy"),
    ("softmax_forward", (f32(2, 3), 2), ValueError, "softmax_forward: axis 2 is out of range"),
    ("softmax_backward", (f32(2, 3), f32(2, 3), -3), ValueError, "softmax_backward: axis -3"),
    ("dense_forward", (f32(3, 5), f32(4, 6), None), ValueError,
     r"dense_forward: x must have shape \(N, 6\)"),
    ("dense_forward", (f32(3, 5), f32(4, 5), f32(5)), ValueError,
     r"dense_forward: b must have shape \(4,\)"),
    ("dense_backward", (f32(3, 5), f32(4, 5), f32(3, 5), True, True), ValueError,
     r"dense_backward: dy must have shape \(3, 4\)"),
    ("conv2d_forward", (f32(2, 3, 2, 5), f32(4, 3, 3, 3), None, (1, 1), (0, 0)), ValueError,
     "smaller than the kernel"),
    ("conv2d_forward", (f32(2, 2, 5, 5), f32(4, 3, 3, 3), None, (1, 1), (0, 0)), ValueError,
     r"conv2d_forward: x must have shape \(N, 3, H, W\)"),
    ("conv2d_forward", (f64(2, 3, 5, 5), f32(4, 3, 3, 3), None, (1, 1), (0, 0)), TypeError,
     "conv2d_forward: x .* and W .* must have one dtype"),
    ("conv2d_backward", (f32(2, 4, 2, 2), f32(2, 3, 5, 5), f32(4, 3, 3, 3), None, (1, 1),
                         (0, 0), True, True), ValueError,
     r"conv2d_backward: dy must have shape \(2, 4, 3, 3\)"),
    ("im2col", (f32(3, 5, 5), 3, 3, (1, 1), (0, 0)), ValueError,
     r"im2col: x must have shape \(N, C, H, W\)"),
    ("col2im", (f64(1, 4, 5), (1, 1, 3, 3), 2, 2, (1, 1), (0, 0)), ValueError, "col2im: cols"),
    ("maxpool2d_forward", (np.zeros((1, 1, 4, 4), np.int32), (2, 2), (2, 2)), TypeError,
     "maxpool2d_forward: x"),
    ("avgpool2d_forward", (f32(1, 1, 5, 2), (3, 3), (1, 1)), ValueError,
     "smaller than the kernel"),
    ("avgpool2d_backward", (f32(1, 1, 3, 3), (1, 1, 4, 4), (2, 2), (2, 2)), ValueError,
     r"avgpool2d_backward: dy must have shape \(1, 1, 2, 2\)"),
    ("maxpool2d_backward", (f32(2, 3, 2, 3), (2, 3, 6, 6), np.zeros((2, 3, 3, 3), np.uint8),
                            (2, 2), (2, 2)), ValueError, "maxpool2d_backward: dy"),
    ("dropout_mask", ((3,), 1.0, 0, 0), ValueError, r"p must be in \[0, 1\)"),
    ("dropout_forward", (f32(3), 0.5, -1, 0), ValueError, "seed must be in"),
    ("dropout_forward", (f32(3), 0.5, 1.5, 0), TypeError, "seed must be an integer"),
    ("dropout_forward", (np.zeros(3, np.int32), 0.5, 0, 0), TypeError,
     "dropout_forward: x must be float32 or float64"),
    ("dropout_backward", (f32(2, 3), np.ones((3, 2), np.uint8), 0.5), ValueError,
     "dropout_backward: keep must have dy's shape"),
    ("norm_stats", (f32(6, 5), 1, False, 1e-5), ValueError,
     r"norm_stats: x must have shape \(N, C, L\)"),
    ("norm_stats", (f32(3, 6, 5), 4, False, 1e-5), ValueError,
     "norm_stats: groups must be a positive divisor of C=6"),
    ("norm_stats", (i64(3, 6, 5), 3, False, 1e-5), TypeError,
     "norm_stats: x must be float32 or float64"),
    ("norm_forward", (f32(3, 6, 5), f64(9), f64(9), f32(5), None, 3, False), ValueError,
     r"norm_forward: gamma must have shape \(6,\)"),
    ("norm_forward", (f32(3, 6, 5), f64(9), f64(9), None, None, 3, True), ValueError,
     r"norm_forward: mean must have shape \(6,\)"),
    ("norm_forward_train", (f32(3, 6, 5), None, f32(5), 3, False, 1e-5), ValueError,
     r"norm_forward_train: beta must have shape \(6,\)"),
    ("norm_backward", (f32(3, 6, 5), f32(3, 6, 4), f64(9), f64(9), None, 3, False), ValueError,
     "norm_backward: dy must have the shape of x"),
    ("softmax_xent_forward", (i64(2, 3), i64(2), 0.0), TypeError,
     "softmax_xent_forward: logits must be float32 or float64"),
    ("softmax_xent_forward", (f32(3), i64(3), 0.0), ValueError,
     r"logits must have shape \(N, K\)"),
    ("softmax_xent_forward", (f32(2, 3), i64(3), 0.0), ValueError,
     r"labels must have shape \(N,\) = \(2,\)"),
    ("softmax_xent_backward", (f32(2, 3), f32(2), 0.0), TypeError,
     "softmax_xent_backward: labels must be integers"),
    ("sgd_step", (f64(4, 6), f64(2, 6), None, 0.1, 0.0, 0.0, False), ValueError,
     r"sgd_step: grad must have param's shape \(4, 6\)"),
    ("sgd_step", (f64(4, 6), f64(4, 6), f32(4, 6), 0.1, 0.9, 0.0, False), TypeError,
     "sgd_step: buf must be a float64 array like param"),
    ("adam_step", (i64(4, 6), f64(4, 6), f64(4, 6), f64(4, 6), 1, 0.1, 0.9, 0.999, 1e-8, 0.0,
                   False), TypeError, "adam_step: param must be float32 or float64"),
    ("adam_step", (f64(4, 6), f64(4, 6), f64(4, 6), f64(6, 4), 1, 0.1, 0.9, 0.999, 1e-8, 0.0,
                   False), ValueError, "adam_step: v must have param's shape"),
]


def _message(fn, args):
    with pytest.raises(Exception) as info:
        fn(*args)
    return type(info.value), str(info.value)


@pytest.mark.parametrize("op_name, args, error, pattern", BAD,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_gives_one_message_on_every_backend(op_name, args, error, pattern):
    with pytest.raises(error, match=pattern):
        getattr(ref, op_name)(*args)
    kind, message = _message(getattr(ref, op_name), args)
    names = ["cpu"] + (["cuda"] if "cuda" in tn.available_backends() else [])
    for name in names:
        backend = tn.backends._load(name)
        args_on = args
        if name == "cuda":
            args_on = tuple(backend.asarray(a) if isinstance(a, np.ndarray) else a for a in args)
        assert _message(getattr(backend, op_name), args_on) == (kind, message), name


class ShapeOnly:
    """Stands for an array of any backend: it has only .shape, .dtype and .ndim."""

    __slots__ = ("shape", "dtype", "ndim")

    def __init__(self, a):
        self.shape, self.dtype, self.ndim = a.shape, a.dtype, a.ndim


@pytest.mark.parametrize("op_name, args, error, pattern", BAD,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_checks_read_only_shape_dtype_and_ndim(op_name, args, error, pattern):
    fn = contract.REGISTRY[op_name]
    stand_ins = tuple(ShapeOnly(a) if isinstance(a, np.ndarray) else a for a in args)
    with pytest.raises(error, match=pattern):
        fn.contract_check(op_name, *stand_ins)


def test_checks_accept_good_shape_only_input():
    good = [
        ("relu_backward", (f32(2, 3), f32(2, 3))),
        ("dense_backward", (f32(3, 5), f32(4, 5), f32(3, 4), True, True)),
        ("conv2d_backward", (f32(4, 4, 3, 3), f32(4, 3, 5, 5), f32(4, 3, 3, 3), None, (1, 1),
                             (0, 0), True, True)),
        ("norm_backward", (f32(3, 6, 5), f32(3, 6, 5), f64(9), f64(9), f32(6), 3, False)),
        ("softmax_xent_forward", (f32(2, 3), i64(2), 0.1)),
        ("adam_step", (f32(4), f32(4), f32(4), f32(4), 1, 0.1, 0.9, 0.999, 1e-8, 0.0, True)),
        ("maxpool2d_backward", (f32(2, 3, 3, 3), (2, 3, 6, 6), None, (2, 2), (2, 2))),
    ]
    for op_name, args in good:
        stand_ins = tuple(ShapeOnly(a) if isinstance(a, np.ndarray) else a for a in args)
        assert contract.REGISTRY[op_name].contract_check(op_name, *stand_ins) is None


def test_implements_rejects_what_is_not_a_declared_op():
    with pytest.raises(TypeError, match="not a declared op"):
        contract.implements(ref.conv2d_naive_forward)
    with pytest.raises(TypeError, match="not a declared op"):
        contract.implements(ref.relu_forward)  # an implementation, not the declaration
    with pytest.raises(TypeError, match="must be named relu_forward"):
        contract.implements(contract.REGISTRY["relu_forward"])(lambda x: x)


def test_implements_runs_the_check_first_and_keeps_backend_notes():
    calls = []

    def relu_forward(x):
        """Backend note."""
        calls.append(x)
        return x

    relu_forward.__module__ = "tinynet.ops.activation.fake"
    wrapped = contract.implements(contract.REGISTRY["relu_forward"])(relu_forward)
    with pytest.raises(TypeError, match="relu_forward: x must be float32"):
        wrapped(i64(3))
    assert calls == []
    x = f32(3)
    assert wrapped(x) is x and calls == [x]
    assert wrapped.__doc__.startswith("[fake backend: implements tinynet.ops.activation.relu_forward]")
    assert wrapped.__doc__.endswith("Notes\n-----\nThe fake backend:\nBackend note.")
    assert wrapped.kernel is relu_forward
