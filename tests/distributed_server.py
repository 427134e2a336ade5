"""`mlxserve serve --distributed` started as a user would: every rank of an `mlx.launch` group on
this machine (MLX's ring backend over loopback), rank 0 serving HTTP."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.server import ServerProcess

MLX_LAUNCH = str(Path(sys.executable).parent / "mlx.launch")
# Below every system's ephemeral range (Linux 32768+, macOS 49152+): an outgoing connection
# can never take a ring port between the check and the ranks' bind.
RING_PORTS = range(20000, 32000)


def free_port_run(count: int) -> int:
    """The first of `count` consecutive free ports: the ring backend binds one per rank."""
    for _ in range(100):
        first = random.choice(RING_PORTS)
        try:
            for port in range(first, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports in {RING_PORTS}")


class LaunchedServer(ServerProcess):
    def __init__(self, models_dir: Path, model: str, mode: str, ranks: int = 2):
        # The ranks share this machine's cores: OpenBLAS threads that outnumber them spin
        # against each other (a rank on a machine of its own keeps them all).
        threads = {"OPENBLAS_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // ranks))}
        super().__init__(models_dir, model=model, extra_args=["--distributed", mode], env=threads)
        ring = ["-n", str(ranks), "--backend", "ring", "--starting-port", str(free_port_run(ranks))]
        self.args = [MLX_LAUNCH, *ring, "--", *self.args]

    def rank_pid(self, rank: int) -> int:
        """From the line each rank logs as it joins the group."""
        return int(re.search(rf"rank {rank} \(pid (\d+)", self.log_text()).group(1))

    def stop(self, timeout: float = 30) -> int | None:
        """Ctrl-C, as in a terminal, reaches every rank (mlx.launch alone would leave them)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()
