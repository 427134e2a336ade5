"""The event loop's stalls: how late it wakes a task that only slept, which is how long every
other task could not run. GET /metrics reports them."""

from __future__ import annotations

import asyncio
from bisect import bisect_left

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
