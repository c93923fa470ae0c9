"""Batches cut on the device: the data set goes up once, then only indices per step.

``DeviceLoader(loader)`` wraps a ``DataLoader`` for a device backend (cuda).
It copies the loader's x and y to the device once (integer labels as int64)
and, each epoch, walks the same batches in the same order as the loader
would: the order comes from a DataLoader over the sample indices with the
loader's batch size, shuffle, seed, drop_last and epoch counter. A batch is
then a gather on the device, ``x[idx]`` (a slice when not shuffled), so a
step uploads only its B indices. A loader with an augmentation runs it on
the host and uploads each augmented batch instead.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..backends import get_backend
from ..parameter import Array
from .loader import DataLoader

__all__ = ["DeviceLoader"]


class DeviceLoader:
    """Iterate a DataLoader's batches as device arrays, the data uploaded once.

    Parameters
    ----------
    loader : DataLoader
        The batches to reproduce: batch size, shuffle, seed, drop_last,
        augment and the epoch counter are its.
    backend : module, optional
        The device backend (default: the active one); its ``asarray`` uploads.

    Attributes
    ----------
    epoch : int
        The loader's epoch counter (each pass adds one), as ``DataLoader.epoch``.
    """

    def __init__(self, loader: DataLoader, backend: Any = None) -> None:
        if not isinstance(loader, DataLoader):
            raise TypeError(f"DeviceLoader: loader must be a DataLoader, "
                            f"got {type(loader).__name__}")
        self.loader = loader
        self.backend = backend or get_backend()
        n = len(loader.x)
        self._index = DataLoader(np.arange(n), np.arange(n), batch_size=loader.batch_size,
                                 shuffle=loader.shuffle, seed=loader.seed,
                                 drop_last=loader.drop_last)
        self.x: Array | None = None
        self.y: Array | None = None
        if loader.augment is None:
            self.x = self.backend.asarray(loader.x)
            self.y = self._labels(loader.y)

    def _labels(self, y: NDArray[Any]) -> Array:
        return self.backend.asarray(y, np.int64 if y.dtype.kind in "iu" else None)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.loader.epoch = value

    def __iter__(self) -> Iterator[tuple[Array, Array]]:
        """Start an epoch: a generator of (xb, yb) device batches."""
        if self.x is None or self.y is None:  # both or neither
            # Augmentations run on the host: upload each augmented batch.
            return ((self.backend.asarray(xb), self._labels(yb)) for xb, yb in self.loader)
        # The index loader draws this epoch's order, as the loader would.
        self._index.epoch = self.loader.epoch
        self.loader.epoch += 1
        return self._batches(self.x, self.y, iter(self._index))

    def _batches(self, x: Array, y: Array,
                 index_batches: Iterable[tuple[NDArray[Any], NDArray[Any]]]
                 ) -> Iterator[tuple[Array, Array]]:
        """The batches x[idx], y[idx] of the index loader's batches idx."""
        for idx, _ in index_batches:
            if self.loader.shuffle:
                take = self.backend.asarray(idx)
            else:
                take = slice(int(idx[0]), int(idx[-1]) + 1)
            yield x[take], y[take]
