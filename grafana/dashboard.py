"""The crypto-service Grafana dashboard, as code (grafana-foundation-sdk).

``make dashboard`` writes ``grafana/dashboards/crypto-service.json``; a test fails when the
committed JSON differs from what this module generates. Every query here is run against a
real Prometheus by ``tests/integration/test_observability.py`` (the Kubernetes row
excepted: it needs cAdvisor and kube-state-metrics).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

UID = "crypto-service"
OUTPUT = Path(__file__).parent / "dashboards" / "crypto-service.json"
KUBERNETES_ROW = "Kubernetes"
PUSH_ROW = "Push and long-poll"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# Every service query is narrowed by the dashboard's variables.
SEL = 'namespace=~"$namespace", job=~"$job", instance=~"$instance"'
PRICE_ROUTES = 'route=~"/crypto-price|/v1/prices.*"'
RATE = "[$__rate_interval]"


def query(expr: str, legend: str = "", ref: str = "A") -> Dataquery:
    return (
        Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref).datasource(DATASOURCE)
    )


def graph(title: str, description: str, unit: str, *targets: Dataquery) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(8)
        .span(12)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common_builders.VizTooltipOptions().mode(TooltipDisplayMode.MULTI))
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def single(title: str, description: str, unit: str, *targets: Dataquery) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(6)
        .span(6)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def variable(name: str, label: str, expr: str) -> QueryVariable:
    return (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": expr, "refId": f"{name}-values"})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
        .multi(True)
    )


def traffic_panels() -> list[timeseries.Panel | stat.Panel]:
    return [
        graph(
            "Requests per second by route and status",
            "Every answered request, by URL rule and status code.",
            "reqps",
            query(
                f"sum by (route, status) (rate(http_requests_total{{{SEL}}}{RATE}))",
                "{{route}} {{status}}",
            ),
        ),
        graph(
            "Polls per price change, by symbol",
            "Successful polls (200 and 304) per price tick, all clients together: the cost of "
            "each price change. Tick-aligned clients make one poll per change each.",
            "short",
            query(
                f'sum by (symbol) (rate(polls_total{{{SEL}, symbol=~"$symbol"}}{RATE}))'
                f" / scalar(max(deriv(crypto_price_tick{{{SEL}}}{RATE})))",
                "{{symbol}}",
            ),
        ),
        graph(
            "Share of polls answered 304 Not Modified",
            "Polls whose If-None-Match still matched: clients polling faster than the price ticks.",
            "percentunit",
            query(
                f'sum(rate(polls_total{{{SEL}, outcome="not_modified"}}{RATE}))'
                f" / clamp_min(sum(rate(polls_total{{{SEL}}}{RATE})), 1e-9)",
                "304 share",
            ),
        ),
        graph(
            "Share of price requests refused with 429, by client class",
            "Rate-limited requests over all price requests; api_key clients have their own limits.",
            "percentunit",
            query(
                f"sum by (client_class) (rate(http_requests_rate_limited_total{{{SEL}}}{RATE}))"
                f" / on() group_left() clamp_min(sum(rate(http_requests_total{{{SEL}, "
                f"{PRICE_ROUTES}}}{RATE})), 1e-9)",
                "{{client_class}}",
            ),
        ),
    ]


def latency_panels() -> list[timeseries.Panel | stat.Panel]:
    buckets = (
        "sum by (le) (rate(http_request_duration_seconds_bucket"
        f'{{{SEL}, route!="/metrics"}}{RATE}))'
    )
    return [
        graph(
            "Latency p50 / p95 / p99",
            "From the request histogram, scrapes of /metrics excluded.",
            "s",
            query(f"histogram_quantile(0.50, {buckets})", "p50", "A"),
            query(f"histogram_quantile(0.95, {buckets})", "p95", "B"),
            query(f"histogram_quantile(0.99, {buckets})", "p99", "C"),
        ),
        graph(
            "In-flight requests",
            "Requests being handled by live workers, per instance.",
            "short",
            query(f"sum by (instance) (http_requests_in_flight{{{SEL}}})", "{{instance}}"),
        ),
        graph(
            "5xx ratio",
            "Share of requests answered with a 5xx status (HighErrorRate fires above 5 %).",
            "percentunit",
            query(
                f'(sum(rate(http_requests_total{{{SEL}, status=~"5.."}}{RATE}))'
                f" / clamp_min(sum(rate(http_requests_total{{{SEL}}}{RATE})), 1e-9))"
                " or vector(0)",
                "5xx",
            ),
        ),
        graph(
            "Limiter storage errors per second",
            "Rate limit storage calls that failed; requests were served without limits "
            "(fail-open) or refused with 503.",
            "ops",
            query(f"sum(rate(ratelimit_storage_errors_total{{{SEL}}}{RATE}))", "errors"),
        ),
    ]


def health_panels() -> list[timeseries.Panel | stat.Panel]:
    return [
        single(
            "Current price",
            "The current simulated price of each symbol.",
            "currencyUSD",
            query(f'max by (symbol) (crypto_price{{{SEL}, symbol=~"$symbol"}})', "{{symbol}}"),
        ),
        single(
            "Targets up",
            "Service targets Prometheus scrapes successfully, out of all its targets.",
            "short",
            query('sum(up{namespace=~"$namespace", job=~"$job"})', "up", "A"),
            query('count(up{namespace=~"$namespace", job=~"$job"})', "targets", "B"),
        ),
        single(
            "Client retries per second",
            "Retries of crypto-poll clients that expose metrics (--metrics-port), by reason.",
            "ops",
            query(
                'sum by (reason) (rate(crypto_poll_retries_total{namespace=~"$namespace"}'
                f"{RATE})) or vector(0)",
                "{{reason}}",
            ),
        ),
        single(
            "Client failed polls per second",
            "Polls that failed after all their retries, in crypto-poll clients exposing metrics.",
            "ops",
            query(
                'sum(rate(crypto_poll_polls_total{namespace=~"$namespace", outcome="failed"}'
                f"{RATE})) or vector(0)",
                "failed",
            ),
        ),
    ]


def push_panels() -> list[timeseries.Panel | stat.Panel]:
    return [
        graph(
            "Open streams by transport",
            "Server-Sent Events streams and WebSockets open now, across live workers.",
            "short",
            query(
                f"sum by (transport) (streams_open{{{SEL}}})",
                "{{transport}}",
            ),
        ),
        graph(
            "Events pushed per second by transport",
            "Price events sent on open streams: one per tick and stream.",
            "ops",
            query(
                f"sum by (transport) (rate(stream_events_sent_total{{{SEL}}}{RATE}))",
                "{{transport}}",
            ),
        ),
        graph(
            "Long-polls waiting",
            "Requests with Prefer: wait holding their answer until the tick turns.",
            "short",
            query(f"sum(long_polls_waiting{{{SEL}}})", "waiting"),
        ),
        graph(
            "Tick fan-out time, p99",
            "Per worker and tick, the time from handing the tick to the first push connection "
            "to the last (one render per symbol set, the same bytes for every connection).",
            "s",
            query(
                "histogram_quantile(0.99, sum by (le) "
                f"(rate(stream_fanout_seconds_bucket{{{SEL}}}{RATE})))",
                "p99",
            ),
        ),
        graph(
            "Push connections ended per second, by reason",
            "lifetime, draining, gone (the client left), slow_consumer (fell a queue of ticks "
            "behind), too_slow (a write timed out).",
            "ops",
            query(
                f"sum by (reason) (rate(stream_ends_total{{{SEL}}}{RATE}))",
                "{{reason}}",
            ),
        ),
        graph(
            "Streams and long-polls refused per second, by reason",
            "Refused before they were held: too_many_streams (a client's cap), over_capacity "
            "(a worker's MAX_HELD_CONNECTIONS: scale out), shutting_down, forbidden_origin.",
            "ops",
            query(
                f"sum by (reason) (rate(connections_refused_total{{{SEL}}}{RATE}))",
                "{{reason}}",
            ),
        ),
    ]


def history_panels() -> list[timeseries.Panel | stat.Panel]:
    return [
        graph(
            "History recorder lag",
            "Seconds since the end of the newest tick in the history database with every tick "
            "before it (alert HistoryRecorderLagging over 2 minutes): about one tick when all "
            "is well; growing while the database does not take writes.",
            "s",
            query(
                "time() - max by (namespace, job) "
                f"(crypto_history_recorded_through_timestamp_seconds{{{SEL}}})",
                "{{job}}",
            ),
        ),
        graph(
            "History ticks written per second",
            "Quotes (one symbol's tick each) the recorders write, those another replica wrote "
            "first included: symbols / tick length per replica, more while catching up.",
            "ops",
            query(f"sum by (instance) (rate(crypto_history_ticks_written_total{{{SEL}}}{RATE}))"),
        ),
        graph(
            "History write errors per second",
            "Failed history writes (database down, slow or full): retried, the missed ticks "
            "written once it takes writes again. Prices are served meanwhile.",
            "ops",
            query(f"sum by (instance) (rate(crypto_history_write_errors_total{{{SEL}}}{RATE}))"),
        ),
    ]


def key_panels() -> list[timeseries.Panel | stat.Panel]:
    return [
        graph(
            "API key refresh errors per second",
            "Workers' polls of the managed API keys that failed (database down; alert "
            "ApiKeysStale after 5 minutes): keys created or revoked meanwhile are not honoured.",
            "ops",
            query(f"sum by (instance) (rate(crypto_api_key_refresh_errors_total{{{SEL}}}{RATE}))"),
        ),
        graph(
            "API key usage writes failed and counts dropped per second",
            "Usage batches the database did not take (kept, written with the next) and counts "
            "dropped because too many waited: /v1/usage and keys list lag meanwhile.",
            "ops",
            query(
                f"sum(rate(crypto_api_key_usage_write_errors_total{{{SEL}}}{RATE}))",
                "write errors",
            ),
            query(f"sum(rate(crypto_api_key_usage_dropped_total{{{SEL}}}{RATE}))", "dropped", "B"),
        ),
        graph(
            "Stream tokens issued per second",
            "POST /v1/tokens: browsers' tokens for their key's streams, one per stream opened "
            "after most of the last token's life (TOKEN_TTL) is gone.",
            "ops",
            query(f"sum(rate(crypto_api_tokens_issued_total{{{SEL}}}{RATE}))", "tokens"),
        ),
    ]


def kubernetes_row() -> Row:
    pods = 'namespace=~"$namespace", pod=~"crypto-service.*"'
    row = Row(KUBERNETES_ROW)
    for panel in (
        graph(
            "CPU per pod",
            "cAdvisor: CPU cores used by each app container.",
            "short",
            query(
                "sum by (pod) (rate(container_cpu_usage_seconds_total"
                f'{{{pods}, container="crypto-service"}}{RATE}))',
                "{{pod}}",
            ),
        ),
        graph(
            "Memory per pod",
            "cAdvisor: working set of each app container.",
            "bytes",
            query(
                "sum by (pod) (container_memory_working_set_bytes"
                f'{{{pods}, container="crypto-service"}})',
                "{{pod}}",
            ),
        ),
        graph(
            "Container restarts",
            "kube-state-metrics: restarts of the app containers in the last hour.",
            "short",
            query(
                f"sum by (pod) (increase(kube_pod_container_status_restarts_total{{{pods}}}[1h]))",
                "{{pod}}",
            ),
        ),
        graph(
            "Available replicas",
            "kube-state-metrics: available replicas of the Deployment.",
            "short",
            query(
                'kube_deployment_status_replicas_available{namespace=~"$namespace", '
                'deployment="crypto-service"}',
                "available",
            ),
        ),
    ):
        row = row.with_panel(panel)
    return row


def build() -> Dashboard:
    dashboard = (
        Dashboard("Crypto price service")
        .uid(UID)
        .description(
            "Polling load and health of crypto-service: requests, polls per price "
            "change, 304 and 429 shares, latency, errors, prices and clients, streams."
        )
        .tags(["crypto-service", "polling", "generated"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("utc")
        .editable()
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            variable("namespace", "Namespace", "label_values(crypto_service_build_info, namespace)")
        )
        .with_variable(
            variable(
                "job",
                "Job",
                'label_values(crypto_service_build_info{namespace=~"$namespace"}, job)',
            )
        )
        .with_variable(
            variable(
                "instance",
                "Instance / pod",
                "label_values(crypto_service_build_info"
                '{namespace=~"$namespace", job=~"$job"}, instance)',
            )
        )
        .with_variable(
            variable(
                "symbol",
                "Symbol",
                'label_values(crypto_price{namespace=~"$namespace", job=~"$job"}, symbol)',
            )
        )
    )
    for title, panels in (
        ("Polling load", traffic_panels()),
        ("Latency and errors", latency_panels()),
        ("Prices, targets and clients", health_panels()),
        (PUSH_ROW, push_panels()),
        ("Price history", history_panels()),
        ("API keys", key_panels()),
    ):
        dashboard = dashboard.with_row(Row(title))
        for panel in panels:
            dashboard = dashboard.with_panel(panel)
    return dashboard.with_row(kubernetes_row())


def render() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


def main() -> None:
    """Write the dashboard JSON (or print it with ``-``)."""
    text = render()
    if sys.argv[1:] == ["-"]:
        sys.stdout.write(text)
        return
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({len(json.loads(text)['panels'])} top-level panels)")


if __name__ == "__main__":
    main()
