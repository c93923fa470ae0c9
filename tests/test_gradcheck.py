"""gradcheck itself: it passes correct layers and catches wrong ones; check_layers
(``tinynet gradcheck``) has a passing case for every public layer."""
import io

import numpy as np
import pytest

import tinynet as tn
from tinynet.gradcheck import LAYER_CASES, check_layers
from tinynet.layers import Layer


class Scale(Layer):
    """y = x * w, with a backward that can be broken on purpose."""
    param_names = ("weight",)

    def __init__(self, n, broken=None):
        super().__init__()
        self.weight = tn.Parameter(np.linspace(0.5, 1.5, n), name="weight")
        self.broken = broken

    def forward(self, x):
        self._cache = x
        return x * self.weight.data

    def backward(self, dy):
        x = self._cache
        self.weight.grad += (dy * x).sum(axis=0) * (2.0 if self.broken == "weight" else 1.0)
        if self.broken == "zero_dx":
            return np.zeros_like(x)
        return dy * self.weight.data


def test_passes_a_correct_layer(rng):
    result = tn.gradcheck(Scale(4), rng.standard_normal((3, 4)))
    assert result.passed, str(result)
    assert [r["name"] for r in result.rows] == ["x", "weight"]
    assert result.max_rel_err < 1e-8


@pytest.mark.parametrize("broken,bad", [("weight", "weight"), ("zero_dx", "x")])
def test_catches_a_wrong_gradient(rng, broken, bad):
    result = tn.gradcheck(Scale(4, broken), rng.standard_normal((3, 4)))
    assert not result.passed
    failed = [r["name"] for r in result.rows if not r["passed"]]
    assert failed == [bad]
    assert "FAIL" in str(result)


def test_random_dy_catches_zero_dx_of_a_normalization(rng):
    """With dy = ones, sum(LayerNorm(x)) is constant in x, so a zero dx would pass;
    the default random dy makes the check meaningful."""

    class ZeroDxLayerNorm(tn.LayerNorm):
        def backward(self, dy):
            super().backward(dy)
            return np.zeros(self._cache_shape)

        def forward(self, x):
            self._cache_shape = x.shape
            return super().forward(x)

    x = rng.standard_normal((3, 5))
    ones = tn.gradcheck(ZeroDxLayerNorm(5), x, dy=np.ones((3, 5)))
    assert [r["passed"] for r in ones.rows if r["name"] == "x"] == [True]
    assert not tn.gradcheck(ZeroDxLayerNorm(5), x).passed


def test_dy_shape_is_checked(rng):
    with pytest.raises(ValueError, match="dy must have"):
        tn.gradcheck(Scale(4), rng.standard_normal((3, 4)), dy=np.ones((2, 4)))


def test_state_is_restored(rng):
    bn = tn.BatchNorm(3)
    before = bn.running_mean.copy()
    tn.gradcheck(bn, rng.standard_normal((4, 3)) + 5.0)
    np.testing.assert_array_equal(bn.running_mean, before)


def _public_layer_classes():
    """Names of the Layer subclasses that tinynet.layers (and tinynet) export."""
    import inspect

    import tinynet.layers
    return {name for module in (tinynet.layers, tn) for name, v in vars(module).items()
            if inspect.isclass(v) and issubclass(v, Layer) and v is not Layer
            and not name.startswith("_")}


def test_layer_cases_cover_every_public_layer():
    """A new public layer without a case in LAYER_CASES fails here."""
    assert set(LAYER_CASES) == _public_layer_classes()


@pytest.mark.parametrize("backend", ["ref", "cpu"])
@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_every_layer_case_passes(name, backend):
    out = io.StringIO()
    with tn.use_backend(backend):
        assert check_layers(name, out=out), out.getvalue()
    assert out.getvalue().splitlines()[-1].startswith("1/1 layers passed")


def test_check_layers_prints_every_tensor_of_every_layer():
    out = io.StringIO()
    assert check_layers(out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["layer", "tensor", "shape", "max", "rel", "err", "result"]
    assert {line.split()[0] for line in lines[2:-1]} == set(LAYER_CASES)
    assert ["WeightNorm", "parametrizations.weight.original1", "(4,", "3,", "3,", "3)"] in \
        [line.split()[:6] for line in lines]
    assert lines[-1].startswith(f"{len(LAYER_CASES)}/{len(LAYER_CASES)} layers passed (tol 1e-06")


def test_check_layers_matches_names_in_any_case():
    out = io.StringIO()
    assert check_layers("batchnorm", out=out)
    rows = out.getvalue().splitlines()[2:-1]
    assert [row.split()[:2] for row in rows] == [["BatchNorm", "x"], ["BatchNorm", "weight"],
                                                 ["BatchNorm", "bias"]]


def test_check_layers_rejects_an_unknown_name():
    with pytest.raises(ValueError, match=r"gradcheck: unknown layer 'x'; choose one of: Dense, "
                                         r"Conv2D, "):
        check_layers("x", out=io.StringIO())


def test_check_layers_fails_a_wrong_backward(monkeypatch):
    monkeypatch.setitem(LAYER_CASES, "Scale", (lambda: Scale(4, "weight"), (3, 4), None))
    out = io.StringIO()
    assert not check_layers("scale", out=out)
    assert "FAIL" in out.getvalue() and "0/1 layers passed" in out.getvalue()


def test_check_layers_leaves_the_init_generator_where_it_was():
    tn.init.seed(5)
    expected = np.random.default_rng(5).standard_normal(3)
    check_layers("dense", out=io.StringIO())
    np.testing.assert_array_equal(tn.init.get_rng().standard_normal(3), expected)
