"""How much of a network's score is its seed: one candidate fit with several seeds, each
scored alone and the seeds' average (a bag), in the backtest and the deployment protocol.

Each dataset is set up as ``bench/ensemble_replay.py`` sets it up (ingested through the CLI,
read back as training reads it, the last ``--days`` days held out); each seed's fit is the
backtest's, scored at its 30 origins, and its refit (as registration refits it) is scored
at the deployment protocol's daily origins. The default seed is the one ``streamcast train``
uses, so its row is the candidate's figure in ``bench/accuracy.py``.

    python bench/seed_spread.py [--datasets nyc-weather] [--model lstm] [--seeds 42,1,2,3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from _results import markdown_table, write_section
from datasets import dataset_names
from ensemble_replay import forecasts, mase, setting

from streamcast.models import REGISTRY, create_model
from streamcast.training import candidate_config


def score(st: dict[str, Any], backtest: dict, deployed: dict, weights: dict[int, float]) -> tuple[float, float]:
    """Backtest and deployed MASE of the seeds' forecasts blended with ``weights``."""
    return (
        mase(backtest, weights, st["actual"], st["scales"]["backtest"]),
        mase(deployed, weights, st["actual"], st["scales"]["deployed"]),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=dataset_names, default="nyc-weather")
    ap.add_argument("--model", default="lstm", help="a candidate with a seed (a network or the ESN)")
    ap.add_argument("--seeds", default="42,1,2,3", help="comma-separated; 42 is streamcast's default")
    ap.add_argument("--days", type=int, default=30, help="days of the deployment protocol")
    args = ap.parse_args()
    names = args.datasets
    if args.model not in REGISTRY:
        ap.error(f"unknown model {args.model} (known: {', '.join(sorted(REGISTRY))})")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds takes comma-separated integers, not {args.seeds!r}")
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="seeds-") as tmp:
        for name in names:
            st = setting(name, args.days, Path(tmp))
            backtest, deployed, seconds = {}, {}, []
            for seed in seeds:
                t0 = time.perf_counter()
                model = create_model(args.model, **{**candidate_config(st["spec"], args.model), "seed": seed})
                fitted = model.fit(st["hist"], st["plan"].train_end, st["plan"].val_start)
                backtest[seed], deployed[seed] = forecasts(fitted, st)
                seconds.append(time.perf_counter() - t0)
                print(f"[{name}] {args.model} seed {seed} done in {seconds[-1]:.0f} s", flush=True)

            singles = {seed: score(st, backtest, deployed, {seed: 1.0}) for seed in seeds}
            bag = score(st, backtest, deployed, dict.fromkeys(seeds, 1 / len(seeds)))
            for label, (bt, dep) in [
                *((f"seed {s}", singles[s]) for s in seeds),
                (f"average of the {len(seeds)} seeds", bag),
            ]:
                rows.append([name, args.model, label, f"{bt:.3f}", f"{dep:.3f}"])
            for i, part in enumerate(("backtest", "deployed")):
                values = [singles[s][i] for s in seeds]
                notes.append(
                    f"{name} {args.model} {part}: single seeds {min(values):.3f}-{max(values):.3f} "
                    f"(mean {np.mean(values):.3f}, sd {np.std(values, ddof=1):.3f})"
                )
            notes.append(f"{name} {args.model}: fit + refit {np.mean(seconds):.0f} s a seed")
    md = markdown_table(["dataset", "candidate", "seed", "backtest MASE", "deployed MASE"], rows)
    intro = (
        f"One candidate fit with each seed as the backtest fits it (scored at the backtest's 30 origins) and "
        f"refit as registration refits it (scored at the deployment protocol's daily origins over the last "
        f"{args.days} days); the average row is the seeds' forecasts averaged with equal weights.\n\n"
    )
    write_section(f"Seed spread ({args.model})", intro + md + "\n" + "\n".join(f"- {n}" for n in notes))
    print(md)


if __name__ == "__main__":
    main()
