"""Each service's settings, read from the environment and validated at start.

:class:`Settings` holds what every service reads (:mod:`.base`); each service has a subclass
that adds only what that service reads besides (:mod:`.services`): :class:`JobQueueSettings`,
:class:`WorkerSettings` and :class:`ProgressSettings`, the first and the last by way of
:class:`ClientFacingSettings`. ``Settings.from_env(service)`` returns the settings of
``service``, of its own class: a service validates every variable it reads and never looks
at another service's. A bad value raises :class:`ConfigError` naming the variable; secrets
are :class:`Secret` (:mod:`.environ`, the typed readers).
"""

from .base import DEFAULT_PORTS, ENVIRONMENTS, LOG_LEVELS, WILDCARD_HOSTS, Settings
from .environ import ConfigError, Environ, Secret
from .services import (
    ClientFacingSettings,
    JobQueueSettings,
    ProgressSettings,
    WorkerSettings,
)

__all__ = [
    "DEFAULT_PORTS",
    "ENVIRONMENTS",
    "LOG_LEVELS",
    "WILDCARD_HOSTS",
    "ClientFacingSettings",
    "ConfigError",
    "Environ",
    "JobQueueSettings",
    "ProgressSettings",
    "Secret",
    "Settings",
    "WorkerSettings",
]
