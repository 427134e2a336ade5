"""Speculative decoding: drafts from the prompt or from a draft model change how many tokens one
forward pass yields, never which tokens. Greedy and seeded output must equal plain decoding."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from mlxserve.engine.base import EngineRequest, Speculation
from mlxserve.engine.mlx.model import MLXModel
from mlxserve.sampling.params import SamplingParams
from tests.server import ServerProcess
from tests.tiny_models import make_tiny_gemma, make_tiny_mamba

PARAGRAPH = (
    "The old lighthouse stood on the northern cliff for two hundred years, guiding fishing boats "
    "home through fog and storm. Its keeper, a quiet man named Elias, climbed the spiral stairs "
    "every evening to light the lamp, and every morning he wrote the weather in a leather book. "
    "When the harbour froze in the winter of 1907, he walked across the ice with bread for the "
    "families on the island, and the town still tells that story on the longest night of the "
    "year. Today the lamp is electric and the keeper's house is a small museum, but the book is "
    "still there."
)
REWRITE = (
    f"Original: {PARAGRAPH}\n\nThe same text, with 'northern' replaced by 'southern':\nRewritten:"
)
GREEDY = SamplingParams(temperature=0)
LOOKUP = Speculation(prompt_lookup=True)


def decode(path: Path, runs: list[tuple], context: int = 2048) -> list[tuple]:
    """Each run's token ids, final stats and the runner's speculative steps, one at a time."""

    async def scenario():
        model = await MLXModel.load(path, context, prompt_cache_bytes=0)
        results = []
        try:
            for prompt, max_tokens, sampling, speculation in runs:
                before = (await model.engine_counters())["speculative_steps"]
                request = EngineRequest(
                    prompt, sampling, max_tokens=max_tokens, speculation=speculation
                )
                ids, stats = [], None
                async for event in model.generate(request):
                    ids += event.token_ids
                    stats = event.stats or stats
                steps = (await model.engine_counters())["speculative_steps"] - before
                results.append((ids, stats, steps))
        finally:
            await model.close()
        return results

    return asyncio.run(scenario())


@pytest.fixture(scope="module")
def gemma(models_dir, default_ids) -> Path:
    return Path(models_dir) / default_ids["mlx"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny byte-level model with an 8-token sliding window: past 8 tokens its cache has
    wrapped around and cannot be trimmed."""
    directory = tmp_path_factory.mktemp("tiny-spec") / "a"
    make_tiny_gemma(directory, bytes_vocabulary=True)
    return directory


def test_prompt_lookup_gives_the_plain_tokens_in_fewer_passes(gemma):
    seeded = SamplingParams(temperature=0.7, seed=11)
    plain, lookup, plain_seeded, lookup_seeded = decode(
        gemma,
        [
            (REWRITE, 24, GREEDY, Speculation()),
            (REWRITE, 24, GREEDY, LOOKUP),
            (REWRITE, 12, seeded, Speculation()),
            (REWRITE, 12, seeded, LOOKUP),
        ],
    )
    assert lookup[0] == plain[0] and len(plain[0]) == 24
    assert lookup_seeded[0] == plain_seeded[0]
    assert plain[1].draft is None and plain[2] == 0
    # The reply copies the paragraph: most of it comes from drafts, several tokens a pass.
    assert lookup[1].draft.accepted >= 16
    assert lookup[2] <= 8
    assert lookup[1].draft.drafted >= lookup[1].draft.accepted + lookup[1].draft.rejected


@pytest.fixture(scope="module")
def twin(models_dir, twin_ids) -> Path:
    return Path(models_dir) / twin_ids["mlx"]


def test_a_draft_model_gives_the_plain_tokens(twin):
    """Gemma 3's twin drafting for itself: every draft is accepted."""
    itself = Speculation(draft_model="itself", draft_path=str(twin))
    plain, drafted = decode(
        twin, [(REWRITE, 6, GREEDY, Speculation()), (REWRITE, 6, GREEDY, itself)]
    )
    assert drafted[0] == plain[0]
    assert drafted[1].draft.drafted > 0
    assert drafted[1].draft.accepted == drafted[1].draft.drafted
    assert drafted[1].draft_model == "itself"


def test_rejected_drafts_are_undone_in_caches_that_cannot_be_trimmed(tiny):
    """The model drafts for itself, but its sampler bans tokens the draft keeps proposing: some
    drafts are accepted, some rejected, and each rejection rewinds a wrapped sliding window."""
    prompt = "abcabcabc " * 30 + "xyz xyz abc"
    banned = SamplingParams(temperature=0, logit_bias={2: -100, 67: -100, 255: -100})
    itself = Speculation(draft_model="itself", draft_path=str(tiny))
    plain, lookup, drafted = decode(
        tiny,
        [
            (prompt, 60, banned, Speculation()),
            (prompt, 60, banned, LOOKUP),
            (prompt, 60, banned, itself),
        ],
    )
    assert lookup[0] == plain[0]
    assert drafted[0] == plain[0]
    assert lookup[1].draft.rejected > 0
    assert drafted[1].draft.accepted > 0 and drafted[1].draft.rejected > 0


def test_a_model_with_recurrent_state_decodes_plainly(tiny, tmp_path):
    """A Mamba's state cannot be taken back after a rejected draft: asked to draft, it decodes
    without drafts and gives the same tokens (drafting for it used to end the request)."""
    target = make_tiny_mamba(tmp_path / "mamba")
    prompt = "abcabcabc " * 10 + "xyz xyz abc"
    seeded = SamplingParams(temperature=1.0, seed=3, logit_bias={2: -100})
    by_gemma = Speculation(draft_model="gemma", draft_path=str(tiny))
    plain, drafted = decode(
        target, [(prompt, 40, seeded, Speculation()), (prompt, 40, seeded, by_gemma)]
    )
    assert drafted[0] == plain[0]
    assert drafted[1].draft is None and drafted[2] == 0


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=300)


def test_api_v0_reports_drafts_and_gives_the_same_reply(server, model_id):
    body = {
        "model": model_id,
        "messages": [{"role": "user", "content": REWRITE}],
        "max_tokens": 16,
        "temperature": 0,
    }
    if server.engine == "llamacpp":
        refused = post(server, "/api/v0/chat/completions", {**body, "draft_model": model_id})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "draft_model"
        return
    plain = post(server, "/api/v0/chat/completions", body).json()
    looked = post(server, "/api/v0/chat/completions", {**body, "prompt_lookup": True}).json()
    assert looked["choices"][0]["message"] == plain["choices"][0]["message"]
    assert "total_draft_tokens_count" not in plain["stats"]
    stats = looked["stats"]
    assert stats["total_draft_tokens_count"] > 0
    counted = ("accepted", "rejected", "ignored")
    assert (
        sum(stats[f"{kind}_draft_tokens_count"] for kind in counted)
        == (stats["total_draft_tokens_count"])
    )
    # A request may not make the server load a model the operator did not offer for drafts.
    for name in ("nobody/none", model_id):
        refused = post(server, "/v1/chat/completions", {**body, "draft_model": name}).json()
        assert refused["error"]["code"] == "draft_model_not_offered", refused
        assert refused["error"]["param"] == "draft_model"


def test_structured_output_with_drafts_equals_plain(server, model_id):
    if server.engine != "mlx":
        pytest.skip("prompt lookup per request is the MLX engine's")
    schema = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }
    body = {
        "model": model_id,
        "messages": [{"role": "user", "content": REWRITE}],
        "max_tokens": 20,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}},
    }
    plain = post(server, "/api/v0/chat/completions", body).json()
    looked = post(server, "/api/v0/chat/completions", {**body, "prompt_lookup": True}).json()
    assert looked["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]
    assert "total_draft_tokens_count" not in plain["stats"]
    assert looked["stats"]["accepted_draft_tokens_count"] > 0  # drafts were made and kept


def memory_bytes(server: ServerProcess, model: str) -> int:
    loaded = httpx.get(f"{server.base_url}/api/v0/loaded", timeout=30).json()["data"]
    return next(entry["memory_bytes"] for entry in loaded if entry["identifier"] == model)


@pytest.mark.parametrize("server", ["llamacpp"], indirect=True)
def test_llamacpp_speculation_is_a_server_option(models_dir, default_ids, server):
    """llama.cpp decodes speculatively only when its child starts so: with n-gram drafts, or
    with the server's draft model (here the model drafting for itself). The suite's llama.cpp
    server, started without either, gives the plain figures."""
    model = default_ids["llamacpp"]
    body = {"model": model, "prompt": REWRITE, "max_tokens": 40, "temperature": 0}
    stats = {"plain": post(server, "/api/v0/completions", body).json()["stats"]}
    counted = {"plain": memory_bytes(server, model)}
    for name, extra in (("lookup", ("--prompt-lookup",)), ("draft", ("--draft-model", model))):
        with ServerProcess(models_dir, model=model, engine="llamacpp", extra_args=extra) as started:
            stats[name] = post(started, "/api/v0/completions", body).json()["stats"]
            counted[name] = memory_bytes(started, model)
            if name == "draft":
                other = post(started, "/api/v0/completions", {**body, "draft_model": "x/y"})
    gguf_bytes = sum(f.stat().st_size for f in (Path(models_dir) / model).glob("*.gguf"))
    assert counted["draft"] - counted["plain"] >= gguf_bytes  # the child holds both models
    # llama.cpp's own numerics may change a token of greedy text, so only the drafts are compared
    assert "total_draft_tokens_count" not in stats["plain"]
    assert stats["lookup"]["accepted_draft_tokens_count"] >= 20
    assert stats["draft"]["draft_model"] == model
    drafted = stats["draft"]["total_draft_tokens_count"]
    assert drafted > 0 and stats["draft"]["accepted_draft_tokens_count"] == drafted
    assert other.status_code == 400 and other.json()["error"]["code"] == "draft_model_not_loaded"


def test_the_servers_draft_models_are_the_only_ones_requests_may_name(tmp_path):
    """A tiny model drafting for itself: offered by `--draft-models`, a request may name it;
    `--draft-model` makes it every request's."""
    store = tmp_path
    model = make_tiny_gemma(store / "test" / "drafter", bytes_vocabulary=True).id
    body = {"model": model, "prompt": "abcabcabc", "max_tokens": 6, "temperature": 0}
    extra = ("--draft-models", model)
    with ServerProcess(store, model=model, engine="mlx", extra_args=extra) as server:
        plain = post(server, "/api/v0/completions", body).json()["stats"]
        stats = post(server, "/api/v0/completions", {**body, "draft_model": model}).json()["stats"]
    assert "draft_model" not in plain  # offered to requests, not the server's default
    assert stats["draft_model"] == model
    assert stats["total_draft_tokens_count"] >= stats["accepted_draft_tokens_count"] > 0
    extra = ("--draft-model", model)
    with ServerProcess(store, model=model, engine="mlx", extra_args=extra) as server:
        stats = post(server, "/api/v0/completions", body).json()["stats"]
    assert stats["draft_model"] == model
