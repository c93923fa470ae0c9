"""History: the per-epoch records of a training run, as JSON."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from .serialization import atomic_write

__all__ = ["History"]


class History:
    """Per-epoch records of a ``fit`` run.

    Attributes
    ----------
    records : list of dict
        One dict per epoch with keys ``epoch``, ``train_loss``, ``train_acc``,
        ``val_loss``, ``val_acc`` (None without validation data), ``seconds``,
        ``samples_per_s``, ``lr`` (at the end of the epoch), and the per-step
        lists ``step_loss`` (each batch's training loss) and ``step_lr`` (the
        learning rate that batch's update used).
    """

    def __init__(self, records: Iterable[dict[str, Any]] | None = None) -> None:
        self.records: list[dict[str, Any]] = list(records or [])

    def append(self, record: Mapping[str, Any]) -> None:
        self.records.append(dict(record))

    def __getitem__(self, key: str) -> list[Any]:
        """``history["val_acc"]`` is the list of that value over epochs."""
        return [r[key] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def to_json(self) -> str:
        return json.dumps(self.records, indent=2)

    @classmethod
    def from_json(cls, text: str) -> History:
        return cls(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the records as JSON, atomically."""
        atomic_write(path, lambda f: f.write(self.to_json().encode()))

    def __repr__(self) -> str:
        return f"History({len(self)} epochs)"
