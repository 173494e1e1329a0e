"""Cutoffs, horizons, the label definition and the time-based split.

At a cutoff T a user is described by events at or before T; the label is 1 when the user buys in
(T, T + H] (scope ``any``) or buys in a candidate category (scope ``category``).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from core.errors import DataError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SCOPES = ("any", "category")


def parse_duration(text: str) -> timedelta:
    """``"30min"``, ``"6h"``, ``"1d"``, ``"7d"``, ``"2w"`` -> timedelta; DataError on anything else."""
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise DataError(f"{text!r} is not a duration.", title="Bad duration",
                        hint="Write a positive number and a unit: 30min, 6h, 1d, 7d or 2w.")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])


@dataclass(frozen=True)
class LabelSpec:
    """What a row means and what its label is.

    horizon: H, the window after the cutoff in which a buy makes the label 1 (duration text).
    scope: ``any`` (buys anything) or ``category`` (buys in a category touched before T).
    lookback: history window before T (duration text); None = all history.
    max_len: events kept per sequence (the most recent), >= 1.
    cutoff_step: distance between training cutoffs; None = the horizon.
    max_train_cutoffs: how many earlier cutoffs feed training, >= 1.
    """

    horizon: str = "1d"
    scope: str = "any"
    lookback: str | None = None
    max_len: int = 100
    cutoff_step: str | None = None
    max_train_cutoffs: int = 6

    def __post_init__(self) -> None:
        parse_duration(self.horizon)
        if self.lookback is not None:
            parse_duration(self.lookback)
        if self.cutoff_step is not None:
            parse_duration(self.cutoff_step)
        if self.scope not in SCOPES:
            raise DataError(f"scope must be one of {SCOPES}, got {self.scope!r}.", title="Bad scope")
        if int(self.max_len) < 1:
            raise DataError(f"max_len must be >= 1, got {self.max_len}.", title="Bad max_len")
        if int(self.max_train_cutoffs) < 1:
            raise DataError(f"max_train_cutoffs must be >= 1, got {self.max_train_cutoffs}.",
                            title="Bad max_train_cutoffs")

    @property
    def horizon_td(self) -> timedelta:
        return parse_duration(self.horizon)

    @property
    def step_td(self) -> timedelta:
        return parse_duration(self.cutoff_step or self.horizon)

    @property
    def lookback_td(self) -> timedelta | None:
        return parse_duration(self.lookback) if self.lookback else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)
