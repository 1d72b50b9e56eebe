"""Ensemble rules replayed offline on every default candidate's forecasts, per dataset.

For each dataset (bench/datasets.py): the data ingested through the CLI into a store, its
panel read back as training reads it (``load_panel``: quarantined rows stay out), then
every default candidate fit in process as the backtest fits it (up to the first backtest
origin, validation slice before it) and refit as registration does (all the history but
the last ``--days`` days). Saved per candidate: its validation forecasts (the ensemble's
origins), its backtest forecasts (the 30 origins) and its refit's forecasts at the
deployment protocol's origins (one a day over the last ``--days`` days). Those reproduce
``bench/accuracy.py``'s CLI figures for single candidates and for the shipped ensemble.

Then each weighting rule chooses members and weights on the validation forecasts only, and
is scored on the backtest and the deployment origins: the best member alone, equal weights
within 5 / 10 (the default) / 20% of the best validation error, forward selection, and the
top k by validation error with k chosen on validation. Beside them, the best equal-weight
combination of the competitive members chosen on the deployed points themselves: no rule
can choose so well, so it bounds what any weighting of these candidates could deploy.

    python bench/ensemble_replay.py [--datasets nyc-weather,...] [--cache DIR]

--cache DIR keeps each dataset's fits (DIR/<dataset>.pkl) and reuses them on the next run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd
from _results import markdown_table, write_section
from datasets import DATASETS, dataset_names

from streamcast.backtest import plan_backtest
from streamcast.config import Settings
from streamcast.features import infer_freq
from streamcast.metrics import mase_scale, series_spread
from streamcast.models import create_model
from streamcast.models.ensemble import competitive_weights, mae, select_weights, validation_origin_stride
from streamcast.specs import TrainSpec
from streamcast.training import backtest_for, candidate_config, fitted_to_data, load_panel

STREAMCAST = str(Path(sys.executable).with_name("streamcast"))
KEYS = ["series_id", "origin_ts", "step"]


def setting(name: str, days: int, folder: Path) -> dict[str, Any]:
    """A dataset ingested through the CLI into a store under ``folder`` and read back as
    training reads it, with the backtest's plan on all but the last ``days`` days (the
    history) and the deployment protocol's daily origins after it."""
    frame, target = DATASETS[name]()
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / f"{name}.csv"
    frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(csv, index=False)
    env = {**os.environ, "STREAMCAST_DATA_DIR": str(folder / name)}
    ingest = [STREAMCAST, "ingest", "--source", "csv", "--path", str(csv), "--series-col", "series_id"]
    subprocess.run(ingest, env=env, check=True, capture_output=True)
    panel = load_panel(Settings(data_dir=folder / name), target)
    cut = frame["ts"].max() - pd.Timedelta(days=days)
    hist = {s: f.loc[:cut] for s, f in panel.items()}
    freq = infer_freq(next(iter(hist.values())).index)
    spec = fitted_to_data(TrainSpec(target=target), hist)
    cfg = backtest_for(spec, hist)
    plan = plan_backtest(hist, cfg)
    deploy = [cut + d * pd.Timedelta(days=1) for d in range(days)]
    actual = pd.concat({s: f[target] for s, f in panel.items()})
    actual.index.names = ["series_id", "ts"]
    return {
        "target": target,
        "panel": panel,
        "hist": hist,
        "cut": cut,
        "freq": freq,
        "spec": spec,
        "cfg": cfg,
        "plan": plan,
        "deploy": deploy,
        "actual": actual,
        "scales": {
            "backtest": plan.scales,
            "deployed": {s: mase_scale(f[target].loc[:cut].dropna(), spec.season)[0] for s, f in hist.items()},
        },
    }


def forecasts(fitted: Any, st: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A candidate fit as the backtest fits it: its forecasts at the backtest's origins, and
    those of its refit (as registration refits it) at the deployment origins."""
    plan, cfg, hist, cut = st["plan"], st["cfg"], st["hist"], st["cut"]
    refit = fitted.refit(hist, cut, cut - (cfg.val_steps - 1) * st["freq"])
    return fitted.predict(hist, plan.origins), refit.predict(st["panel"], st["deploy"])


def fit_all(name: str, days: int, folder: Path) -> dict[str, Any]:
    """Every default candidate's validation, backtest and deployed forecasts (see the module)."""
    st = setting(name, days, folder)
    hist, spec, plan = st["hist"], st["spec"], st["plan"]
    fitted = {
        m: create_model(m, **candidate_config(spec, m)).fit(hist, plan.train_end, plan.val_start)
        for m in spec.models
        if m != "ensemble"
    }
    # The ensemble's validation origins, as EnsembleForecaster.fit places them.
    ens = candidate_config(spec, "ensemble")
    stride = validation_origin_stride(
        ens["origin_step"] or ens["horizon"],
        max(f.validation_stride_for(hist, plan.val_start, plan.train_end) for f in fitted.values()),
        7 * spec.season,
    )
    out: dict[str, Any] = {"val": {}, "backtest": {}, "deployed": {}}
    for m, f in fitted.items():
        val = f.validation_forecasts(hist, plan.val_start, plan.train_end, stride, aligned=True)
        out["val"][m] = val.sort_values(KEYS, ignore_index=True)
        out["backtest"][m], out["deployed"][m] = forecasts(f, st)
        print(f"[{name}] {m} done", flush=True)
    out.update(actual=st["actual"], spread=series_spread(hist, st["target"], plan.train_end), scales=st["scales"])
    return out


def top_k(val: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, float]:
    """Equal weights over the k best members by validation error, k the best on validation."""
    err = {n: mae(v, truth) for n, v in val.items()}
    order = sorted((n for n in err if np.isfinite(err[n])), key=lambda n: (err[n], n))
    errs = [mae(np.mean([val[n] for n in order[:k]], axis=0), truth) for k in range(1, len(order) + 1)]
    k = int(np.argmin(errs)) + 1
    return dict.fromkeys(order[:k], 1.0 / k)


def mase(fc: dict[str, pd.DataFrame], weights: dict[str, float], actual: pd.Series, scales: dict) -> float:
    """MASE (mean over series) of the weighted members' forecasts."""
    parts = [fc[n].sort_values(KEYS, ignore_index=True) for n in weights]
    blend = parts[0][["series_id", "ts"]].copy()
    blend["yhat"] = sum(w * p["yhat"].to_numpy() for w, p in zip(weights.values(), parts, strict=True))
    p = blend.join(actual.rename("actual"), on=["series_id", "ts"]).dropna(subset=["actual"])
    err = (p["yhat"] - p["actual"]).abs() / p["series_id"].map(scales)
    return float(err.groupby(p["series_id"]).mean().mean())


def replay(name: str, d: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    first = next(iter(d["val"].values()))
    truth = first[["series_id", "ts"]].join(d["actual"].rename("a"), on=["series_id", "ts"])["a"].to_numpy()
    spread = first["series_id"].map(d["spread"]).to_numpy()
    val = {n: v["yhat"].to_numpy() / spread for n, v in d["val"].items()}
    t = truth / spread
    err = {n: mae(v, t) for n, v in val.items()}
    best = min(err, key=lambda n: (err[n], n))
    rules = {
        "best member on validation": {best: 1.0},
        "competitive 5%": competitive_weights(val, t, 0.05) or select_weights(val, t, 25),
        "competitive 10% (shipped)": competitive_weights(val, t, 0.10) or select_weights(val, t, 25),
        "competitive 20%": competitive_weights(val, t, 0.20) or select_weights(val, t, 25),
        "forward selection": select_weights(val, t, 25),
        "top k, k on validation": top_k(val, t),
    }
    # The bound: equal weights over any subset of the members within 50% of the best
    # validation error, chosen on the deployed points.
    pool = sorted((n for n in err if err[n] <= 1.5 * err[best]), key=err.get)
    subsets = [c for k in range(1, min(len(pool), 6) + 1) for c in itertools.combinations(pool, k)]
    scored = [
        (mase(d["deployed"], dict.fromkeys(c, 1 / len(c)), d["actual"], d["scales"]["deployed"]), c) for c in subsets
    ]
    bound, chosen = min(scored)
    rows = []
    for rule, w in rules.items():
        blend = mae(sum(x * val[n] for n, x in w.items()), t)
        rows.append(
            [
                name,
                rule,
                ", ".join(f"{n} {x:.2f}" for n, x in sorted(w.items(), key=lambda kv: -kv[1])),
                f"{blend:.4f}",
                f"{mase(d['backtest'], w, d['actual'], d['scales']['backtest']):.3f}",
                f"{mase(d['deployed'], w, d['actual'], d['scales']['deployed']):.3f}",
            ]
        )
    rows.append(
        [name, "bound: best equal weights chosen on the deployed points", ", ".join(chosen), "", "", f"{bound:.3f}"]
    )
    singles = ", ".join(
        f"{n} {err[n]:.3f} / {mase(d['backtest'], {n: 1.0}, d['actual'], d['scales']['backtest']):.3f} / "
        f"{mase(d['deployed'], {n: 1.0}, d['actual'], d['scales']['deployed']):.3f}"
        for n in sorted(err, key=err.get)
    )
    return rows, [f"**{name}** members (validation MAE in spreads / backtest MASE / deployed MASE): {singles}"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=dataset_names, default=",".join(DATASETS))
    ap.add_argument("--days", type=int, default=30, help="days of the deployment protocol")
    ap.add_argument("--cache", type=Path, help="keep (and reuse) each dataset's fits here")
    args = ap.parse_args()
    names = args.datasets
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
        folder = args.cache or Path(tmp)
        for name in names:
            saved = folder / f"{name}.pkl"
            if saved.exists():
                with saved.open("rb") as fh:
                    d = pickle.load(fh)  # our own cache, written below
            else:
                d = fit_all(name, args.days, folder)
                with saved.open("wb") as fh:
                    pickle.dump(d, fh)
            r, n = replay(name, d)
            rows += r
            notes += n
    md = markdown_table(["dataset", "rule", "weights", "validation MAE", "backtest MASE", "deployed MASE"], rows)
    intro = (
        "Every default candidate fit in process on the store's panel as the backtest fits it, and refit as "
        f"registration does on all but the last {args.days} days; each rule chooses on the validation "
        "forecasts only (MAE in series spreads, as the ensemble scores them) and is scored on the backtest's "
        "30 origins and on the deployment protocol's daily origins (the refit members, as `bench/accuracy.py` "
        "deploys them). The bound is chosen on the very points it is scored on.\n\n"
    )
    write_section("Ensemble rules replayed", intro + md + "\n" + "\n".join(f"- {n}" for n in notes))
    print(md)


if __name__ == "__main__":
    main()
