"""Scripted models: each architecture's greedy decoding writes exactly its script."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.generate import stream_generate
from mlx_lm.utils import load

from mlxserve.models.store import read_record
from tests.scripted_models import ARCHITECTURES, make_scripted_model

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "<|im_start|>assistant\n"
)
QWEN_SPECIALS = ("<|im_start|>", "<|im_end|>")
QWEN_SCRIPT = [
    "<think>",
    "I will call",
    "</think>",
    "\n\n",
    "<tool_call>",
    '\n{"name": "get_weather", "arguments": ',
    '{"city": "Paris"}',
    "}\n",
    "</tool_call>",
    "<eos>",
]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def _argmax(logprobs: mx.array) -> mx.array:
    return mx.argmax(logprobs, axis=-1)


def _generate(directory: Path, prompt: list[int]) -> tuple[list[int], str]:
    """Greedy tokens (with the eos that ends them) and the text mlx-lm streams for them."""
    model, tokenizer = load(directory)
    responses = list(stream_generate(model, tokenizer, prompt, max_tokens=32, sampler=_argmax))
    return [r.token for r in responses], "".join(r.text for r in responses)


def _single_ids(tokenizer, pieces: list[str]) -> list[int]:
    encoded = [tokenizer.encode(piece, add_special_tokens=False) for piece in pieces]
    assert all(len(ids) == 1 for ids in encoded), "every piece is one token"
    return [ids[0] for ids in encoded]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_greedy_decoding_writes_the_script(tmp_path, architecture):
    record = make_scripted_model(
        tmp_path / "scripted" / architecture,
        architecture=architecture,
        script=QWEN_SCRIPT,
        chat_template=QWEN_TEMPLATE,
        specials=QWEN_SPECIALS,
    )
    directory = Path(record.path)
    assert read_record(directory) == record
    assert record.id == f"scripted/{architecture}"
    _, tokenizer = load(directory)
    text = tokenizer.apply_chat_template(WEATHER, add_generation_prompt=True, tokenize=False)
    prompt = tokenizer.encode(text, add_special_tokens=False)

    tokens, streamed = _generate(directory, prompt)

    assert tokens == _single_ids(tokenizer, QWEN_SCRIPT)
    assert streamed == "".join(QWEN_SCRIPT[:-1])


def test_a_special_token_in_the_script_streams_as_text(tmp_path):
    script = ["[TOOL_CALLS]", "get_weather", "[ARGS]", '{"city": "Paris"}', "</s>"]
    record = make_scripted_model(
        tmp_path / "scripted" / "mistral",
        architecture="mistral3",
        script=script,
        chat_template="<s>[INST]{{ messages[-1].content }}[/INST]",
        specials=["[INST]", "[/INST]", "[TOOL_CALLS]", "[ARGS]"],
        eos="</s>",
        bos="<s>",
        manifest_architecture="mistral",
    )
    directory = Path(record.path)
    _, tokenizer = load(directory)
    prompt = tokenizer.encode("a prompt that ends in plain bytes", add_special_tokens=False)

    tokens, streamed = _generate(directory, prompt)

    assert record.architecture == "mistral"
    assert tokens == _single_ids(tokenizer, script)
    assert tokenizer.convert_ids_to_tokens(tokens[0]) in tokenizer.all_special_tokens
    assert streamed == '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
    assert tokenizer.decode(tokens, skip_special_tokens=True) == 'get_weather{"city": "Paris"}'


def test_a_script_without_eos_starts_over_after_a_pad(tmp_path):
    script = ["<think>", "hmm", "</think>"]
    record = make_scripted_model(
        tmp_path / "scripted" / "loop", architecture="lfm2", script=script, chat_template=""
    )
    model, tokenizer = load(Path(record.path))
    responses = stream_generate(model, tokenizer, [1], max_tokens=8, sampler=_argmax)

    assert "".join(r.text for r in responses) == "<think>hmm</think><pad>" * 2


@pytest.mark.parametrize(
    "script", [["a", "b", "a", "<eos>"], ["a", "<eos>", "b"], ["<pad>", "<eos>"], []]
)
def test_a_script_that_cannot_drive_decoding_is_refused(tmp_path, script):
    with pytest.raises(ValueError):
        make_scripted_model(
            tmp_path / "scripted" / "bad", architecture="qwen3", script=script, chat_template=""
        )
