"""GET /metrics: the server's health under load, in Prometheus' text format. The event loop's
worst stall (how late it woke a task that only slept), each model's queue, and what its engine
itself reports (sequences decoding, tokens sampled, sampling after a client left), memory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from quart import Blueprint, Response

from mlxserve.api.state import server_state

blueprint = Blueprint("metrics", __name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


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
    lines = server_state().loop_monitor.lines()
    lines += ["# TYPE mlxserve_resident_bytes gauge"]
    rss = await asyncio.to_thread(resident_bytes, os.getpid())
    lines.append(f'mlxserve_resident_bytes{{process="server"}} {rss}')
    for identifier, loaded in sorted(server_state().registry.loaded.items()):
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
