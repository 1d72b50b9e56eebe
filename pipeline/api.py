"""HTTP API and dashboard (FastAPI). Reads the store only: no model is loaded to answer."""

from __future__ import annotations

import contextlib
import gc
import html
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from streamcast import queries
from streamcast.config import DEFAULT_TARGET, Settings, get_settings
from streamcast.monitoring import drift_check
from streamcast.store import Store


class ErrorBody(BaseModel):
    """Every error answer, whatever its status: one line saying what is wrong."""

    error: str
    status: int


# Declared on every route, so the OpenAPI schema describes the error bodies actually sent.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Not found"},
    422: {"model": ErrorBody, "description": "Invalid parameters"},
}


# An HTML route's errors are JSON all the same (a "model" would be documented as text/html).
_ERROR_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
HTML_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": r["description"], "content": _ERROR_JSON} for status, r in ERROR_RESPONSES.items()
}


def validation_message(exc: RequestValidationError) -> str:
    """A request's invalid parameters in one line: ``where: what`` for each."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


class ModelRef(BaseModel):
    name: str
    version: str | None
    run_id: str | None = None


class ForecastPoint(BaseModel):
    ts: str
    step: int
    yhat: float
    lo: float | None
    hi: float | None


class LatestForecast(BaseModel):
    series_id: str
    target: str
    unit: str | None = None  # what the target is measured in, when ingest recorded it
    issued_at: str
    origin_ts: str
    forecast_id: str
    model: ModelRef
    points: list[ForecastPoint]


class SeriesInfo(BaseModel):
    series_id: str
    variables: list[str]
    observations: int
    first_ts: str
    last_ts: str


class ScoreRow(BaseModel):
    model_name: str
    model_version: str | None
    step: int
    n: int
    mae: float
    mase: float | None
    coverage: float | None = None  # share of actuals inside the interval issued with the point


class DriftBody(BaseModel):
    """What the stream's drift trigger compares for a target, as it stands."""

    target: str
    live_mase: float | None  # over the last ``window`` scored points per series; None until there are that many
    window: int
    factor: float
    backtest_mase: float
    threshold: float
    drifted: bool
    trained_at: str


class Health(BaseModel):
    status: str
    store: str
    observations: int
    forecasts: int


class TTLCache:
    """Time-based cache for the hot query path, bounded in age and size.

    An answer is never older than ``ttl``: one younger than ``ttl / 2`` is served as is;
    one between ``ttl / 2`` and ``ttl`` is served while one background thread recomputes
    it (stale-while-revalidate, so a busy key never waits on the database); an older one
    is recomputed before answering. At most ``max_entries`` keys are kept, least recently
    used first out (query values come from users).
    """

    def __init__(self, ttl: float, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._refreshing: set[Any] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        now = self._clock()
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                self._data.move_to_end(key)
                if now - hit[0] >= self.ttl / 2 and key not in self._refreshing:
                    self._refreshing.add(key)
                    threading.Thread(target=self._refresh, args=(key, compute), daemon=True).start()
                return hit[1]
        started = self._clock()
        value = compute()
        self._store(key, started, value)
        return value

    def _store(self, key: Any, computed_at: float, value: Any) -> None:
        with self._lock:
            self._data[key] = (computed_at, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def _refresh(self, key: Any, compute: Callable[[], Any]) -> None:
        try:
            started = self._clock()
            self._store(key, started, compute())
        finally:
            with self._lock:
                self._refreshing.discard(key)


def _not_found(message: str) -> tuple[int, bytes]:
    return 404, json.dumps({"error": message, "status": 404}).encode()


def _series_infos(summary: pd.DataFrame) -> list[SeriesInfo]:
    return [
        SeriesInfo(
            series_id=str(sid),
            variables=sorted(g["variable"]),
            observations=int(g["count"].sum()),
            first_ts=g["first_ts"].min().isoformat(),
            last_ts=g["last_ts"].max().isoformat(),
        )
        for sid, g in summary.groupby("series_id")
    ]


def _latest_body(store: Store, known: set[str], series_id: str | None, target: str) -> tuple[int, bytes]:
    """Status and JSON body of ``/forecasts/latest``: one series' latest forecast, or all series'."""
    if series_id is not None and series_id not in known:
        return _not_found(f"unknown series {series_id!r}")
    data = queries.latest_payload(store.latest_forecasts(series_id=series_id, target=target), store.units())
    if series_id is None:
        return 200, json.dumps(data).encode()
    if not data:
        return _not_found(f"no forecast of {target!r} for series {series_id!r} yet")
    return 200, json.dumps(data[0]).encode()


def create_app(settings: Settings | None = None, cache_seconds: float = 1.0) -> FastAPI:
    """Build the app on one store; responses on the hot path are cached ``cache_seconds``."""
    settings = settings or get_settings()
    store = Store(settings.database_url, read_only=True)
    cache = TTLCache(cache_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Objects alive after start-up never become garbage: keep the collector off them.
        gc.collect()
        gc.freeze()
        yield
        store.dispose()

    # Swagger UI (/docs) and ReDoc (/redoc) from assets shipped in fastapi-offline: no CDN.
    app = FastAPIOffline(
        lifespan=lifespan,
        title="streamcast",
        description="Latest forecasts, live scores and the model comparison, read from the streamcast store.",
        version="0.1.0",
        responses=ERROR_RESPONSES,
    )

    def known_series() -> set[str]:
        return set(cache.get("series", store.series_ids))

    # One error shape for every status: FastAPI's own 404 (unknown route), 405 and 422 too.
    @app.exception_handler(HTTPException)
    async def _json_errors(_request: Request, exc: HTTPException) -> JSONResponse:
        body = ErrorBody(error=str(exc.detail), status=exc.status_code)
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(ErrorBody(error=validation_message(exc), status=422).model_dump(), status_code=422)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        counts = store.table_counts()
        return Health(
            status="ok", store=store.dialect, observations=counts["observations"], forecasts=counts["forecasts"]
        )

    @app.get("/series", response_model=list[SeriesInfo])
    def series() -> list[SeriesInfo]:
        return _series_infos(cache.get("series_summary", store.series_summary))

    @app.get(
        "/forecasts/latest",
        response_model=LatestForecast | list[LatestForecast],
        responses={404: {"description": "Unknown series, or no forecast yet"}},
    )
    async def forecasts_latest(
        series_id: str | None = Query(None, min_length=1, max_length=128, description="Series (default: all)"),
        target: str = Query(DEFAULT_TARGET, min_length=1, max_length=128),
    ) -> Response:
        """The most recent forecast of ``target`` for one series (or a list for all series)."""

        status, body = cache.get(
            ("latest", series_id, target), lambda: _latest_body(store, known_series(), series_id, target)
        )
        return Response(content=body, status_code=status, media_type="application/json")

    @app.get("/scores", response_model=list[ScoreRow])
    def scores(target: str = Query(DEFAULT_TARGET, min_length=1)) -> list[ScoreRow]:
        """Live error of matured forecast points, by model and step."""
        table = store.live_scores(target)
        return [ScoreRow(**r) for r in table.to_dict("records")]

    @app.get("/drift", response_model=DriftBody, responses={404: {"description": "No training of this target yet"}})
    def drift(target: str = Query(DEFAULT_TARGET, min_length=1, max_length=128)) -> Any:
        """The windowed live MASE that triggers a retrain, its threshold and whether it is crossed."""
        check = drift_check(store, settings, target)
        if check is None:
            return JSONResponse(ErrorBody(error=f"no training of {target!r} yet", status=404).model_dump(), 404)
        return DriftBody.model_validate({"target": target, **check.to_dict()})

    @app.get("/", response_class=HTMLResponse, responses=HTML_ERROR_RESPONSES)
    def dashboard(
        target: str = Query(DEFAULT_TARGET, min_length=1),
        days: int = Query(3, ge=1, le=60),
        q: str = Query("", max_length=128, description="show the series whose id contains this text"),
        page: int = Query(1, ge=1),
        per_page: int = Query(DASHBOARD_PAGE, ge=1, le=100),
    ) -> HTMLResponse:
        return HTMLResponse(render_dashboard(store, target, days, q=q, page=page, per_page=per_page))

    app.state.store = store
    return app


# --- dashboard (server-side SVG: renders without internet or JavaScript) ----------


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    raw = span / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = [first + k * step for k in range(math.ceil((hi - first) / step) + 1)]
    return [round(t, 10) for t in ticks]


def _tick_label(v: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{v:,.{decimals}f}"


def _svg_chart(
    sid: str,
    actual: pd.Series,
    fc: pd.DataFrame,
    past: pd.DataFrame,
    unit: str | None,
    width: int = 1000,
    height: int = 260,
) -> str:
    """One series: the actuals (black), earlier forecasts issued in the window (thin
    dashed lines, so their errors show against what arrived), the latest forecast and
    its interval; round y ticks with the unit, a date under each midnight."""
    pad_l, pad_r, pad_t, pad_b = 64, 14, 14, 30
    xs = list(actual.index) + list(fc["ts"]) + list(past["ts"])
    if not xs:
        return f'<p class="empty">no data for {html.escape(sid)}</p>'
    ys = [*actual.dropna().to_numpy(), *fc["yhat"], *fc["lo"].dropna(), *fc["hi"].dropna(), *past["yhat"]]
    t0, t1 = min(xs), max(xs)
    ticks = nice_ticks(min(ys), max(ys))
    y0, y1 = ticks[0], ticks[-1]
    if y1 <= y0:
        y1 = y0 + 1.0
    span_t = max((t1 - t0).total_seconds(), 1.0)

    def px(t: pd.Timestamp) -> float:
        return pad_l + (t - t0).total_seconds() / span_t * (width - pad_l - pad_r)

    def py(v: float) -> float:
        return pad_t + (y1 - v) / (y1 - y0) * (height - pad_t - pad_b)

    def path(points: list[tuple[float, float]]) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))

    label = html.escape(f"{sid} forecast" + (f" ({unit})" if unit else ""))
    parts = [
        f'<svg class="chart" data-series="{html.escape(sid)}" viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="xMinYMin meet" role="img" aria-label="{label}">'
    ]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    for v in ticks:
        parts.append(
            f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{py(v):.1f}" y2="{py(v):.1f}" class="grid"/>'
            f'<text x="{pad_l - 6}" y="{py(v) + 4:.1f}" class="axis" text-anchor="end">{_tick_label(v, step)}</text>'
        )
    if unit:
        parts.append(f'<text x="4" y="{pad_t + 4}" class="axis unit">{html.escape(unit)}</text>')
    days = pd.date_range(t0.ceil("D"), t1, freq="D")
    every = max(1, math.ceil(len(days) / 12))  # at most a dozen date labels
    for day in days[::every]:
        parts.append(
            f'<line x1="{px(day):.1f}" x2="{px(day):.1f}" y1="{pad_t}" y2="{height - pad_b}" class="grid"/>'
            f'<text x="{px(day):.1f}" y="{height - 9}" class="axis" text-anchor="middle">{day:%b %d}</text>'
        )
    for _, one in past.groupby("forecast_id", sort=False):
        pts = [(px(t), py(v)) for t, v in zip(one["ts"], one["yhat"], strict=True)]
        parts.append(f'<path class="past" d="{path(pts)}"/>')
    obs = [(px(t), py(v)) for t, v in actual.dropna().items()]
    if obs:
        parts.append(f'<path class="actual" d="{path(obs)}"/>')
    if not fc.empty:
        band = fc.dropna(subset=["lo", "hi"])
        if not band.empty:
            upper = [(px(t), py(v)) for t, v in zip(band["ts"], band["hi"], strict=True)]
            lower = [(px(t), py(v)) for t, v in zip(band["ts"], band["lo"], strict=True)][::-1]
            parts.append(f'<path class="interval" d="{path(upper + lower)} Z"/>')
        parts.append(
            f'<path class="forecast" d="{path([(px(t), py(v)) for t, v in zip(fc["ts"], fc["yhat"], strict=True)])}"/>'
        )
        o = fc["origin_ts"].iloc[0]
        parts.append(f'<line class="origin" x1="{px(o):.1f}" x2="{px(o):.1f}" y1="{pad_t}" y2="{height - pad_b}"/>')
    parts.append("</svg>")
    return "".join(parts)


CSS = """
body{font-family:system-ui,sans-serif;margin:20px 24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:22px 0 6px} .muted{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left} tr.best{font-weight:600;background:#eef7ee}
.chart{display:block;width:100%;height:auto}
.chart .grid{stroke:#eee} .chart .axis{font-size:12px;fill:#555} .chart .unit{font-weight:600}
.chart .actual{fill:none;stroke:#222;stroke-width:1.4}
.chart .forecast{fill:none;stroke:#1f77b4;stroke-width:2} .chart .interval{fill:#1f77b4;opacity:.18;stroke:none}
.chart .past{fill:none;stroke:#ff7f0e;stroke-width:1.2;stroke-dasharray:5 3;opacity:.8}
.chart .origin{stroke:#999;stroke-dasharray:4 3} .legend span{margin-right:14px;font-size:12px}
.panels{display:flex;flex-wrap:wrap;gap:32px} .pager{font-size:13px;margin:6px 0} .pager a{margin:0 6px}
"""

MAX_PAST_FORECASTS = 6  # per series: earlier forecasts overlaid on a chart


def _spread_out(origins: list[pd.Timestamp], keep: int) -> list[pd.Timestamp]:
    """At most ``keep`` of ``origins`` (sorted), evenly spaced, the newest always kept."""
    if len(origins) <= keep:
        return origins
    idx = {round(k * (len(origins) - 1) / (keep - 1)) for k in range(keep)}
    return [origins[i] for i in sorted(idx)]


DASHBOARD_PAGE = 12  # series charted per dashboard page


def _page_links(target: str, days: int, q: str, page: int, per_page: int, shown: int, total: int) -> str:
    """'series 13-24 of 1,000 (matching "x")', previous/next links and a search box (no JavaScript)."""

    def href(p: int) -> str:
        return "?" + html.escape(urlencode({"target": target, "days": days, "q": q, "page": p, "per_page": per_page}))

    first = (page - 1) * per_page
    matching = f" matching &quot;{html.escape(q)}&quot;" if q else ""
    where = f"series {first + 1:,}&ndash;{first + shown:,} of {total:,}{matching}" if shown else f"no series{matching}"
    links = [f'<a href="{href(page - 1)}">&lsaquo; previous</a>'] if page > 1 else []
    if first + shown < total:
        links.append(f'<a href="{href(page + 1)}">next &rsaquo;</a>')
    return (
        f'<form class="pager" method="get"><input type="hidden" name="target" value="{html.escape(target)}">'
        f'<input type="hidden" name="days" value="{days}"><span>{where}</span> {" ".join(links)} '
        f'<input name="q" value="{html.escape(q)}" placeholder="series id contains" size="18">'
        '<button type="submit">find</button></form>'
    )


def render_dashboard(
    store: Store, target: str, days: int, *, q: str = "", page: int = 1, per_page: int = DASHBOARD_PAGE
) -> str:
    """The dashboard: a page of series (``per_page``, those whose id contains ``q``), each
    read in one query per kind for the whole page, so the page costs the same at 10 or
    10,000 series."""
    newest = store.newest_issue(target)
    comparison = store.latest_comparison(target)
    live = store.live_summary(target)
    matching = [sid for sid in store.series_ids() if q.casefold() in sid.casefold()]
    series = matching[(page - 1) * per_page : page * per_page]
    unit = store.units().get(target)
    shown = html.escape(target + (f" ({unit})" if unit else ""))
    body = [f"<h1>streamcast — {shown}</h1>"]
    if newest is not None:
        body.append(
            f'<p class="muted">champion: <b>{html.escape(str(newest["model_name"]))}</b> '
            f"(streamcast-{html.escape(target)} v{html.escape(str(newest['model_version']))}); latest forecast issued "
            f"{newest['issued_at']:%Y-%m-%d %H:%M} UTC</p>"
        )
    else:
        body.append('<p class="muted">no forecasts yet: run <code>streamcast forecast</code></p>')
    body.append(
        '<p class="legend"><span>— actual</span><span style="color:#1f77b4">— latest forecast</span>'
        '<span style="color:#1f77b4;opacity:.6">■ 90% interval</span>'
        f'<span style="color:#ff7f0e">- - earlier forecasts (up to {MAX_PAST_FORECASTS} in the window)</span></p>'
    )
    body.append(_page_links(target, days, q, page, per_page, len(series), len(matching)))
    # The page's series only: at 1,000 series every series' latest forecast took most of a page.
    shown = store.latest_forecasts(target=target, series_ids=series)
    # One read per kind for the whole page: actuals since the earliest window start, and
    # the forecasts issued in the window; each series then takes its own slice.
    window = pd.Timedelta(days=days)
    start = (
        shown["origin_ts"].min() if not shown.empty else (store.newest_ts() or pd.Timestamp.now(tz="UTC"))
    ) - window
    observed = store.load_observations(series_ids=series, variables=[target], start=start)
    issued = (
        store.forecasts_issued_between(target, series, start, shown["origin_ts"].max())
        if not shown.empty
        else shown.iloc[:0]
    )
    for sid in series:
        fc = shown[shown.series_id == sid].sort_values("step")
        anchor = fc["origin_ts"].iloc[0] if not fc.empty else None
        actual = observed[observed.series_id == sid].set_index("ts")["value"]
        if len(actual):
            lo = (anchor if anchor is not None else actual.index.max()) - window
            actual = actual.loc[lo : fc["ts"].max() if anchor is not None else None]
        past = fc.iloc[:0]
        if anchor is not None:
            earlier = issued[(issued.series_id == sid) & (issued.origin_ts >= anchor - window)]
            earlier = earlier[~earlier["forecast_id"].isin(fc["forecast_id"])]
            keep = _spread_out(sorted(earlier["origin_ts"].unique()), MAX_PAST_FORECASTS)
            # One forecast per kept origin (the last issued, if a retry re-issued it).
            first_id = earlier[earlier["origin_ts"].isin(keep)].groupby("origin_ts")["forecast_id"].last()
            past = earlier[earlier["forecast_id"].isin(first_id)]
        body.append(f"<h2>{html.escape(sid)}</h2>")
        body.append(_svg_chart(sid, actual, fc, past, unit))
    body.append('<div class="panels">')
    if not comparison.empty:
        body.append(
            "<div><h2>model comparison (latest training, rolling-origin backtest)</h2><table><tr>"
            "<th>candidate</th><th>MASE</th><th>MAE</th><th>RMSE</th><th>sMAPE %</th><th>90% coverage</th>"
            "<th>fit s</th></tr>"
        )
        for r in comparison.to_dict("records"):
            cls = ' class="best"' if r["rank"] == 1 else ""
            body.append(
                f"<tr{cls}><td>{html.escape(r['candidate'])}</td><td>{r['mase']:.3f}</td><td>{r['mae']:.2f}</td>"
                f"<td>{r['rmse']:.2f}</td><td>{r['smape']:.1f}</td><td>{r['coverage']:.1%}</td>"
                f"<td>{r['fit_seconds']:.1f}</td></tr>"
            )
        body.append("</table></div>")
    body.append('<div class="live"><h2>live scores (matured forecast points)</h2>')
    if live.empty:
        body.append('<p class="muted">no forecast point has matured yet</p>')
    else:
        body.append(
            "<table><tr><th>model</th><th>version</th><th>points</th><th>MAE</th><th>MASE</th>"
            "<th>interval coverage</th><th>last actual (UTC)</th></tr>"
        )
        for r in live.to_dict("records"):
            mase = "n/a" if r["mase"] is None or pd.isna(r["mase"]) else f"{float(r['mase']):.3f}"
            cover = "n/a" if r["coverage"] is None or pd.isna(r["coverage"]) else f"{float(r['coverage']):.1%}"
            body.append(
                f"<tr><td>{html.escape(str(r['model_name']))}</td><td>{html.escape(str(r['model_version']))}</td>"
                f"<td>{int(r['n']):,}</td><td>{float(r['mae']):.2f}</td><td>{mase}</td>"
                f"<td>{cover}</td><td>{r['last_ts']:%Y-%m-%d %H:%M}</td></tr>"
            )
        body.append("</table>")
    body.append("</div></div>")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>streamcast — {html.escape(target)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )
