"""Prometheus metrics of the progress service."""

from prometheus_client import Counter, Gauge

from jobprogress_core.model import EventType

STREAMS_ACTIVE = Gauge("jobprogress_sse_streams_active", "SSE streams open on this process")
STREAMS_OPENED = Counter("jobprogress_sse_connections_total", "SSE streams opened")
STREAMS_CLOSED = Counter("jobprogress_sse_disconnects_total", "SSE streams ended, by reason", ["reason"])
EVENTS_SENT = Counter("jobprogress_sse_events_sent_total", "Events written to SSE clients, by type", ["type"])
#: One child per event type, looked up once: counting is on the per-subscriber hot path.
EVENTS_SENT_BY_TYPE = {event_type: EVENTS_SENT.labels(event_type.value) for event_type in EventType}
EVENTS_REPLAYED = Counter(
    "jobprogress_sse_events_replayed_total", "Events sent from the log (catch-up) rather than live"
)
