"""Figures: curves of a History and the eval figures (files written, the data behind them)."""
import numpy as np
import pytest

import tinynet as tn
from tinynet import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_smooth_is_a_bias_corrected_ema():
    np.testing.assert_allclose(plots.smooth([3.0] * 10, alpha=0.1), 3.0, rtol=1e-12)
    v = np.r_[np.zeros(5), np.ones(5)]
    s = plots.smooth(v, alpha=0.5)
    np.testing.assert_allclose(s[:5], 0.0)
    assert np.all(np.diff(s[5:]) > 0) and 0.5 < s[-1] < 1.0
    # s_t / (1 - (1 - a)^t) with s_t = (1 - a) s_{t-1} + a v_t
    raw, expected = 0.0, []
    for t, x in enumerate([2.0, 4.0, 1.0], 1):
        raw = 0.7 * raw + 0.3 * x
        expected.append(raw / (1 - 0.7 ** t))
    np.testing.assert_allclose(plots.smooth([2.0, 4.0, 1.0], alpha=0.3), expected)


def history(steps=True):
    records = []
    for e in (1, 2):
        r = {"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + 0.2 * e, "val_loss": 0.8 / e,
             "val_acc": 0.6 + 0.1 * e, "lr": 0.1 / e}
        if steps:
            r.update(step_loss=[1.5 / e, 1.2 / e, 1.0 / e, 0.9 / e], step_lr=[0.1 / e] * 4)
        records.append(r)
    return tn.History(records)


def test_steps_sit_at_fractions_of_their_epoch():
    x, v = plots._step_axis(history(), "step_loss")
    np.testing.assert_allclose(x, [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    assert v[0] == 1.5 and v[-1] == 0.45


@pytest.mark.parametrize("steps", [True, False])
def test_plot_history_writes_a_png(tmp_path, steps):
    path = plots.plot_history(history(steps), str(tmp_path / "curves.png"))
    assert open(path, "rb").read(8) == PNG


def test_misclassified_are_the_most_confident_errors(tmp_path):
    labels = np.array([0, 1, 2, 0, 1])
    probs = np.array([[0.9, 0.1, 0.0],    # right
                      [0.7, 0.2, 0.1],    # wrong, 0.7
                      [0.05, 0.9, 0.05],  # wrong, 0.9
                      [0.4, 0.6, 0.0],    # wrong, 0.6
                      [0.0, 1.0, 0.0]])   # right
    images = np.zeros((5, 28, 28), np.uint8)
    shown = plots.plot_misclassified(images, labels, probs, str(tmp_path / "m.png"), count=2)
    assert shown.tolist() == [2, 1]
    assert (tmp_path / "m.png").read_bytes()[:8] == PNG
    none = plots.plot_misclassified(images, labels, np.eye(3)[labels], str(tmp_path / "n.png"))
    assert none.tolist() == [] and (tmp_path / "n.png").read_bytes()[:8] == PNG


def test_confusion_filters_and_feature_maps_write_pngs(tmp_path, rng):
    c = rng.integers(0, 50, (10, 10))
    plots.plot_confusion(c, str(tmp_path / "c.png"), tn.data.CLASS_NAMES["fashion-mnist"])
    plots.plot_filters(rng.standard_normal((8, 1, 3, 3)), str(tmp_path / "f.png"))
    plots.plot_feature_maps(rng.standard_normal((28, 28)),
                            [rng.standard_normal((4, 28, 28)), rng.standard_normal((20, 14, 14))],
                            str(tmp_path / "fm.png"), names=["a", "b"])
    for name in ("c.png", "f.png", "fm.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "f.png", "fm.png"]
