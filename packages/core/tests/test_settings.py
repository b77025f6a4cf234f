"""Settings from the environment: defaults, validation naming the variable, masked secrets."""

from __future__ import annotations

import logging

import pytest

from jobprogress_core.settings import ConfigError, Secret, Settings

BASE = {"JOBPROGRESS_SECRET_KEY": "x" * 40}


def test_defaults_follow_the_spec() -> None:
    settings = Settings.from_env("progress-service", BASE)
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert (settings.consul_host, settings.consul_port) == ("127.0.0.1", 8500)
    assert settings.consul_token is None
    assert (settings.host, settings.port, settings.advertise_addr) == ("127.0.0.1", 8083, "127.0.0.1")
    assert settings.env == "development"
    assert settings.key_prefix == "jobprogress:"
    assert settings.sse_retry_ms == 2000 and settings.sse_heartbeat_seconds == 15.0
    assert Settings.from_env("job-queue-service", BASE).port == 8081
    assert Settings.from_env("worker-service", BASE).port == 8082


def test_values_are_read_and_typed() -> None:
    settings = Settings.from_env(
        "worker-service",
        {
            **BASE,
            "REDIS_URL": "rediss://user:pw@redis.internal:6380/2",
            "CONSUL_HTTP_ADDR": "https://consul.internal:8501",
            "CONSUL_HTTP_TOKEN": "tok",
            "JOBPROGRESS_HOST": "0.0.0.0",
            "JOBPROGRESS_PORT": "9000",
            "JOBPROGRESS_LOG_JSON": "true",
            "JOBPROGRESS_WORKER_CONCURRENCY": "8",
        },
    )
    assert (settings.consul_host, settings.consul_port, settings.consul_scheme) == (
        "consul.internal",
        8501,
        "https",
    )
    assert settings.advertise_addr not in ("0.0.0.0", "")  # a wildcard is never advertised
    assert settings.port == 9000 and settings.log_json and settings.worker_concurrency == 8
    assert str(settings.consul_token) == "tok"
    environ = {
        **BASE,
        "JOBPROGRESS_JOB_TYPES": "compile, data-import",
        "JOBPROGRESS_HANDLERS": "my.jobs:handlers",
    }
    queue, worker = (
        Settings.from_env("job-queue-service", environ),
        Settings.from_env("worker-service", environ),
    )
    assert queue.job_types == ("compile", "data-import") and worker.handlers == "my.jobs:handlers"
    assert Settings.from_env("job-queue-service", BASE).job_types == ("build", "import", "report")


#: The service that reads each variable below that job-queue-service does not read.
READER = {
    "JOBPROGRESS_SSE_HEARTBEAT_SECONDS": "progress-service",
    "JOBPROGRESS_SSE_RETRY_MS": "progress-service",
    "JOBPROGRESS_SSE_RETRY_MAX_MS": "progress-service",
    "JOBPROGRESS_SSE_SETUPS_PER_SECOND": "progress-service",
    "JOBPROGRESS_WORKER_CONCURRENCY": "worker-service",
    "JOBPROGRESS_HANDLERS": "worker-service",
    "JOBPROGRESS_VISIBILITY_TIMEOUT": "worker-service",
    "JOBPROGRESS_MAX_ATTEMPTS": "worker-service",
}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_URL", "localhost:6379"),
        ("REDIS_URL", "redis://"),
        ("REDIS_URL", "redis://host:99999"),
        ("CONSUL_HTTP_ADDR", "ftp://consul:8500"),
        ("CONSUL_HTTP_ADDR", "consul:port"),
        ("JOBPROGRESS_PORT", "0"),
        ("JOBPROGRESS_PORT", "65536"),
        ("JOBPROGRESS_PORT", "http"),
        ("JOBPROGRESS_ENV", "prod"),
        ("JOBPROGRESS_KEY_PREFIX", "a{b}"),
        ("JOBPROGRESS_LOG_LEVEL", "LOUD"),
        ("JOBPROGRESS_LOG_JSON", "maybe"),
        ("JOBPROGRESS_SSE_HEARTBEAT_SECONDS", "nan"),
        ("JOBPROGRESS_SSE_RETRY_MS", "-5"),
        ("JOBPROGRESS_SSE_RETRY_MAX_MS", "1999"),  # below the bottom of the range (2000)
        ("JOBPROGRESS_SSE_SETUPS_PER_SECOND", "0"),
        ("JOBPROGRESS_CONSUL_DEREGISTER_AFTER", "soon"),
        ("JOBPROGRESS_WORKER_CONCURRENCY", "1.5"),
        ("JOBPROGRESS_JOB_TYPES", "Build, !"),
        ("JOBPROGRESS_JOB_TYPES", ","),
        ("JOBPROGRESS_HANDLERS", "not a path"),
        ("JOBPROGRESS_VISIBILITY_TIMEOUT", "0.1"),
        ("JOBPROGRESS_MAX_ATTEMPTS", "0"),
        ("JOBPROGRESS_RETENTION_SECONDS", "5"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(READER.get(variable, "job-queue-service"), {**BASE, variable: value})


def test_each_streams_retry_is_drawn_from_a_range_twice_its_bottom_unless_given() -> None:
    settings = Settings.from_env("progress-service", BASE)
    assert (settings.sse_retry_ms, settings.sse_retry_max_ms, settings.sse_setups_per_second) == (
        2000,
        4000,
        5000,
    )
    given = Settings.from_env("progress-service", {**BASE, "JOBPROGRESS_SSE_RETRY_MS": "500"})
    assert (given.sse_retry_ms, given.sse_retry_max_ms) == (500, 1000)
    exact = {**BASE, "JOBPROGRESS_SSE_RETRY_MS": "2000", "JOBPROGRESS_SSE_RETRY_MAX_MS": "2000"}
    assert Settings.from_env("progress-service", exact).sse_retry_max_ms == 2000


def test_secrets_never_show() -> None:
    settings = Settings.from_env(
        "job-queue-service",
        {
            "JOBPROGRESS_SECRET_KEY": "s3cr3t-value",
            "REDIS_URL": "redis://:hunter2@h:1/0",
            "CONSUL_HTTP_TOKEN": "t0k",
        },
    )
    shown = repr(settings)
    for secret in ("s3cr3t-value", "hunter2", "t0k"):
        assert secret not in shown
    assert settings.redis_url_masked == "redis://:***@h:1/0"
    assert repr(Secret("abc")) == "Secret('**********')"
    with pytest.raises(ConfigError, match="REDIS_URL") as error:
        Settings.from_env("job-queue-service", {**BASE, "REDIS_URL": "http://:hunter2@h:1"})
    assert "hunter2" not in str(error.value)


def test_production_needs_a_real_secret(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="JOBPROGRESS_SECRET_KEY is missing"):
        Settings.from_env("progress-service", {"JOBPROGRESS_ENV": "production"})
    with pytest.raises(ConfigError, match="JOBPROGRESS_SECRET_KEY is the default"):
        Settings.from_env(
            "progress-service", {"JOBPROGRESS_ENV": "production", "JOBPROGRESS_SECRET_KEY": "change-me"}
        )
    placeholder = "change-me-compose-development-only-0123456789"
    with pytest.raises(ConfigError, match="JOBPROGRESS_SECRET_KEY is the default"):
        Settings.from_env(
            "progress-service", {"JOBPROGRESS_ENV": "production", "JOBPROGRESS_SECRET_KEY": placeholder}
        )
    with pytest.raises(ConfigError, match="too short"):
        Settings.from_env(
            "progress-service", {"JOBPROGRESS_ENV": "production", "JOBPROGRESS_SECRET_KEY": "short"}
        )
    # In development a placeholder is shared by every instance as it is, with a warning.
    with caplog.at_level(logging.WARNING):
        shared = Settings.from_env("progress-service", {"JOBPROGRESS_SECRET_KEY": "change-me-dev"})
    assert str(shared.secret_key) == "change-me-dev" and "placeholder" in caplog.text
    with caplog.at_level(logging.WARNING):
        first = Settings.from_env("progress-service", {})
        second = Settings.from_env("progress-service", {})
    assert "random key" in caplog.text
    assert str(first.secret_key) != str(second.secret_key) and len(str(first.secret_key)) >= 32


ORIGIN_LISTS = {"JOBPROGRESS_CORS_ORIGINS": "cors_origins", "JOBPROGRESS_IMAGE_ORIGINS": "image_origins"}


@pytest.mark.parametrize("name", sorted(ORIGIN_LISTS))
def test_origin_lists_are_empty_by_default_and_exact_origins_when_given(name: str) -> None:
    assert getattr(Settings.from_env("progress-service", BASE), ORIGIN_LISTS[name]) == ()
    given = " https://App.Example.com:443 ,http://127.0.0.1:8080, https://app.example.com/,,http://[::1]:9000"
    settings = Settings.from_env("progress-service", {**BASE, name: given})
    # As a browser's Origin names them: lower case, no default port, each once.
    assert getattr(settings, ORIGIN_LISTS[name]) == (
        "https://app.example.com",
        "http://127.0.0.1:8080",
        "http://[::1]:9000",
    )


@pytest.mark.parametrize("name", sorted(ORIGIN_LISTS))
@pytest.mark.parametrize(
    "value",
    [
        "*",
        "https://*.example.com",
        "https://example.com/app",
        "https://example.com?x=1",
        "https://example.com#top",
        "example.com",
        "null",
        "ftp://example.com",
        "https://user@example.com",
        "https://example.com:99999",
        "https://exa mple.com",
        "https://good.example.com,http:///",
    ],
)
def test_an_origin_that_is_not_one_stops_the_start(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env("progress-service", {**BASE, name: value})
