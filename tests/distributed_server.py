"""`mlxserve serve --distributed` started as a user would: every rank of an `mlx.launch` group on
this machine (MLX's ring backend over loopback), rank 0 serving HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.server import ServerProcess, free_port

MLX_LAUNCH = str(Path(sys.executable).parent / "mlx.launch")


class LaunchedServer(ServerProcess):
    def __init__(self, models_dir: Path, model: str, mode: str, ranks: int = 2):
        # The ranks share this machine's cores: OpenBLAS threads that outnumber them spin
        # against each other (a rank on a machine of its own keeps them all).
        threads = {"OPENBLAS_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // ranks))}
        super().__init__(models_dir, model=model, extra_args=["--distributed", mode], env=threads)
        ring = ["-n", str(ranks), "--backend", "ring", "--starting-port", str(free_port())]
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
