"""Training outcomes the read side shows without asking MLflow: the model comparison
of each training and the retrain triggers the stream recorded."""

from __future__ import annotations

from typing import Any

import pandas as pd
import sqlalchemy as sa

from streamcast.store.engine import Bound, utcnow
from streamcast.store.schema import comparisons, retrain_triggers, stream_checkpoints

_METRICS = ("mase", "mae", "rmse", "smape", "coverage", "fit_seconds")


class RunLog(Bound):
    def write_comparison(
        self, training_run_id: str, target: str, table: pd.DataFrame, version: str, alias: str
    ) -> None:
        """One row per candidate, best first; the winner's row names its registered version."""
        now = utcnow()
        rows = [
            {
                "training_run_id": training_run_id,
                "candidate": r["candidate"],
                "target": target,
                "rank": i + 1,
                **{k: float(r[k]) for k in _METRICS},
                "registered_version": version if i == 0 else None,
                "alias": alias if i == 0 else None,
                "created_at": now,
            }
            for i, r in enumerate(table.to_dict("records"))
        ]
        with self._conn() as conn:
            conn.execute(comparisons.insert(), rows)

    def latest_comparison(self, target: str) -> pd.DataFrame:
        """The comparison table of the most recent training for ``target``."""
        c = comparisons
        last = sa.select(c.c.training_run_id).where(c.c.target == target).order_by(c.c.created_at.desc()).limit(1)
        return self._frame(sa.select(c).where(c.c.training_run_id == last.scalar_subquery()).order_by(c.c.rank))

    def record_retrain(self, target: str, reason: str, detail: str, outcome: str | None = None) -> None:
        with self._conn() as conn:
            conn.execute(
                retrain_triggers.insert().values(
                    target=target, reason=reason, detail=detail, outcome=outcome, triggered_at=utcnow()
                )
            )

    def write_stream_checkpoint(self, target: str, model_version: str, run_id: str, state: bytes) -> None:
        """Replace ``target``'s stream checkpoint (call it in the batch's transaction)."""
        with self._conn() as conn:
            conn.execute(sa.delete(stream_checkpoints).where(stream_checkpoints.c.target == target))
            conn.execute(
                stream_checkpoints.insert().values(
                    target=target, model_version=model_version, run_id=run_id, state=state, updated_at=utcnow()
                )
            )

    def stream_checkpoint(self, target: str) -> dict[str, Any] | None:
        """``target``'s stream checkpoint (model_version, run_id, state, updated_at), or None."""
        with self._conn() as conn:
            row = conn.execute(sa.select(stream_checkpoints).where(stream_checkpoints.c.target == target)).first()
        return None if row is None else dict(row._mapping)

    def retrain_triggers(self) -> pd.DataFrame:
        return self._frame(sa.select(retrain_triggers).order_by(retrain_triggers.c.id))
