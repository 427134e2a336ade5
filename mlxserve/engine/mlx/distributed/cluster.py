"""The processes that serve one model together (`mlxserve serve --distributed`, started by
`mlx.launch`): MLX's distributed group, the backend that connects it, and who each rank is."""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from mlxserve.processes import process_exists

log = logging.getLogger(__name__)

MODES = ("tensor", "pipeline")
PEER_BYTES = 256  # room for one rank's host name and process id in the start-up exchange
# What mlx.launch sets in each rank's environment, by backend.
LAUNCH_VARIABLES = {
    "jaccl": "MLX_IBV_DEVICES",
    "ring": "MLX_HOSTFILE",
    "mpi": "OMPI_COMM_WORLD_RANK",
}


class ClusterError(Exception):
    """The group could not be formed: said plainly on the command line."""


@dataclass(frozen=True)
class Peer:
    rank: int
    host: str
    pid: int

    def __str__(self) -> str:
        return f"rank {self.rank} (pid {self.pid} on {self.host})"


@dataclass
class Cluster:
    mode: str  # tensor | pipeline
    backend: str  # ring | jaccl | mpi
    group: mx.distributed.Group
    peers: list[Peer]

    @property
    def rank(self) -> int:
        return self.group.rank()

    @property
    def size(self) -> int:
        return self.group.size()

    def status(self) -> dict:
        """How /health and /api/v0 describe the group."""
        return {"mode": self.mode, "backend": self.backend, "ranks": self.size, "rank": self.rank}

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        mx.eval(mx.distributed.all_sum(mx.array(1.0), group=self.group, stream=mx.cpu))

    def lost_peers(self) -> str:
        """The rank(s) that a failed collective lost: the other one of two; of more, those on
        this host whose process is gone, else every other rank."""
        others = [peer for peer in self.peers if peer.rank != self.rank]
        here = self.peers[self.rank].host
        gone = [peer for peer in others if peer.host == here and not process_exists(peer.pid)]
        return " or ".join(str(peer) for peer in (gone or others))


def launched_backend() -> str | None:
    """The backend mlx.launch set this process up for, if it started it."""
    return next((name for name, var in LAUNCH_VARIABLES.items() if os.environ.get(var)), None)


def join(mode: str) -> Cluster:
    """Form the group with the other ranks and learn who they are (blocks until all arrive)."""
    backend = launched_backend()
    if backend is None:
        raise ClusterError(
            "--distributed runs under MLX's launcher, one process per rank: mlx.launch "
            "--backend ring --hostfile hosts.json -- mlxserve serve --distributed "
            f"{mode} ... (docs/distributed.md)"
        )
    group = mx.distributed.init(strict=True, backend=backend)
    if group.size() < 2:
        raise ClusterError(
            f"--distributed needs at least 2 ranks; mlx.launch started {group.size()}"
        )
    cluster = Cluster(mode, backend, group, _exchange_peers(group))
    log.info(
        "%s of %d joined over %s (%s)", cluster.peers[cluster.rank], cluster.size, backend, mode
    )
    return cluster


def _exchange_peers(group: mx.distributed.Group) -> list[Peer]:
    slots = np.zeros((group.size(), PEER_BYTES), dtype=np.uint8)
    mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()[:PEER_BYTES]
    slots[group.rank(), : len(mine)] = np.frombuffer(mine, np.uint8)
    summed = np.array(mx.distributed.all_sum(mx.array(slots), group=group, stream=mx.cpu))
    peers = []
    for rank, row in enumerate(summed):
        info = json.loads(row.tobytes().rstrip(b"\0"))
        peers.append(Peer(rank, info["host"], info["pid"]))
    return peers
