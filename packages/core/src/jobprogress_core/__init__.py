"""Runtime library of the jobprogress services: what every service installs.

The names a script or a handler's test needs are here; each module holds one concept (see
the package README)::

    from jobprogress_core import JobStore, Keys, Settings, create_redis

    settings = Settings.from_env("worker-service")
    store = JobStore(create_redis(settings), Keys(settings.key_prefix, settings.partitions))
"""

__version__ = "0.1.0"

from .keys import Keys  # after __version__, which modules import from here
from .model import Event, EventType, Job, JobStatus
from .queue import JobQueue
from .redis import create_redis
from .settings import ConfigError, JobQueueSettings, ProgressSettings, Secret, Settings, WorkerSettings
from .store import JobStore

__all__ = [
    "ConfigError",
    "Event",
    "EventType",
    "Job",
    "JobQueue",
    "JobQueueSettings",
    "JobStatus",
    "JobStore",
    "Keys",
    "ProgressSettings",
    "Secret",
    "Settings",
    "WorkerSettings",
    "__version__",
    "create_redis",
]
