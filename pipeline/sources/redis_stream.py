"""Redis Streams consumer group: at-least-once delivery of wide observation rows.

Each stream entry is one row: fields ``series_id``, ``ts`` (ISO 8601) and one
field per variable. Entries are acknowledged only after their batch commits; on
start, this consumer's own unacknowledged entries are replayed and entries left
pending by a crashed consumer are claimed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd

from streamcast.sources.stream import StreamBatch


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def publish_rows(url: str, stream: str, frame: pd.DataFrame) -> list[str]:
    """Append wide rows to a stream (the producer side; used by tests, benches and demos)."""
    r = _client(url)
    pipe = r.pipeline(transaction=False)
    for rec in frame.to_dict("records"):
        fields = {
            k: (pd.Timestamp(v).isoformat() if k == "ts" else ("" if pd.isna(v) else str(v))) for k, v in rec.items()
        }
        pipe.xadd(stream, fields)
    return [str(i) for i in pipe.execute()]


def _number(text: str) -> float | str:
    if text == "":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        return text  # left as text: validation quarantines it as non-numeric


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Stream fields arrive as text; convert what parses so validation takes its fast
    numeric path, and leave anything else as text for validation to judge and quarantine."""
    for col in frame.columns:
        if col == "series_id":
            continue
        if col == "ts":
            # Unparseable times stay text and are quarantined by validation.
            with contextlib.suppress(ValueError, TypeError):
                frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
            continue
        values = [_number(v) if isinstance(v, str) else v for v in frame[col]]
        if all(isinstance(v, float) for v in values):
            frame[col] = pd.Series(values, index=frame.index, dtype=float)
        else:
            frame[col] = pd.Series(values, index=frame.index, dtype=object)
    return frame


class RedisStreamSource:
    def __init__(
        self,
        url: str,
        stream: str,
        group: str = "streamcast",
        consumer: str = "streamcast-1",
        batch_size: int = 64,
        block_ms: int = 500,
        claim_idle_ms: int = 10_000,
        stop_after_idle_s: float | None = None,
    ) -> None:
        self.url, self.stream, self.group, self.consumer = url, stream, group, consumer
        self.batch_size, self.block_ms, self.claim_idle_ms = batch_size, block_ms, claim_idle_ms
        self.stop_after_idle_s = stop_after_idle_s
        self.redis = _client(url)

    def ensure_group(self) -> None:
        import redis

        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _batch(self, entries: list[tuple[str, dict[str, str]]]) -> StreamBatch:
        ids = [eid for eid, _ in entries]
        rows = [fields for _, fields in entries if fields]
        frame = _typed(pd.DataFrame(rows))

        def ack() -> None:
            if ids:
                self.redis.xack(self.stream, self.group, *ids)

        return StreamBatch(frame=frame, received_at=time.perf_counter(), ack=ack)

    def batches(self) -> Iterator[StreamBatch]:
        self.ensure_group()
        # 1. Our own entries delivered before a crash but never acknowledged.
        while True:
            resp = self.redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=self.batch_size)
            entries = resp[0][1] if resp else []
            entries = [(eid, f) for eid, f in entries if f]
            if not entries:
                break
            yield self._batch(entries)
        # 2. Entries a dead consumer of the group left pending.
        start = "0-0"
        while True:
            start, claimed, *_ = self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, start_id=start, count=self.batch_size
            )
            claimed = [(eid, f) for eid, f in claimed if f]
            if claimed:
                yield self._batch(claimed)
            if start in ("0-0", b"0-0"):
                break
        # 3. New entries.
        idle_since = time.monotonic()
        while True:
            resp = self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=self.batch_size, block=self.block_ms
            )
            entries = resp[0][1] if resp else []
            if entries:
                idle_since = time.monotonic()
                yield self._batch(entries)
            elif self.stop_after_idle_s is not None and time.monotonic() - idle_since > self.stop_after_idle_s:
                return
