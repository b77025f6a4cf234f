"""Prometheus metrics of the progress service."""

import time
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from jobprogress_core.model import EventType, parse_stream_id

from .frames import Frame

STREAMS_ACTIVE = Gauge("jobprogress_sse_streams_active", "SSE streams open on this process")
STREAMS_OPENED = Counter("jobprogress_sse_connections_total", "SSE streams opened")
SETUPS_REFUSED = Counter(
    "jobprogress_sse_setups_refused_total",
    "Stream requests answered 503 because this instance had set up its most streams for the "
    "second (JOBPROGRESS_SSE_SETUPS_PER_SECOND)",
)
STREAMS_CLOSED = Counter("jobprogress_sse_disconnects_total", "SSE streams ended, by reason", ["reason"])
EVENTS_SENT = Counter("jobprogress_sse_events_sent_total", "Events written to SSE clients, by type", ["type"])
#: One child per event type, looked up once: counting is on the per-subscriber hot path.
EVENTS_SENT_BY_TYPE = {event_type: EVENTS_SENT.labels(event_type.value) for event_type in EventType}
EVENTS_REPLAYED = Counter(
    "jobprogress_sse_events_replayed_total", "Events sent from the log (catch-up) rather than live"
)
OVERFLOWS = Counter(
    "jobprogress_sse_overflows_total",
    "Times a client fell behind (its unsent bytes or buffered events past the bounds) and was "
    "caught up from the log again; per job, on a stream of many",
)
READER_CONNECTIONS = Gauge(
    "jobprogress_hub_reader_connections",
    "Redis connections the hub's readers hold: one per partition with viewers on this process, "
    "so at most JOBPROGRESS_PARTITIONS",
)
DELIVERY_LATENCY = Histogram(
    "jobprogress_sse_delivery_latency_seconds",
    "From an event's append in Redis (its stream ID's time) to its write to the live clients "
    "of this process, once per event the hub writes to them",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def observe_delivery(events: Sequence[Frame]) -> None:
    """Record the delivery latency of ``events``, just written to their live clients. The
    time is Redis's clock against this host's: keep the hosts' clocks in sync (NTP)."""
    now_ms = time.time() * 1000
    for event in events:
        DELIVERY_LATENCY.observe(max(now_ms - parse_stream_id(event.id)[0], 0.0) / 1000)
