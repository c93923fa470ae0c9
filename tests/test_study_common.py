"""The study's shared code: ClassicDropout against inverted dropout, and the
model builder's options."""
import numpy as np
import pytest

import tinynet as tn
from tinynet.backends import ref
from tinynet.study.common import ClassicDropout, build_model, with_defaults
from conftest import assert_close, check_grads


def test_classic_dropout_is_inverted_dropout_times_keep_probability(rng):
    x = rng.standard_normal((4, 7))
    classic, inverted = ClassicDropout(0.3, seed=5), tn.Dropout(0.3, seed=5)
    y_c, y_i = classic.forward(x), inverted.forward(x)
    keep = ref.dropout_mask(x.shape, 0.3, 5, 0)
    assert_close(y_c, x * keep, 1e-12, 1e-12, "train: x * keep")
    assert_close(y_c, 0.7 * y_i, 1e-12, 1e-12, "train")
    dy = rng.standard_normal(x.shape)
    assert_close(classic.backward(dy), dy * keep, 1e-12, 1e-12, "train dx")
    classic.eval()
    assert_close(classic.forward(x), 0.7 * x, 1e-12, 1e-12, "eval: (1 - p) x")
    assert_close(classic.backward(dy), 0.7 * dy, 1e-12, 1e-12, "eval dx")


@pytest.mark.parametrize("training", [True, False])
def test_classic_dropout_gradcheck(rng, training):
    check_grads(ClassicDropout(0.4, seed=2).train(training), rng.standard_normal((3, 5)))


def test_classic_dropout_expected_activation_is_the_eval_one(rng):
    x = rng.standard_normal((50, 40))
    layer = ClassicDropout(0.5, seed=1)
    mean_train = np.mean([layer.forward(x) for _ in range(2000)], axis=0)
    layer.eval()
    assert_close(mean_train, layer.forward(x), 0, 0.12, "E[y_train] = y_eval")


def test_build_model_options():
    c = with_defaults({"dropout": 0.5, "dropout_kind": "classic", "depth": 2})
    kinds = [type(l) for l in build_model(c).layers]
    assert kinds.count(ClassicDropout) == 2
    assert tn.Dropout in [type(l) for l in build_model({**c, "dropout_kind": "inverted"}).layers]
    with pytest.raises(ValueError, match="unknown keys"):
        with_defaults({"nope": 1})
    with pytest.raises(ValueError, match="unknown norm"):
        build_model(with_defaults({"norm": "xx"}))
