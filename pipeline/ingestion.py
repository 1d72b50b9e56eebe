"""Ingestion: read an input, validate it, write it to the store in one transaction."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from streamcast.config import Settings
from streamcast.errors import InputError
from streamcast.sources import WideInput, file_input, read_input
from streamcast.sources.bundled import NYC_WEATHER_UNITS
from streamcast.sources.files import content_hash
from streamcast.sources.open_meteo import UNITS as OPEN_METEO_UNITS
from streamcast.specs import IngestSpec
from streamcast.store import Store, Transaction, utcnow
from streamcast.validation import ParsedBatch, parse_wide

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
    missing: dict[str, int] = field(default_factory=dict)  # empty cells per variable: not stored, counted
    hints: list[str] = field(default_factory=list)  # e.g. a column that looks like the series column
    watermark: pd.Timestamp | None = None
    elapsed_seconds: float = 0.0

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def observations_per_second(self) -> float:
        return self.observations_read / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def batch_record(self) -> dict[str, Any]:
        """The counts ``ingest_batches`` keeps for this batch."""
        counts = ("rows_read", "observations_read", "new", "updated", "unchanged", "elapsed_seconds")
        return {
            **{name: getattr(self, name) for name in counts},
            "quarantined": self.quarantined_total,
            "watermark": self.watermark.to_pydatetime() if self.watermark is not None else None,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["watermark"] = self.watermark.isoformat() if self.watermark is not None else None
        d["quarantined_total"] = self.quarantined_total
        d["observations_per_second"] = round(self.observations_per_second, 1)
        return d


@dataclass
class IngestReport:
    """Everything one ``ingest`` did: a summary per input written, and for the landing
    folder the files already seen before and those that failed as a whole."""

    summaries: list[IngestSummary] = field(default_factory=list)
    already_seen: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    folder: Path | None = None


def write_batch(
    store: Store,
    parsed: ParsedBatch,
    source: str,
    source_ref: str | None,
    digest: str | None = None,
    also: Callable[[Transaction], None] | None = None,
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
        missing=parsed.missing,
        hints=parsed.hints,
        watermark=obs["ts"].max() if not obs.empty else None,
    )
    with store.transaction() as tx:
        summary.batch_id = tx.start_batch(source, source_ref, digest)
        counts = tx.upsert_observations(obs, summary.batch_id)
        tx.write_quarantine(parsed.quarantine, summary.batch_id)
        summary.new, summary.updated, summary.unchanged = counts.new, counts.updated, counts.unchanged
        summary.elapsed_seconds = time.perf_counter() - started
        # What it wrote from, for the batch path's next scoring (``score_matured``).
        earliest = obs["ts"].min().to_pydatetime() if not obs.empty else None
        tx.finish_batch(summary.batch_id, finished_at=utcnow(), earliest=earliest, **summary.batch_record())
        if also is not None:
            also(tx)
    return summary


def ingest_input(store: Store, wide: WideInput, settings: Settings, started: float | None = None) -> IngestSummary:
    """Validate one wide input and write it; ``started`` is when reading it began."""
    started = started if started is not None else time.perf_counter()
    parsed = parse_wide(wide.frame, wide.source_ref or wide.source, bounds=settings.bounds, **wide.parse_options())
    summary = write_batch(store, parsed, wide.source, wide.source_ref, wide.digest)
    summary.elapsed_seconds = time.perf_counter() - started
    return summary


def ingest_frame(store: Store, frame: pd.DataFrame, *, settings: Settings, **input_fields: Any) -> IngestSummary:
    """Ingest a wide frame already in memory (``source``, ``source_ref`` and read options as in :class:`WideInput`)."""
    return ingest_input(store, WideInput(frame=frame, **input_fields), settings)


def run_ingest(store: Store, spec: IngestSpec, settings: Settings) -> IngestReport:
    """Ingest what ``spec`` names. An unusable input raises :class:`InputError` before
    anything is written; bad rows are quarantined and the good ones kept."""
    if spec.source == "landing":
        report = ingest_landing(store, spec, settings)
    else:
        started = time.perf_counter()
        report = IngestReport(summaries=[ingest_input(store, read_input(spec, settings), settings, started)])
    # Units once the input was usable (the bundled data's are known; --unit wins).
    known = {"nyc-weather": NYC_WEATHER_UNITS, "open-meteo": OPEN_METEO_UNITS}.get(spec.source, {})
    store.set_units({**known, **spec.units})
    return report


def ingest_landing(store: Store, spec: IngestSpec, settings: Settings) -> IngestReport:
    """Ingest every file in the landing folder once (by content hash).

    Ingested and already-seen files move to ``done/``; files that fail as a whole
    move to ``failed/`` with the error beside them, so nothing is lost.
    """
    landing = spec.path or settings.landing_dir
    done, failed = landing / "done", landing / "failed"
    for d in (landing, done, failed):
        d.mkdir(parents=True, exist_ok=True)
    report = IngestReport(folder=landing)
    for path in sorted(p for p in landing.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest = content_hash(path)
        if store.has_content_hash(digest):
            report.already_seen.append(path.name)
            _move(path, done)
            continue
        started = time.perf_counter()
        try:
            wide = file_input(path, spec, source="landing", digest=digest)
            report.summaries.append(ingest_input(store, wide, settings, started))
        except InputError as exc:
            report.failed[path.name] = str(exc)
            moved = _move(path, failed)
            moved.with_name(moved.name + ".error.txt").write_text(str(exc) + "\n")
            continue
        _move(path, done)
    return report


def _move(path: Path, folder: Path) -> Path:
    target = folder / path.name
    if target.exists():
        # Never overwrite an earlier file of the same name: keep both.
        target = folder / f"{path.stem}.{utcnow().strftime('%Y%m%dT%H%M%S%f')}{path.suffix}"
    shutil.move(str(path), target)
    return target
