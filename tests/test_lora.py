"""LoRA adapters on the MLX engine: mlx-lm's tokens, mixed batches, prompt cache per adapter."""

from __future__ import annotations

import asyncio
import json

import pytest

from mlxserve.engine.adapter_format import ADAPTER_CONFIG
from mlxserve.engine.base import EngineRequest, EngineUnavailable, InvalidRequest, Speculation
from mlxserve.engine.mlx.model import MLXModel
from mlxserve.sampling.params import SamplingParams
from tests.lora_adapters import MLP, make_adapter, mlx_lm_greedy, write_peft
from tests.tiny_models import make_tiny_gemma

GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0)
PROMPT = "w5 w6 w7 w8 w9 w10 w11"
TOKENS = 24


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_gemma(tmp_path_factory.mktemp("models") / "local" / "tiny")


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny):
    """Four adapters that differ in seed, rank, scale and the layers they adapt."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": make_adapter(root / "a", 1),
        "b": make_adapter(root / "b", 2, rank=8, scale=2.0),
        "c": make_adapter(root / "c", 3, keys=MLP, layers=3),
        "d": make_adapter(root / "d", 4, scale=10.0, layers=1),
    }


async def tokens_of(model: MLXModel, adapter: str | None, prompt: str = PROMPT) -> list[int]:
    request = EngineRequest(prompt=prompt, sampling=GREEDY, max_tokens=TOKENS, adapter=adapter)
    tokens: list[int] = []
    async for event in model.generate(request):
        tokens += event.token_ids
    return tokens


async def with_adapters(tiny, adapters, scenario, **load_options):
    model = await MLXModel.load(tiny.directory, 512, **load_options)
    try:
        for name, directory in adapters.items():
            await model.load_adapter(name, directory)
        return await scenario(model)
    finally:
        await model.close()


def test_adapter_tokens_equal_mlx_lm_with_that_adapter(tiny, adapters):
    async def scenario(model):
        return {name: await tokens_of(model, name) for name in [None, *adapters]}

    ours = asyncio.run(with_adapters(tiny, adapters, scenario))
    for name in [None, *adapters]:
        reference = mlx_lm_greedy(tiny.directory, adapters.get(name), PROMPT, TOKENS)
        assert ours[name] == reference[: len(ours[name])], name
    assert all(ours[name] != ours[None] for name in adapters)  # each adapter mattered


def test_four_adapters_and_the_base_decode_in_one_batch(tiny, adapters):
    names = [None, *adapters]

    async def alone(model):
        return [await tokens_of(model, name) for name in names]

    async def together(model):
        results = await asyncio.gather(*(tokens_of(model, name) for name in names))
        return results, (await model.engine_counters())["most_decoding"]

    single = asyncio.run(with_adapters(tiny, adapters, alone, max_batch_size=1))
    batched, most_decoding = asyncio.run(with_adapters(tiny, adapters, together))
    assert most_decoding == len(names)
    assert batched == single


def test_prompt_cache_is_kept_per_adapter(tiny, adapters):
    async def scenario(model):
        base = await tokens_of(model, None)
        adapted = await tokens_of(model, "a")  # the same prompt: the base's entry must not serve
        again = await tokens_of(model, "a")
        return base, adapted, again

    base, adapted, again = asyncio.run(with_adapters(tiny, {"a": adapters["a"]}, scenario))
    reference = mlx_lm_greedy(tiny.directory, adapters["a"], PROMPT, TOKENS)
    assert adapted == reference[: len(adapted)] == again
    assert adapted != base


def test_unloaded_adapter_frees_its_weights_and_the_base_answers(tiny, adapters):
    async def scenario(model):
        base = await tokens_of(model, None)
        await model.unload_adapter("a")
        bank = model._runner.model.adapters
        with pytest.raises(Exception, match="not loaded"):
            await tokens_of(model, "a")
        return base, await tokens_of(model, None), bank.nbytes_of("a"), bank.names

    base, after, left, names = asyncio.run(with_adapters(tiny, {"a": adapters["a"]}, scenario))
    assert after == base and left == 0 and names == []


def test_unloading_an_adapter_mid_reply_ends_only_its_own_requests(tiny, adapters):
    long = SamplingParams(temperature=0, repeat_penalty=1.0, logit_bias={2: -100.0})  # no EOS

    async def reply(model, adapter):
        request = EngineRequest(prompt=PROMPT, sampling=long, max_tokens=400, adapter=adapter)
        return [token async for event in model.generate(request) for token in event.token_ids]

    async def scenario(model):
        base_alone = await reply(model, None)
        base, adapted = (asyncio.ensure_future(reply(model, name)) for name in (None, "a"))
        while (await model.engine_counters())["decoding"] < 2:
            await asyncio.sleep(0.001)
        await model.unload_adapter("a")
        with pytest.raises(EngineUnavailable, match="unloaded during the request"):
            await adapted
        return base_alone, await base

    base_alone, base = asyncio.run(with_adapters(tiny, {"a": adapters["a"]}, scenario))
    assert base == base_alone


def test_adapter_requests_decode_without_drafts(tiny, adapters):
    """A draft's check and rewind would run the base weights: adapter rows decode plainly."""
    repeating = "w5 w6 w7 w8 w5 w6 w7 w8 w5 w6 w7 w8 w5 w6 w7"  # prompt lookup finds drafts

    async def speculative_steps(model, adapter):
        before = (await model.engine_counters())["speculative_steps"]
        request = EngineRequest(
            prompt=repeating,
            sampling=GREEDY,
            max_tokens=TOKENS,
            adapter=adapter,
            speculation=Speculation(prompt_lookup=True),
        )
        tokens = [token async for event in model.generate(request) for token in event.token_ids]
        return tokens, (await model.engine_counters())["speculative_steps"] - before

    async def scenario(model):
        return await speculative_steps(model, None), await speculative_steps(model, "a")

    (_, base_steps), (tokens, adapter_steps) = asyncio.run(
        with_adapters(tiny, {"a": adapters["a"]}, scenario)
    )
    assert base_steps > 0 and adapter_steps == 0
    assert tokens == mlx_lm_greedy(tiny.directory, adapters["a"], repeating, TOKENS)[: len(tokens)]


def test_scoring_after_an_adapters_reply_uses_the_base_weights(tiny, adapters):
    """A prompt scored (echo's logprobs) right after an adapter's reply gets the base model's
    figures: the reply's routing is not left on for the scoring pass."""
    tokens = list(range(3, 40))

    async def scenario(model):
        before = await model.prompt_logprobs(tokens, 0)
        await tokens_of(model, "a")
        return before, await model.prompt_logprobs(tokens, 0)

    before, after = asyncio.run(with_adapters(tiny, {"a": adapters["a"]}, scenario))
    assert [e.logprob for e in after][1:] == pytest.approx([e.logprob for e in before][1:])


def test_peft_adapters_give_the_tokens_of_the_same_mlx_lm_adapter(tiny, adapters, tmp_path):
    """PEFT's layout: transposed matrices, alpha over rank (or its root with rsLoRA), and a
    multimodal model's transformers paths (`model.language_model.layers.N`)."""
    peft = {
        "a": write_peft(adapters["a"], tmp_path / "a"),
        "b": write_peft(adapters["b"], tmp_path / "b", rslora=True),
        "c": write_peft(adapters["c"], tmp_path / "c", prefix="model.language_model."),
    }

    async def scenario(model):
        return {name: await tokens_of(model, name) for name in peft}

    ours = asyncio.run(with_adapters(tiny, peft, scenario))
    for name, tokens in ours.items():
        reference = mlx_lm_greedy(tiny.directory, adapters[name], PROMPT, TOKENS)
        assert len(tokens) > 4 and tokens == reference[: len(tokens)], name


def test_peft_adapters_beyond_plain_lora_are_refused_naming_the_option(tiny, adapters, tmp_path):
    folder = write_peft(adapters["a"], tmp_path / "dora")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**config, "use_dora": True}))

    async def scenario(model):
        with pytest.raises(InvalidRequest, match="use_dora") as refused:
            await model.load_adapter("dora", folder)
        return refused.value.param, model._runner.model.adapters.names

    assert asyncio.run(with_adapters(tiny, {}, scenario)) == ("model", [])
