"""How results look on a terminal: the one place that formats them, shared by the
``streamcast`` commands and ``make run``'s flow output (same columns, same decimals).

User data (series ids, file names, column names) goes into :class:`~rich.text.Text`
objects, never into markup: a series called ``[/bold]`` is printed, not parsed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

# Forecasts shown step by step, one table each, up to this many; more are one row per
# series, at most OVERVIEW_ROWS of them (a thousand tables help nobody; csv/json have all).
# `status` lists up to OVERVIEW_ROWS series row by row; more, per variable and those behind.
DETAILED_FORECASTS = 3
OVERVIEW_ROWS = 20


def ts_text(value: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored time as UTC text."""
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).strftime(fmt)


def _table(title: str, columns: Iterable[tuple[str, str]], **kw: Any) -> Table:
    t = Table(title=Text(title), title_justify="left", **kw)
    for label, justify in columns:
        t.add_column(label, justify=justify)  # type: ignore[arg-type]
    return t


def ingest_summary(summary: Any) -> Table:
    """One ingest's counts, per quarantine reason, and its speed."""
    t = _table(
        f"ingest {summary.source}: {summary.source_ref}", [("what", "left"), ("value", "right")], show_header=False
    )
    rows: list[tuple[str, str]] = [
        ("batch", str(summary.batch_id)),
        ("rows read", f"{summary.rows_read:,}"),
        ("observations", f"{summary.observations_read:,}"),
        ("new", f"{summary.new:,}"),
        ("updated (revisions)", f"{summary.updated:,}"),
        ("unchanged", f"{summary.unchanged:,}"),
    ]
    rows += [(f"quarantined: {r}", f"{n:,}") for r, n in summary.quarantined.items()] or [("quarantined", "0")]
    rows += [(f"empty cells: {v}", f"{n:,}") for v, n in summary.missing.items()]
    if summary.duplicates_dropped:
        rows.append(("identical duplicates dropped", f"{summary.duplicates_dropped:,}"))
    if summary.ignored_columns:
        rows.append(("ignored non-numeric columns", ", ".join(summary.ignored_columns)))
    rows += [
        ("watermark", summary.watermark.isoformat() if summary.watermark is not None else "-"),
        ("elapsed", f"{summary.elapsed_seconds:.2f} s"),
        ("rows/s", f"{summary.rows_per_second:,.0f}"),
        ("observations/s", f"{summary.observations_per_second:,.0f}"),
    ]
    for what, value in rows:
        t.add_row(Text(what, style="bold"), Text(value))
    return t


def store_status(status: Any) -> list[RenderableType]:
    """``streamcast status``: per series and variable, quarantine, last batch, forecast counts."""
    out: list[RenderableType] = [
        Text(f"store: {status.store}"),
        Text(f"MLflow: {status.tracking_uri}"),
        Text(f"data folder: {status.data_dir}"),
        Text(f"settings: {status.config_file or 'environment and defaults (no streamcast.toml found)'}"),
    ]
    series = status.series
    if series.empty:
        out.append(Text.assemble("no observations yet: run ", ("streamcast ingest", "bold")))
    elif series["series_id"].nunique() <= OVERVIEW_ROWS:
        out.append(_observations_table("observations", series))
    else:  # hundreds of series: per variable, then the rows furthest behind (--json has every row)
        # Behind: how long before its variable's newest observation a series' last one is.
        lagged = series.assign(lag=series.groupby("variable")["last_ts"].transform("max") - series["last_ts"])
        out.append(_variables_table(lagged))
        order = lagged.sort_values(["lag", "series_id", "variable"], ascending=[False, True, True])
        behind = order.head(OVERVIEW_ROWS)
        shown = len(behind)
        title = (
            f"observations: the {shown} series and variables furthest behind"
            if lagged["lag"].gt(pd.Timedelta(0)).any()
            else f"observations: the first {shown} series and variables (none behind)"
        )
        out.append(_observations_table(title, behind))
        rest = len(series) - len(behind)
        out.append(Text(f"... and {rest:,} more: `streamcast status --json` lists every series and variable"))
    detail = ", ".join(f"{k}: {v:,}" for k, v in status.quarantine.items())
    out.append(Text(f"quarantine: {sum(status.quarantine.values()):,}" + (f" ({detail})" if detail else "")))
    last = status.last_batch
    if last:
        out.append(
            Text(
                f"last batch: #{last['id']} {last['source']} {last['source_ref'] or ''} at "
                f"{ts_text(last['finished_at'] or last['started_at'], '%Y-%m-%d %H:%M:%S UTC')}: {last['new']:,} new, "
                f"{last['updated']:,} updated, {last['unchanged']:,} unchanged, {last['quarantined']:,} quarantined"
            )
        )
    out.append(Text(f"forecasts: {status.tables['forecasts']:,} points; scores: {status.tables['scores']:,}"))
    return out


def _observations_table(title: str, series: pd.DataFrame) -> Table:
    t = _table(
        title,
        [
            ("series", "left"),
            ("variable", "left"),
            ("count", "right"),
            ("first ts (UTC)", "left"),
            ("last ts (UTC)", "left"),
            ("revised", "right"),
        ],
    )
    for r in series.itertuples(index=False):
        cells = (r.series_id, r.variable, f"{r.count:,}", ts_text(r.first_ts), ts_text(r.last_ts), f"{r.revised:,}")
        t.add_row(*(Text(str(c)) for c in cells))
    return t


def _variables_table(series: pd.DataFrame) -> Table:
    """Per variable: how many series, observations and revisions, the time span, and how many
    series are behind its newest observation (``series``' ``lag``)."""
    t = _table(
        "observations by variable",
        [
            ("variable", "left"),
            ("series", "right"),
            ("count", "right"),
            ("first ts (UTC)", "left"),
            ("last ts (UTC)", "left"),
            ("series behind", "right"),
            ("revised", "right"),
        ],
    )
    for variable, g in series.groupby("variable", sort=True):
        cells = (
            variable,
            f"{g['series_id'].nunique():,}",
            f"{int(g['count'].sum()):,}",
            ts_text(g["first_ts"].min()),
            ts_text(g["last_ts"].max()),
            f"{int(g['lag'].gt(pd.Timedelta(0)).sum()):,}",
            f"{int(g['revised'].sum()):,}",
        )
        t.add_row(*(Text(str(c)) for c in cells))
    return t


COMPARISON_TITLE = "model comparison (rolling-origin backtest, best first)"


def comparison(rows: Iterable[Mapping[str, Any]], title: str = COMPARISON_TITLE) -> Table:
    """The model comparison, best first (the winner in bold green)."""
    t = _table(
        title,
        [("candidate", "left"), *((c, "right") for c in ("MASE", "MAE", "RMSE", "sMAPE %", "90% coverage", "fit s"))],
    )
    for i, r in enumerate(rows):
        t.add_row(
            Text(str(r["candidate"])),
            f"{r['mase']:.3f}",
            f"{r['mae']:.2f}",
            f"{r['rmse']:.2f}",
            f"{r['smape']:.1f}",
            f"{r['coverage']:.1%}",
            f"{r['fit_seconds']:.1f}",
            style="bold green" if i == 0 else None,
        )
    return t


def training(outcome: Any, tune_budget_seconds: float = 0.0) -> list[RenderableType]:
    """``streamcast train``: the backtest window, tuning, the comparison and the registry's decision."""
    res, reg = outcome.result, outcome.registry
    cfg = res.config
    out: list[RenderableType] = [
        Text(
            f"backtest: {len(res.origins)} origins from {ts_text(res.origins[0])} to {ts_text(res.origins[-1])} UTC, "
            f"H={cfg.horizon}; trained on data up to the first origin, validation from {ts_text(res.val_start)}"
        )
    ]
    if cfg.fitted_to_history:
        out.append(
            Text(
                f"the history is too short for the default backtest: {cfg.folds} origins and a {cfg.val_steps}-step "
                "validation slice instead (pass --folds to choose)"
            )
        )
    if outcome.tuning is not None:
        tu = outcome.tuning
        out.append(Text(f"tuning: {len(tu.trials)} trials in {tu.seconds:.0f} s (budget {tune_budget_seconds:.0f} s)"))
        for name, params in tu.best.items():
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            out.append(Text(f"  {name}: {shown} (validation error {tu.best_value[name]:.4f})"))
    if res.scale_fallbacks:
        shown = ", ".join(f"{sid} ({basis})" for sid, basis in list(res.scale_fallbacks.items())[:5])
        more = f" and {len(res.scale_fallbacks) - 5} more" if len(res.scale_fallbacks) > 5 else ""
        out.append(
            Text(
                f"MASE scale: the seasonal naive error is zero or undefined for {shown}{more}; "
                "their MASE divides by the naive error instead (unit: by 1, the MAE itself)"
            )
        )
    out.append(comparison(outcome.comparison.to_dict("records")))
    best = outcome.comparison.iloc[0]
    out.append(
        Text.assemble(
            "winner: ",
            (str(best["candidate"]), "bold"),
            f" (MASE {best['mase']:.3f}); 90% interval coverage over the backtest: {best['coverage']:.1%}",
        )
    )
    if reg.alias == "champion":
        prev = (
            f" (beat version {reg.previous_champion}: MASE {reg.previous_champion_mase:.3f} on the same window)"
            if reg.previous_champion
            else " (first champion)"
        )
        out.append(Text.assemble(f"registered {reg.name} version {reg.version} as ", ("@champion", "bold green"), prev))
    else:
        out.append(
            Text.assemble(
                f"registered {reg.name} version {reg.version} as ",
                ("@challenger", "bold yellow"),
                f": champion version {reg.previous_champion} keeps its alias (MASE "
                f"{reg.previous_champion_mase:.3f} vs {reg.new_mase:.3f} on the same window)"
                + (f" although it is better here: {reg.held_back}" if reg.held_back else ""),
            )
        )
    if reg.refit_through:
        refit = f"version {reg.version} is {best['candidate']} refit on all the data (through {reg.refit_through})"
        out.append(Text(refit))
    return out


def _unit(unit: str | None) -> str:
    return f" ({unit})" if unit else ""


def forecast_tables(payload: list[dict[str, Any]]) -> list[Table]:
    """One table per forecast: every step with its interval."""
    tables = []
    for fc in payload:
        t = _table(
            f"{fc['series_id']} {fc['target']}{_unit(fc.get('unit'))}: issued {fc['issued_at'][:19]}Z "
            f"from origin {fc['origin_ts'][:16]}Z "
            f"by {fc['model']['name']} v{fc['model']['version']}",
            [("step", "right"), ("ts (UTC)", "left"), ("yhat", "right"), ("lo", "right"), ("hi", "right")],
        )
        for p in fc["points"]:
            t.add_row(
                str(p["step"]),
                p["ts"][:16].replace("T", " "),
                f"{p['yhat']:.1f}",
                "-" if p["lo"] is None else f"{p['lo']:.1f}",
                "-" if p["hi"] is None else f"{p['hi']:.1f}",
            )
        tables.append(t)
    return tables


def shown_points(points: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The points :func:`forecasts_view` shows (those of the first ``OVERVIEW_ROWS`` series),
    and how many forecasts there are in all: the rest is never turned into payloads."""
    total = points["forecast_id"].nunique()
    if total <= OVERVIEW_ROWS:
        return points, total
    first = sorted(points["series_id"].unique())[:OVERVIEW_ROWS]
    return points[points["series_id"].isin(first)], total


def forecasts_view(payload: list[dict[str, Any]], target: str, total: int | None = None) -> list[RenderableType]:
    """A few forecasts in full; many as one overview row each, bounded, with where to find the
    rest (``total``: how many forecasts there are, when ``payload`` holds only those shown)."""
    total = len(payload) if total is None else total
    if total <= DETAILED_FORECASTS:
        return list(forecast_tables(payload))
    out: list[RenderableType] = [latest_overview(payload[:OVERVIEW_ROWS], target)]
    if total > OVERVIEW_ROWS:
        out.append(
            Text(
                f"... and {total - OVERVIEW_ROWS:,} more series: `streamcast predictions latest --target "
                f"{target} --format csv` lists every point, `--series ID` one series step by step"
            )
        )
    return out


def latest_overview(payload: list[dict[str, Any]], target: str, first: int = 6) -> Table:
    """One row per series: the first hours of its latest forecast and the last one with its interval."""
    steps = [f"+{h}h" for h in range(1, first + 1)]
    horizon = max((len(f["points"]) for f in payload), default=24)
    t = _table(
        f"latest {target}{_unit(next((f.get('unit') for f in payload), None))} forecast per series "
        f"(first {first} of {horizon} hours)",
        [(c, "left") for c in ("series", "origin (UTC)", "model", *steps, f"+{horizon}h")],
    )
    for f in payload:
        pts, last = f["points"], f["points"][-1]
        band = f" [{last['lo']:.1f}, {last['hi']:.1f}]" if last["lo"] is not None else ""
        t.add_row(
            Text(f["series_id"]),
            f["origin_ts"][:16].replace("T", " "),
            Text(f"{f['model']['name']} v{f['model']['version']}"),
            *[f"{p['yhat']:.1f}" for p in pts[:first]],
            f"{last['yhat']:.1f}{band}",
        )
    return t


def live_scores(table: pd.DataFrame, triggers: pd.DataFrame, target: str) -> list[RenderableType]:
    out: list[RenderableType] = []
    if table.empty:
        out.append(Text("no scored forecasts yet: scores appear once forecast times have passed (streamcast stream)"))
    else:
        t = _table(
            f"live error of {target} forecasts by model and step",
            [("model", "left"), *((c, "right") for c in ("version", "step", "n", "MAE", "MASE", "coverage"))],
        )
        for r in table.to_dict("records"):
            mase = "-" if r["mase"] is None else f"{r['mase']:.3f}"
            coverage = "-" if r.get("coverage") is None else f"{r['coverage']:.1%}"
            t.add_row(
                Text(str(r["model_name"])),
                str(r["model_version"]),
                str(r["step"]),
                f"{r['n']:,}",
                f"{r['mae']:.3f}",
                mase,
                coverage,
            )
        out.append(t)
    for r in triggers.to_dict("records"):
        out.append(Text(f"retrain {r['triggered_at']}: {r['reason']} ({r['detail']}) -> {r['outcome']}"))
    return out


def stream_progress(s: Mapping[str, Any]) -> Text:
    return Text(
        f"{s['batches']:,} batches, {s['observations']:,} observations ({s['new']:,} new), "
        f"{s['forecasts']:,} forecasts, {s['scored_points']:,} points scored, "
        f"latency p50 {s['latency_p50_ms']:.1f} ms p99 {s['latency_p99_ms']:.1f} ms"
    )


def stream_done(s: Mapping[str, Any]) -> Text:
    return Text(
        f"done: {s['batches']:,} batches, {s['observations']:,} observations ({s['new']:,} new, "
        f"{s['unchanged']:,} unchanged, {s['quarantined']:,} quarantined), {s['forecasts']:,} forecasts, "
        f"{s['scored_points']:,} points scored, {len(s['retrains'])} retrain(s); observation-to-forecast "
        f"latency p50 {s['latency_p50_ms']:.1f} ms, p99 {s['latency_p99_ms']:.1f} ms (first batch "
        f"{s['first_batch_ms']:.0f} ms, loading the champion)"
    )
