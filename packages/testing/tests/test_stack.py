"""A stack on a local Redis Cluster instead of one ``redis-server``: the services would get
its ``redis+cluster://`` URL. (No service is started here: reading such a URL is the
services' own change.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobprogress_testing import TEST_ENV, ConsulAgent, Stack


def test_a_stack_with_redis_cluster_runs_one_and_gives_its_url_as_redis_url(
    tmp_path: Path, jobprogress_consul: ConsulAgent
) -> None:
    stack = Stack(tmp_path, redis_cluster=True, consul_addr=jobprogress_consul.address, env=dict(TEST_ENV))
    with stack.running():
        cluster = stack.cluster
        assert cluster is not None and stack.redis is None
        assert stack.env()["REDIS_URL"] == cluster.url
        assert cluster.url.startswith("redis+cluster://127.0.0.1:")
        assert [process for process in stack.processes if process in cluster.nodes] == cluster.nodes
        assert len(cluster.masters()) == 3
        assert "redis-server:" in stack.logs()
    assert not [node for node in cluster.nodes if node.running]


def test_by_default_a_stack_runs_one_redis_server(tmp_path: Path, jobprogress_consul: ConsulAgent) -> None:
    stack = Stack(tmp_path, consul_addr=jobprogress_consul.address)
    with stack.running():
        assert stack.cluster is None and stack.redis is not None
        assert stack.env()["REDIS_URL"] == f"redis://127.0.0.1:{stack.redis.port}/0"


def test_a_cluster_of_its_own_excludes_another_redis_and_kept_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="redis_cluster starts a cluster of its own"):
        Stack(tmp_path, redis_cluster=True, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="whose nodes keep no data"):
        Stack(tmp_path, redis_cluster=True, persistent_redis=True)
