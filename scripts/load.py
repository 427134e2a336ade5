"""Load with faults: N concurrent clients against a server, a quarter each streaming to the end,
dropping their stream after a few chunks, waiting for the whole answer, and giving up on it
mid-request. Reports per round requests/s, p50/p99 latency, errors, the server's and llama.cpp's
resident memory before and after, the event loop's worst stall, and the engine's own counters
once the round has settled (sequences left, most tokens sampled after a client left).

    python scripts/load.py --models-dir DIR --model ID --engine mlx [--clients 64 --rounds 3]
    python scripts/load.py --url http://127.0.0.1:1234 --model ID

Without --url it starts `mlxserve serve` itself on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.metrics import read_metrics  # noqa: E402

KINDS = ("stream", "stream-drop", "whole", "whole-drop")
DROP_AFTER_CHUNKS = 3  # a dropping stream reads this many chunks, then closes
DROP_AFTER_SECONDS = 0.3  # a dropping whole request gives up after this long
SETTLE_SECONDS = 30.0


@dataclass
class Outcome:
    kind: str
    latency: float
    error: str | None = None
    chunks: int = 0


@dataclass
class RoundReport:
    outcomes: list[Outcome]
    seconds: float
    before: dict[str, float]
    after: dict[str, float]  # once every request has left the server and the engine
    settle_seconds: float

    @property
    def errors(self) -> list[str]:
        return [o.error for o in self.outcomes if o.error]

    @property
    def latencies(self) -> list[float]:
        return sorted(o.latency for o in self.outcomes if not o.kind.endswith("drop"))

    def rss(self, metrics: dict[str, float]) -> float:
        """Resident bytes of the server and its llama.cpp children together."""
        return sum(v for k, v in metrics.items() if k.startswith("mlxserve_resident_bytes"))

    def worst_stall_bound(self) -> float:
        return worst_stall_bound(self.before, self.after)

    def summary(self) -> dict:
        latencies = self.latencies
        return {
            "requests": len(self.outcomes),
            "requests_per_second": round(len(self.outcomes) / self.seconds, 2),
            "p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "p99_s": round(_percentile(latencies, 0.99), 3) if latencies else None,
            "errors": len(self.errors),
            "rss_mib_before": round(self.rss(self.before) / 2**20, 1),
            "rss_mib_after": round(self.rss(self.after) / 2**20, 1),
            "server_rss_mib_after": round(
                self.after.get('mlxserve_resident_bytes{process="server"}', 0) / 2**20, 1
            ),
            "loop_stalls_at_most_ms": self.worst_stall_bound() * 1000,
            "settle_s": round(self.settle_seconds, 2),
        }


@dataclass
class LoadSpec:
    base_url: str
    model: str
    clients: int = 64
    max_tokens: int = 32
    extra_body: dict = field(default_factory=dict)  # such as a logit_bias that bans EOS
    # Clients that leave ask for long replies: a request the engine failed to stop would
    # still be running when the round ends.
    drop_max_tokens: int = 2000

    def body(self, stream: bool, drop: bool) -> dict:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": "Tell a long story about a lighthouse."}],
            "max_tokens": self.drop_max_tokens if drop else self.max_tokens,
            "stream": stream,
            **self.extra_body,
        }


async def one_client(http: httpx.AsyncClient, spec: LoadSpec, kind: str) -> Outcome:
    url = f"{spec.base_url}/v1/chat/completions"
    started = time.monotonic()
    try:
        if kind.startswith("stream"):
            drop = kind == "stream-drop"
            chunks, error = await _stream(http, url, spec.body(True, drop), drop)
            return Outcome(kind, time.monotonic() - started, error, chunks)
        request = http.post(url, json=spec.body(False, kind == "whole-drop"))
        if kind == "whole-drop":
            try:
                await asyncio.wait_for(request, DROP_AFTER_SECONDS)
            except asyncio.TimeoutError:
                return Outcome(kind, time.monotonic() - started)
            return Outcome(kind, time.monotonic() - started)
        reply = await request
        error = None if reply.status_code == 200 else f"{reply.status_code}: {reply.text[:200]}"
        return Outcome(kind, time.monotonic() - started, error)
    except httpx.HTTPError as exc:
        return Outcome(kind, time.monotonic() - started, f"{type(exc).__name__}: {exc}")


async def _stream(http, url: str, body: dict, drop: bool) -> tuple[int, str | None]:
    chunks = 0
    async with http.stream("POST", url, json=body) as reply:
        if reply.status_code != 200:
            return 0, f"{reply.status_code}: {(await reply.aread())[:200]!r}"
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line.removeprefix("data: "))
            if "error" in payload:
                return chunks, f"error event: {payload['error']}"
            chunks += 1
            if drop and chunks >= DROP_AFTER_CHUNKS:
                return chunks, None  # leaving the block closes the connection mid-stream
    return chunks, None


async def run_round(spec: LoadSpec) -> RoundReport:
    before = await asyncio.to_thread(read_metrics, spec.base_url)
    limits = httpx.Limits(max_connections=spec.clients + 8)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        outcomes = await asyncio.gather(
            *(one_client(http, spec, KINDS[i % len(KINDS)]) for i in range(spec.clients))
        )
    seconds = time.monotonic() - started
    after, settle = await _settled(spec)
    return RoundReport(list(outcomes), seconds, before, after, settle)


async def _settled(spec: LoadSpec) -> tuple[dict[str, float], float]:
    """Metrics once no request is active in the server and no sequence in the engine."""
    started = time.monotonic()
    while True:
        metrics = await asyncio.to_thread(read_metrics, spec.base_url)
        busy = sum(
            v
            for k, v in metrics.items()
            if k.startswith(("mlxserve_requests_active", "mlxserve_engine_sequences{"))
        )
        if not busy or time.monotonic() - started > SETTLE_SECONDS:
            return metrics, time.monotonic() - started
        await asyncio.sleep(0.05)


def worst_stall_bound(before: dict[str, float], after: dict[str, float]) -> float:
    """The smallest stall-histogram bound that held every event-loop stall between two
    readings of the metrics."""
    prefix = 'mlxserve_event_loop_stall_seconds_bucket{le="'
    grown = {
        name.removeprefix(prefix).rstrip('"}'): after[name] - before.get(name, 0)
        for name in after
        if name.startswith(prefix)
    }
    total = grown.pop("+Inf")
    bounds = sorted((float(bound), count) for bound, count in grown.items())
    return next((bound for bound, count in bounds if count == total), float("inf"))


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(int(len(values) * fraction), len(values) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--models-dir", type=Path, help="the store of the server to start")
    parser.add_argument("--engine", default="mlx", choices=("mlx", "llamacpp"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--drop-max-tokens",
        type=int,
        default=2000,
        help="the reply length clients that leave ask for",
    )
    parser.add_argument(
        "--ban-token",
        type=int,
        action="append",
        default=[],
        help="a token id (such as EOS) to bias away, so every reply runs long",
    )
    parser.add_argument("--serve-args", default="", help="options for the server it starts")
    args = parser.parse_args()
    extra = {"logit_bias": {str(t): -100 for t in args.ban_token}} if args.ban_token else {}
    if args.url:
        spec = LoadSpec(args.url, args.model, args.clients, args.max_tokens, extra)
        return _report(spec, args)
    from tests.server import ServerProcess

    models_dir = args.models_dir or Path.home() / ".mlxserve" / "models"
    serve_args = shlex.split(args.serve_args)
    with ServerProcess(
        models_dir, model=args.model, engine=args.engine, extra_args=serve_args
    ) as server:
        spec = LoadSpec(server.base_url, args.model, args.clients, args.max_tokens, extra)
        return _report(spec, args)


def _report(spec: LoadSpec, args) -> int:
    spec.drop_max_tokens = args.drop_max_tokens
    failed = False
    for number in range(1, args.rounds + 1):
        report = asyncio.run(run_round(spec))
        print(f"round {number}:", json.dumps(report.summary()), flush=True)
        for error in report.errors[:5]:
            print("   error:", error)
        failed = failed or bool(report.errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
