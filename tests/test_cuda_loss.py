"""cuda softmax cross-entropy (GPU or CUDA simulator) against the reference."""
import math

import numpy as np
import pytest

from cudasim import FLOATS, D, assert_matches, requires_cuda, small_blocks  # noqa: F401 (a fixture)

pytestmark = [requires_cuda, pytest.mark.usefixtures("small_blocks")]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_xent_matches_ref(rng, dtype, smoothing):
    from tinynet.backends import cuda, ref
    logits = 4 * rng.standard_normal((11, 5))
    logits[0] = [1e4, 0, -1e4, 3, 2]
    labels = rng.integers(0, 5, 11)
    loss, probs = cuda.softmax_xent_forward(D(logits, dtype), D(labels), smoothing)
    loss_ref, probs_ref = ref.softmax_xent_forward(logits, labels, smoothing)
    assert cuda.is_device_array(loss) and loss.shape == () and loss.dtype == np.float64
    assert math.isclose(float(loss), loss_ref, rel_tol=1e-6 if dtype == np.float32 else 1e-12)
    assert_matches(probs, probs_ref, dtype, "probs")
    assert_matches(cuda.softmax_xent_backward(D(probs_ref, dtype), D(labels), smoothing),
                   ref.softmax_xent_backward(probs_ref, labels, smoothing), dtype, "dlogits")


def test_a_label_out_of_range_makes_the_loss_nan():
    from tinynet.backends import cuda
    loss, _ = cuda.softmax_xent_forward(D(np.zeros((3, 4))), D(np.array([0, 4, 1])), 0.0)
    assert math.isnan(float(loss))


def test_labels_must_be_int64_of_batch_length():
    from tinynet.backends import cuda
    with pytest.raises(ValueError, match="softmax_xent_forward: labels must have shape"):
        cuda.softmax_xent_forward(D(np.zeros((3, 4))), D(np.array([0, 1], np.int64)), 0.0)
    with pytest.raises((TypeError, ValueError), match="softmax_xent_backward: labels must"):
        cuda.softmax_xent_backward(D(np.zeros((3, 4))), D(np.array([0, 1, 2], np.int32)), 0.0)
    with pytest.raises(TypeError, match="softmax_xent_forward: labels .*host"):
        cuda.softmax_xent_forward(D(np.zeros((3, 4))), np.array([0, 1, 2]), 0.0)
