"""The default candidates on a large panel, through the CLI as a user runs it.

One synthetic hourly panel (`bench/scale.py`'s generator: N series x 90 days, two
variables), ingested, then `streamcast train --target temp` with every default candidate
and the default 30 origins: the wall time and peak resident memory of the whole train
(the process and its children, sampled every 50 ms), and each step's own time as the
CLI's progress reports it (a candidate's backtest, the winner's refit, MLflow logging,
registration), with its fit seconds and MASE.

    python bench/default_candidates.py [--series 1000] [--keep DIR]

--keep DIR keeps the store and the MLflow database in DIR (to read the champion's
ensemble weights or a candidate's runs afterwards); by default they are temporary.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table, write_section
from scale import DAYS, STREAMCAST, cli_env, ingest_csv, measure, panel

# "  ets: done: fit 248.8s, MASE 0.808          0:04:21" (a step, what it reports, its elapsed time)
STEP = re.compile(r"^\s*(?P<step>[\w ]+?): (?P<detail>.*?)\s+(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)\s*$")
DONE = re.compile(r"done: fit (?P<fit>[\d.]+)s, MASE (?P<mase>[\d.]+)")


def _elapsed(m: re.Match[str]) -> int:
    return int(m["h"]) * 3600 + int(m["m"]) * 60 + int(m["s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--keep", type=Path, help="keep the store and MLflow database in this new folder")
    args = ap.parse_args()
    n = args.series
    with tempfile.TemporaryDirectory(prefix="streamcast-candidates-") as tmp:
        data = Path(tmp) if args.keep is None else args.keep
        if args.keep is not None:
            data.mkdir(parents=True, exist_ok=False)
        env = cli_env(data)
        panel(n, 24 * DAYS).to_csv(data / "panel.csv", index=False)
        ingest = ingest_csv(data / "panel.csv", env)
        timeline: list[tuple[float, float]] = []
        wall, peak, printed = measure([STREAMCAST, "train", "--target", "temp"], env, timeline)
    print(printed)
    rows = []
    # Each step reports its own duration; steps run one after another from the command's
    # progress start (after its imports): a step's peak is the largest sample between the
    # end of the step before and its own end, shifted by the time before the first step.
    steps = [m for m in map(STEP.match, printed.splitlines()) if m is not None]
    offset = wall - sum(_elapsed(m) for m in steps)
    since = 0.0
    for m in steps:
        until = since + _elapsed(m)
        done = DONE.search(m["detail"])
        fit, mase = (f"{float(done['fit']):,.0f}", done["mase"]) if done else ("", "")
        step_peak = max((rss for t, rss in timeline if since <= t - offset <= until + 1), default=0.0)
        rows.append([m["step"], f"{_elapsed(m):,}", fit, mase, f"{step_peak:,.0f}"])
        since = until
    rows.append(["**train, whole command**", f"{wall:,.0f}", "", "", f"{peak:,.0f}"])
    winner = re.search(r"winner: (\S+) \(MASE ([\d.]+)\)", printed)
    body = (
        f"{n:,} synthetic hourly series x {DAYS} days (two variables; `bench/scale.py`'s generator), ingested "
        f"({ingest[0]:.0f} s), then `streamcast train --target temp`: every default candidate, 30 origins. "
        "Step seconds as the CLI's progress reports them (a candidate's backtest: fit, backtest forecasts, "
        "calibration; its fit seconds beside, the ensemble's being its members' together); a step's peak RSS: "
        "the largest sample while it ran (steps placed one after another from the end of the command). "
        f"Peak RSS of the train command and its children: {peak:,.0f} MB. "
        f"Winner: {winner.group(1) + ' (MASE ' + winner.group(2) + ')' if winner else '?'}.\n\n"
        + markdown_table(["step", "seconds", "fit s", "MASE", "peak RSS MB"], rows)
    )
    print(body)
    write_section(f"Default candidates at scale (N = {n:,})", body)


if __name__ == "__main__":
    main()
