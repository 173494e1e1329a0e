"""Events -> padded integer arrays per (user, cutoff): behaviour, item, category, time gap, hour, query.

Padding id 0 defines the mask (as in RecBole's SASRec). Sequences are LEFT-padded: the newest event
sits at position L-1. Built inside DuckDB and streamed in chunks of users.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

PAD = 0
OOV = 1


@dataclass
class Vocab:
    """Ids: 0 pad, 1 out-of-vocabulary, 2..K+1 the K most frequent values, then hash buckets.

    items / categories: source id text -> vocabulary id (2..K+1).
    item_buckets / category_buckets: hash buckets for ids outside the top K (0 = map them to OOV).
    query_buckets: hash buckets for search tokens (ids 1..query_buckets; 0 pad).
    gap_buckets: log-spaced time-gap buckets (ids 1..gap_buckets; 0 pad).
    """

    items: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    item_buckets: int = 1024
    category_buckets: int = 128
    query_buckets: int = 1024
    gap_buckets: int = 32

    @property
    def n_items(self) -> int:
        """Embedding rows for items: pad + OOV + top-K + buckets."""
        return 2 + len(self.items) + self.item_buckets

    @property
    def n_categories(self) -> int:
        return 2 + len(self.categories) + self.category_buckets

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "categories": self.categories,
                "item_buckets": self.item_buckets, "category_buckets": self.category_buckets,
                "query_buckets": self.query_buckets, "gap_buckets": self.gap_buckets}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class SequenceBatch:
    """Model inputs for N examples of length L (see docs/INTERFACES.md)."""

    keys: pd.DataFrame                 # user_id, cutoff, [category], label, split
    behavior: np.ndarray               # (N, L) int64
    item: np.ndarray                   # (N, L) int64
    category: np.ndarray               # (N, L) int64
    gap: np.ndarray                    # (N, L) int64
    hour: np.ndarray                   # (N, L) int64
    query: np.ndarray                  # (N, L, Q) int64
    mask: np.ndarray                   # (N, L) bool
    target_category: np.ndarray | None = None   # (N,) int64

    ARRAYS = ("behavior", "item", "category", "gap", "hour", "query", "mask")

    def __len__(self) -> int:
        return int(self.behavior.shape[0])

    @property
    def max_len(self) -> int:
        return int(self.behavior.shape[1])

    def subset(self, index: Any) -> SequenceBatch:
        index = np.asarray(index)
        return SequenceBatch(
            keys=self.keys.iloc[index].reset_index(drop=True),
            **{name: getattr(self, name)[index] for name in self.ARRAYS},
            target_category=None if self.target_category is None else self.target_category[index],
        )

    def tensors(self) -> dict[str, Any]:
        """torch tensors keyed like IntentTransformer.forward's arguments."""
        import torch

        out = {name: torch.from_numpy(np.ascontiguousarray(getattr(self, name)))
               for name in self.ARRAYS}
        if self.target_category is not None:
            out["target_category"] = torch.from_numpy(np.ascontiguousarray(self.target_category))
        return out

    @staticmethod
    def concat(parts: list[SequenceBatch]) -> SequenceBatch:
        first = parts[0]
        return SequenceBatch(
            keys=pd.concat([p.keys for p in parts], ignore_index=True),
            **{name: np.concatenate([getattr(p, name) for p in parts]) for name in SequenceBatch.ARRAYS},
            target_category=None if first.target_category is None
            else np.concatenate([p.target_category for p in parts]),
        )
