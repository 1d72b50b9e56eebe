"""The ``streamcast`` command line.

Light commands (``status``, ``ingest``, ``predictions``, ``serve``) never import
TensorFlow; heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from pipeline.config import Settings, get_settings
from pipeline.errors import StreamcastError

app = typer.Typer(
    name="streamcast",
    help="Streaming time-series forecasting: ingest, train and compare, register, forecast, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class Source(StrEnum):
    nyc_weather = "nyc-weather"
    csv = "csv"
    parquet = "parquet"
    landing = "landing"
    open_meteo = "open-meteo"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _fail(exc: StreamcastError) -> None:
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def _store(settings: Settings) -> Any:
    from pipeline.store import Store

    return Store(settings.database_url)


def _print_ingest_summary(summary: Any) -> None:
    table = Table(title=f"ingest {summary.source}: {summary.source_ref}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("batch", str(summary.batch_id))
    table.add_row("rows read", f"{summary.rows_read:,}")
    table.add_row("observations", f"{summary.observations_read:,}")
    table.add_row("new", f"{summary.new:,}")
    table.add_row("updated (revisions)", f"{summary.updated:,}")
    table.add_row("unchanged", f"{summary.unchanged:,}")
    if summary.quarantined:
        for reason, n in summary.quarantined.items():
            table.add_row(f"quarantined: {reason}", f"{n:,}")
    else:
        table.add_row("quarantined", "0")
    if summary.duplicates_dropped:
        table.add_row("identical duplicates dropped", f"{summary.duplicates_dropped:,}")
    if summary.ignored_columns:
        table.add_row("ignored non-numeric columns", ", ".join(summary.ignored_columns))
    table.add_row("watermark", summary.watermark.isoformat() if summary.watermark is not None else "-")
    table.add_row("elapsed", f"{summary.elapsed_seconds:.2f} s")
    table.add_row("rows/s", f"{summary.rows_per_second:,.0f}")
    table.add_row("observations/s", f"{summary.observations_per_second:,.0f}")
    console.print(table)


@app.command()
def ingest(
    source: Source = typer.Option(
        Source.nyc_weather, "--source", help="nyc-weather (bundled), csv, parquet or landing."
    ),
    path: Path | None = typer.Option(None, "--path", help="File to ingest (csv, parquet) or landing folder."),
    time_col: str | None = typer.Option(
        None, "--time-col", help="Time column (default: first of ts, timestamp, time, time_hour, date, ds)."
    ),
    series_col: str | None = typer.Option(None, "--series-col", help="Column holding the series id."),
    series_id: str = typer.Option("default", "--series-id", help="Series id when there is no --series-col."),
    tz: str = typer.Option("UTC", "--tz", help="Time zone of naive timestamps."),
    latitude: float | None = typer.Option(None, "--latitude", min=-90, max=90, help="open-meteo: latitude."),
    longitude: float | None = typer.Option(None, "--longitude", min=-180, max=180, help="open-meteo: longitude."),
    variables: str | None = typer.Option(None, "--variables", help="open-meteo: comma-separated hourly variables."),
    start: str | None = typer.Option(None, "--start", help="open-meteo: archive start date (YYYY-MM-DD)."),
    end: str | None = typer.Option(None, "--end", help="open-meteo: archive end date (YYYY-MM-DD)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Ingest observations into the store (idempotent; bad rows are quarantined)."""
    from pipeline import ingest as ing

    settings = get_settings()
    store = _store(settings)
    try:
        if source == Source.nyc_weather:
            summaries = [ing.ingest_dataset(store, "nyc-weather", settings)]
        elif source == Source.open_meteo:
            summaries = [_ingest_open_meteo(store, settings, latitude, longitude, variables, series_id, start, end)]
        elif source in (Source.csv, Source.parquet):
            if path is None:
                raise typer.BadParameter("--path is required for csv and parquet", param_hint="--path")
            _check_tz(tz)
            summaries = [
                ing.ingest_file(
                    store,
                    path,
                    settings,
                    fmt=source.value,
                    time_col=time_col,
                    series_col=series_col,
                    series_id=series_id,
                    tz=tz,
                )
            ]
        else:
            _check_tz(tz)
            result = ing.ingest_landing(
                store, settings, path, time_col=time_col, series_col=series_col, series_id=series_id, tz=tz
            )
            summaries = result.ingested
            for name in result.already_seen:
                console.print(f"landing: {name} already ingested (same content); moved to done/")
            for name, msg in result.failed.items():
                err_console.print(f"[bold red]landing: {name} failed:[/] {msg} (moved to failed/)", highlight=False)
            if not (result.ingested or result.already_seen or result.failed):
                console.print(f"landing: no new files in {path or settings.landing_dir}")
    except StreamcastError as exc:
        _fail(exc)
        return
    finally:
        store.dispose()
    if as_json:
        print(json.dumps([s.to_dict() for s in summaries], default=str, indent=2))
    else:
        for s in summaries:
            _print_ingest_summary(s)


def _ingest_open_meteo(
    store: Any,
    settings: Settings,
    latitude: float | None,
    longitude: float | None,
    variables: str | None,
    series_id: str,
    start: str | None,
    end: str | None,
) -> Any:
    from pipeline.errors import InputError
    from pipeline.ingest import ingest_frame
    from pipeline.sources.open_meteo import DEFAULT_VARIABLES, OpenMeteoClient, observations_frame

    if latitude is None or longitude is None:
        raise InputError("--source open-meteo needs --latitude and --longitude")
    names = [v.strip() for v in variables.split(",") if v.strip()] if variables else DEFAULT_VARIABLES
    client = OpenMeteoClient(settings.open_meteo_url, settings.open_meteo_archive_url)
    try:
        hourly = client.hourly(latitude, longitude, names, start=start, end=end)
    finally:
        client.close()
    sid = series_id if series_id != "default" else f"{latitude:.2f},{longitude:.2f}"
    frame = observations_frame(hourly, sid)
    if frame.empty:
        raise InputError("open-meteo returned no hourly values up to now")
    return ingest_frame(
        store,
        frame,
        source="open-meteo",
        source_ref=f"{latitude},{longitude}",
        settings=settings,
        time_col="ts",
        series_col="series_id",
    )


def _check_tz(tz: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        from pipeline.errors import InputError

        _fail(InputError(f"unknown time zone {tz!r} (use an IANA name such as UTC or America/New_York)"))


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Show what the store holds: per series and variable, quarantine, last batch."""
    settings = get_settings()
    store = _store(settings)
    try:
        summary = store.series_summary()
        quarantine = store.quarantine_counts()
        last = store.last_batch()
        counts = store.table_counts()
    finally:
        store.dispose()
    if as_json:
        out = {
            "store": _redact(settings.database_url),
            "series": [
                {**r, "first_ts": r["first_ts"].isoformat(), "last_ts": r["last_ts"].isoformat()}
                for r in summary.to_dict("records")
            ],
            "quarantine": quarantine,
            "tables": counts,
            "last_batch": last,
        }
        print(json.dumps(out, default=str, indent=2))
        return
    console.print(f"store: {_redact(settings.database_url)}", highlight=False)
    if summary.empty:
        console.print("no observations yet: run [bold]streamcast ingest[/]")
    else:
        table = Table(title="observations", title_justify="left")
        for col, just in (
            ("series", "left"),
            ("variable", "left"),
            ("count", "right"),
            ("first ts (UTC)", "left"),
            ("last ts (UTC)", "left"),
            ("revised", "right"),
        ):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for r in summary.itertuples(index=False):
            table.add_row(
                r.series_id,
                r.variable,
                f"{r.count:,}",
                r.first_ts.strftime("%Y-%m-%d %H:%M"),
                r.last_ts.strftime("%Y-%m-%d %H:%M"),
                f"{r.revised:,}",
            )
        console.print(table)
    q_total = sum(quarantine.values())
    detail = ", ".join(f"{k}: {v:,}" for k, v in quarantine.items())
    console.print(f"quarantine: {q_total:,}" + (f" ({detail})" if detail else ""))
    if last:
        console.print(
            f"last batch: #{last['id']} {last['source']} {last['source_ref'] or ''} at "
            f"{_fmt_ts(last['finished_at'] or last['started_at'])}: {last['new']:,} new, {last['updated']:,} updated, "
            f"{last['unchanged']:,} unchanged, {last['quarantined']:,} quarantined",
            highlight=False,
        )
    console.print(f"forecasts: {counts['forecasts']:,} points; scores: {counts['scores']:,}")


def print_comparison(table: Any, title: str = "comparison (rolling-origin backtest)") -> None:
    """The model comparison, best first."""
    t = Table(title=title, title_justify="left")
    for col, label in (
        ("candidate", "candidate"),
        ("mase", "MASE"),
        ("mae", "MAE"),
        ("rmse", "RMSE"),
        ("smape", "sMAPE %"),
        ("coverage", "90% coverage"),
        ("fit_seconds", "fit s"),
    ):
        t.add_column(label, justify="left" if col == "candidate" else "right")
    for i, r in enumerate(table.to_dict("records")):
        style = "bold green" if i == 0 else None
        t.add_row(
            str(r["candidate"]),
            f"{r['mase']:.3f}",
            f"{r['mae']:.3f}",
            f"{r['rmse']:.3f}",
            f"{r['smape']:.2f}",
            f"{r['coverage']:.1%}",
            f"{r['fit_seconds']:.1f}",
            style=style,
        )
    console.print(t)


@app.command()
def train(
    target: str = typer.Option("temp", "--target", help="Variable to forecast."),
    models: str = typer.Option(
        "naive,seasonal_naive,esn,hopfield,rnn,lstm,cnn,cnn_lstm,ensemble",
        "--models",
        help="Comma-separated candidates.",
    ),
    horizon: int = typer.Option(24, "--horizon", min=1, help="Steps forecast at once (H)."),
    folds: int = typer.Option(30, "--folds", min=1, help="Backtest origins (F), 24 steps apart."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Max epochs for Keras candidates."),
    seed: int = typer.Option(42, "--seed", help="Random seed (same seed, same metrics)."),
    tune_minutes: float = typer.Option(
        0.0, "--tune-minutes", min=0, help="Optuna budget (minutes, all candidates) on the validation slice."
    ),
) -> None:
    """Backtest the candidates, log to MLflow, register the winner (champion/challenger gate)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from pipeline import training

    settings = get_settings()
    names = [m.strip() for m in models.split(",") if m.strip()]
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(name: str, stage: str) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"{name}: {stage}", total=1)
            elif stage == "done":
                progress.update(tasks[name], description=f"{name}: done", completed=1)
                return
            progress.update(tasks[name], description=f"{name}: {stage}")

        try:
            outcome = training.train(
                settings,
                target=target,
                models=names,
                horizon=horizon,
                folds=folds,
                epochs=epochs,
                seed=seed,
                on_progress=on_progress,
            )
        except ValueError as exc:
            from pipeline.errors import InputError

            _fail(InputError(str(exc)))
            return
        for task in tasks.values():
            progress.update(task, completed=1)
    res = outcome.result
    console.print(
        f"backtest: {len(res.origins)} origins from {res.origins[0]:%Y-%m-%d %H:%M} to "
        f"{res.origins[-1]:%Y-%m-%d %H:%M} UTC, H={horizon}; trained on data up to the first origin, "
        f"validation from {res.val_start:%Y-%m-%d %H:%M}",
        highlight=False,
    )
    if outcome.tuning is not None:
        tu = outcome.tuning
        console.print(f"tuning: {len(tu.trials)} trials in {tu.seconds:.0f} s (budget {tune_minutes * 60:.0f} s)")
        for name, params in tu.best.items():
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            console.print(f"  {name}: {shown} (validation error {tu.best_value[name]:.4f})", highlight=False)
    print_comparison(outcome.comparison)
    reg = outcome.registry
    best = outcome.comparison.iloc[0]
    console.print(
        f"winner: [bold]{best['candidate']}[/] (MASE {best['mase']:.3f}); 90% interval coverage "
        f"over the backtest: {best['coverage']:.1%}"
    )
    if reg.alias == "champion":
        prev = (
            f" (beat version {reg.previous_champion}: MASE {reg.previous_champion_mase:.3f} on the same window)"
            if reg.previous_champion
            else " (first champion)"
        )
        console.print(f"registered {reg.name} version {reg.version} as [bold green]@champion[/]{prev}")
    else:
        console.print(
            f"registered {reg.name} version {reg.version} as [bold yellow]@challenger[/]: champion version "
            f"{reg.previous_champion} keeps its alias (MASE {reg.previous_champion_mase:.3f} vs {reg.new_mase:.3f} "
            "on the same window)"
        )
    console.print(f"MLflow: {settings.tracking_uri}  run {outcome.runs.parent_run_id}", highlight=False)


@app.command()
def forecast(
    target: str = typer.Option("temp", "--target", help="Variable to forecast."),
    series: list[str] | None = typer.Option(None, "--series", help="Series to forecast (repeatable; default: all)."),
) -> None:
    """Forecast every series from its latest observations with the champion; store the points."""
    from pipeline.errors import InputError
    from pipeline.forecasting import issue_forecast

    settings = get_settings()
    try:
        fc = issue_forecast(settings, target=target, series=series or None)
    except (LookupError, ValueError) as exc:
        _fail(InputError(str(exc).strip("'\"")))
        return
    first = fc.iloc[0]
    console.print(
        f"issued {fc['forecast_id'].nunique()} forecast(s) of {target} with {first['model_name']} "
        f"(streamcast-{target} version {first['model_version']}), {len(fc):,} points",
        highlight=False,
    )
    _print_latest(fc)


predictions_app = typer.Typer(help="Query stored forecasts.", no_args_is_help=True)
app.add_typer(predictions_app, name="predictions")


def _print_latest(points: Any) -> None:
    from pipeline.queries import latest_payload

    for fc in latest_payload(points):
        t = Table(
            title=f"{fc['series_id']} {fc['target']}: issued {fc['issued_at'][:19]}Z "
            f"from origin {fc['origin_ts'][:16]}Z by {fc['model']['name']} v{fc['model']['version']}",
            title_justify="left",
        )
        for col in ("step", "ts (UTC)", "yhat", "lo", "hi"):
            t.add_column(col, justify="left" if col == "ts (UTC)" else "right")
        for p in fc["points"]:
            t.add_row(
                str(p["step"]),
                p["ts"][:16].replace("T", " "),
                f"{p['yhat']:.1f}",
                "-" if p["lo"] is None else f"{p['lo']:.1f}",
                "-" if p["hi"] is None else f"{p['hi']:.1f}",
            )
        console.print(t)


@predictions_app.command("latest")
def predictions_latest(
    series: str | None = typer.Option(None, "--series", help="One series id (default: every series)."),
    target: str = typer.Option("temp", "--target", help="Forecast variable."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or csv."),
) -> None:
    """The most recent forecast per series."""
    from pipeline.errors import InputError

    settings = get_settings()
    store = _store(settings)
    try:
        if series is not None and series not in store.series_ids():
            _fail(InputError(f"unknown series {series!r}"))
        points = store.latest_forecasts(series_id=series, target=target)
    finally:
        store.dispose()
    if points.empty:
        _fail(InputError(f"no forecasts of {target!r} yet: run `streamcast forecast --target {target}`"))
    if fmt == OutputFormat.json:
        from pipeline.queries import latest_payload

        print(json.dumps(latest_payload(points), indent=2))
    elif fmt == OutputFormat.csv:
        out = points.copy()
        for c in ("issued_at", "origin_ts", "ts"):
            out[c] = out[c].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        sys.stdout.write(out.to_csv(index=False))
    else:
        _print_latest(points)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (each reads the store)."),
) -> None:
    """Serve the HTTP API and dashboard (reads the store only; loads no model)."""
    import uvicorn

    console.print(f"streamcast API on http://{host}:{port}/  (docs: /docs)", highlight=False)
    if workers > 1:
        uvicorn.run("pipeline.api:create_app", factory=True, host=host, port=port, workers=workers, log_level="warning")
    else:
        from pipeline.api import create_app

        uvicorn.run(create_app(get_settings()), host=host, port=port, log_level="warning")


class StreamSource(StrEnum):
    replay = "replay"
    redis = "redis"
    open_meteo = "open-meteo"


@app.command()
def stream(
    source: StreamSource = typer.Option(StreamSource.replay, "--source", help="replay (bundled dataset) or redis."),
    dataset: str = typer.Option("nyc-weather", "--dataset", help="Dataset to replay."),
    speed: float = typer.Option(3600.0, "--speed", min=0, help="Simulated seconds per real second (0: no waiting)."),
    start: str | None = typer.Option(None, "--from", help="Replay from this time (ISO 8601, UTC)."),
    until: str | None = typer.Option(None, "--until", help="Replay until this time (ISO 8601, UTC)."),
    stream_name: str = typer.Option("streamcast:observations", "--stream", help="Redis stream name."),
    group: str = typer.Option("streamcast", "--group", help="Redis consumer group."),
    consumer: str = typer.Option("streamcast-1", "--consumer", help="Consumer name within the group."),
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0", "--redis-url"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Redis entries per batch."),
    stop_after_idle: float | None = typer.Option(None, "--stop-after-idle", help="Stop after N idle seconds (redis)."),
    claim_idle_ms: int = typer.Option(
        10_000, "--claim-idle-ms", min=0, help="Claim entries another consumer left pending this long (redis)."
    ),
    latitude: float | None = typer.Option(None, "--latitude", min=-90, max=90, help="open-meteo: latitude."),
    longitude: float | None = typer.Option(None, "--longitude", min=-180, max=180, help="open-meteo: longitude."),
    variables: str | None = typer.Option(None, "--variables", help="open-meteo: hourly variables."),
    poll_seconds: float = typer.Option(900.0, "--poll-seconds", min=0, help="open-meteo: seconds between polls."),
    max_polls: int | None = typer.Option(None, "--max-polls", min=1, help="open-meteo: stop after N polls."),
    series_id: str | None = typer.Option(None, "--series-id", help="open-meteo: series id (default lat,lon)."),
    target: str = typer.Option("temp", "--target"),
    retrain_models: str = typer.Option(
        "naive,seasonal_naive,esn",
        "--retrain-models",
        help="Candidates compared when drift or the interval triggers a retrain.",
    ),
) -> None:
    """Process observations as they arrive: store, advance the champion, forecast, score, retrain."""
    import pandas as pd

    from pipeline.errors import InputError
    from pipeline.streaming import StreamProcessor

    settings = get_settings()

    def retrain(tgt: str) -> None:
        from pipeline.training import train as run_training

        run_training(settings, target=tgt, models=[m for m in retrain_models.split(",") if m])

    try:
        t0 = pd.Timestamp(start) if start else None
        t1 = pd.Timestamp(until) if until else None
    except ValueError as exc:
        _fail(InputError(f"bad --from/--until: {exc}"))
        return
    if source == StreamSource.replay:
        from pipeline.sources.replay import replay_batches, replay_frame

        frame = replay_frame(dataset, t0, t1)
        if frame.empty:
            _fail(InputError(f"nothing to replay from {dataset} between {start or 'start'} and {until or 'end'}"))
        batches = replay_batches(frame, speed)
        console.print(
            f"replaying {dataset}: {frame['ts'].nunique():,} timestamps, {len(frame):,} rows "
            f"from {frame['ts'].min():%Y-%m-%d %H:%M} to {frame['ts'].max():%Y-%m-%d %H:%M} UTC "
            f"at speed {speed:g}",
            highlight=False,
        )
    elif source == StreamSource.open_meteo:
        from pipeline.sources.open_meteo import DEFAULT_VARIABLES, OpenMeteoClient, poll_batches

        if latitude is None or longitude is None:
            _fail(InputError("--source open-meteo needs --latitude and --longitude"))
            return
        names = [v.strip() for v in variables.split(",") if v.strip()] if variables else DEFAULT_VARIABLES
        client = OpenMeteoClient(settings.open_meteo_url, settings.open_meteo_archive_url)
        sid = series_id or f"{latitude:.2f},{longitude:.2f}"
        batches = poll_batches(client, latitude, longitude, names, sid, poll_seconds, max_polls)
        console.print(f"polling open-meteo every {poll_seconds:g}s for {sid}: {', '.join(names)}", highlight=False)
    else:
        from pipeline.sources.redis_stream import RedisStreamSource

        src = RedisStreamSource(
            redis_url,
            stream_name,
            group,
            consumer,
            batch_size=batch_size,
            claim_idle_ms=claim_idle_ms,
            stop_after_idle_s=stop_after_idle,
        )
        batches = src.batches()
        console.print(f"consuming {stream_name} as {group}/{consumer} on {redis_url}", highlight=False)
    processor = StreamProcessor(settings, target=target, retrain=retrain)

    def report(stats: Any) -> None:
        if stats.batches % 100 == 0:
            s = stats.summary()
            console.print(
                f"{s['batches']:,} batches, {s['observations']:,} observations ({s['new']:,} new), "
                f"{s['forecasts']:,} forecasts, {s['scored_points']:,} points scored, "
                f"latency p50 {s['latency_p50_ms']:.1f} ms p99 {s['latency_p99_ms']:.1f} ms",
                highlight=False,
            )

    try:
        stats = processor.run(batches, on_batch=report)
    except LookupError as exc:
        _fail(InputError(str(exc).strip("'\"")))
        return
    except KeyboardInterrupt:
        stats = processor.stats
    finally:
        processor.close()
    s = stats.summary()
    console.print(
        f"done: {s['batches']:,} batches, {s['observations']:,} observations ({s['new']:,} new, "
        f"{s['unchanged']:,} unchanged, {s['quarantined']:,} quarantined), {s['forecasts']:,} forecasts, "
        f"{s['scored_points']:,} points scored, {len(s['retrains'])} retrain(s); observation-to-forecast "
        f"latency p50 {s['latency_p50_ms']:.1f} ms, p99 {s['latency_p99_ms']:.1f} ms (first batch "
        f"{s['first_batch_ms']:.0f} ms, loading the champion)",
        highlight=False,
    )


@app.command()
def scores(target: str = typer.Option("temp", "--target"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Live error of matured forecast points by model and step."""
    settings = get_settings()
    store = _store(settings)
    try:
        table = store.live_scores(target)
        triggers = store.retrain_triggers()
    finally:
        store.dispose()
    if as_json:
        print(
            json.dumps(
                {"scores": table.to_dict("records"), "retrains": triggers.astype(str).to_dict("records")},
                default=str,
                indent=2,
            )
        )
        return
    if table.empty:
        console.print("no scored forecasts yet: scores appear once forecast times have passed (streamcast stream)")
    else:
        t = Table(title=f"live error of {target} forecasts by model and step", title_justify="left")
        for col in ("model", "version", "step", "n", "MAE", "MASE"):
            t.add_column(col, justify="left" if col == "model" else "right")
        for r in table.to_dict("records"):
            t.add_row(
                r["model_name"],
                str(r["model_version"]),
                str(r["step"]),
                f"{r['n']:,}",
                f"{r['mae']:.3f}",
                "-" if r["mase"] is None else f"{r['mase']:.3f}",
            )
        console.print(t)
    for r in triggers.to_dict("records"):
        console.print(f"retrain {r['triggered_at']}: {r['reason']} ({r['detail']}) -> {r['outcome']}", highlight=False)


def _fmt_ts(value: Any) -> str:
    import pandas as pd

    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    """The ``streamcast`` console script: any :class:`StreamcastError` a command does not
    handle itself (a store that cannot be upgraded, say) is one line and an exit code."""
    try:
        app()
    except StreamcastError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
