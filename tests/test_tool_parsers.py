"""Tool calls read back in every family's own syntax (recorded shapes of each family's output),
the family told from the chat template, vocabulary and architecture, and the plain path for
templates that do not describe tools."""

from __future__ import annotations

import json

import pytest

from mlxserve.engine.base import GenerationStats
from mlxserve.families.detect import family_name
from mlxserve.families.syntax import SYNTAXES, tools_prompt
from mlxserve.pipeline.events import Completion, ToolArgumentsDelta, ToolCallStart
from mlxserve.pipeline.output import OutputStage
from mlxserve.pipeline.templates import messages_with_tools

WEATHER = {"city": "Paris", "unit": "celsius"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            },
        },
    }
]
STATS = GenerationStats(prompt_tokens=3, completion_tokens=5)
J = '{"city": "Paris", "unit": "celsius"}'
RECORDED = [
    ("hermes", "I will check.\n<tool_call>\n"
     f'{{"name": "get_weather", "arguments": {J}}}\n</tool_call>', "I will check."),
    ("qwen3_coder", "Checking.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
     "</parameter>\n<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>",
     "Checking."),
    ("glm47", "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
     "<arg_key>unit</arg_key>\n<arg_value>celsius</arg_value>\n</tool_call>", ""),
    ("glm47", "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
     "<arg_key>unit</arg_key><arg_value>celsius</arg_value></tool_call>", ""),
    ("gemma4", '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,unit:<|"|>celsius<|"|>}'
     "<tool_call|>", ""),
    ("function_gemma", "<start_function_call>call:get_weather{city:<escape>Paris<escape>,"
     "unit:<escape>celsius<escape>}<end_function_call>", ""),
    ("kimi_k2", "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
     f"<|tool_call_argument_begin|>{J}<|tool_call_end|><|tool_calls_section_end|>", ""),
    ("minimax_m2", '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris'
     '</parameter>\n<parameter name="unit">celsius</parameter>\n</invoke>\n</minimax:tool_call>',
     ""),
    ("deepseek", f"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{J}"
     "<｜tool▁call▁end｜><｜tool▁calls▁end｜>", ""),
    ("pythonic", 'Sure. <|tool_call_start|>[get_weather(city="Paris", unit="celsius")]'
     "<|tool_call_end|>", "Sure."),
    ("pythonic_list", '[get_weather(city="Paris", unit="celsius")]', ""),
    ("mistral", f"[TOOL_CALLS]get_weather[ARGS]{J}", ""),
    ("mistral_json", f'[TOOL_CALLS] [{{"name": "get_weather", "arguments": {J}}}]', ""),
    ("harmony", f"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{J}",
     ""),
    ("harmony", "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>"
     f"json<|message|>{J}<|call|>", ""),
    ("llama3", f'{{"name": "get_weather", "parameters": {J}}}', ""),
    ("llama3", f'<|python_tag|>{{"name": "get_weather", "parameters": {J}}}', ""),
    ("gemma", '```tool_code\nget_weather(city="Paris", unit="celsius")\n```', ""),
    ("gemma", f'```json\n{{"name": "get_weather", "arguments": {J}}}\n```', ""),
]  # fmt: skip


def read(
    family: str, reply: str, size: int | None = None, tools=TOOLS, constrained=False
) -> Completion:
    return fold(events_of(family, reply, size, tools, constrained))


def events_of(family: str, reply: str, size=None, tools=TOOLS, constrained=False) -> list:
    stage = OutputStage(SYNTAXES[family], constrained=constrained, tools=tools)
    size = size or len(reply)
    events = [e for i in range(0, len(reply), size) for e in stage.feed(reply[i : i + size])]
    return events + stage.finish(STATS)


def fold(events: list) -> Completion:
    completion = Completion()
    for event in events:
        completion.add(event)
    return completion


@pytest.mark.parametrize("family, output, content", RECORDED)
def test_recorded_calls_are_read_in_pieces_and_whole(family, output, content):
    for size in (1, 3, None):
        completion = read(family, output, size)
        calls = completion.tool_calls
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", WEATHER)]
        assert (completion.content or "") == content
        assert calls[0].id.startswith("call_") and completion.finish_reason == "tool_calls"


STREAMED = [(f, o) for f, o, _ in RECORDED if SYNTAXES[f].streams_arguments]


@pytest.mark.parametrize("family, output", STREAMED)
def test_constrained_json_arguments_stream_after_the_name(family, output):
    """Under the grammar, Kimi's, DeepSeek's, Mistral's and harmony's arguments arrive in
    pieces as they are generated, and fold to the whole call."""
    events = events_of(family, output, 1, constrained=True)
    pieces = [e for e in events if isinstance(e, ToolArgumentsDelta)]
    assert isinstance(events[0], ToolCallStart) and events[0].name == "get_weather"
    assert len(pieces) > 10
    (call,) = fold(events).tool_calls
    assert json.loads(call.arguments) == WEATHER


@pytest.mark.parametrize(
    "family, output",
    [
        ("mistral", '[TOOL_CALLS]a[ARGS]{"x": "}"}[TOOL_CALLS]b[ARGS]{"y": [1, {"z": 2}]}'),
        (
            "kimi_k2",
            "<|tool_calls_section_begin|><|tool_call_begin|>functions.a:0"
            '<|tool_call_argument_begin|>{"x": "}"}<|tool_call_end|>'
            "<|tool_call_begin|>functions.b:1"
            '<|tool_call_argument_begin|>{"y": [1, {"z": 2}]}<|tool_call_end|>'
            "<|tool_calls_section_end|>Done.",
        ),
    ],
)
def test_each_call_of_a_block_streams(family, output):
    for size in (1, 7, None):
        completion = fold(events_of(family, output, size, constrained=True))
        calls = [(c.name, json.loads(c.arguments)) for c in completion.tool_calls]
        assert calls == [("a", {"x": "}"}), ("b", {"y": [1, {"z": 2}]})]
        assert (completion.content or "") == ("Done." if family == "kimi_k2" else "")


LISTED = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
           "properties": {"names": {"type": "array"}, "note": {"type": "string"}}}}}]  # fmt: skip


@pytest.mark.parametrize(
    "family, output",
    [
        ("qwen3_coder", '<tool_call>\n<function=f>\n<parameter=names>\n["a</parameter>b", "c"]'
         "\n</parameter>\n<parameter=note>\nx < y\n</parameter>\n</function>\n</tool_call>"),
        ("minimax_m2", '<minimax:tool_call>\n<invoke name="f">\n<parameter name="names">'
         '["a</parameter>b", "c"]</parameter>\n<parameter name="note">x < y</parameter>\n'
         "</invoke>\n</minimax:tool_call>"),
        ("glm47", '<tool_call>f\n<arg_key>names</arg_key>\n<arg_value>["a</arg_value>b", "c"]'
         "</arg_value>\n<arg_key>note</arg_key>\n<arg_value>x < y</arg_value>\n</tool_call>"),
    ],
)  # fmt: skip
def test_a_json_argument_of_an_xml_call_may_hold_the_closing_tag(family, output):
    (call,) = read(family, output, tools=LISTED).tool_calls
    closing = "</arg_value>" if family == "glm47" else "</parameter>"
    assert json.loads(call.arguments) == {"names": [f"a{closing}b", "c"], "note": "x < y"}


def test_a_quoted_string_may_hold_the_call_syntax():
    gemma4 = '<|tool_call>call:get_weather{city:<|"|>a,b:c}<|"|>,unit:["x,y:z"]}<tool_call|>'
    (call,) = read("gemma4", gemma4).tool_calls
    assert json.loads(call.arguments) == {"city": "a,b:c}", "unit": ["x,y:z"]}
    nested = '<|tool_call>call:f{o:{k:<|"|>v<|"|>}}<tool_call|>'  # Gemma 4's own nesting
    assert json.loads(read("gemma4", nested).tool_calls[0].arguments) == {"o": {"k": "v"}}
    output = (
        "<start_function_call>call:get_weather{city:<escape>Paris, {a}: b<escape>,"
        "unit:<escape>c<escape>}<end_function_call>"
    )
    (call,) = read("function_gemma", output).tool_calls
    assert json.loads(call.arguments) == {"city": "Paris, {a}: b", "unit": "c"}


def test_two_calls_and_plain_text():
    output = (
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>\n'
        '<tool_call>{"name": "b", "arguments": {"x": 1}}</tool_call>'
    )
    assert [c.name for c in read("hermes", output).tool_calls] == ["a", "b"]
    for family in SYNTAXES:
        plain = read(family, "The weather is nice.")
        assert (plain.content, plain.tool_calls) == ("The weather is nice.", [])
    assert read("llama3", '{"no": "name"}').tool_calls == []
    broken = read("hermes", "<tool_call>{broken</tool_call>")
    assert broken.tool_calls == [] and broken.content == "<tool_call>{broken</tool_call>"


@pytest.mark.parametrize(
    "template, architecture, family",
    [
        ("{{ '<|channel|>' }} to=functions", "gpt_oss", "harmony"),
        ("<tool_call>\n<function={{ name }}>", "qwen3_moe", "qwen3_coder"),
        ('{{ "<tool_call>" }}{"name": {{ tool_call.name }}}', "qwen3_moe", "hermes"),
        ("<tool_call>{{ n }}<arg_key>", "glm4_moe", "glm47"),
        ("<|tool_call>call:{{ n }}<tool_call|>", "gemma4_text", "gemma4"),
        ("<|tool_calls_section_begin|>", "deepseek_v3", "kimi_k2"),
        ("<minimax:tool_call>", "minimax", "minimax_m2"),
        ("<｜tool▁calls▁begin｜>", "deepseek_v3", "deepseek"),
        ("<|tool_list_start|>", "lfm2", "pythonic"),
        ("[TOOL_CALLS]{{ n }}[ARGS]", "mistral3", "mistral"),
        ("...[TOOL_CALLS]...", "llama", "mistral_json"),
        (None, "qwen2", "hermes"),
        (None, "gemma3", "gemma"),
        (None, "llama4_text", "pythonic_list"),
        (None, "phi3", "json"),
    ],
)
def test_family_from_template_then_architecture(template, architecture, family):
    assert family_name(template, architecture) == family


def test_vocabulary_and_override_name_the_family():
    assert family_name("{{ messages }}", "lfm2", {"<|tool_call_start|>"}) == "pythonic"
    assert family_name("{{ messages }}", "phi3", {"<tool_call>"}) == "hermes"
    assert family_name("<tool_call>", "qwen3", (), override="qwen3_coder") == "qwen3_coder"


def test_tools_are_described_for_templates_without_tool_support():
    history = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
    ]
    hermes = SYNTAXES["hermes"]
    messages = messages_with_tools(history, TOOLS, hermes, "{{ messages }}")
    assert messages[0]["role"] == "system" and "get_weather" in messages[0]["content"]
    assert "<tool_call>" in tools_prompt(TOOLS, hermes)
    assert "get_weather" in messages[2]["content"] and "18 C" in messages[3]["content"]
    assert messages_with_tools(history, TOOLS, hermes, "{% if tools %}{% endif %}") == history


def test_chat_with_tools_answers_in_plain_text_when_no_call(client, model_id):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    messages = [{"role": "user", "content": "Hello"}]
    result = client.chat.completions.create(
        model=model_id, messages=messages, tools=tools, max_tokens=3, temperature=0
    )
    plain = client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=3, temperature=0
    )
    assert result.usage.prompt_tokens > plain.usage.prompt_tokens  # the tools were described
    message = result.choices[0].message
    assert message.tool_calls is None and message.content  # greedy: this model does not call
    chunks = list(
        client.chat.completions.create(
            model=model_id, messages=messages, tools=tools, max_tokens=3, temperature=0, stream=True
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == (message.content or "")
