"""Redis Streams consumer group: at-least-once delivery of wide observation rows.

Each stream entry is one row: fields ``series_id``, ``ts`` (ISO 8601) and one
field per variable. Entries are acknowledged only after their batch commits; on
start, this consumer's own unacknowledged entries are replayed and entries left
pending by a crashed consumer are claimed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd

from streamcast.errors import InputError, UnavailableError
from streamcast.sources.stream import StreamBatch

log = logging.getLogger(__name__)


def _client(url: str) -> Any:
    import redis

    try:
        return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
    except ValueError as exc:
        raise InputError(f"not a Redis URL: {url!r} ({exc}); expected e.g. redis://127.0.0.1:6379/0") from None


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
        retry_seconds: float = 300.0,
    ) -> None:
        self.url, self.stream, self.group, self.consumer = url, stream, group, consumer
        self.batch_size, self.block_ms, self.claim_idle_ms = batch_size, block_ms, claim_idle_ms
        self.stop_after_idle_s = stop_after_idle_s
        self.retry_seconds = retry_seconds
        self.recovered_at = 0.0
        self.redis = _client(url)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A Redis command, retried with exponential backoff while the broker is unreachable;
        after ``retry_seconds`` of outage, :class:`UnavailableError`."""
        import redis

        down_since, wait = None, 0.25
        while True:
            try:
                result = getattr(self.redis, method)(*args, **kwargs)
                if down_since is not None:
                    self.recovered_at = time.monotonic()  # the idle clock does not run while the broker is down
                return result
            except redis.ResponseError as exc:
                # A broker restarted without persistence forgot the group: make it again.
                if "NOGROUP" not in str(exc) or method == "xgroup_create":
                    raise
                log.warning("consumer group %s missing on %s; creating it again", self.group, self.url)
                self.ensure_group()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                down_since = down_since or time.monotonic()
                down = time.monotonic() - down_since
                if down >= self.retry_seconds:
                    raise UnavailableError(
                        f"cannot reach the Redis broker at {self.url} (tried for {down:.0f} s): {exc}"
                    ) from None
                log.warning("Redis at %s unreachable (%s); retrying in %.1f s", self.url, exc, wait)
                time.sleep(min(wait, max(self.retry_seconds - down, 0.01)))
                wait = min(wait * 2, 10.0)

    def ensure_group(self) -> None:
        import redis

        try:
            self._call("xgroup_create", self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _batch(self, entries: list[tuple[str, dict[str, str]]]) -> StreamBatch:
        ids = [eid for eid, _ in entries]
        rows = [fields for _, fields in entries if fields]
        frame = _typed(pd.DataFrame(rows))

        def ack() -> None:
            if ids:
                self._call("xack", self.stream, self.group, *ids)

        return StreamBatch(frame=frame, received_at=time.perf_counter(), ack=ack)

    def batches(self) -> Iterator[StreamBatch]:
        self.ensure_group()
        # 1. Our own entries delivered before a crash but never acknowledged.
        while True:
            resp = self._call("xreadgroup", self.group, self.consumer, {self.stream: "0"}, count=self.batch_size)
            entries = resp[0][1] if resp else []
            entries = [(eid, f) for eid, f in entries if f]
            if not entries:
                break
            yield self._batch(entries)
        # 2. Entries a dead consumer of the group left pending.
        start = "0-0"
        while True:
            start, claimed, *_ = self._call(
                "xautoclaim",
                self.stream,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                start_id=start,
                count=self.batch_size,
            )
            claimed = [(eid, f) for eid, f in claimed if f]
            if claimed:
                yield self._batch(claimed)
            if start in ("0-0", b"0-0"):
                break
        # 3. New entries.
        idle_since = time.monotonic()
        while True:
            resp = self._call(
                "xreadgroup", self.group, self.consumer, {self.stream: ">"}, count=self.batch_size, block=self.block_ms
            )
            entries = resp[0][1] if resp else []
            idle_since = max(idle_since, self.recovered_at)
            if entries:
                idle_since = time.monotonic()
                yield self._batch(entries)
            elif self.stop_after_idle_s is not None and time.monotonic() - idle_since > self.stop_after_idle_s:
                return
