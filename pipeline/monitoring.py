"""When to retrain: the schedule says so, or live error has drifted from the backtest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from streamcast.config import Settings
from streamcast.store import Store, utcnow


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str  # "no_champion", "interval", "drift" or "" when not retraining
    detail: str


@dataclass(frozen=True)
class DriftCheck:
    """What the drift trigger compares: the windowed live MASE since the last training
    (None until every series has ``window`` scored points) against ``factor`` x the
    backtest MASE of that training's winner."""

    live_mase: float | None
    window: int
    factor: float
    backtest_mase: float
    trained_at: pd.Timestamp

    @property
    def threshold(self) -> float:
        return self.factor * self.backtest_mase

    @property
    def drifted(self) -> bool:
        return self.live_mase is not None and self.backtest_mase > 0 and self.live_mase > self.threshold

    def describe(self) -> str:
        live = f"{self.live_mase:.3f}" if self.live_mase is not None else f"- (fewer than {self.window} scored points)"
        return (
            f"live MASE {live} over the last {self.window} points per series "
            f"{'>' if self.drifted else 'vs'} {self.factor:g} x backtest MASE {self.backtest_mase:.3f} "
            f"= {self.threshold:.3f}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "live_mase": self.live_mase,
            "window": self.window,
            "factor": self.factor,
            "backtest_mase": self.backtest_mase,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "trained_at": self.trained_at.isoformat(),
        }


# What a caller already knows of the live MASE since a training time: (known, value), with
# value None where fewer than the window's points were scored; not known -> read the store.
LiveMase = Callable[[pd.Timestamp], tuple[bool, float | None]]


def drift_check(store: Store, settings: Settings, target: str, live: LiveMase | None = None) -> DriftCheck | None:
    """The drift trigger's inputs for ``target`` (None before any training); ``live`` (a
    stream's memory of what it scored) answers for the store when it can."""
    comparison = store.latest_comparison(target)
    if comparison.empty:
        return None
    trained_at = pd.Timestamp(comparison["created_at"].max())
    trained_at = trained_at.tz_localize("UTC") if trained_at.tzinfo is None else trained_at
    best = comparison.sort_values("rank").iloc[0]
    known, mase = live(trained_at) if live is not None else (False, None)
    if not known:
        mase = store.recent_live_mase(target, since=trained_at, window=settings.drift_window)
    return DriftCheck(mase, settings.drift_window, settings.drift_factor, float(best["mase"]), trained_at)


def retrain_decision(
    store: Store, settings: Settings, target: str, now: pd.Timestamp | None = None, live: LiveMase | None = None
) -> RetrainDecision:
    """Retrain when no model exists, the retrain interval elapsed, or live MASE drifted."""
    now = now or pd.Timestamp(utcnow())
    check = drift_check(store, settings, target, live)
    if check is None:
        return RetrainDecision(True, "no_champion", "no training recorded for this target")
    age_h = (now - check.trained_at).total_seconds() / 3600
    mase = check.live_mase
    if check.drifted:
        return RetrainDecision(True, "drift", check.describe())
    if age_h >= settings.retrain_hours:
        return RetrainDecision(
            True, "interval", f"last training {age_h:.1f} h ago (interval {settings.retrain_hours:g} h)"
        )
    return RetrainDecision(False, "", f"last training {age_h:.1f} h ago; live MASE {mase if mase is not None else '-'}")
