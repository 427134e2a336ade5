"""System messages after the first (Anthropic's mid-conversation system messages) in chat
templates: a turn of their own where the template has system turns anywhere (ChatML, Llama 3),
joined to the neighbouring turn where it folds the system message into the first user turn
(Gemma, Mistral) or refuses a later one."""

from __future__ import annotations

import pytest

from mlxserve.models.templates import builtin_chat_template
from mlxserve.pipeline.templates import render_chat

CONVERSATION = [
    {"role": "system", "content": "TOP"},
    {"role": "user", "content": "U1"},
    {"role": "system", "content": "MID"},
    {"role": "assistant", "content": "A1"},
    {"role": "system", "content": "BEFORE-U2"},
    {"role": "user", "content": "U2"},
    {"role": "system", "content": "LAST"},
]
# A template in the style of many models' own: roles must alternate after one leading system
STRICT = (
    "{% for m in messages %}{% if m.role == 'system' and not loop.first %}"
    "{{ raise_exception('system messages must come first') }}{% endif %}"
    "<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}"
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            builtin_chat_template("qwen2"),
            "<|im_start|>system\nTOP<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
            "<|im_start|>system\nMID<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
            "<|im_start|>system\nBEFORE-U2<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
            "<|im_start|>system\nLAST<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            builtin_chat_template("gemma3"),
            "<start_of_turn>user\nTOP\n\nU1\n\nMID<end_of_turn>\n<start_of_turn>model\nA1"
            "<end_of_turn>\n<start_of_turn>user\nBEFORE-U2\n\nU2\n\nLAST<end_of_turn>\n"
            "<start_of_turn>model\n",
        ),
        (
            builtin_chat_template("mistral"),
            "[INST] TOP\n\nU1\n\nMID [/INST]A1[INST] BEFORE-U2\n\nU2\n\nLAST [/INST]",
        ),
        (
            STRICT,
            "<system>TOP</system><user>U1\n\nMID</user><assistant>A1</assistant>"
            "<user>BEFORE-U2\n\nU2\n\nLAST</user>",
        ),
    ],
)
def test_later_system_messages_are_placed_as_the_template_allows(template, expected):
    assert render_chat(template, CONVERSATION) == expected


def test_a_system_message_after_an_assistant_turn_at_the_end_becomes_a_user_turn():
    messages = [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}]
    messages.append({"role": "system", "content": "NOTE"})
    prompt = render_chat(builtin_chat_template("gemma3"), messages)
    assert prompt.endswith(
        "A1<end_of_turn>\n<start_of_turn>user\nNOTE<end_of_turn>\n<start_of_turn>model\n"
    )
