"""Accuracy and fit time of every candidate against statsforecast, on the same origins.

nyc-weather, target temp, H=24, 30 daily origins at the end of 2013. streamcast's
candidates are fit once before the first origin (validation slice = the 30 days
before it); statsforecast's AutoETS, MSTL and AutoTheta (season 24) are refit at
every origin on all data up to it, which can only help them.

    python bench/accuracy.py [--models naive,seasonal_naive,esn,...] [--epochs N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from _results import markdown_table, write_section
from common import nyc_weather_panel

from streamcast.backtest import BacktestConfig, run_backtest
from streamcast.metrics import aggregate, score_points, with_actuals
from streamcast.models import CANDIDATES, create_model


def statsforecast_rows(
    panel: dict[str, pd.DataFrame], cfg: BacktestConfig, origins: list[pd.Timestamp], scales: dict[str, float]
) -> list[dict]:
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoETS, AutoTheta

    frames = []
    for sid, f in panel.items():
        y = f[cfg.target].interpolate(limit_direction="both")  # statsforecast refuses gaps
        frames.append(pd.DataFrame({"unique_id": sid, "ds": y.index.tz_localize(None), "y": y.to_numpy()}))
    df = pd.concat(frames, ignore_index=True)
    end = origins[-1] + pd.Timedelta(hours=cfg.horizon)
    df = df[df.ds <= end.tz_localize(None)]
    rows = []
    for model in (
        AutoETS(season_length=cfg.season),
        MSTL(season_length=cfg.season),
        AutoTheta(season_length=cfg.season),
    ):
        name = f"statsforecast {type(model).__name__}"
        sf = StatsForecast(models=[model], freq="h", n_jobs=-1)
        t0 = time.perf_counter()
        cv = sf.cross_validation(df=df, h=cfg.horizon, step_size=cfg.step, n_windows=cfg.folds)
        secs = time.perf_counter() - t0
        col = next(c for c in cv.columns if c not in ("unique_id", "ds", "cutoff", "y"))
        cv = cv.rename(columns={"unique_id": "series_id", col: "yhat"})
        cv["ts"] = pd.DatetimeIndex(cv["ds"]).tz_localize("UTC")
        cv["origin_ts"] = pd.DatetimeIndex(cv["cutoff"]).tz_localize("UTC")
        assert set(cv["origin_ts"]) == set(origins), "statsforecast origins differ from streamcast's"
        pts = with_actuals(cv[["series_id", "origin_ts", "ts", "yhat"]], panel, cfg.target)
        scored = score_points(pts, scales)
        per_series = aggregate(scored, ["series_id"])
        rows.append(
            {
                "candidate": name,
                "mase": per_series["mase"].mean(),
                "mae": scored["abs_error"].mean(),
                "coverage": np.nan,
                "fit_seconds": secs / cfg.folds,
            }
        )
        print(f"{name:28s} MASE {rows[-1]['mase']:.3f}  MAE {rows[-1]['mae']:.3f}  {secs:.0f}s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(CANDIDATES))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-statsforecast", action="store_true")
    ap.add_argument("--tune-minutes", type=float, default=6.0, help="Optuna budget for the tuned run (0: skip)")
    ap.add_argument("--tune-models", default="esn,hopfield")
    args = ap.parse_args()
    cfg = BacktestConfig()
    panel = nyc_weather_panel()
    models = {}
    for name in args.models.split(","):
        kw: dict = {"seed": args.seed}
        if args.epochs is not None and name in ("lstm", "rnn", "cnn", "cnn_lstm"):
            kw["epochs"] = args.epochs
        models[name] = create_model(name, **kw)

    def progress(name: str, stage: str) -> None:
        print(f"  {name}: {stage}", flush=True)

    result = run_backtest(panel, models, cfg, on_progress=progress)
    table = result.comparison()
    rows = table.to_dict("records")
    tuned_note = ""
    if args.tune_minutes > 0:
        from streamcast.tuning import tune

        names = args.tune_models.split(",")
        start = {name: create_model(name, seed=args.seed) for name in names}
        tuning = tune(panel, start, result.train_end, result.val_start, args.tune_minutes * 60)
        tuned = {name: create_model(name, seed=args.seed, **params) for name, params in tuning.best.items()}
        tuned_result = run_backtest(panel, tuned, cfg, on_progress=progress)
        for r in tuned_result.comparison().to_dict("records"):
            r["candidate"] = f"{r['candidate']} (tuned)"
            rows.append(r)
        tuned_note = (
            f"Tuned run: Optuna, {len(tuning.trials)} trials in {tuning.seconds:.0f} s "
            f"(budget {args.tune_minutes * 60:.0f} s) on the validation slice; best: "
            + "; ".join(f"{n} {p}" for n, p in tuning.best.items())
        )
    if not args.no_statsforecast:
        rows += statsforecast_rows(panel, cfg, result.origins, result.scales)
    rows.sort(key=lambda r: r["mase"])
    best_sc = min(r["mase"] for r in rows if not r["candidate"].startswith("statsforecast"))
    best_sf = min((r["mase"] for r in rows if r["candidate"].startswith("statsforecast")), default=float("nan"))
    fit = {r["candidate"]: r["fit_seconds"] for r in rows}
    print(table.to_string(index=False))
    md = markdown_table(
        ["candidate", "MASE", "MAE (°F)", "90% interval coverage", "fit seconds"],
        [
            [
                r["candidate"],
                f"{r['mase']:.3f}",
                f"{r['mae']:.3f}",
                "-" if pd.isna(r["coverage"]) else f"{r['coverage']:.1%}",
                f"{r['fit_seconds']:.2f}",
            ]
            for r in rows
        ],
    )
    notes = [
        f"Origins: {len(result.origins)} daily, {result.origins[0]:%Y-%m-%d %H:%M} to "
        f"{result.origins[-1]:%Y-%m-%d %H:%M} UTC; H={cfg.horizon}; validation slice from "
        f"{result.val_start:%Y-%m-%d %H:%M}.",
        f"Best streamcast MASE {best_sc:.3f} vs best statsforecast MASE {best_sf:.3f}.",
    ]
    if "esn" in fit and "lstm" in fit:
        notes.append(f"ESN fit is {fit['lstm'] / fit['esn']:.0f}x faster than LSTM fit on the same windows.")
    notes.append("statsforecast fit seconds are per origin (it refits at every origin); streamcast fits once.")
    notes.append("Ensemble fit seconds are the sum of its members' fits (it reuses them).")
    if tuned_note:
        notes.append(tuned_note)
    write_section("Accuracy: nyc-weather temp, H=24, 30 daily origins", md + "\n" + "\n".join(f"- {n}" for n in notes))
    print("\n".join(notes))


if __name__ == "__main__":
    main()
