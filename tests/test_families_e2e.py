"""Each tool-call family end to end: a scripted model of the family's real architecture thinks
(where the family does) and then calls a tool in the family's exact syntax, one token per piece;
the real server, under `tool_choice: auto`, must hand back that call (and the reasoning apart)
through the OpenAI, Anthropic and Responses APIs, with no marker text leaking into the answer.
One server serves every family's model: the first from the start, the others loaded on
request."""

from __future__ import annotations

import json
from dataclasses import dataclass

import anthropic
import jsonschema
import openai
import pytest

from tests.family_templates import FAMILY_BOS_EOS, FAMILY_SPECIALS, FAMILY_TEMPLATES
from tests.scripted_models import make_scripted_model
from tests.server import ServerProcess

pytestmark = pytest.mark.e2e

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
DAYS = {
    "type": "object",
    "properties": {"days": {"type": "integer", "minimum": 1, "maximum": 9}},
    "required": ["days"],
}
THOUGHT = "Weather needed."
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
# The arguments as a BPE vocabulary splits them: a whole object is never one token (and
# llguidance masks a single added token that spans a whole JSON object or `key="value"`).
# Likewise an added token shaped `<...>` counts as special to llguidance, so only a family's
# real markers are pieces of that shape.
JSON = ('{"', "city", '": "', "Paris", '"}')


@dataclass(frozen=True)
class Case:
    family: str
    architecture: str
    script: tuple[str, ...]  # the reply, eos included
    thought: str | None = None  # the reasoning the reply carries, if any
    tool: str = "get_weather"
    parameters: dict = None  # type: ignore[assignment]
    arguments: dict = None  # type: ignore[assignment]
    eos: str | None = None  # when the reply ends on another token than the family's eos

    @property
    def model(self) -> str:
        return f"test/{self.family}"

    @property
    def schema(self) -> dict:
        return self.parameters or CITY

    @property
    def expected(self) -> dict:
        return self.arguments or {"city": "Paris"}

    def tools(self, parameters: dict | None = None) -> list[dict]:
        function = {"name": self.tool, "parameters": parameters or self.schema}
        return [{"type": "function", "function": function}]


def eos(family: str) -> str:
    return FAMILY_BOS_EOS[family][1]


CASES = [
    # The template opens <think> itself: the reply starts inside it.
    Case(
        "qwen3_coder",
        "qwen3_moe",
        (
            THOUGHT, "</think>", "\n\n", "<tool_call>", "\n<function=get_weather>\n",
            "<parameter=city>\n", "Paris", "\n</parameter>\n", "</function>\n", "</tool_call>",
            eos("qwen3_coder"),
        ),
        thought=THOUGHT,
    ),
    Case(
        "glm47",
        "glm4_moe",
        (
            THOUGHT, "</think>", "<tool_call>", "get_weather", "<arg_key>", "city",
            "</arg_key>", "<arg_value>", "Paris", "</arg_value>", "</tool_call>", eos("glm47"),
        ),
        thought=THOUGHT,
    ),
    # `<|channel|>` is one token, so the reply cannot think first and then open the
    # commentary channel: it calls at once, and <|call|> ends it.
    Case(
        "harmony",
        "gpt_oss",
        (
            "<|channel|>", "commentary to=functions.", "get_weather", " ", "<|constrain|>",
            "json", "<|message|>", *JSON, "<|call|>",
        ),
        eos="<|call|>",
    ),
    Case(
        "mistral",
        "mistral3",
        ("[TOOL_CALLS]", "get_weather", "[ARGS]", *JSON, eos("mistral")),
    ),
    # The string quote <|"|> is one token and a script piece can only come once: the tool
    # takes an integer instead.
    Case(
        "gemma4",
        "gemma4_text",
        (
            "<|channel>", "thought\n" + THOUGHT, "<channel|>", "<|tool_call>",
            "call:get_forecast{days:", "3", "}", "<tool_call|>", eos("gemma4"),
        ),
        thought=THOUGHT,
        tool="get_forecast",
        parameters=DAYS,
        arguments={"days": 3},
    ),
    Case(
        "kimi_k2",
        "kimi_k25",
        (
            "<think>", THOUGHT, "</think>", "<|tool_calls_section_begin|>",
            "<|tool_call_begin|>", "functions.get_weather:0", "<|tool_call_argument_begin|>",
            *JSON, "<|tool_call_end|>", "<|tool_calls_section_end|>",
            eos("kimi_k2"),
        ),
        thought=THOUGHT,
    ),
    Case(
        "minimax_m2",
        "minimax",
        (
            THOUGHT, "</think>", "\n\n", "<minimax:tool_call>", '\n<invoke name="get_weather">\n',
            '<parameter name="', "city", '">Paris', "</parameter>\n", "</invoke>\n",
            "</minimax:tool_call>", eos("minimax_m2"),
        ),
        thought=THOUGHT,
    ),
    # The template closes thinking by default (`<｜Assistant｜></think>`).
    Case(
        "deepseek",
        "deepseek_v3",
        (
            "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "get_weather", "<｜tool▁sep｜>",
            *JSON, "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>", eos("deepseek"),
        ),
    ),
    Case(
        "pythonic",
        "lfm2",
        (
            "<|tool_call_start|>", "[get_weather(", "city", '="', "Paris", '")]',
            "<|tool_call_end|>",
            eos("pythonic"),
        ),
    ),
]  # fmt: skip
BY_FAMILY = {case.family: case for case in CASES}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("families")
    for case in CASES:
        bos, family_eos = FAMILY_BOS_EOS[case.family]
        make_scripted_model(
            models / "test" / case.family,
            architecture=case.architecture,
            script=case.script,
            chat_template=FAMILY_TEMPLATES[case.family],
            specials=FAMILY_SPECIALS[case.family],
            eos=case.eos or family_eos,
            bos=bos or "<bos>",
        )
    with ServerProcess(models, model=CASES[0].model, engine="mlx") as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


def ask(client, case: Case, stream: bool = False, tools: list | None = None, **extra):
    return client.chat.completions.create(
        model=case.model,
        messages=ASK,
        tools=tools or case.tools(),
        tool_choice="auto",
        temperature=0,
        max_tokens=64,
        stream=stream,
        **extra,
    )


def describe(reply) -> str:
    return json.dumps(reply.model_dump(exclude_none=True), ensure_ascii=False)


@pytest.mark.parametrize("family", BY_FAMILY)
def test_the_family_call_comes_back_as_a_tool_call(client, family):
    case = BY_FAMILY[family]
    reply = ask(client, case)
    choice = reply.choices[0]
    message = choice.message
    assert choice.finish_reason == "tool_calls", describe(reply)
    assert len(message.tool_calls or []) == 1, describe(reply)
    (call,) = message.tool_calls
    assert call.function.name == case.tool and call.id, describe(reply)
    assert json.loads(call.function.arguments) == case.expected, describe(reply)
    assert message.content in (None, ""), describe(reply)
    reasoning = getattr(message, "reasoning_content", None)
    if case.thought:
        assert reasoning and reasoning.strip() == case.thought, describe(reply)
    else:
        assert not reasoning, describe(reply)


@pytest.mark.parametrize("family", BY_FAMILY)
def test_the_streamed_call_assembles_to_the_same_call(client, family):
    case = BY_FAMILY[family]
    starts, arguments, content, reasoning, finish = [], {}, "", "", None
    chunks = []
    for chunk in ask(client, case, stream=True):
        chunks.append(chunk.model_dump(exclude_none=True))
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        delta = choice.delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or ""
        for part in delta.tool_calls or []:
            if part.index not in arguments:
                starts.append((part.id, part.function.name if part.function else None))
                arguments[part.index] = ""
            if part.function and part.function.arguments:
                arguments[part.index] += part.function.arguments
    seen = json.dumps(chunks, ensure_ascii=False)
    assert finish == "tool_calls", seen
    assert len(starts) == 1 and starts[0][0] and starts[0][1] == case.tool, seen
    assert json.loads(arguments[0]) == case.expected, seen
    assert content == "", seen
    assert reasoning.strip() == (case.thought or ""), seen


def test_the_grammar_holds_the_call_to_the_schema(client):
    """The tool takes only "Rome": the model, which would write Paris, is made to write Rome."""
    case = BY_FAMILY["qwen3_coder"]
    rome = {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Rome"]}},
        "required": ["city"],
    }
    reply = client.chat.completions.create(
        model=case.model,
        messages=ASK,
        tools=case.tools(rome),
        tool_choice="auto",
        temperature=0,
        max_tokens=128,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", describe(reply)
    (call,) = choice.message.tool_calls
    arguments = json.loads(call.function.arguments)
    assert "Paris" not in call.function.arguments, describe(reply)
    jsonschema.validate(arguments, rome)


@pytest.mark.parametrize("family", ["qwen3_coder", "kimi_k2", "mistral"])
def test_anthropic_messages_return_a_tool_use_block(server, family):
    case = BY_FAMILY[family]
    claude = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
    reply = claude.messages.create(
        model=case.model,
        max_tokens=64,
        messages=ASK,
        tools=[{"name": case.tool, "description": "the weather", "input_schema": case.schema}],
        tool_choice={"type": "auto"},
    )
    seen = reply.model_dump_json()
    assert reply.stop_reason == "tool_use", seen
    uses = [block for block in reply.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == case.tool and uses[0].input == case.expected, seen
    texts = [block.text for block in reply.content if block.type == "text"]
    assert not "".join(texts).strip(), seen
    if case.thought:
        thinking = [block.thinking for block in reply.content if block.type == "thinking"]
        assert [t.strip() for t in thinking] == [case.thought], seen


@pytest.mark.parametrize("family", ["glm47", "deepseek", "harmony"])
def test_responses_return_a_function_call_item(client, family):
    case = BY_FAMILY[family]
    reply = client.responses.create(
        model=case.model,
        input="What is the weather in Paris?",
        tools=[{"type": "function", "name": case.tool, "parameters": case.schema}],
        tool_choice="auto",
        temperature=0,
        max_output_tokens=64,
    )
    seen = reply.model_dump_json()
    calls = [item for item in reply.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == case.tool, seen
    assert json.loads(calls[0].arguments) == case.expected and calls[0].call_id, seen
    assert not [item for item in reply.output if item.type == "message"], seen
