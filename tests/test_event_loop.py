"""The event loop never waits on slow work: while 32 clients stream, requests with 2 MB prompts
are tokenized and templated (off the loop), and the loop's worst stall, measured by the server's
own probe (GET /metrics), stays far below the time that work takes."""

from __future__ import annotations

import asyncio
import time

import httpx

from scripts.load import LoadSpec, run_round, worst_stall_bound
from tests.metrics import read_metrics
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

HUGE_PROMPT = "the quick brown fox jumps over the lazy dog " * 50_000  # 2.2 MB, ~450k tokens
STALL_LIMIT = 0.25  # seconds; tokenizing one such prompt takes about a second here


async def huge_request(base_url: str, model: str) -> tuple[int, float]:
    body = {"model": model, "messages": [{"role": "user", "content": HUGE_PROMPT}]}
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=120) as http:
        reply = await http.post(f"{base_url}/v1/chat/completions", json=body)
    return reply.status_code, time.monotonic() - started


async def load_with_huge_prompts(spec: LoadSpec) -> list:
    return await asyncio.gather(
        run_round(spec), *(huge_request(spec.base_url, spec.model) for _ in range(3))
    )


def test_the_event_loop_keeps_running_while_huge_prompts_are_prepared(tmp_path):
    tiny = make_tiny_gemma(tmp_path / "test" / "tiny-gemma")
    with ServerProcess(tmp_path, model=tiny.id, engine="mlx") as server:
        spec = LoadSpec(server.base_url, tiny.id, 32, 32, {"logit_bias": {"2": -100}}, 32)
        before = read_metrics(server.base_url)
        report, *huge = asyncio.run(load_with_huge_prompts(spec))
        after = read_metrics(server.base_url)
    assert not report.errors
    # Each was read in full (tokenized: too long for the 512-token context), taking a while.
    assert all(status == 400 for status, _ in huge), huge
    assert max(seconds for _, seconds in huge) > 0.5
    assert worst_stall_bound(before, after) <= STALL_LIMIT, after
