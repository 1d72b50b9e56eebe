"""How closely `--tune-minutes` keeps its budget, on an idle machine and on a busy one.

Loads nyc-weather as training reads it, cuts the validation slice as `train` does,
and runs the tuner (`streamcast.tuning.tune`, what `--tune-minutes` calls) for each
group of candidates and each budget, first alone, then beside `--busy` processes that
spin on the CPU (another job on the same 2 cores). Reports the search's wall time as
a ratio of its budget, its trials, and the time past the budget.

    python bench/tuning_budget.py [--groups esn+hopfield,rnn] [--budgets 10,30] [--busy 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any

from _results import markdown_table, write_section
from common import nyc_weather_panel

from streamcast.backtest import plan_backtest
from streamcast.errors import InputError
from streamcast.models import create_model
from streamcast.specs import TrainSpec
from streamcast.training import backtest_for, build_candidates, fitted_to_data
from streamcast.tuning import tune


def _spin(stop: Any) -> None:
    while not stop.is_set():
        pass


def search(panel: dict, groups: list[list[str]], budget: float, busy: int) -> list[dict[str, Any]]:
    """Each group's search with ``budget`` seconds, beside ``busy`` spinning processes."""
    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    rows = []
    try:
        for models in groups:
            spec = fitted_to_data(TrainSpec(models=models), panel)
            plan = plan_backtest(panel, backtest_for(spec, panel))
            t0 = time.perf_counter()
            result = tune(panel, build_candidates(spec), plan.train_end, plan.val_start, budget)
            seconds = time.perf_counter() - t0
            group = "+".join(models)
            rows.append(
                {"group": group, "budget": budget, "busy": busy, "seconds": seconds, "trials": len(result.trials)}
            )
            print(f"{group:14s} budget {budget:4.0f} s busy {busy}: {seconds:6.1f} s, {len(result.trials)} trials")
    finally:
        stop.set()
        for p in spinners:
            p.join()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", default="esn+hopfield,rnn", help="comma-separated groups of candidates joined by +")
    ap.add_argument("--budgets", default="10,30", help="comma-separated budgets in seconds")
    ap.add_argument("--busy", type=int, default=3, help="spinning processes beside the busy runs")
    args = ap.parse_args()
    groups = [g.split("+") for g in args.groups.split(",")]
    for name in {n for models in groups for n in models}:
        try:
            create_model(name)  # an unknown name stops here, before any search
        except InputError as exc:
            ap.error(str(exc))
    budgets = [float(b) for b in args.budgets.split(",")]
    panel = nyc_weather_panel()
    for models in groups:  # heavy imports (TensorFlow, reservoirpy) are not billed to a search
        for m in build_candidates(fitted_to_data(TrainSpec(models=models), panel)).values():
            m.prepare_runtime()
    rows = [r for b in budgets for busy in (0, args.busy) for r in search(panel, groups, b, busy)]

    def cells(r: dict[str, Any]) -> list[str]:
        over = max(r["seconds"] - r["budget"], 0)
        ratio = r["seconds"] / r["budget"]
        return [r["group"], f"{r['budget']:.0f}", str(r["busy"]), f"{r['seconds']:.1f}", f"{ratio:.2f}", f"{over:.1f}"]

    table = [[*cells(r), str(r["trials"])] for r in rows]
    headers = ["candidates", "budget s", "busy processes", "wall time s", "wall / budget", "past the budget s"]
    body = markdown_table([*headers, "trials"], table)
    body += (
        "\nnyc-weather (3 series, hourly), validation slice as `train` cuts it, two folds. A trial starts only if "
        "its predicted time (seconds per unit of `relative_cost` so far x its own) fits what is left; network "
        "fits stop at the deadline, their building, tracing and scoring cannot. The busy runs share the 2 cores "
        f"with {args.busy} processes spinning on the CPU.\n"
    )
    write_section("Tuning: wall time against the budget", body)


if __name__ == "__main__":
    main()
