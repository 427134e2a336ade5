"""GET /metrics: the server's health under load, in Prometheus' text format. The event loop's
worst stall (how late it woke a task that only slept), each model's queue, and what its engine
itself reports (sequences decoding, tokens sampled, sampling after a client left), memory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from bisect import bisect_left

from quart import Blueprint, Response, current_app

blueprint = Blueprint("metrics", __name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
STALL_PROBE_SECONDS = 0.02  # short enough to catch a blocking call of a few tens of ms
STALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, float("inf"))


class LoopStallMonitor:
    """Sleeps a fixed interval over and over; the lateness of each wake-up is how long every
    other task on the loop could not run."""

    def __init__(self):
        self.worst = 0.0
        self.counts = [0] * len(STALL_BUCKETS)
        self.total = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(STALL_PROBE_SECONDS)
            self.record(max(loop.time() - before - STALL_PROBE_SECONDS, 0.0))

    def record(self, stall: float) -> None:
        self.worst = max(self.worst, stall)
        self.counts[bisect_left(STALL_BUCKETS, stall)] += 1
        self.total += stall

    def lines(self) -> list[str]:
        name = "mlxserve_event_loop_stall_seconds"
        lines = [f"# TYPE {name}_max gauge", f"{name}_max {self.worst:.6f}"]
        lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, count in zip(STALL_BUCKETS, self.counts, strict=True):
            cumulative += count
            label = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'{name}_bucket{{le="{label}"}} {cumulative}')
        lines += [f"{name}_sum {self.total:.6f}", f"{name}_count {cumulative}"]
        return lines


def resident_bytes(pid: int) -> int:
    """A process's resident memory (0 when it is gone)."""
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            return 0
    result = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True)
    return int(result.stdout.strip() or 0) * 1024


@blueprint.get("/metrics")
async def metrics():
    """Server and engine counters in Prometheus' text format."""
    lines = current_app.loop_monitor.lines()
    lines += ["# TYPE mlxserve_resident_bytes gauge"]
    rss = await asyncio.to_thread(resident_bytes, os.getpid())
    lines.append(f'mlxserve_resident_bytes{{process="server"}} {rss}')
    for identifier, loaded in sorted(current_app.registry.loaded.items()):
        lines += await _model_lines(identifier, loaded)
    return Response("\n".join(lines) + "\n", content_type=PROMETHEUS_TEXT)


metrics.response_media_type = "text/plain"


async def _model_lines(identifier: str, loaded) -> list[str]:
    label = f'{{model="{identifier}"}}'
    lines = [
        f"mlxserve_requests_active{label} {loaded.active_requests}",
        f"mlxserve_requests_rejected_total{label} {loaded.rejected_requests}",
    ]
    counters = await loaded.engine.engine_counters()
    for name, value in sorted(counters.items()):
        lines.append(f"mlxserve_engine_{name}{label} {value}")
    child = getattr(loaded.engine, "child_pid", None)
    if child:
        rss = await asyncio.to_thread(resident_bytes, child)
        lines.append(f'mlxserve_resident_bytes{{process="llama.cpp",model="{identifier}"}} {rss}')
    return lines
