"""Replay a bundled dataset as a stream, one timestamp at a time, in time order."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pandas as pd

from pipeline.sources.bundled import load_dataset
from pipeline.sources.stream import StreamBatch


def replay_frame(dataset: str, start: pd.Timestamp | None = None, until: pd.Timestamp | None = None) -> pd.DataFrame:
    """The dataset in wide form (series_id, ts, variables), sorted by time, bounded by [start, until]."""
    raw, opts = load_dataset(dataset)
    frame = raw.rename(columns={str(opts["time_col"]): "ts", str(opts["series_col"]): "series_id"})
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    start, until = _utc(start), _utc(until)
    if start is not None:
        frame = frame[frame["ts"] >= start]
    if until is not None:
        frame = frame[frame["ts"] <= until]
    return frame.sort_values(["ts", "series_id"], kind="stable").reset_index(drop=True)


def _utc(ts: pd.Timestamp | str | None) -> pd.Timestamp | None:
    if ts is None:
        return None
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def replay_batches(frame: pd.DataFrame, speed: float) -> Iterator[StreamBatch]:
    """One batch per timestamp. ``speed`` simulated seconds pass per real second (0: no waiting)."""
    previous: pd.Timestamp | None = None
    for ts, rows in frame.groupby("ts", sort=True):
        ts = pd.Timestamp(ts)
        if speed > 0 and previous is not None:
            time.sleep(max((ts - previous).total_seconds() / speed, 0.0))
        previous = ts
        yield StreamBatch(frame=rows.reset_index(drop=True), received_at=time.perf_counter())
