"""What one Redis Cluster node knows of the others: its ``CLUSTER NODES`` reply, read."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

__all__ = ["SLOTS", "UNHEALTHY", "Peer", "View", "field"]

#: Hash slots of every Redis Cluster.
SLOTS = 16384
#: Flags of a node that the node listing it does not count as a healthy member (yet).
UNHEALTHY = frozenset({"fail", "fail?", "handshake", "noaddr"})


def field(info: str, name: str) -> str | None:
    """One ``name:value`` line of an ``INFO``-like reply (``CLUSTER INFO``)."""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


@dataclass(frozen=True)
class Peer:
    """One line of ``CLUSTER NODES``: a node as the node that answered sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    #: The slots it serves (a slot being imported or migrated is still its old owner's).
    slots: tuple[range, ...]

    @classmethod
    def parse(cls, line: str) -> Peer:
        # <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
        fields = line.split()
        node_id, address, flags, master = fields[:4]
        port = int(address.split("@")[0].rsplit(":", 1)[1] or 0)
        slots = tuple(slot_range(item) for item in fields[8:] if not item.startswith("["))
        return cls(node_id, port, frozenset(flags.split(",")), None if master == "-" else master, slots)

    @property
    def role(self) -> str:
        return "master" if "master" in self.flags else "replica" if "slave" in self.flags else "unknown"

    def serves(self, slot: int) -> bool:
        return any(slot in slots for slots in self.slots)

    def describe(self) -> str:
        if self.role == "replica":
            return f"replica of {self.master_id}"
        return f"{self.role} of {slot_text(self.slots)}"


@dataclass(frozen=True)
class View:
    """A node's ``CLUSTER NODES``: every node it knows, itself included."""

    peers: tuple[Peer, ...]

    @classmethod
    def parse(cls, reply: str) -> View:
        return cls(tuple(Peer.parse(line) for line in reply.splitlines() if line.strip()))

    @property
    def myself(self) -> Peer:
        (peer,) = [peer for peer in self.peers if "myself" in peer.flags]
        return peer

    def disagreements(self, address: str, selves: Mapping[str, Peer], live: Set[str]) -> list[str]:
        """Where this view differs from what each live node says of itself (``selves``, by
        node ID), and the slots it does not see served by a live master; none when it agrees."""
        known = {peer.node_id: peer for peer in self.peers}
        found = []
        for node_id, own in selves.items():
            if node_id not in live:
                continue
            peer = known.get(node_id)
            if peer is None:
                found.append(f"{address} does not know 127.0.0.1:{own.port}")
            elif peer.flags & UNHEALTHY:
                found.append(
                    f"{address} flags 127.0.0.1:{own.port} {','.join(sorted(peer.flags & UNHEALTHY))}"
                )
            elif (peer.role, peer.master_id, peer.slots) != (own.role, own.master_id, own.slots):
                found.append(
                    f"{address} sees 127.0.0.1:{own.port} as {peer.describe()}, not {own.describe()}"
                )
        served = sum(
            len(slots)
            for peer in self.peers
            if peer.node_id in live and peer.role == "master"
            for slots in peer.slots
        )
        if served != SLOTS:
            found.append(f"{address} sees {served} of {SLOTS} slots served by live masters")
        return found


def slot_range(item: str) -> range:
    """``0-5460`` or ``5461``."""
    first, _, last = item.partition("-")
    return range(int(first), int(last or first) + 1)


def slot_text(slots: tuple[range, ...]) -> str:
    return " ".join(f"{r.start}-{r.stop - 1}" if len(r) > 1 else str(r.start) for r in slots) or "no slots"
