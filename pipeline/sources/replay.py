"""Replay a bundled dataset as a stream, one timestamp at a time, in time order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pandas as pd

from streamcast.errors import InputError
from streamcast.sources.bundled import load_dataset
from streamcast.sources.stream import StreamBatch

if TYPE_CHECKING:
    from streamcast.sources import OpenStream
    from streamcast.specs import StreamSpec


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


def replay_stream(spec: StreamSpec) -> OpenStream:
    """The spec's dataset and period as a stream; an empty period is an input error."""
    from streamcast.sources import OpenStream

    frame = replay_frame(spec.dataset, spec.start, spec.until)
    if frame.empty:
        raise InputError(
            f"nothing to replay from {spec.dataset} between {spec.start or 'start'} and {spec.until or 'end'}"
        )
    description = (
        f"replaying {spec.dataset}: {frame['ts'].nunique():,} timestamps, {len(frame):,} rows "
        f"from {frame['ts'].min():%Y-%m-%d %H:%M} to {frame['ts'].max():%Y-%m-%d %H:%M} UTC at speed {spec.speed:g}"
    )
    return OpenStream(replay_batches(frame, spec.speed), description)
