"""Prometheus metrics (prometheus-client): one registry per app, and what feeds it.

The writer's listeners (`Metrics.on_commit`, `Metrics.on_batch`), the upstream HTTP
observer (`Metrics.upstream_call`, `Metrics.upstream_retry`), the web edge
(`HttpRequests.observe`) and the webhook route (`Metrics.webhook`) feed it; task
and provider gauges are read at scrape time (`Metrics.render`). Label values are
bounded: route templates (never raw paths), providers, statuses, operations named
in code. No task ids.
"""

from __future__ import annotations

import functools
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from egw.core.model import TERMINAL
from egw.core.records import Commit

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_VERDICTS = frozenset({"cancel_failed", "stuck", "resubmitted"})
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = HttpRequests()
        r.register(self.requests)
        self.submitted = Counter(
            "egw_tasks_submitted_total", "Tasks submitted", ["provider"], registry=r
        )
        self.finished = Counter(
            "egw_tasks_finished_total",
            "Tasks that reached a terminal state",
            ["provider", "outcome"],
            registry=r,
        )
        self.appends = Counter(
            "egw_eventlog_appends_total", "Events appended to the log", registry=r
        )
        self.log_bytes = Counter(
            "egw_log_bytes_total", "Task output bytes stored", ["provider"], registry=r
        )
        self.batch_size = Histogram(
            "egw_eventlog_write_batch_size",
            "Operations per write transaction (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.upstream_calls = Counter(
            "egw_upstream_requests_total",
            "HTTP calls to upstream APIs",
            ["provider", "operation", "outcome"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "egw_upstream_request_duration_seconds",
            "Latency of upstream calls",
            ["provider", "operation"],
            buckets=_LATENCY,
            registry=r,
        )
        self.retries = Counter(
            "egw_upstream_retries_total",
            "Upstream calls retried after a transient failure",
            ["provider", "operation"],
            registry=r,
        )
        self.webhooks = Counter(
            "egw_webhook_deliveries_total",
            "Webhook deliveries by result",
            ["source", "result"],
            registry=r,
        )
        self.log_truncated = Counter(
            "egw_log_truncated_total",
            "Tasks whose output passed max_log_bytes (head and tail kept, the rest dropped)",
            ["provider"],
            registry=r,
        )
        self.sse_connections = Gauge(
            "egw_sse_connections", "Open server-sent event streams", registry=r
        )
        self.verdicts = Counter(
            "egw_watchdog_verdicts_total",
            "Watchdog verdicts: cancel_failed, stuck, resubmitted",
            ["provider", "verdict"],
            registry=r,
        )
        self._tasks_by_status: Mapping[str, Mapping[str, int]] = {}
        self._tasks_by_namespace: Mapping[str, Mapping[str, int]] | None = None
        self._tasks_stuck: Mapping[str, int] = {}
        self._health: Mapping[str, Mapping[str, Any]] = {}
        self._storage: Mapping[str, Any] = {}
        self._circuits: Mapping[str, Mapping[str, Any]] = {}
        self._replication: Mapping[str, Any] = {}
        #: PostgreSQL replicas: from another replica's COMMIT to its hand-over here
        self.feed_lag = Histogram(
            "egw_replica_feed_lag_seconds",
            "Delay from another replica's commit to its fan-out here (PostgreSQL replicas)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        # prometheus_client's labels() takes a lock and checks its values on every call: the
        # counters of the hot paths keep their children (bench "webhooks": 4% of a foreign
        # delivery). Their label values are bounded: providers, sources, results.
        self._webhook_child = functools.lru_cache(maxsize=256)(self.webhooks.labels)
        self._submitted_child = functools.lru_cache(maxsize=64)(self.submitted.labels)
        r.register(_Snapshot(self))

    # --- listeners -------------------------------------------------------------------------------

    def on_commit(self, commit: Commit) -> None:
        """Writer listener: counts events, submissions, outcomes and output (this replica's
        own: what another replica committed, it counts)."""
        if commit.replicated:
            return
        self.appends.inc(len(commit.events))
        for event in commit.events:
            if event.kind == "submitted":
                self._submitted_child(event.provider).inc()
            elif event.applied and event.status in TERMINAL:
                self.finished.labels(event.provider, str(event.status)).inc()
            elif event.kind == "log_truncated":
                self.log_truncated.labels(event.provider).inc()
            elif event.kind in _VERDICTS:
                self.verdicts.labels(event.provider, event.kind).inc()
        for chunk in commit.logs:
            task = commit.tasks.get(chunk.task_id)
            self.log_bytes.labels(task.provider if task else "unknown").inc(len(chunk.data))

    def on_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def upstream_call(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        self.upstream_calls.labels(provider, operation, outcome).inc()
        self.upstream_latency.labels(provider, operation).observe(seconds)

    def upstream_retry(self, provider: str, operation: str) -> None:
        self.retries.labels(provider, operation).inc()

    def webhook(self, source: str, result: str) -> None:
        self._webhook_child(source, result).inc()

    # --- scrape -----------------------------------------------------------------------------------

    def render(
        self,
        *,
        tasks_by_status: Mapping[str, Mapping[str, int]],
        health: Mapping[str, Mapping[str, Any]],
        sse_connections: int,
        storage: Mapping[str, Any] | None = None,
        tasks_by_namespace: Mapping[str, Mapping[str, int]] | None = None,
        tasks_stuck: Mapping[str, int] | None = None,
        circuits: Mapping[str, Mapping[str, Any]] | None = None,
        replication: Mapping[str, Any] | None = None,
    ) -> bytes:
        """``storage``: `egw.service.tasks.TaskService.storage` (size, watermark, writable);
        ``tasks_by_namespace``: only when ``metrics.namespace_label`` is on; ``circuits``:
        each provider's breakers as ``/readyz`` shows them."""
        self._tasks_by_status = tasks_by_status
        self._tasks_by_namespace = tasks_by_namespace
        self._tasks_stuck = tasks_stuck or {}
        self._health = health
        self._storage = storage or {}
        self._circuits = circuits or {}
        self._replication = replication or {}
        self.sse_connections.set(sse_connections)
        return generate_latest(self.registry)


class HttpRequests(Collector):
    """``egw_http_requests_total`` and ``egw_http_request_duration_seconds``, by route template.

    Kept as plain numbers, which only the event loop's thread changes, and exposed
    through prometheus-client's custom collector API at scrape time. The library's
    Counter and Histogram take a lock per increment (three a request): on a cached
    ``GET /v1/tasks/{id}`` that bookkeeping cost more than everything else egw
    adds to aiohttp. Here a request costs a bisect and three additions.
    """

    def __init__(self) -> None:
        # (method, route) -> [per-bucket counts..., +Inf count], sum of seconds, counts by status
        self._routes: dict[tuple[str, str], tuple[list[int], list[float], dict[int, int]]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        entry = self._routes.get((method, route))
        if entry is None:
            entry = self._routes[(method, route)] = ([0] * (len(_LATENCY) + 1), [0.0], {})
        buckets, total, statuses = entry
        buckets[bisect_left(_LATENCY, seconds)] += 1  # le: the first bound >= seconds
        total[0] += seconds
        statuses[status] = statuses.get(status, 0) + 1

    def describe(self) -> Iterable[Any]:
        return [self._requests(), self._latency()]

    def _requests(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            "egw_http_requests", "HTTP requests answered", labels=["method", "route", "status"]
        )

    def _latency(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(
            "egw_http_request_duration_seconds",
            "Time to answer (to the end of the stream for SSE)",
            labels=["method", "route"],
        )

    def collect(self) -> Iterable[Any]:
        requests, latency = self._requests(), self._latency()
        for (method, route), (buckets, total, statuses) in sorted(self._routes.items()):
            for status, n in sorted(statuses.items()):
                requests.add_metric([method, route, str(status)], n)
            cumulative, points = 0, []
            for bound, n in zip((*_LATENCY, float("inf")), buckets, strict=True):
                cumulative += n
                points.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
            latency.add_metric([method, route], points, total[0])
        yield requests
        yield latency


class _Snapshot(Collector):
    """Gauges read at scrape time: tasks by status, and providers' own health figures."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        tasks = GaugeMetricFamily(
            "egw_tasks", "Tasks by provider and current status", labels=["provider", "status"]
        )
        for provider, counts in sorted(self.m._tasks_by_status.items()):
            for status, n in sorted(counts.items()):
                tasks.add_metric([provider, status], n)
        yield tasks
        if self.m._tasks_by_namespace is not None:
            spaces = GaugeMetricFamily(
                "egw_namespace_tasks",
                "Tasks by namespace and current status",
                labels=["namespace", "status"],
            )
            for ns, counts in sorted(self.m._tasks_by_namespace.items()):
                for status, n in sorted(counts.items()):
                    spaces.add_metric([ns, status], n)
            yield spaces
        stuck = GaugeMetricFamily(
            "egw_tasks_stuck", "Tasks the watchdog flagged stuck, by provider", labels=["provider"]
        )
        for provider in sorted({*self.m._tasks_by_status, *self.m._tasks_stuck}):
            stuck.add_metric([provider], self.m._tasks_stuck.get(provider, 0))
        yield stuck
        # numbers that providers report in health(): GitHub's rate-limit budget, Nomad's
        # event-stream index lag and reconnects, Cloud Logging reads left...
        figures = GaugeMetricFamily(
            "egw_provider_health",
            "Numeric health figures reported by each provider",
            labels=["provider", "figure"],
        )
        for provider, health in sorted(self.m._health.items()):
            for key, value in _numbers(health):
                figures.add_metric([provider, key], value)
        yield figures
        yield from _nomad_stream(self.m._health.get("nomad") or {})
        yield from _nomad_log_slots(self.m._health.get("nomad") or {})
        yield from _storage(self.m._storage)
        yield from _circuits(self.m._circuits)
        yield from _replication(self.m._replication)


_LEVELS = {"closed": 0, "half_open": 1, "open": 2}


def _circuits(circuits: Mapping[str, Mapping[str, Any]]) -> Iterable[Any]:
    """Each breaker's state (0 closed, 1 half-open, 2 open) and its moves so far, by the
    state moved to (see ``egw/core/circuit.py``)."""
    state = GaugeMetricFamily(
        "egw_circuit_state",
        "Circuit breaker toward an upstream target: 0 closed, 1 half-open, 2 open",
        labels=["provider", "target"],
    )
    moves = CounterMetricFamily(
        "egw_circuit_transitions",
        "Circuit breaker transitions, by the state moved to",
        labels=["provider", "target", "to"],
    )
    for provider, circuit in sorted(circuits.items()):
        for target, figures in sorted(circuit.get("targets", {}).items()):
            state.add_metric([provider, target], _LEVELS[figures["state"]])
            for to, n in sorted(figures["transitions"].items()):
                moves.add_metric([provider, target, to], n)
    yield state
    yield moves


def _nomad_stream(health: Mapping[str, Any]) -> Iterable[GaugeMetricFamily]:
    """Nomad's event stream per namespace, under names of their own (also in the figures)."""
    lag = GaugeMetricFamily(
        "egw_nomad_stream_lag_seconds",
        "How long the event-stream reader has been behind (0: it finds nothing waiting)",
        labels=["namespace"],
    )
    index = GaugeMetricFamily(
        "egw_nomad_stream_index",
        "The last raft index read from the event stream (compare with Nomad's)",
        labels=["namespace"],
    )
    for ns, sub in sorted((health.get("namespaces") or {}).items()):
        if isinstance(sub, Mapping) and sub.get("stream_lag_s") is not None:
            lag.add_metric([ns], sub["stream_lag_s"])
        if isinstance(sub, Mapping) and sub.get("last_index") is not None:
            index.add_metric([ns], sub["last_index"])
    yield lag
    yield index


def _replication(state: Mapping[str, Any]) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
    """PostgreSQL replicas: the leases this one holds, its failovers, the replicas seen."""
    if not state:
        return
    held = GaugeMetricFamily(
        "egw_leases_held", "1 for each lease this replica holds (singleton work)", labels=["lease"]
    )
    for name in state["leases"]:
        held.add_metric([name], 1.0)
    yield held
    yield CounterMetricFamily(
        "egw_lease_failovers",
        "Leases this replica took over from a holder that had let them expire",
        value=state["failovers"],
    )
    yield GaugeMetricFamily(
        "egw_replicas_seen", "Replicas with a recent heartbeat", value=len(state["seen"])
    )


def _nomad_log_slots(
    health: Mapping[str, Any],
) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
    """Nomad's live log-follow budget (`egw.providers.nomad.slots`): the slots, those given
    to streams of tailed tasks, the streams waiting and caught up, under names of their own."""
    slots = health.get("log_slots")
    if not isinstance(slots, Mapping):
        return
    gauge = GaugeMetricFamily(
        "egw_nomad_log_slots",
        "Nomad log streams: live slots (max, live, tailed_live), waiting ones, caught-up ones",
        labels=["kind"],
    )
    for kind in ("max", "live", "tailed_live", "waiting", "tailed_waiting", "catching_up"):
        gauge.add_metric([kind], slots.get(kind, 0))
    yield gauge
    yield CounterMetricFamily(
        "egw_nomad_log_catchup_reads",
        "Catch-up reads of Nomad log streams without a live slot",
        value=slots.get("catchup_reads", 0),
    )
    yield CounterMetricFamily(
        "egw_nomad_log_preemptions",
        "Live slots taken from an untailed Nomad log stream for a tailed one",
        value=slots.get("preemptions", 0),
    )


def _storage(status: Mapping[str, Any]) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
    """The database files' size, the watermark (``storage.max_bytes``) and whether writes
    succeed, as ``/readyz`` reports them."""
    if not status:
        return
    yield GaugeMetricFamily(
        "egw_storage_bytes", "Size of the database files (file and WAL)", value=status["size_bytes"]
    )
    yield GaugeMetricFamily(
        "egw_storage_used_bytes",
        "Bytes of the database's pages in use (compared with storage.max_bytes)",
        value=status["used_bytes"],
    )
    if status.get("max_bytes") is not None:
        yield GaugeMetricFamily(
            "egw_storage_max_bytes",
            "storage.max_bytes: past it new tasks are refused",
            value=status["max_bytes"],
        )
    yield CounterMetricFamily(
        "egw_store_write_refusals",
        "Write attempts the database refused (disk full, read-only): each retry counts",
        value=status["refusals"],
    )
    yield GaugeMetricFamily(
        "egw_storage_writable",
        "1 while the database takes writes, 0 while it refuses them (disk full, read-only)",
        value=1.0 if status["writable"] else 0.0,
    )


def _numbers(
    health: Mapping[str, Any], prefix: str = "", depth: int = 0
) -> Iterable[tuple[str, float]]:
    """Numeric leaves as dotted names (``rate_limit.remaining``, ``namespaces.default.reconnects``);
    nesting is bounded, and so are the names: providers report fixed keys per configured item."""
    for key, value in sorted(health.items()):
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            yield name, 1.0 if value else 0.0
        elif isinstance(value, int | float):
            yield name, float(value)
        elif isinstance(value, Mapping) and depth < 2:
            yield from _numbers(value, prefix=f"{name}.", depth=depth + 1)
