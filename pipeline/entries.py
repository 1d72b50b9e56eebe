"""Stream entries: each is judged on its own. A malformed entry (no time, no series, no
numeric variable) or one far ahead of the stream is quarantined with its reason and
acknowledged with its batch; it never blocks the entries behind it."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from streamcast.cells import as_text
from streamcast.config import Bounds
from streamcast.errors import InputError
from streamcast.validation import ParsedBatch, empty_observations, parse_wide, quarantine_record

SOURCE = "stream"
UNUSABLE_ENTRY = "unusable_entry"  # nothing in it can be stored: the detail says why
TOO_FAR_AHEAD = "too_far_ahead"  # later than the newest observation by more than the allowed lead
KEY = ["series_id", "variable", "ts"]


def parse_entries(
    frame: pd.DataFrame, bounds: dict[str, Bounds], newest: pd.Timestamp | None, max_ahead: pd.Timedelta
) -> ParsedBatch:
    """Validate one batch of wide entries (``series_id``, ``ts``, variables). Observations
    more than ``max_ahead`` after ``newest`` (the stream's newest stored time; the batch's
    earliest when there is none) are quarantined."""
    try:
        parsed = _parse(frame, bounds)
    except InputError:
        parsed = _one_by_one(frame, bounds)
    return _hold_back_future(parsed, newest, max_ahead)


def _parse(frame: pd.DataFrame, bounds: dict[str, Bounds]) -> ParsedBatch:
    return parse_wide(frame, SOURCE, time_col="ts", series_col="series_id", bounds=bounds)


def _one_by_one(frame: pd.DataFrame, bounds: dict[str, Bounds]) -> ParsedBatch:
    """The batch as a whole is unusable: parse each entry alone, quarantine those that
    cannot be used at all, and merge the rest (a later entry wins a repeated key)."""
    parts: list[ParsedBatch] = []
    unusable = []
    for i in range(len(frame)):
        entry = frame.iloc[[i]].dropna(axis=1, how="all")
        try:
            parts.append(_parse(entry, bounds))
        except InputError as exc:
            fields = entry.iloc[0].to_dict()
            unusable.append(
                quarantine_record(
                    SOURCE,
                    i + 1,
                    UNUSABLE_ENTRY,
                    series_id=fields.pop("series_id", None),
                    ts_raw=fields.pop("ts", None),
                    value_raw=as_text(fields) if fields else None,
                    detail=as_text(str(exc).removeprefix(f"{SOURCE}: "), 500),
                )
            )
    frames = [p.observations for p in parts]
    obs = pd.concat(frames, ignore_index=True) if frames else empty_observations()
    before = len(obs)
    obs = obs.drop_duplicates(KEY, keep="last").sort_values(KEY, kind="stable").reset_index(drop=True)
    missing: Counter[str] = Counter()
    for p in parts:
        missing.update(p.missing)
    return ParsedBatch(
        observations=obs,
        quarantine=unusable + [r for p in parts for r in p.quarantine],
        rows_read=len(frame),
        variables=sorted({v for p in parts for v in p.variables}),
        ignored_columns=sorted({c for p in parts for c in p.ignored_columns}),
        hints=sorted({h for p in parts for h in p.hints}),
        duplicates_dropped=before - len(obs) + sum(p.duplicates_dropped for p in parts),
        missing=dict(missing),
    )


def _hold_back_future(parsed: ParsedBatch, newest: pd.Timestamp | None, max_ahead: pd.Timedelta) -> ParsedBatch:
    obs = parsed.observations
    if obs.empty:
        return parsed
    reference = newest if newest is not None else obs["ts"].min()
    ahead = (obs["ts"] > reference + max_ahead).to_numpy()
    if not ahead.any():
        return parsed
    detail = as_text(f"more than {max_ahead} after the newest observation ({reference.isoformat()})", 500)
    parsed.quarantine += [
        quarantine_record(
            SOURCE,
            None,
            TOO_FAR_AHEAD,
            series_id=r.series_id,
            variable=r.variable,
            ts_raw=r.ts.isoformat(),
            value_raw=repr(float(r.value)),
            detail=detail,
        )
        for r in obs[ahead].itertuples()
    ]
    parsed.observations = obs[~ahead].reset_index(drop=True)
    return parsed
