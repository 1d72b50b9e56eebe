"""Ingestion: validate an input, then write it to the store in one transaction."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.errors import InputError
from pipeline.sources.bundled import load_dataset
from pipeline.sources.files import read_wide_file
from pipeline.store import Store, content_hash, utcnow
from pipeline.validation import ParsedBatch, parse_wide

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    """What one ingest did; printed by the CLI and stored in ``ingest_batches``."""

    source: str
    source_ref: str | None
    batch_id: int | None = None
    rows_read: int = 0
    observations_read: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    watermark: pd.Timestamp | None = None
    elapsed_seconds: float = 0.0
    skipped_reason: str | None = None

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def observations_per_second(self) -> float:
        return self.observations_read / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["watermark"] = self.watermark.isoformat() if self.watermark is not None else None
        d["quarantined_total"] = self.quarantined_total
        d["observations_per_second"] = round(self.observations_per_second, 1)
        return d


def write_batch(
    store: Store,
    parsed: ParsedBatch,
    source: str,
    source_ref: str | None,
    digest: str | None = None,
    also: Callable[[Connection], None] | None = None,
) -> IngestSummary:
    """Write validated observations and quarantine records atomically and record the batch.

    ``also`` writes more in the same transaction (the stream's forecasts and scores).
    """
    started = time.perf_counter()
    obs = parsed.observations
    summary = IngestSummary(
        source=source,
        source_ref=source_ref,
        rows_read=parsed.rows_read,
        observations_read=len(obs),
        quarantined=parsed.quarantine_by_reason,
        duplicates_dropped=parsed.duplicates_dropped,
        ignored_columns=parsed.ignored_columns,
        watermark=obs["ts"].max() if not obs.empty else None,
    )
    with store.transaction() as conn:
        batch_id = store.start_batch(conn, source, source_ref, digest)
        counts = store.upsert_observations(conn, obs, batch_id)
        store.write_quarantine(conn, parsed.quarantine, batch_id)
        summary.batch_id = batch_id
        summary.new, summary.updated, summary.unchanged = counts.new, counts.updated, counts.unchanged
        summary.elapsed_seconds = time.perf_counter() - started
        store.finish_batch(
            conn,
            batch_id,
            rows_read=summary.rows_read,
            observations_read=summary.observations_read,
            new=summary.new,
            updated=summary.updated,
            unchanged=summary.unchanged,
            quarantined=summary.quarantined_total,
            watermark=summary.watermark.to_pydatetime() if summary.watermark is not None else None,
            finished_at=utcnow(),
            elapsed_seconds=summary.elapsed_seconds,
        )
        if also is not None:
            also(conn)
    return summary


def ingest_frame(
    store: Store,
    frame: pd.DataFrame,
    *,
    source: str,
    source_ref: str | None,
    settings: Settings,
    digest: str | None = None,
    **parse_options: Any,
) -> IngestSummary:
    started = time.perf_counter()
    parsed = parse_wide(frame, source_ref or source, bounds=settings.bounds, **parse_options)
    summary = write_batch(store, parsed, source, source_ref, digest)
    summary.elapsed_seconds = time.perf_counter() - started
    return summary


def ingest_dataset(store: Store, name: str, settings: Settings) -> IngestSummary:
    """Ingest a bundled dataset (``nyc-weather``)."""
    started = time.perf_counter()
    frame, options = load_dataset(name)
    summary = ingest_frame(store, frame, source="dataset", source_ref=name, settings=settings, **options)  # type: ignore[arg-type]
    summary.elapsed_seconds = time.perf_counter() - started
    return summary


def ingest_file(
    store: Store,
    path: Path,
    settings: Settings,
    *,
    fmt: str | None = None,
    time_col: str | None = None,
    series_col: str | None = None,
    series_id: str = "default",
    tz: str = "UTC",
    digest: str | None = None,
    source: str | None = None,
) -> IngestSummary:
    """Ingest one CSV or Parquet file. File-level problems raise InputError before any write."""
    started = time.perf_counter()
    frame = read_wide_file(path, fmt)
    summary = ingest_frame(
        store,
        frame,
        source=source or fmt or path.suffix.lstrip(".").lower() or "file",
        source_ref=str(path),
        settings=settings,
        digest=digest,
        time_col=time_col,
        series_col=series_col,
        series_id=series_id,
        tz=tz,
    )
    summary.elapsed_seconds = time.perf_counter() - started
    return summary


@dataclass
class LandingResult:
    ingested: list[IngestSummary] = field(default_factory=list)
    already_seen: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def ingest_landing(
    store: Store,
    settings: Settings,
    landing_dir: Path | None = None,
    **options: Any,
) -> LandingResult:
    """Ingest every file in the landing folder once (by content hash).

    Ingested and already-seen files move to ``done/``; files that fail as a whole
    move to ``failed/`` with the error beside them, so nothing is lost.
    """
    landing = landing_dir or settings.landing_dir
    done, failed = landing / "done", landing / "failed"
    for d in (landing, done, failed):
        d.mkdir(parents=True, exist_ok=True)
    result = LandingResult()
    for path in sorted(p for p in landing.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest = content_hash(path)
        if store.has_content_hash(digest):
            result.already_seen.append(path.name)
            _move(path, done)
            continue
        try:
            summary = ingest_file(store, path, settings, digest=digest, source="landing", **options)
        except InputError as exc:
            result.failed[path.name] = str(exc)
            moved = _move(path, failed)
            moved.with_name(moved.name + ".error.txt").write_text(str(exc) + "\n")
            continue
        result.ingested.append(summary)
        _move(path, done)
    return result


def _move(path: Path, folder: Path) -> Path:
    target = folder / path.name
    if target.exists():
        # Never overwrite an earlier file of the same name: keep both.
        target = folder / f"{path.stem}.{utcnow().strftime('%Y%m%dT%H%M%S%f')}{path.suffix}"
    shutil.move(str(path), target)
    return target
