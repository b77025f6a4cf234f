"""Typed access to environment variables.

Every reader returns the variable's value, typed, or its default when it is unset or
blank; a malformed value raises :class:`ConfigError` naming the variable, so that a
misconfigured process stops at once with a message an operator can act on. Secrets are
kept in :class:`Secret`, which never shows itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from ..redis_urls import ClusterUrl, is_cluster_url

__all__ = ["ConfigError", "Environ", "Secret", "masked_url"]


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)


def masked_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class Environ:
    """Typed access to environment variables; every error names the variable."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def text_or_file(self, name: str) -> str | None:
        """The value, or for ``@/path/to/file`` that file's contents (a key kept in a file);
        ``None`` when unset."""
        value = self.raw(name)
        if value is None or not value.startswith("@"):
            return value
        try:
            return Path(value[1:]).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {value[1:]!r}: {exc}") from None

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
        return value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not an integer") from None
        if not minimum <= number <= maximum:
            raise ConfigError(f"{name}={number} is outside {minimum}..{maximum}")
        return number

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a number") from None
        if not minimum <= number <= maximum:
            raise ConfigError(f"{name}={number} is outside {minimum}..{maximum}")
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r} is not a boolean (true/false)")

    def duration(self, name: str, default: str) -> str:
        """A duration as Consul writes them: ``90s``, ``1m``, ``2h``."""
        value = self.text(name, default)
        units = {"s": 1, "m": 60, "h": 3600}
        if len(value) < 2 or value[-1] not in units or not value[:-1].isdigit():
            raise ConfigError(f"{name}={value!r} is not a duration like 90s, 1m or 2h")
        return value

    def import_path(self, name: str) -> str | None:
        """``module:attribute``, or ``None`` when unset."""
        value = self.raw(name)
        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ConfigError(f"{name}={value!r} is not an import path like mypackage.jobs:handlers")
        return value

    def redis_url(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if is_cluster_url(value):
            try:
                ClusterUrl.parse(value)
            except ValueError as exc:
                raise ConfigError(f"{name}={masked_url(value)!r}: {exc}") from None
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"{name}={masked_url(value)!r} must start with redis://, rediss://, unix://,"
                " redis+cluster:// or rediss+cluster://"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigError(f"{name}={masked_url(value)!r} has no host")
        try:
            parts.port  # noqa: B018 - urlsplit validates the port lazily
        except ValueError:
            raise ConfigError(f"{name}={masked_url(value)!r} has an invalid port") from None
        return value

    def host_port(self, name: str, default: str) -> tuple[str, int, str]:
        """``host:port`` or ``scheme://host:port``, as Consul's own CLI accepts."""
        value = self.text(name, default)
        parsed = urlsplit(value if "//" in value else f"//{value}")
        scheme = parsed.scheme or "http"
        try:
            port = parsed.port
        except ValueError:
            raise ConfigError(f"{name}={value!r} has an invalid port") from None
        if not parsed.hostname or scheme not in ("http", "https"):
            raise ConfigError(f"{name}={value!r} is not host:port or http(s)://host:port")
        return parsed.hostname, port or (443 if scheme == "https" else 8500), scheme
