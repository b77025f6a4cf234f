"""Client of jobprogress: the ``jobprogress`` command, the API client and the SSE client.

Depends on aiohttp only, so it installs anywhere a job is submitted or watched from::

    from jobprogress_client import collect_events, submit_job

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        job_id = await submit_job(http, "http://127.0.0.1:8083", type="build", steps=4)
        events = await collect_events(http, f"http://127.0.0.1:8083/api/progress/{job_id}")
"""

from .api import ApiError, ReceivedEvent, collect_events, submit_job
from .protocol import TERMINAL_EVENTS, TERMINAL_STATUS_OF, TERMINAL_STATUSES, EventType, JobStatus
from .reporter import ExternalJob, JobEnded, Reporter, start_external_job
from .sse import SseMessage, read_messages

__version__ = "0.1.0"

__all__ = [
    "TERMINAL_EVENTS",
    "TERMINAL_STATUSES",
    "TERMINAL_STATUS_OF",
    "ApiError",
    "EventType",
    "ExternalJob",
    "JobEnded",
    "JobStatus",
    "ReceivedEvent",
    "Reporter",
    "SseMessage",
    "__version__",
    "collect_events",
    "read_messages",
    "start_external_job",
    "submit_job",
]
