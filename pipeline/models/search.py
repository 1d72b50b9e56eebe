"""Search spaces: each model config declares which hyperparameters tuning may change.

Plain data, no Optuna here: :mod:`streamcast.tuning` turns a space into trial
suggestions, in the order the space lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]


SearchSpace = dict[str, IntRange | FloatRange | Choice]
