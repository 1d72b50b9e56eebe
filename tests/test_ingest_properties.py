"""Property-based: malformed CSVs never end in a traceback and a file-level failure writes nothing."""

from __future__ import annotations

import string
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamcast import services
from streamcast.config import Settings
from streamcast.errors import InputError
from streamcast.specs import IngestSpec
from streamcast.store import Store

cell = st.one_of(
    st.text(alphabet=string.printable, max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-10_000, 10_000).map(str),
    st.sampled_from(["2024-01-01T00:00Z", "2024-02-30", "2024-01-01 25:00", "", "NA", "1e400", "-0"]),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["9999-12-31T23:00:00Z", "1500-01-01T00:00:00Z", "2024-03-10 02:30", "x" * 130, "a\x00b"]),
)
header = st.lists(
    st.one_of(
        st.sampled_from(["ts", "time", "temp", "humid", "site", "date", "v" * 129, "[/b]"]),
        st.text(string.ascii_letters, max_size=6),
    ),
    min_size=0,
    max_size=5,
)


@st.composite
def csv_text(draw: st.DrawFn) -> str:
    cols = draw(header)
    rows = draw(st.lists(st.lists(cell, min_size=0, max_size=len(cols) + 2), max_size=8))
    sep = draw(st.sampled_from([",", ";", "\t"]))
    lines = [sep.join(cols)] + [sep.join(r) for r in rows]
    text = "\n".join(lines)
    if draw(st.booleans()):
        text += draw(st.text(max_size=20))  # trailing junk, stray quotes, control characters
    return text


@settings(
    max_examples=int(__import__("os").environ.get("STREAMCAST_HYPOTHESIS_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=csv_text(), series_col=st.sampled_from([None, "site"]))
@example(text="ts,ts,ts,ts,ts\n,,,,,,\n,,0000,0", series_col=None)  # found in CI: empty and year-0 times
@example(text="ts,temp\n2024-01-01T00:00Z,1\n2024-01-01 01:00,2\nnot a time,3", series_col=None)
def test_malformed_csv_never_crashes_and_never_half_writes(
    any_store: Store, tmp_path: Path, text: str, series_col: str | None
) -> None:
    data = tmp_path / "prop"
    data.mkdir(exist_ok=True)
    store = any_store
    cfg = Settings(data_dir=data, db_url=store.url)
    path = data / "input.csv"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    before = store.table_counts()
    try:
        spec = IngestSpec(source="csv", path=path, series_col=series_col)
        (summary,) = services.ingest(spec, settings=cfg).summaries
    except InputError as exc:
        msg = str(exc)
        assert "\n" not in msg and "input.csv" in msg
        assert store.table_counts() == before
    else:
        after = store.table_counts()
        assert after["ingest_batches"] == before["ingest_batches"] + 1
        assert summary.new + summary.updated + summary.unchanged == summary.observations_read
        assert after["observations"] - before["observations"] == summary.new


entry_value = st.one_of(
    st.floats(-50, 50).map(str),
    st.text(max_size=8),
    st.sampled_from(["", "NaN", "inf", "1e400", "x" * 140, "nul\x00"]),
)
entry = st.dictionaries(
    keys=st.one_of(st.sampled_from(["ts", "series_id", "temp", "humid", "w" * 130, "n\x00"]), st.text(max_size=5)),
    values=entry_value,
    max_size=6,
).map(lambda d: {**d, "ts": d["ts"]} if "ts" in d else d)
entry_time = st.one_of(
    st.integers(0, 400).map(lambda h: (pd.Timestamp("2024-01-01T00:00Z") + pd.Timedelta(hours=h)).isoformat()),
    st.sampled_from(["2034-01-01T00:00:00Z", "not a time", "9999-12-31T23:00:00Z"]),
)


@st.composite
def redis_entries(draw: st.DrawFn) -> list[dict[str, str]]:
    """Entries as a Redis consumer reads them: text fields, some of the keys missing."""
    out = []
    for fields in draw(st.lists(entry, min_size=1, max_size=6)):
        if draw(st.booleans()):
            fields["ts"] = draw(entry_time)
        if draw(st.booleans()):
            fields["series_id"] = draw(st.sampled_from(["A", "B", "s" * 129, "bad\x00id", "[/bold]"]))
        out.append(fields)
    return out


@settings(
    max_examples=int(__import__("os").environ.get("STREAMCAST_HYPOTHESIS_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(entries=redis_entries())
@example(entries=[{"ts": "9999-12-31T23:00:00Z", "series_id": "A", "temp": "1"}])  # found: typed times overflowed
@example(entries=[{"series_id": "A", "temp": "warm"}, {"ts": "2024-01-01T00:00Z", "series_id": "s" * 129, "temp": "1"}])
def test_any_batch_of_stream_entries_is_stored_or_quarantined_never_refused(
    any_store: Store, entries: list[dict[str, str]]
) -> None:
    from streamcast.config import DEFAULT_BOUNDS
    from streamcast.entries import parse_entries
    from streamcast.ingestion import write_batch
    from streamcast.sources.redis_stream import _typed

    frame = _typed(pd.DataFrame([e for e in entries if e]))
    parsed = parse_entries(frame, DEFAULT_BOUNDS, pd.Timestamp("2024-01-10T00:00Z"), pd.Timedelta(days=7))
    before = any_store.table_counts()
    summary = write_batch(any_store, parsed, "stream", "stream")
    after = any_store.table_counts()
    assert summary.new + summary.updated + summary.unchanged == len(parsed.observations)
    assert after["observations"] - before["observations"] == summary.new
    assert (parsed.observations["ts"] <= pd.Timestamp("2024-01-17T00:00Z")).all()
