"""Property-based: malformed CSVs never end in a traceback and a file-level failure writes nothing."""

from __future__ import annotations

import string
from pathlib import Path

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
)
header = st.lists(
    st.one_of(
        st.sampled_from(["ts", "time", "temp", "humid", "site", "date"]), st.text(string.ascii_letters, max_size=6)
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
def test_malformed_csv_never_crashes_and_never_half_writes(tmp_path: Path, text: str, series_col: str | None) -> None:
    data = tmp_path / "prop"
    data.mkdir(exist_ok=True)
    store = Store(f"sqlite:///{data / 'streamcast.db'}")
    cfg = Settings(data_dir=data)
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
    finally:
        store.dispose()
