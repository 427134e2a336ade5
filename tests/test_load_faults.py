"""Load with faults (scripts/load.py's rounds, at the CI's scale): 64 concurrent clients, a quarter
each streaming, dropping their stream, waiting for the whole answer and giving up on it. Every
round ends with no errors, the engine itself holding nothing a moment after the last client
returned (its own counters, not the HTTP layer's), and memory flat: the resident memory of the
server (and its llama.cpp child) grows less than 10% over five rounds after the warm-up rounds."""

from __future__ import annotations

import asyncio

import pytest

from scripts.load import KINDS, LoadSpec, run_round
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma

CLIENTS = 64
STREAM_DROPS = CLIENTS // len(KINDS)
SETTLE_LIMIT = 1.0  # seconds for dropped requests to leave the engine: a handful of decode steps
RSS_GROWTH_LIMIT = 0.10  # of the resident memory after the warm-up round
MEASURED_ROUNDS = 5


def metric(metrics: dict, name: str, model: str) -> float:
    return metrics.get(f'{name}{{model="{model}"}}', 0.0)


def run_rounds(spec: LoadSpec, warm_up: int) -> list:
    reports = []
    for _ in range(warm_up + MEASURED_ROUNDS):
        report = asyncio.run(run_round(spec))
        assert not report.errors, report.errors[:3]
        assert report.settle_seconds < SETTLE_LIMIT, report.summary()
        assert metric(report.after, "mlxserve_engine_sequences", spec.model) == 0
        assert metric(report.after, "mlxserve_requests_active", spec.model) == 0
        reports.append(report)
    resident = [report.rss(report.after) for report in reports]
    warm, last = resident[warm_up - 1], resident[-1]
    assert last - warm < RSS_GROWTH_LIMIT * warm, [round(rss / 2**20, 1) for rss in resident]
    return reports


def test_mlx_engine_under_load_with_disconnects(tmp_path):
    tiny = make_tiny_gemma(tmp_path / "test" / "tiny-gemma")
    with ServerProcess(tmp_path, model=tiny.id, engine="mlx") as server:
        # EOS banned: every reply runs its full length, so each drop interrupts a live sequence.
        no_eos = {"logit_bias": {"2": -100}}
        spec = LoadSpec(server.base_url, tiny.id, CLIENTS, 48, no_eos, drop_max_tokens=400)
        # The server's malloc arenas settle over the first rounds (resident MiB after each, on
        # this machine: 156, 157, 159, 162, 163, 165, 171, 166, 168, 168, 168), then hold.
        reports = run_rounds(spec, warm_up=4)
    for report in reports:
        cancelled = metric(report.after, "mlxserve_engine_sequences_cancelled", tiny.id) - metric(
            report.before, "mlxserve_engine_sequences_cancelled", tiny.id
        )
        # Each dropped stream was mid-reply; a whole request given up on may not have started.
        assert STREAM_DROPS <= cancelled <= 2 * STREAM_DROPS
        # The runner sampled at most the one token already in flight for a departed client.
        assert metric(report.after, "mlxserve_engine_max_tokens_after_cancel", tiny.id) <= 1


@pytest.mark.parametrize("engine", ["llamacpp"])
def test_llamacpp_engine_under_load_with_disconnects(models_dir, twin_ids, engine):
    model = twin_ids[engine]  # Gemma 3's vocabulary and end tokens, on tiny random weights
    # Without llama.cpp's RAM prompt cache, whose growth up to its bound is by design.
    args = ("--prompt-cache-bytes", "0")
    with ServerProcess(models_dir, model=model, engine=engine, extra_args=args) as server:
        no_eos = {"logit_bias": {"1": -100, "106": -100}}
        run_rounds(LoadSpec(server.base_url, model, CLIENTS, 8, no_eos), warm_up=1)
