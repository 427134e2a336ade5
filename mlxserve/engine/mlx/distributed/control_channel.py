"""Rank 0's word to the other ranks of a distributed model, and the watchdog that ends the server
when a rank dies or stops answering.

A message is a list of small operations ("decode these rows", "these are the sampled tokens")
sent as JSON in one `all_sum` of a fixed-size byte array, to which every other rank adds zeros;
a message too long for it (a long prompt) takes a second `all_sum` of its remaining bytes. A
collective never returns when a peer is gone without closing its sockets, so a watchdog thread
fails every request and ends the process when a message or step takes longer than a bound.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import mlx.core as mx
import numpy as np

from mlxserve.engine.base import EngineUnavailable
from mlxserve.engine.mlx.distributed.cluster import Cluster

log = logging.getLogger(__name__)

MESSAGE_BYTES = 4096  # one collective carries a message this long; a longer one takes two
LENGTH_BYTES = 4
# Rank 0 says something at least this often while idle, so the others notice when it is gone.
HEARTBEAT_SECONDS = 1.0
# No step (a prefill chunk or a decode step of the whole batch, with its messages) takes this
# long between healthy ranks; a longer one means a rank stopped answering.
STEP_TIMEOUT_SECONDS = 30.0
EXIT_GRACE_SECONDS = 1.5  # lets the error events reach the clients before the process ends
FAILED_EXIT_CODE = 3
# How MLX's distributed backends begin the message of a lost connection. After one, any further
# collective would wait for ever, so none is tried.
BACKEND_ERRORS = ("[ring]", "[jaccl]", "[mpi]", "[nccl]")

Op = list  # ["decode", [rows]], ["sampled", tokens, finished], ...


class Link:
    def __init__(self, cluster: Cluster, step_timeout: float = STEP_TIMEOUT_SECONDS):
        self.cluster = cluster
        self.step_timeout = step_timeout
        self.failed = False
        self.on_failure: Callable[[EngineUnavailable], None] | None = None  # rank 0's runner
        self._pending: list[Op] = []  # operations that travel with the next message
        self._watching = False
        self._last_progress = time.monotonic()
        self._failing = threading.Lock()
        threading.Thread(target=self._watch, name="mlx-watchdog", daemon=True).start()

    def queue(self, *op) -> None:
        """An operation for the other ranks that needs no reply: it goes with the next send."""
        self._pending.append(list(op))

    def send(self, *op, watched: bool = True) -> None:
        """Rank 0: everything queued, then `op`, to every other rank. Unwatched, the others may
        take their time to listen (they are still starting or loading)."""
        ops, self._pending = [*self._pending, list(op)], []
        self._exchange(json.dumps(ops).encode(), watched)

    def receive(self, watched: bool = True) -> list[Op]:
        """Another rank: the next message from rank 0 (unwatched: while no model is loaded,
        rank 0 may say nothing for a long time)."""
        return json.loads(self._exchange(None, watched))

    def pause(self) -> None:
        """Rank 0 waits for requests: silence from the others is expected until it speaks."""
        self._watching = False

    def check(self, exc: BaseException) -> None:
        """Fail at once if a step's error was a lost connection to another rank."""
        if isinstance(exc, RuntimeError) and str(exc).startswith(BACKEND_ERRORS):
            self.fail(f"lost {self.cluster.lost_peers()}: {exc}")

    def _exchange(self, payload: bytes | None, watched: bool) -> bytes:
        self._last_progress = time.monotonic()
        self._watching = watched
        try:
            data = self._all_sum_bytes(payload)
        except Exception as exc:  # noqa: BLE001 - a broken collective ends distributed serving
            self.fail(f"lost {self.cluster.lost_peers()}: {exc}")
        self._last_progress = time.monotonic()
        return data

    def _all_sum_bytes(self, payload: bytes | None) -> bytes:
        buffer = np.zeros(MESSAGE_BYTES, dtype=np.uint8)
        if payload is not None:
            head = len(payload).to_bytes(LENGTH_BYTES, "little") + payload
            buffer[: min(len(head), MESSAGE_BYTES)] = np.frombuffer(head[:MESSAGE_BYTES], np.uint8)
        summed = self._all_sum(buffer)
        length = int.from_bytes(summed[:LENGTH_BYTES].tobytes(), "little")
        data = summed[LENGTH_BYTES : LENGTH_BYTES + length].tobytes()
        if len(data) < length:  # the rest of a long message
            rest = np.zeros(length - len(data), dtype=np.uint8)
            if payload is not None:
                rest[:] = np.frombuffer(payload[len(data) :], np.uint8)
            data += self._all_sum(rest).tobytes()
        return data

    def _all_sum(self, buffer: np.ndarray) -> np.ndarray:
        summed = mx.distributed.all_sum(mx.array(buffer), group=self.cluster.group, stream=mx.cpu)
        mx.eval(summed)  # raises when a peer is gone (np.array alone might wait for ever)
        return np.array(summed)

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.step_timeout / 4))
            stalled = time.monotonic() - self._last_progress
            if self._watching and stalled > self.step_timeout:
                self.fail(
                    f"{self.cluster.lost_peers()} stopped answering: no step completed in "
                    f"{stalled:.0f} s"
                )

    def fail(self, reason: str) -> NoReturn:
        """End distributed serving: every request in flight gets a 503 saying why, then the
        process exits (a collective cannot be taken back, so nothing here can go on)."""
        if not self._failing.acquire(blocking=False):
            while True:  # another thread is already ending the process
                time.sleep(1)
        self.failed = True
        log.error("distributed serving failed on rank %d: %s; exiting", self.cluster.rank, reason)
        if self.on_failure is not None:
            self.on_failure(EngineUnavailable(f"the distributed model stopped: {reason}"))
        time.sleep(EXIT_GRACE_SECONDS)
        logging.shutdown()
        os._exit(FAILED_EXIT_CODE)


@dataclass
class Session:
    """This process's place in the group, and the model the group serves (one at a time: every
    rank's runner follows rank 0's, and rank 0 runs one)."""

    cluster: Cluster
    link: Link
    model_id: str | None = None

    def dismiss(self) -> None:
        """Rank 0, shutting down: the other ranks exit too."""
        if not self.link.failed and self.model_id is None:
            self.link.send("exit")
