"""The ``streamcast`` commands: each builds a spec from its options, calls one service
function and renders the result (:mod:`streamcast.cli.render`). Nothing is decided here.

Light commands (``status``, ``ingest``, ``predictions``, ``serve``) never import
TensorFlow; heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperOption

from streamcast import queries, services
from streamcast.cli import render
from streamcast.config import DEFAULT_TARGET, get_settings
from streamcast.errors import NotFoundError, StreamcastError
from streamcast.models import candidates
from streamcast.specs import IngestSpec, Spec, StreamSpec, TrainSpec, split_targets

_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN", "Path": "PATH"}


def _metavar(self: TyperOption, ctx: Any) -> str | None:
    """Help shows plain metavars (TEXT, INTEGER, FLOAT, PATH, [a|b]) and none for a flag,
    where typer 0.29 prints ``<bool>`` for every flag and ``<list[str]>`` for a list."""
    if self.is_flag or self.count:
        return None
    if self.metavar is not None:
        return self.metavar
    desc = self.type_descriptor
    if desc.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices or ()) + "]"
    bare = self.bare_type()
    if bare.startswith("list[") and bare.endswith("]"):
        bare = bare[5:-1]
    return _METAVARS.get(bare, bare.upper())


TyperOption.display_type_rich = _metavar  # type: ignore[method-assign]

app = typer.Typer(
    name="streamcast",
    help="Streaming time-series forecasting: ingest, train and compare, register, forecast, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
predictions_app = typer.Typer(help="Query stored forecasts.", no_args_is_help=True)
app.add_typer(predictions_app, name="predictions")
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(Text(f"streamcast {version('streamcast')}"))
        raise typer.Exit()


@app.callback()
def main(
    _version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Streaming time-series forecasting: ingest, train and compare, register, forecast, serve."""


def report_error(exc: StreamcastError) -> None:
    """One line on stderr; the message is text, never markup."""
    err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)


def fail(exc: StreamcastError) -> NoReturn:
    report_error(exc)
    raise typer.Exit(exc.exit_code)


def command(group: typer.Typer = app, name: str | None = None) -> Callable[[F], F]:
    """Register a command whose :class:`StreamcastError` s end as one line and an exit code."""

    def register(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except StreamcastError as exc:
                fail(exc)

        group.command(name)(run)
        return fn

    return register


def default(spec: type[Spec], field: str) -> Any:
    """A spec's default, shown in --help (the spec is where it is defined)."""
    return spec.model_fields[field].get_default(call_default_factory=True)


def print_all(items: list[Any]) -> None:
    for item in items:
        console.print(item)


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


@command()
def ingest(
    source: Source = typer.Option(
        Source.nyc_weather, "--source", help="nyc-weather (bundled), csv, parquet, landing or open-meteo."
    ),
    path: Path | None = typer.Option(None, "--path", help="File to ingest (csv, parquet) or landing folder."),
    time_col: str | None = typer.Option(
        None, "--time-col", help="Time column (default: first of ts, timestamp, time, time_hour, date, ds)."
    ),
    series_col: str | None = typer.Option(None, "--series-col", help="Column holding the series id."),
    series_id: str | None = typer.Option(
        None, "--series-id", help="Series id without --series-col (default: 'default'; open-meteo: lat,lon)."
    ),
    tz: str = typer.Option(default(IngestSpec, "tz"), "--tz", help="Time zone of naive timestamps."),
    latitude: float | None = typer.Option(None, "--latitude", min=-90, max=90, help="open-meteo: latitude."),
    longitude: float | None = typer.Option(None, "--longitude", min=-180, max=180, help="open-meteo: longitude."),
    variables: str | None = typer.Option(None, "--variables", help="open-meteo: comma-separated hourly variables."),
    start: str | None = typer.Option(None, "--start", help="open-meteo: archive start date (YYYY-MM-DD)."),
    end: str | None = typer.Option(None, "--end", help="open-meteo: archive end date (YYYY-MM-DD)."),
    units: list[str] | None = typer.Option(
        None, "--unit", metavar="VAR=UNIT", help="What a variable is measured in, e.g. temp=°C (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Ingest observations into the store (idempotent; bad rows are quarantined)."""
    options = {k: v for k, v in locals().items() if k not in ("source", "as_json")}
    report = services.ingest(IngestSpec.of(source=source.value, **options))
    for name in report.already_seen:
        console.print(Text(f"landing: {name} already ingested (same content); moved to done/"))
    for name, msg in report.failed.items():
        err_console.print(Text(f"landing: {name} failed: {msg} (moved to failed/)", style="red"))
    if report.folder is not None and not (report.summaries or report.already_seen or report.failed):
        console.print(Text(f"landing: no new files in {report.folder}"))
    if as_json:
        print(json.dumps([s.to_dict() for s in report.summaries], default=str, indent=2))
    else:
        print_all([render.ingest_summary(s) for s in report.summaries])
        for hint in sorted({h for s in report.summaries for h in s.hints}):
            console.print(Text(f"hint: {hint}", style="yellow"))


@command(db_app, "upgrade")
def db_upgrade() -> None:
    """Create the store, or bring one from an older streamcast to this version (writers do this on their own)."""
    before, after = services.upgrade_store()
    where = queries.store_location()
    if before == after:
        console.print(Text(f"store at {where}: schema {after}, up to date"))
    else:
        console.print(Text(f"store at {where}: schema {before or 'none'} -> {after}"))


@command()
def status(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Show what the store holds: per series and variable, quarantine, last batch."""
    st = queries.store_status()
    if not as_json:
        print_all(render.store_status(st))
        return
    series = [
        {**r, "first_ts": r["first_ts"].isoformat(), "last_ts": r["last_ts"].isoformat()}
        for r in st.series.to_dict("records")
    ]
    out = {
        "store": st.store,
        "mlflow": st.tracking_uri,
        "data_dir": st.data_dir,
        "config_file": st.config_file,
        "series": series,
        "quarantine": st.quarantine,
        "tables": st.tables,
    }
    print(json.dumps({**out, "last_batch": st.last_batch}, default=str, indent=2))


@command()
def train(
    target: str = typer.Option(
        DEFAULT_TARGET, "--target", metavar="NAMES", help="Variable to forecast; several comma-separated (temp,humid)."
    ),
    models: str | None = typer.Option(
        None,
        "--models",
        metavar="NAMES",
        show_default=False,
        help=f"Comma-separated candidates (default: all): {', '.join(candidates())}.",
    ),
    horizon: int = typer.Option(default(TrainSpec, "horizon"), "--horizon", min=1, help="Steps forecast at once (H)."),
    folds: int | None = typer.Option(
        None,
        "--folds",
        min=1,
        help=f"Backtest origins (F); default {default(TrainSpec, 'folds')}, fewer when the history is short.",
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Max epochs for Keras candidates."),
    seed: int = typer.Option(default(TrainSpec, "seed"), "--seed", help="Random seed (same seed, same metrics)."),
    tune_minutes: float = typer.Option(
        default(TrainSpec, "tune_minutes"),
        "--tune-minutes",
        min=0,
        help="Optuna budget (minutes, all candidates) on the validation slice.",
    ),
    tune_max_trials: int | None = typer.Option(
        None, "--tune-max-trials", min=1, help="Stop tuning after this many trials (within the budget)."
    ),
    refit: bool = typer.Option(
        default(TrainSpec, "refit"),
        "--refit/--no-refit",
        help="Register the winner refit on all the data (default), or as fit for the backtest.",
    ),
) -> None:
    """Backtest the candidates, log to MLflow, register the winner (champion/challenger gate);
    each of several targets (--target temp,humid) in turn, as streamcast-<target>."""
    specs = services.training_specs(TrainSpec.of(**locals()))
    for spec in specs:
        if len(specs) > 1:
            console.rule(Text(f"{spec.target} (streamcast-{spec.target})"))
        with training_progress() as on_progress:
            outcome = services.train(spec, on_progress=on_progress)
        print_all(render.training(outcome, spec.tune_minutes * 60))
        console.print(Text(f"MLflow: {get_settings().tracking_uri}  run {outcome.runs.parent_run_id}"))


@contextmanager
def training_progress() -> Iterator[Callable[[str, str], None]]:
    """A spinner per candidate (and for MLflow and the registry) while training runs."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:

        def update(name: str, stage: str) -> None:
            description = Text(f"{name}: {stage}")
            if name not in tasks:
                tasks[name] = progress.add_task(description, total=1)  # type: ignore[arg-type]
            else:
                progress.update(tasks[name], description=description, completed=stage.startswith("done"))  # type: ignore[arg-type]

        yield update
        for task in tasks.values():
            progress.update(task, completed=1)


@command()
def forecast(
    target: str = typer.Option(
        DEFAULT_TARGET, "--target", metavar="NAMES", help="Variable to forecast; several comma-separated (temp,humid)."
    ),
    series: list[str] | None = typer.Option(
        None, "--series", metavar="ID", help="Series to forecast (repeatable; default: all)."
    ),
) -> None:
    """Forecast every series from its latest observations with the champion; store the points.
    Several targets (--target temp,humid): each with its own champion."""
    units: dict[str, str] | None = None
    for name in split_targets(target):
        fc = services.forecast(name, series or None)
        units = queries.units() if units is None else units
        first = fc.iloc[0]
        console.print(
            Text(
                f"issued {fc['forecast_id'].nunique()} forecast(s) of {name} with {first['model_name']} "
                f"(streamcast-{name} version {first['model_version']}), {len(fc):,} points"
            )
        )
        shown, total = render.shown_points(fc)
        print_all(render.forecasts_view(queries.latest_payload(shown, units), name, total))


@command(predictions_app, "latest")
def predictions_latest(
    series: str | None = typer.Option(None, "--series", help="One series id (default: every series)."),
    target: str = typer.Option(DEFAULT_TARGET, "--target", help="Forecast variable."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or csv."),
) -> None:
    """The most recent forecast per series."""
    points = queries.latest_points(target, series)
    if points.empty:
        raise NotFoundError(f"no forecasts of {target!r} yet: run `streamcast forecast --target {target}`")
    units = queries.units()
    if fmt == OutputFormat.json:
        print(json.dumps(queries.latest_payload(points, units), indent=2))
    elif fmt == OutputFormat.csv:
        out = points.copy()
        for c in ("issued_at", "origin_ts", "ts"):
            out[c] = out[c].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        sys.stdout.write(out.to_csv(index=False))
    else:
        shown, total = render.shown_points(points)
        print_all(render.forecasts_view(queries.latest_payload(shown, units), target, total))


@command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (each reads the store)."),
) -> None:
    """Serve the HTTP API and dashboard (reads the store only; loads no model)."""
    import uvicorn

    queries.check_store()  # a missing or outdated store is one line here, not a traceback per worker
    console.print(Text(f"streamcast API on http://{host}:{port}/  (docs: /docs)"))
    # By name: the CLI and the API are independent (each worker builds the app from the settings).
    uvicorn.run("streamcast.api:create_app", factory=True, host=host, port=port, workers=workers, log_level="warning")


class StreamSource(StrEnum):
    replay = "replay"
    redis = "redis"
    open_meteo = "open-meteo"


@command()
def stream(
    source: StreamSource = typer.Option(StreamSource.replay, "--source", help="replay, redis or open-meteo."),
    dataset: str = typer.Option(default(StreamSpec, "dataset"), "--dataset", help="Dataset to replay."),
    speed: float = typer.Option(
        default(StreamSpec, "speed"), "--speed", min=0, help="Simulated seconds per real second (0: no waiting)."
    ),
    start: str | None = typer.Option(None, "--from", help="Replay from this time (ISO 8601, UTC)."),
    until: str | None = typer.Option(None, "--until", help="Replay until this time (ISO 8601, UTC)."),
    stream: str = typer.Option(default(StreamSpec, "stream"), "--stream", help="Redis stream name."),
    group: str = typer.Option(default(StreamSpec, "group"), "--group", help="Redis consumer group."),
    consumer: str = typer.Option(default(StreamSpec, "consumer"), "--consumer", help="Consumer name in the group."),
    redis_url: str = typer.Option(
        default(StreamSpec, "redis_url"), "--redis-url", help="Redis to read the stream from."
    ),
    batch_size: int = typer.Option(
        default(StreamSpec, "batch_size"), "--batch-size", min=1, help="Redis entries per batch."
    ),
    stop_after_idle: float | None = typer.Option(None, "--stop-after-idle", help="Stop after N idle seconds (redis)."),
    claim_idle_ms: int = typer.Option(
        default(StreamSpec, "claim_idle_ms"),
        "--claim-idle-ms",
        min=0,
        help="Claim entries another consumer left pending this long (redis).",
    ),
    broker_retry_seconds: float = typer.Option(
        default(StreamSpec, "broker_retry_seconds"),
        "--broker-retry-seconds",
        min=0,
        help="Retry an unreachable Redis this long (exponential backoff) before exiting with code 3.",
    ),
    latitude: float | None = typer.Option(None, "--latitude", min=-90, max=90, help="open-meteo: latitude."),
    longitude: float | None = typer.Option(None, "--longitude", min=-180, max=180, help="open-meteo: longitude."),
    variables: str | None = typer.Option(None, "--variables", help="open-meteo: hourly variables."),
    poll_seconds: float = typer.Option(
        default(StreamSpec, "poll_seconds"), "--poll-seconds", min=0, help="open-meteo: seconds between polls."
    ),
    max_polls: int | None = typer.Option(None, "--max-polls", min=1, help="open-meteo: stop after N polls."),
    series_id: str | None = typer.Option(None, "--series-id", help="open-meteo: series id (default lat,lon)."),
    target: str = typer.Option(DEFAULT_TARGET, "--target", help="Variable to forecast."),
    retrain_models: str = typer.Option(
        ",".join(default(StreamSpec, "retrain_models")),
        "--retrain-models",
        help="Candidates a retrain compares when drift or the interval triggers one "
        "(it runs in a background process; the stream goes on).",
    ),
    adapt: bool = typer.Option(
        default(StreamSpec, "adapt"),
        "--adapt/--no-adapt",
        help="An ESN champion's readout learns from each matured actual (recursive least squares); "
        "it forecasts only while it does better than the registered one.",
    ),
) -> None:
    """Process observations as they arrive: store, advance the champion, forecast, score, retrain."""
    spec = StreamSpec.of(**{**locals(), "source": source.value})

    def report(stats: Any) -> None:
        if stats.batches % 100 == 0:
            console.print(render.stream_progress(stats.summary()))

    stats = services.stream(spec, on_start=lambda what: console.print(Text(what)), on_batch=report)
    console.print(render.stream_done(stats.summary()))


@command()
def scores(
    target: str = typer.Option(DEFAULT_TARGET, "--target", help="Forecast variable."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Live error of matured forecast points by model and step."""
    table, triggers, drift = queries.live_scores(target)
    if as_json:
        out = {
            "scores": table.to_dict("records"),
            "drift": drift.to_dict() if drift else None,
            "retrains": triggers.astype(str).to_dict("records"),
        }
        print(json.dumps(out, default=str, indent=2))
    else:
        print_all(render.live_scores(table, triggers, target))
        if drift is not None:
            console.print(Text(f"drift check: {drift.describe()}"))
