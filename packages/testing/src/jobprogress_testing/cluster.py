"""A local Redis Cluster: masters and replicas as private ``redis-server`` processes on
loopback, and what a test does to one: kill a master and wait for its replica to take over,
bring the node back, fail over by hand, move a slot, cut a replica off its master.

Synchronous, as the rest of the stack. Each node is asked on a connection of its own,
never retried by the client: every wait polls the nodes until a deadline, and says what
was still wrong when it gives up.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from .cluster_node import RedisClusterNode
from .cluster_view import SLOTS, Peer, View, field
from .errors import StackError

__all__ = ["RedisCluster"]

logger = logging.getLogger(__name__)

#: How long one manual failover may take before it is asked for again (Redis gives up on
#: one after 5 s, saying so only in its log).
FAILOVER_ATTEMPT_SECONDS = 6.0
#: The replication output limit a master is given while :meth:`RedisCluster.cut_off` fills
#: it, and Redis's default put back after (``client-output-buffer-limit``, class replica).
CUT_OFF_LIMIT, DEFAULT_REPLICA_LIMIT = "replica 1mb 1mb 0", "replica 256mb 64mb 60"
#: What one write of the filler weighs, and the most it writes before it gives up.
FILLER_BYTES, FILLER_WRITES = 1 << 20, 512


class RedisCluster:
    """A Redis Cluster of private ``redis-server`` processes on 127.0.0.1: by default three
    masters with one replica each, a node timeout of 2 s (a killed master's replica takes
    over about 4 s later) and ``cluster-require-full-coverage no``.

    :meth:`start` returns once every node is ``cluster_state:ok``, every node sees every
    other one healthy with the role and slots it gives itself, and every replica's link to
    its master is up; :meth:`wait_healthy` waits for that again, as far as the live nodes go.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        ports: Sequence[int] | None = None,
    ) -> None:
        """``ports``: one per node, each with port + 10000 free (default: free ones)."""
        count = masters * (1 + replicas)
        if ports is not None and len(ports) != count:
            raise ValueError(f"{masters} masters with {replicas} replicas each need {count} ports")
        self.workdir = workdir
        self.master_count = masters
        self.replicas_per_master = replicas
        given: Sequence[int | None] = ports or [None] * count
        self.nodes = [RedisClusterNode(workdir, port, node_timeout_ms=node_timeout_ms) for port in given]
        #: Nodes :meth:`kill` stopped, and the slots each served then.
        self._killed: dict[RedisClusterNode, tuple[range, ...]] = {}

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """Where a client learns the cluster's layout: the nodes that start as masters."""
        return [("127.0.0.1", node.port) for node in self.nodes[: self.master_count]]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/``: the startup nodes,
        as the services read a cluster's ``REDIS_URL``."""
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.startup_nodes) + "/"

    def start(self, timeout: float = 60.0) -> None:
        """Start the nodes, join them (``redis-cli --cluster create``: the first nodes become
        the masters) and wait until the cluster is healthy; stop them all if that fails."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.nodes_conf.exists():
                raise StackError(
                    f"{node.nodes_conf} is an earlier cluster's: start a new one in a new folder"
                )
        try:
            for node in self.nodes:
                node.start(wait=False)
            for node in self.nodes:
                node.wait_answering()
                node.node_id  # noqa: B018 - known from now on, even while the node is down
            began = time.monotonic()
            self._create(deadline)
            created = time.monotonic()
            self.wait_healthy(deadline - created)
            logger.info(
                "cluster of %d nodes created in %.2fs, healthy %.2fs later: %s",
                len(self.nodes), created - began, time.monotonic() - created, self.url,
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def _create(self, deadline: float) -> None:
        argv = [
            shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
            *(node.address for node in self.nodes),
            "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=deadline - time.monotonic())
        except subprocess.TimeoutExpired as exc:
            output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
            raise StackError(f"redis-cli --cluster create did not finish in time:\n{output}") from None
        if done.returncode != 0:
            raise StackError(
                f"redis-cli --cluster create failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )

    def live(self) -> list[RedisClusterNode]:
        """The nodes running now."""
        return [node for node in self.nodes if node.running]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until the cluster is healthy as far as its live nodes go (see the class)."""
        self._wait(self._problems, timeout, "healthy")

    def masters(self) -> list[RedisClusterNode]:
        """The live masters, as each says itself, by their lowest slot (none last)."""
        selves = [(node, peer) for node, peer in self._selves().items() if peer.role == "master"]
        selves.sort(key=lambda pair: pair[1].slots[0].start if pair[1].slots else SLOTS)
        return [node for node, _ in selves]

    def replica_of(self, master: RedisClusterNode) -> RedisClusterNode:
        """A live replica of ``master``, as the replica says itself."""
        for node, peer in self._selves().items():
            if peer.master_id == master.node_id:
                return node
        raise StackError(f"{master.address} has no live replica")

    def keyslot(self, key: str | bytes) -> int:
        return int(self._any_live().command("CLUSTER", "KEYSLOT", key))

    def master_of(self, key_or_slot: str | bytes | int) -> RedisClusterNode:
        """The live master that serves a key (or a slot), as it says itself."""
        slot = key_or_slot if isinstance(key_or_slot, int) else self.keyslot(key_or_slot)
        owners = [
            node for node, peer in self._selves().items() if peer.role == "master" and peer.serves(slot)
        ]
        if len(owners) != 1:
            names = ", ".join(node.address for node in owners) or "no live master"
            raise StackError(f"slot {slot} is claimed by {names}: wait_healthy() first")
        return owners[0]

    def kill(self, node: RedisClusterNode) -> None:
        """SIGKILL ``node`` and wait for it to exit; its ``nodes.conf`` stays for :meth:`restart`."""
        self._killed[node] = View.parse(node.command("CLUSTER", "NODES")).myself.slots if node.running else ()
        node.kill()
        logger.info("killed %s (pid %s)", node.name, node.pid)

    def wait_promoted(self, killed: RedisClusterNode, timeout: float = 30.0) -> RedisClusterNode:
        """Until a replica of the master :meth:`kill` stopped serves its slots and the cluster
        is healthy on every live node; that new master."""
        served = self._killed.get(killed)
        if not served:
            raise StackError(f"{killed.address} was not a killed master serving slots")
        self.wait_healthy(timeout)
        promoted = {self.master_of(slots.start) for slots in served}
        if len(promoted) != 1:
            raise StackError(
                f"the slots of {killed.address} went to {', '.join(n.address for n in promoted)}"
            )
        return promoted.pop()

    def restart(self, node: RedisClusterNode, timeout: float = 30.0) -> None:
        """Start a killed node again with its ``nodes.conf``, and wait until it has rejoined:
        a killed master comes back as a replica of the one that took over, and returns once
        that master lists it in ``CLUSTER REPLICAS`` and its link is up."""
        if node.running:
            raise StackError(f"{node.address} is running")
        node.start()
        self._killed.pop(node, None)
        self.wait_healthy(timeout)

    def failover(self, master: RedisClusterNode, timeout: float = 30.0) -> RedisClusterNode:
        """``CLUSTER FAILOVER`` on a replica of ``master``, asked again when it silently
        came to nothing, until the two have swapped roles and the cluster is healthy; the
        new master."""
        deadline = time.monotonic() + timeout
        self.wait_healthy(timeout)  # a replica its master does not list yet would fail over to nothing
        replica = self.replica_of(master)
        started = time.monotonic()
        while True:
            self._admin(replica, "CLUSTER", "FAILOVER")
            attempt = min(deadline, time.monotonic() + FAILOVER_ATTEMPT_SECONDS)
            if self._until(lambda: replica.role() == "master" and master.role() == "replica", attempt):
                break
            if time.monotonic() >= deadline:
                raise StackError(f"{replica.address} did not take over from {master.address} in {timeout:g}s")
            logger.info("manual failover to %s came to nothing: asking again", replica.address)
        logger.info(
            "%s took over from %s in %.3fs", replica.address, master.address, time.monotonic() - started
        )
        self.wait_healthy(deadline - time.monotonic())
        return replica

    @contextlib.contextmanager
    def cut_off(self, replica: RedisClusterNode) -> Iterator[RedisClusterNode]:
        """Stop ``replica`` (``SIGSTOP``) and make its master drop the link to it; yields
        that master, and lets the replica go on (``SIGCONT``) on leaving.

        Inside, the master's writes reach no replica: those of them still in the master's
        reply buffer or the sockets when the link dropped, and any after, exist on the master
        alone (the replica's kernel buffers keep what they held, which it reads when it goes
        on). So a master killed inside loses them for good: the failover's loss,
        deterministic. The master drops the link when its reply buffer to the replica passes
        a lowered limit, filled with keys of its own slots that expire within two minutes.
        """
        master = self._master_of_replica(replica)
        replica.signal(signal.SIGSTOP)
        try:
            self._fill_until_dropped(master)
            yield master
        finally:
            replica.signal(signal.SIGCONT)

    def _master_of_replica(self, replica: RedisClusterNode) -> RedisClusterNode:
        master_id = self._selves()[replica].master_id
        for node in self.live():
            if node.node_id == master_id:
                return node
        raise StackError(f"{replica.address} has no live master")

    def _fill_until_dropped(self, master: RedisClusterNode) -> None:
        served = View.parse(master.command("CLUSTER", "NODES")).myself  # the replica does not answer
        tag = next(f"filler{n}" for n in range(1 << 20) if served.serves(key_slot(f"filler{n}".encode())))
        filler = b"x" * FILLER_BYTES
        self._admin(master, "CONFIG", "SET", "client-output-buffer-limit", CUT_OFF_LIMIT)
        try:
            for n in range(FILLER_WRITES):
                master.command("SET", f"{{{tag}}}:{n}", filler, "EX", 120)
                if int(master.command("INFO", "replication")["connected_slaves"]) == 0:
                    logger.info("%s dropped its replica after %d MiB", master.address, n + 1)
                    return
            raise StackError(f"{master.address} kept its replica through {FILLER_WRITES} MiB of writes")
        finally:
            self._admin(master, "CONFIG", "SET", "client-output-buffer-limit", DEFAULT_REPLICA_LIMIT)

    def migrate_slot(
        self, slot: int, target: RedisClusterNode, *, batch: int = 100, timeout: float = 30.0
    ) -> int:
        """Move ``slot`` and its keys to the master ``target``, as ``redis-cli --cluster
        reshard`` does: ``SETSLOT IMPORTING`` on the target, ``MIGRATING`` on the source,
        ``MIGRATE`` of its keys ``batch`` at a time, ``SETSLOT NODE`` on every master; then
        wait until the cluster is healthy. How many keys moved."""
        deadline = time.monotonic() + timeout
        source = self.master_of(slot)
        if source is target:
            return 0
        if target not in self.masters():
            raise StackError(f"{target.address} is not a live master")
        self._admin(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        self._admin(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        moved = 0
        while keys := self._admin(source, "CLUSTER", "GETKEYSINSLOT", slot, batch):
            if time.monotonic() > deadline:
                raise StackError(
                    f"slot {slot}: {moved} keys moved to {target.address} in {timeout:g}s, more left"
                )
            milliseconds = max(int((deadline - time.monotonic()) * 1000), 1)
            self._admin(source, "MIGRATE", "127.0.0.1", target.port, "", 0, milliseconds, "KEYS", *keys)
            moved += len(keys)
        others = [node for node in self.masters() if node not in (source, target)]
        for node in [target, source, *others]:
            self._admin(node, "CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        self.wait_healthy(deadline - time.monotonic())
        logger.info("slot %d moved from %s to %s with %d keys", slot, source.address, target.address, moved)
        return moved

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to every node at once, then wait for each to exit (SIGKILL after ``timeout``)."""
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.stop(max(deadline - time.monotonic(), 0.1))
        self._killed.clear()

    def logs(self) -> str:
        return "\n".join(
            f"----- {node.name} ({node.log_path.name}) -----\n{node.log_tail(30)}" for node in self.nodes
        )

    def _admin(self, node: RedisClusterNode, *args: Any) -> Any:
        try:
            return node.command(*args, timeout=30.0)
        except redis.RedisError as exc:
            raise StackError(f"{node.address}: {' '.join(map(str, args[:4]))} failed: {exc}") from exc

    def _any_live(self) -> RedisClusterNode:
        for node in self.nodes:
            if node.running:
                return node
        raise StackError("no node of the cluster is running")

    def _selves(self) -> dict[RedisClusterNode, Peer]:
        """Each live node as it sees itself (its ``myself`` line of ``CLUSTER NODES``)."""
        return {node: View.parse(node.command("CLUSTER", "NODES")).myself for node in self.live()}

    def _problems(self) -> list[str]:
        """What keeps the cluster from being healthy as far as its live nodes go; none when it is."""
        live, problems = self.live(), []
        views: dict[RedisClusterNode, View] = {}
        replicas: dict[str, list[str]] = {}
        for node in live:
            query = [
                ("CLUSTER", "INFO"),
                ("CLUSTER", "NODES"),
                ("INFO", "replication"),
                ("CLUSTER", "REPLICAS", node.node_id),  # an error reply from a replica
            ]
            try:
                info, nodes, replication, listed = node.commands(query, timeout=2.0)
            except redis.RedisError as exc:
                problems.append(f"{node.address} does not answer ({exc})")
                continue
            if isinstance(nodes, Exception) or isinstance(info, Exception):
                problems.append(f"{node.address}: {info if isinstance(info, Exception) else nodes}")
                continue
            if (state := field(info, "cluster_state")) != "ok":
                problems.append(f"{node.address}: cluster_state:{state}")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                problems.append(f"{node.address}: master_link_status:{replication.get('master_link_status')}")
            views[node] = View.parse(nodes)
            replicas[node.node_id] = [] if isinstance(listed, Exception) else listed
        selves = {view.myself.node_id: view.myself for view in views.values()}
        for node, view in views.items():
            problems += view.disagreements(node.address, selves, {each.node_id for each in live})
        for peer in selves.values():
            listed = replicas.get(peer.master_id or "", [])
            if peer.role == "replica" and not any(f" 127.0.0.1:{peer.port}@" in line for line in listed):
                problems.append(f"127.0.0.1:{peer.port} is not in its master's CLUSTER REPLICAS yet")
        return problems

    def _wait(self, problems: Callable[[], list[str]], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: list[str] = []

        def done() -> bool:
            nonlocal last
            last = problems()
            return not last

        if not self._until(done, deadline):
            raise StackError(f"cluster not {what} after {timeout:g}s: {'; '.join(last[:6])}\n{self.logs()}")

    def _until(self, check: Callable[[], bool], deadline: float) -> bool:
        """Poll ``check`` until it is true (``True``) or ``deadline`` (``False``). A node that
        exited without :meth:`kill` fails at once; one that does not answer is not ready yet."""
        while True:
            for node in self.nodes:
                if not node.running and node not in self._killed and node.popen is not None:
                    raise StackError(f"{node.name} exited ({node.popen.returncode}):\n{node.log_tail()}")
            try:
                if check():
                    return True
            except redis.RedisError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
