"""When to retrain: the schedule says so, or live error has drifted from the backtest."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from streamcast.config import Settings
from streamcast.store import Store, utcnow


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str  # "no_champion", "interval", "drift" or "" when not retraining
    detail: str


def retrain_decision(store: Store, settings: Settings, target: str, now: pd.Timestamp | None = None) -> RetrainDecision:
    """Retrain when no model exists, the retrain interval elapsed, or live MASE drifted."""
    now = now or pd.Timestamp(utcnow())
    comparison = store.latest_comparison(target)
    if comparison.empty:
        return RetrainDecision(True, "no_champion", "no training recorded for this target")
    trained_at = pd.Timestamp(comparison["created_at"].max())
    trained_at = trained_at.tz_localize("UTC") if trained_at.tzinfo is None else trained_at
    age_h = (now - trained_at).total_seconds() / 3600
    best = comparison.sort_values("rank").iloc[0]
    live = store.recent_live_mase(target, since=trained_at, window=settings.drift_window)
    if live is not None and best["mase"] > 0 and live > settings.drift_factor * float(best["mase"]):
        return RetrainDecision(
            True,
            "drift",
            f"live MASE {live:.3f} over the last {settings.drift_window} points per series > "
            f"{settings.drift_factor:g} x backtest MASE {float(best['mase']):.3f} "
            f"= {settings.drift_factor * float(best['mase']):.3f}",
        )
    if age_h >= settings.retrain_hours:
        return RetrainDecision(
            True, "interval", f"last training {age_h:.1f} h ago (interval {settings.retrain_hours:g} h)"
        )
    return RetrainDecision(False, "", f"last training {age_h:.1f} h ago; live MASE {live if live is not None else '-'}")
