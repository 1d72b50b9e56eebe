"""CSV and Parquet files in wide form."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from pandas.api.types import union_categoricals

from streamcast.errors import InputError

FILE_FORMATS = ("csv", "parquet")


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".txt", ".gz"):
        return "csv"
    raise InputError(f"{path}: unknown file type {suffix!r}; expected .csv or .parquet")


def read_wide_file(path: Path, fmt: str | None = None) -> pd.DataFrame:
    """Read a wide file; every failure becomes a one-line :class:`InputError`.

    CSV cells are read as text so that validation, not the reader, decides what a
    bad value is.
    """
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    fmt = fmt or detect_format(path)
    try:
        frame = pd.read_parquet(path) if fmt == "parquet" else _read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file is empty") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: unreadable: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except Exception as exc:  # noqa: BLE001 - readers raise many types; all mean "unreadable"
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{path}: unreadable {fmt}: {msg[:200]}") from None
    if frame.empty:
        raise InputError(f"{path}: file has no data rows")
    if fmt == "csv":
        _refuse_repeated_columns(path)
    dupes = [c for c in frame.columns if str(c).startswith("Unnamed:")]
    if dupes and len(dupes) == len(frame.columns):
        raise InputError(f"{path}: no header row")
    return frame


# CSV rows read at a time: each chunk's cells are made categorical before the next is read.
CSV_CHUNK_ROWS = 500_000


def _read_csv(path: Path) -> pd.DataFrame:
    """Every cell as text, each column categorical (codes into its distinct cells).

    A panel repeats its series ids, times and readings row after row: as one Python string
    per cell (about 60 B each), a 10,000-series file of 21.6 M rows took gigabytes before
    validation began; as codes it takes a few hundred MB, and validation parses each
    distinct cell once anyway.
    """
    with pd.read_csv(path, dtype=str, skipinitialspace=True, encoding="utf-8", chunksize=CSV_CHUNK_ROWS) as reader:
        parts = [chunk.astype("category") for chunk in reader]
    if len(parts) == 1:
        return parts[0]
    return pd.DataFrame({c: union_categoricals([p.iloc[:, j] for p in parts]) for j, c in enumerate(parts[0].columns)})


def _refuse_repeated_columns(path: Path) -> None:
    """pandas renames a repeated CSV column (``temp``, ``temp.1``): a second variable
    nobody named. Read the header as written and refuse the file instead."""
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, encoding="utf-8").iloc[0].dropna().str.strip()
    repeated = sorted(set(header[header.duplicated()]))
    if repeated:
        raise InputError(f"{path}: column {repeated[0]!r} appears more than once; column names must be unique")


def content_hash(path: Path) -> str:
    """SHA-256 of a file's bytes: the landing folder's once-only key."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
