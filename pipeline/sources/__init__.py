"""Where observations come from, chosen by name in this one place.

Batch inputs (``streamcast ingest``): the bundled ``nyc-weather``, ``csv`` and
``parquet`` files, the ``landing`` folder (files, each once), and Open-Meteo's archive.
Streams (``streamcast stream``): ``replay`` of a bundled dataset, a ``redis`` consumer
group, ``open-meteo`` polling. A new source is a module in this package that returns a
:class:`WideInput` (batch) or yields :class:`StreamBatch` es (stream), plus one branch
in :func:`read_input` or :func:`open_stream` and the name in the spec's ``source``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from streamcast.config import Settings
from streamcast.errors import InputError
from streamcast.sources.stream import StreamBatch
from streamcast.specs import IngestSpec, StreamSpec


@dataclass
class WideInput:
    """A wide frame (one row per series and time) and how to read it."""

    frame: pd.DataFrame
    source: str
    source_ref: str | None
    time_col: str | None = None
    series_col: str | None = None
    series_id: str = "default"
    tz: str = "UTC"
    variables: list[str] | None = None
    digest: str | None = None  # content hash of the file it came from (landing folder)

    def parse_options(self) -> dict[str, Any]:
        return {
            "time_col": self.time_col,
            "series_col": self.series_col,
            "series_id": self.series_id,
            "tz": self.tz,
            "variables": self.variables,
        }


def read_input(spec: IngestSpec, settings: Settings) -> WideInput:
    """The one input a batch ingest of ``spec`` reads (the landing folder is many: see ingest)."""
    if spec.source == "nyc-weather":
        from streamcast.sources.bundled import load_dataset

        frame, options = load_dataset(spec.source)
        return WideInput(frame=frame, source="dataset", source_ref=spec.source, **options)
    if spec.source in ("csv", "parquet"):
        assert spec.path is not None  # the spec refuses csv and parquet without a path
        return file_input(spec.path, spec, fmt=spec.source)
    if spec.source == "open-meteo":
        from streamcast.sources.open_meteo import archive_frame

        frame = archive_frame(spec, settings)
        return WideInput(frame, "open-meteo", f"{spec.latitude},{spec.longitude}", "ts", "series_id")
    raise InputError(f"{spec.source} is not a single input")


def file_input(
    path: Path, spec: IngestSpec, fmt: str | None = None, source: str | None = None, digest: str | None = None
) -> WideInput:
    """A CSV or Parquet file, read with the spec's column and time-zone options."""
    from streamcast.sources.files import read_wide_file

    frame = read_wide_file(path, fmt)
    return WideInput(
        frame=frame,
        source=source or fmt or path.suffix.lstrip(".").lower() or "file",
        source_ref=str(path),
        time_col=spec.time_col,
        series_col=spec.series_col,
        series_id=spec.series_id or "default",
        tz=spec.tz,
        digest=digest,
    )


@dataclass
class OpenStream:
    """A stream's batches, what to tell the user about it, and how to let go of it."""

    batches: Iterator[StreamBatch]
    description: str
    close: Callable[[], None] = field(default=lambda: None)


def open_stream(spec: StreamSpec, settings: Settings) -> OpenStream:
    if spec.source == "replay":
        from streamcast.sources.replay import replay_stream

        return replay_stream(spec)
    if spec.source == "redis":
        from streamcast.sources.redis_stream import RedisStreamSource

        src = RedisStreamSource(
            spec.redis_url,
            spec.stream,
            spec.group,
            spec.consumer,
            batch_size=spec.batch_size,
            claim_idle_ms=spec.claim_idle_ms,
            stop_after_idle_s=spec.stop_after_idle,
            retry_seconds=spec.broker_retry_seconds,
        )
        return OpenStream(src.batches(), f"consuming {spec.stream} as {spec.group}/{spec.consumer} on {spec.redis_url}")
    from streamcast.sources.open_meteo import poll_stream

    return poll_stream(spec, settings)


__all__ = ["OpenStream", "StreamBatch", "WideInput", "file_input", "open_stream", "read_input"]
