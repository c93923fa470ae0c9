"""RandomCrop (pad, then crop) and HorizontalFlip, against direct indexing."""
import numpy as np
import pytest

from tinynet.data import Compose, DataLoader, HorizontalFlip, RandomCrop, RandomShift


def test_random_crop_is_a_window_of_the_padded_image(rng):
    x = rng.integers(1, 255, size=(20, 2, 6, 7)).astype(np.uint8)
    out = RandomCrop((5, 6), padding=2)(x, np.random.default_rng(3))
    assert out.shape == (20, 2, 5, 6) and out.dtype == x.dtype
    xpad = np.pad(x, [(0, 0), (0, 0), (2, 2), (2, 2)])
    offsets = set()
    for n in range(len(x)):
        hits = [(oy, ox) for oy in range(10 - 5 + 1) for ox in range(11 - 6 + 1)
                if np.array_equal(xpad[n, :, oy:oy + 5, ox:ox + 6], out[n])]
        assert hits, f"image {n} is no window of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 5


def test_random_crop_offsets_are_uniform_over_the_range():
    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3).repeat(3000, axis=0) + 1
    out = RandomCrop(3, padding=1)(x, np.random.default_rng(0))
    # The centre pixel's value 5 moves to one of 9 places, about equally often.
    where = np.argwhere(out == 5)[:, 1:]
    counts = np.unique(where[:, 0] * 3 + where[:, 1], return_counts=True)[1]
    assert len(counts) == 9 and counts.min() > 250 and counts.max() < 420


def test_random_crop_without_padding_at_full_size_is_identity(rng):
    x = rng.standard_normal((4, 5, 5))
    np.testing.assert_array_equal(RandomCrop(5)(x, rng), x)


def test_random_crop_errors():
    with pytest.raises(ValueError, match="RandomCrop: size \\(9, 9\\) is larger"):
        RandomCrop(9, padding=1)(np.zeros((1, 5, 5)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="RandomCrop: padding must be >= 0"):
        RandomCrop(3, padding=-1)
    with pytest.raises(ValueError, match="RandomCrop: x must be"):
        RandomCrop(3)(np.zeros((5, 5)), np.random.default_rng(0))


def test_horizontal_flip(rng):
    x = rng.standard_normal((1000, 1, 4, 5))
    out = HorizontalFlip(0.3)(x, np.random.default_rng(1))
    flipped = np.array([np.array_equal(out[n], x[n, :, :, ::-1]) for n in range(len(x))])
    same = np.array([np.array_equal(out[n], x[n]) for n in range(len(x))])
    assert np.all(flipped ^ same)
    assert 0.25 < flipped.mean() < 0.35
    assert np.array_equal(HorizontalFlip(1.0)(x, rng), x[..., ::-1])
    assert np.array_equal(HorizontalFlip(0.0)(x, rng), x)
    with pytest.raises(ValueError, match="HorizontalFlip: p must be"):
        HorizontalFlip(1.5)


def test_augmentations_in_a_loader_are_reproducible(rng):
    x = rng.standard_normal((10, 1, 6, 6)).astype(np.float32)
    y = np.arange(10)
    runs = []
    for _ in range(2):
        loader = DataLoader(x, y, batch_size=4, shuffle=True, seed=5,
                            augment=Compose(RandomCrop(6, 2), HorizontalFlip()))
        runs.append([xb for xb, _ in loader])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_compose_applies_in_order_with_one_generator(rng):
    x = rng.standard_normal((50, 1, 6, 6))
    shift, flip = RandomShift(2), HorizontalFlip(0.5)
    expected = flip(shift(x, np.random.default_rng(3)), _continued(3, shift, x))
    out = Compose(shift, flip)(x, np.random.default_rng(3))
    np.testing.assert_array_equal(out, expected)
    assert repr(Compose(shift, flip)) == f"Compose({shift!r}, {flip!r})"
    with pytest.raises(ValueError, match="Compose: give at least one"):
        Compose()
    with pytest.raises(TypeError, match="Compose: augmentation 1 must be callable, got int"):
        Compose(shift, 3)


def _continued(seed, first, x):
    """A generator seeded with ``seed`` after ``first`` drew from it for ``x``."""
    g = np.random.default_rng(seed)
    first(x, g)
    return g
