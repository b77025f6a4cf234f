"""The test stack's key is published with this code: production must refuse it."""

from __future__ import annotations

import pytest

from jobprogress_core.settings import ConfigError, Settings
from jobprogress_testing import TEST_ENV, TEST_SECRET_KEY


def test_production_refuses_the_test_secret() -> None:
    assert TEST_ENV["JOBPROGRESS_SECRET_KEY"] == TEST_SECRET_KEY
    with pytest.raises(ConfigError, match="JOBPROGRESS_SECRET_KEY is the default value"):
        Settings.from_env(
            "progress-service", {"JOBPROGRESS_ENV": "production", "JOBPROGRESS_SECRET_KEY": TEST_SECRET_KEY}
        )


def test_development_accepts_it() -> None:
    settings = Settings.from_env("progress-service", {"JOBPROGRESS_SECRET_KEY": TEST_SECRET_KEY})
    assert str(settings.secret_key) == TEST_SECRET_KEY
