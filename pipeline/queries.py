"""Read-side shapes shared by the CLI and the HTTP API."""

from __future__ import annotations

from typing import Any

import pandas as pd


def latest_payload(points: pd.DataFrame) -> list[dict[str, Any]]:
    """Stored forecast points grouped per forecast, in the API's JSON shape, by series."""
    out = []
    for fid, grp in points.groupby("forecast_id", sort=False):
        g = grp.sort_values("step")
        head = g.iloc[0]
        out.append(
            {
                "series_id": head["series_id"],
                "target": head["target"],
                "issued_at": head["issued_at"].isoformat(),
                "origin_ts": head["origin_ts"].isoformat(),
                "forecast_id": fid,
                "model": {"name": head["model_name"], "version": head["model_version"], "run_id": head["run_id"]},
                "points": [
                    {
                        "ts": t.isoformat(),
                        "step": int(s),
                        "yhat": float(y),
                        "lo": None if pd.isna(lo) else float(lo),
                        "hi": None if pd.isna(hi) else float(hi),
                    }
                    for t, s, y, lo, hi in zip(g["ts"], g["step"], g["yhat"], g["lo"], g["hi"], strict=True)
                ],
            }
        )
    return sorted(out, key=lambda d: d["series_id"])
