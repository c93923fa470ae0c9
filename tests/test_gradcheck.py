"""gradcheck itself: it passes correct layers and catches wrong ones."""
import numpy as np
import pytest

import tinynet as tn
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
