"""What a Redis Cluster failover loses of what the services acknowledged, with and without
``WAIT`` (``JOBPROGRESS_REDIS_WAIT_REPLICAS``), in the same run.

On a private cluster of three masters and three replicas (``jobprogress_testing``), a
writer creates jobs as fast as it can, all in partitions of one master, each answered by
:meth:`JobStore.create` as the job-queue's ``202`` would be. Mid-way, that master is killed
with ``SIGKILL``; its replica takes over. Every job whose creation was answered is then
looked for on the promoted master: one missing was acknowledged and lost. The killed node
comes back as a replica, and the next round kills the new master. Rounds alternate between
no waiting and ``WAIT 1`` (100 ms), with a replica that keeps up, and with one stopped
(``SIGSTOP``) ``--lag-ms`` before the kill, as a replica on a stalled host would be.

    .venv/bin/python bench/failover.py --rounds 2 --seconds 2 --lag-ms 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from jobprogress_core.keys import Keys
from jobprogress_core.model import Job
from jobprogress_core.redis import REDIS_ERRORS, create_redis
from jobprogress_core.replication import UNREPLICATED, Replication
from jobprogress_core.settings import Settings
from jobprogress_core.store import JobStore
from jobprogress_testing import RedisCluster

MODES = {"no WAIT": Replication(), "WAIT 1 (100 ms)": Replication(1, 100)}
SECONDS = 2.0


@dataclass
class Round:
    mode: str
    lagging: bool
    answered: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    lost: int = 0
    reported: int = 0  # answered, but counted as not confirmed by the replica


async def write_until(store: JobStore, partitions: list[int], stop: asyncio.Event, result: Round) -> None:
    """Create jobs in ``partitions`` one after another, recording each answered one."""
    keys = store.keys
    while not stop.is_set():
        job = Job.new("build", {}, owner="anon:bench")
        if keys.partition_of(job.id) not in partitions:
            continue
        started = time.perf_counter()
        try:
            if await store.create(job, {"status": "QUEUED", "message": "queued"}):
                result.answered.append(job.id)
                result.latencies.append(time.perf_counter() - started)
        except REDIS_ERRORS:  # the failover window: refused, so not acknowledged
            result.failed += 1
            await asyncio.sleep(0.05)


async def one_round(cluster: RedisCluster, mode: str, lag_ms: int) -> Round:
    settings = Settings.from_env("job-queue-service", {"REDIS_URL": cluster.url})
    redis = create_redis(settings)
    keys = Keys(settings.key_prefix, settings.partitions)
    store = JobStore(redis, keys, replication=MODES[mode])
    victim = cluster.master_of(keys.tag(0))
    replica = cluster.replica_of(victim)
    partitions = [p for p in range(keys.partitions) if cluster.master_of(keys.tag(p)) == victim]
    result = Round(mode, lagging=lag_ms > 0)
    unreplicated = UNREPLICATED.labels("create")._value.get()
    stop = asyncio.Event()
    writer = asyncio.create_task(write_until(store, partitions, stop, result))
    await asyncio.sleep(SECONDS / 2)
    if lag_ms:
        os.kill(replica.pid, signal.SIGSTOP)
        await asyncio.sleep(lag_ms / 1000)
    await asyncio.to_thread(cluster.kill, victim)
    if lag_ms:
        os.kill(replica.pid, signal.SIGCONT)
    promoted = await asyncio.to_thread(cluster.wait_promoted, victim)
    await asyncio.sleep(SECONDS / 2)
    stop.set()
    await writer
    result.reported = int(UNREPLICATED.labels("create")._value.get() - unreplicated)
    for job_id in result.answered:
        if not await redis.exists(keys.job(job_id)):
            result.lost += 1
    await redis.aclose()
    await asyncio.to_thread(cluster.restart, victim)
    print(
        f"  {mode}, lag {lag_ms} ms: killed {victim.address}, {promoted.address} took over", file=sys.stderr
    )
    return result


async def main_async(args: argparse.Namespace) -> None:
    global SECONDS
    SECONDS = args.seconds
    rounds = []
    with tempfile.TemporaryDirectory(prefix="jobprogress-bench-failover-") as workdir:
        cluster = RedisCluster(Path(workdir))
        await asyncio.to_thread(cluster.start)
        try:
            for _ in range(args.rounds):
                for lag_ms in (0, args.lag_ms):
                    for mode in MODES:
                        rounds.append(await one_round(cluster, mode, lag_ms))
        finally:
            await asyncio.to_thread(cluster.stop)
    print(f"{args.rounds} kills per row, {args.seconds:g} s of writing around each")
    print()
    print(
        "| replica | mode | jobs answered | answered, then lost | of those, reported "
        "| refused in the failover | create p50 ms | p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for lagging in (False, True):
        for mode in MODES:
            mine = [r for r in rounds if r.mode == mode and r.lagging == lagging]
            latencies = sorted(x for r in mine for x in r.latencies)
            p50 = statistics.median(latencies) * 1000 if latencies else float("nan")
            p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000 if latencies else float("nan")
            lost = sum(r.lost for r in mine)
            reported = min(lost, sum(r.reported for r in mine))
            replica = f"stopped {args.lag_ms} ms before" if lagging else "keeping up"
            shown = reported if MODES[mode].replicas else "-"
            print(
                f"| {replica} | {mode} | {sum(len(r.answered) for r in mine):,} | {lost} | {shown} "
                f"| {sum(r.failed for r in mine)} | {p50:.2f} | {p99:.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="kills per mode")
    parser.add_argument("--seconds", type=float, default=2.0, help="writing before and after each kill")
    parser.add_argument("--lag-ms", type=int, default=300, help="how far behind the lagging replica is")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
