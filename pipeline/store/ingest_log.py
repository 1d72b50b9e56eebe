"""What each ingest did (``ingest_batches``) and what it set aside (``quarantine``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from streamcast.store.engine import Bound, as_utc, py_datetime, utcnow
from streamcast.store.schema import ingest_batches, quarantine


def _fingerprint(row: dict[str, Any]) -> str:
    parts = [
        str(row.get(k)) for k in ("source", "series_id", "variable", "ts_raw", "value_raw", "reason", "row_number")
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class IngestLog(Bound):
    def start_batch(self, source: str, source_ref: str | None, content_hash: str | None) -> int:
        with self._conn() as conn:
            res = conn.execute(
                ingest_batches.insert().values(
                    source=source, source_ref=source_ref, content_hash=content_hash, started_at=utcnow()
                )
            )
        key = res.inserted_primary_key
        assert key is not None
        return int(key[0])

    def finish_batch(self, batch_id: int, **fields: Any) -> None:
        with self._conn() as conn:
            conn.execute(ingest_batches.update().where(ingest_batches.c.id == batch_id).values(**fields))

    def written_since(self, at: datetime | pd.Timestamp) -> tuple[datetime, datetime] | None:
        """The earliest and the latest observation time written by the batches that
        finished at or after ``at`` (None: none wrote any)."""
        b = ingest_batches
        q = sa.select(sa.func.min(b.c.earliest), sa.func.max(b.c.watermark)).where(
            b.c.finished_at >= py_datetime(at), b.c.earliest.is_not(None)
        )
        with self._conn() as conn:
            earliest, latest = conn.execute(q).one()
        return (as_utc(earliest), as_utc(latest)) if earliest is not None and latest is not None else None

    def write_quarantine(self, rows: Sequence[dict[str, Any]], batch_id: int) -> int:
        """Record set-aside rows; returns how many were new (the same bad input twice is recorded once)."""
        if not rows:
            return 0
        now = utcnow()
        records = [{**r, "batch_id": batch_id, "created_at": now, "fingerprint": _fingerprint(r)} for r in rows]
        count = sa.select(sa.func.count()).select_from(quarantine)
        with self._conn() as conn:
            before = conn.execute(count).scalar_one()
            conn.execute(self._insert(quarantine).on_conflict_do_nothing(index_elements=["fingerprint"]), records)
            return int(conn.execute(count).scalar_one() - before)

    def has_content_hash(self, content_hash: str) -> bool:
        q = sa.select(ingest_batches.c.id).where(ingest_batches.c.content_hash == content_hash).limit(1)
        with self._conn() as conn:
            return conn.execute(q).first() is not None

    def quarantine_counts(self) -> dict[str, int]:
        q = sa.select(quarantine.c.reason, sa.func.count()).group_by(quarantine.c.reason).order_by(quarantine.c.reason)
        with self._conn() as conn:
            return {r: int(n) for r, n in conn.execute(q).all()}

    def quarantine_rows(self, batch_id: int | None = None) -> pd.DataFrame:
        q = sa.select(quarantine).order_by(quarantine.c.id)
        if batch_id is not None:
            q = q.where(quarantine.c.batch_id == batch_id)
        return self._frame(q)

    def last_batch(self) -> dict[str, Any] | None:
        q = sa.select(ingest_batches).order_by(ingest_batches.c.id.desc()).limit(1)
        with self._conn() as conn:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None
