"""The local Redis Cluster, as real ``redis-server`` processes: it starts healthy with every
slot served; a killed master's replica takes over with what was written; the killed node
comes back as a replica; a manual failover swaps roles; a slot moves with its keys; stop
leaves nothing behind. Seen through redis-py's cluster client, as the services will.

The tests that leave the cluster as healthy as they found it share one; those that kill a
node get one of their own."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as ClusterClient
from redis.exceptions import MovedError

from jobprogress_testing import RedisCluster, StackError, free_port
from jobprogress_testing.cluster_node import BUS_OFFSET

MakeCluster = Callable[..., RedisCluster]


def startup_nodes(url: str) -> list[ClusterNode]:
    """The nodes of a ``redis+cluster://host:port,host:port/`` URL."""
    parts = urlsplit(url)
    assert parts.scheme == "redis+cluster" and parts.path == "/"
    return [
        ClusterNode(host, int(port))
        for host, port in (node.rsplit(":", 1) for node in parts.netloc.split(","))
    ]


@contextlib.contextmanager
def client(cluster: RedisCluster) -> Iterator[ClusterClient]:
    """A cluster client that knows the cluster by its URL only."""
    rc = ClusterClient(startup_nodes=startup_nodes(cluster.url), decode_responses=True, socket_timeout=5)
    try:
        yield rc
    finally:
        rc.close()


def test_it_starts_healthy_with_every_slot_served_by_a_master_with_a_replica(
    jobprogress_redis_cluster: RedisCluster,
) -> None:
    cluster = jobprogress_redis_cluster
    assert len(cluster.nodes) == 6 and all(node.running for node in cluster.nodes)
    assert all(node.port + BUS_OFFSET <= 65535 for node in cluster.nodes)
    first = ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes[:3])
    assert cluster.url == f"redis+cluster://{first}/"
    masters = cluster.masters()
    assert len(masters) == 3
    assert {cluster.replica_of(master) for master in masters} == set(cluster.nodes) - set(masters)
    for node in cluster.nodes:
        info = node.command("CLUSTER", "INFO")
        assert "cluster_state:ok" in info and "cluster_known_nodes:6" in info
        served = node.command("CLUSTER", "SLOTS")  # [first, last, master, replicas with data...]
        assert {entry[2][1] for entry in served} == {master.port for master in masters}
        assert sum(last - first + 1 for first, last, *_ in served) == 16384
    with client(cluster) as rc:
        keys = [f"start:{n}" for n in range(60)]
        for key in keys:
            rc.set(key, key)
        assert [rc.get(key) for key in keys] == keys
        assert len({cluster.master_of(key) for key in keys}) == 3  # every master holds some


def test_master_of_names_the_node_that_serves_a_key(jobprogress_redis_cluster: RedisCluster) -> None:
    cluster = jobprogress_redis_cluster
    with client(cluster) as rc:
        rc.set("owner:a", "1")
    master = cluster.master_of("owner:a")
    assert cluster.master_of(cluster.keyslot("owner:a")) is master
    assert master.command("GET", "owner:a") == "1"
    other = next(node for node in cluster.masters() if node is not master)
    with pytest.raises(MovedError, match=f"^{cluster.keyslot('owner:a')} 127.0.0.1:{master.port}$"):
        other.command("GET", "owner:a")


def test_failover_swaps_a_master_and_its_replica_and_back(jobprogress_redis_cluster: RedisCluster) -> None:
    cluster = jobprogress_redis_cluster
    with client(cluster) as rc:
        rc.set("failover:a", "before")
    master = cluster.master_of("failover:a")
    replica = cluster.replica_of(master)
    assert cluster.failover(master) is replica
    assert (replica.role(), master.role()) == ("master", "replica")
    assert cluster.replica_of(replica) is master
    assert cluster.master_of("failover:a") is replica
    with client(cluster) as rc:
        assert rc.get("failover:a") == "before"  # a manual failover waits for the replica to catch up
        rc.set("failover:a", "after")
    assert cluster.failover(replica) is master  # as it was, for the other tests
    assert master.command("GET", "failover:a") == "after"


def test_migrate_slot_moves_a_slot_and_all_its_keys(jobprogress_redis_cluster: RedisCluster) -> None:
    cluster = jobprogress_redis_cluster
    slot = cluster.keyslot("{moving}")
    source = cluster.master_of(slot)
    target = next(node for node in cluster.masters() if node is not source)
    with client(cluster) as rc:
        for n in range(250):  # more than one batch
            rc.set(f"{{moving}}:{n}", n)
        rc.set(b"{moving}:\xff\xfe", b"binary")  # a key that is no UTF-8 moves too
        assert cluster.migrate_slot(slot, target) == 251
        assert cluster.migrate_slot(slot, target) == 0  # there already
        assert cluster.master_of(slot) is target
        assert target.command("CLUSTER", "COUNTKEYSINSLOT", slot) == 251
        assert source.command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        assert rc.get("{moving}:7") == "7"  # a client that knew the old owner follows MOVED
    with client(cluster) as rc:
        assert rc.get("{moving}:249") == "249"
        assert rc.get(b"{moving}:\xff\xfe") == "binary"
    for node in cluster.nodes:  # every node, replicas too, names the new owner
        (owner,) = [entry for entry in node.command("CLUSTER", "SLOTS") if entry[0] <= slot <= entry[1]]
        assert owner[2][1] == target.port


def test_a_killed_masters_replica_takes_over_with_what_was_written(
    jobprogress_make_redis_cluster: MakeCluster,
) -> None:
    cluster = jobprogress_make_redis_cluster()
    master = cluster.master_of("kept")
    replica = cluster.replica_of(master)
    with redis.Redis(port=master.port, socket_timeout=5) as direct:
        pipeline = direct.pipeline(transaction=False)  # WAIT counts this connection's writes
        pipeline.set("kept", "yes")
        pipeline.execute_command("WAIT", 1, 1000)
        assert pipeline.execute() == [True, 1]  # on the replica too, before the kill
    started = time.monotonic()
    cluster.kill(master)
    assert not master.running
    with pytest.raises(StackError, match=r"cluster not healthy after 0.5s: .*of 16384 slots served"):
        cluster.wait_healthy(0.5)  # the replica waits for the node timeout (2 s) first
    assert cluster.wait_promoted(master) is replica
    assert time.monotonic() - started < 15
    assert replica.role() == "master" and cluster.master_of("kept") is replica
    with client(cluster) as rc:  # its URL names the dead node first: the client tries the next
        assert rc.get("kept") == "yes"
        rc.set("kept", "still")


def test_a_killed_master_restarted_rejoins_as_a_replica_that_can_take_over_again(
    jobprogress_make_redis_cluster: MakeCluster,
) -> None:
    cluster = jobprogress_make_redis_cluster()
    master = cluster.masters()[0]
    cluster.kill(master)
    promoted = cluster.wait_promoted(master)
    cluster.restart(master)
    assert master.running and master.role() == "replica"
    assert cluster.replica_of(promoted) is master
    listed = promoted.command("CLUSTER", "REPLICAS", promoted.node_id)
    assert [line for line in listed if f" 127.0.0.1:{master.port}@" in line]
    assert master.command("INFO", "replication")["master_link_status"] == "up"
    assert cluster.failover(promoted) is master  # right after its restart
    assert cluster.masters()[0] is master
    with pytest.raises(StackError, match="is running"):
        cluster.restart(master)


def test_stop_leaves_no_process_and_frees_every_port(jobprogress_make_redis_cluster: MakeCluster) -> None:
    cluster = jobprogress_make_redis_cluster()
    pids = [node.pid for node in cluster.nodes]
    cluster.stop()
    assert not [node for node in cluster.nodes if node.running]
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]  # exited and reaped
    for node in cluster.nodes:
        for port in (node.port, node.port + BUS_OFFSET):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
                sock.bind(("127.0.0.1", port))
                sock.listen()


def test_a_node_that_cannot_start_stops_the_others_and_says_why(tmp_path: Path) -> None:
    ports = [free_port(bus_offset=BUS_OFFSET) for _ in range(6)]
    cluster = RedisCluster(tmp_path, ports=ports)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[4]))
        taken.listen()
        with pytest.raises(
            StackError, match=rf"redis-server:{ports[4]} exited while starting:\n(.|\n)*in use"
        ):
            cluster.start()
    assert not [node for node in cluster.nodes if node.running]


def test_a_folder_of_an_earlier_cluster_is_refused(tmp_path: Path) -> None:
    cluster = RedisCluster(tmp_path)
    cluster.nodes[2].nodes_conf.write_text("")
    with pytest.raises(StackError, match="is an earlier cluster's: start a new one in a new folder"):
        cluster.start()
    assert not [node for node in cluster.nodes if node.popen is not None]
