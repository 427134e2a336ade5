"""Built-in chat templates render each family's turn format from string or list-of-parts content,
through the same tokenizer path (mlx-lm / transformers) the server uses."""

from __future__ import annotations

import jinja2
import pytest

from mlxserve.models.templates import builtin_chat_template

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {}}],
    },
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
]
EXPECTED = {
    "gemma3": "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    "Hello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
    "llama": "<bos><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "qwen2": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
    "<|im_start|>assistant\n",
    "mistral": "<bos>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Bye [/INST]",
    "phi3": "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
    "<|user|>\nBye<|end|>\n<|assistant|>\n",
}
EXPECTED["gemma2"] = EXPECTED["gemma3"]
EXPECTED["qwen3"] = EXPECTED["qwen2"]


def render(template: str, messages, **extra) -> str:
    return (
        jinja2.Environment()
        .from_string(template)
        .render(messages=messages, bos_token="<bos>", eos_token="</s>", **extra)
    )


@pytest.mark.parametrize("architecture", sorted(EXPECTED))
def test_builtin_template_renders_turns(architecture):
    template = builtin_chat_template(architecture)
    assert render(template, CONVERSATION, add_generation_prompt=True) == EXPECTED[architecture]


def test_gemma_without_system_or_generation_prompt():
    text = render(
        builtin_chat_template("gemma3"),
        [{"role": "user", "content": "  Hi  "}],
        add_generation_prompt=False,
    )
    assert text == "<bos><start_of_turn>user\nHi<end_of_turn>\n"


def test_qwen3_thinking_switch():
    template = builtin_chat_template("qwen3")
    off = render(
        template,
        [{"role": "user", "content": "x"}],
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not render(
        template, [{"role": "user", "content": "x"}], add_generation_prompt=True
    ).endswith("</think>\n\n")


def test_unknown_architecture_has_none():
    assert builtin_chat_template("bert") is None
    assert builtin_chat_template("GEMMA3") == builtin_chat_template("gemma3")


def test_template_works_through_the_tokenizer(tmp_path):
    """The server applies templates with transformers' sandboxed Jinja: same text."""
    from mlx_lm import load

    from mlxserve.models.convert import convert_model
    from tests.gguf_fixtures import TINY_ARCHS, reference_model, write_tiny_gguf

    arch = TINY_ARCHS["gemma3"]
    _, config, weights = reference_model(arch)
    write_tiny_gguf(tmp_path / "g.gguf", arch, weights, config)
    record = convert_model(tmp_path / "g.gguf", tmp_path / "models", "t/g", progress=False)
    _, tokenizer = load(record.path)
    text = tokenizer.apply_chat_template(
        CONVERSATION,
        chat_template=builtin_chat_template("gemma3"),
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == EXPECTED["gemma3"]
