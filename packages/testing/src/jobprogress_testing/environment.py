"""The environment the test stack runs in, and credentials signed with its key."""

from __future__ import annotations

from jobprogress_core.security import Audience, Tokens, new_identity

__all__ = ["TEST_ENV", "TEST_SECRET_KEY", "bearer_headers"]

#: The stack's signing key. It is published here, so it starts with ``change-me``: production
#: mode refuses such a key (as it refuses the compose file's), development accepts it.
TEST_SECRET_KEY = "change-me-test-secret-key-for-tests-only"

#: Settings that make the stack quick to react in tests (see the README's table).
TEST_ENV = {
    "JOBPROGRESS_ENV": "development",
    "JOBPROGRESS_SECRET_KEY": TEST_SECRET_KEY,
    "JOBPROGRESS_CONSUL_CHECK_INTERVAL": "1",
    "JOBPROGRESS_CONSUL_RETRY_SECONDS": "1",
    "JOBPROGRESS_WORKER_BLOCK_MS": "1000",
    "JOBPROGRESS_READER_BLOCK_MS": "2000",
    "JOBPROGRESS_SHUTDOWN_TIMEOUT": "5",
    "JOBPROGRESS_LOG_LEVEL": "INFO",
    # Tests run many clients from one address and identity; the limits' own tests start
    # instances with low ones.
    "JOBPROGRESS_SUBMISSIONS_PER_MINUTE": "100000",
    "JOBPROGRESS_NEW_IDENTITIES_PER_MINUTE": "100000",
    "JOBPROGRESS_STREAMS_PER_IDENTITY": "100000",
    "JOBPROGRESS_REPORTS_PER_MINUTE": "100000",
    "JOBPROGRESS_EXTERNAL_SWEEP_SECONDS": "0.5",
}


def bearer_headers(identity: str | None = None) -> dict[str, str]:
    """``Authorization`` for ``identity`` (a new one by default), signed with the stack's
    secret, as ``POST /api/tokens`` would issue it."""
    token, _ = Tokens(TEST_ENV["JOBPROGRESS_SECRET_KEY"]).issue(
        Audience.API, identity or new_identity(), ttl=3600
    )
    return {"Authorization": f"Bearer {token}"}
