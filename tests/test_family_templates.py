"""Chat templates of every tool-call family render the conversations coding agents send: Claude
Code's (Anthropic Messages) and Codex's (Responses items), after the API adapters turn them into
turns: a system prompt, a question, an answer with two parallel calls, both results, the final
answer and a new question, with tools offered. Each family's past calls must appear in its own
syntax with their arguments, the results must appear, and the prompt must end where the model
writes its reply. Also the template environment's fixes: `tojson` with json.dumps' keywords and
no HTML escaping, a call's arguments as a mapping, templates that change their own lists."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from mlxserve.api.anthropic.conversation import conversation_of
from mlxserve.api.anthropic.protocol import CountTokensRequest
from mlxserve.api.openai.chat import to_turn
from mlxserve.api.openai.protocol import ChatMessage
from mlxserve.api.responses.items import item_turns
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import TextPart, ToolCallPart, ToolResultPart, Turn
from mlxserve.pipeline.templates import messages_with_tools, render_chat, template_messages
from tests.family_templates import (
    FAMILY_BOS_EOS,
    FAMILY_SPECIALS,
    FAMILY_TEMPLATES,
    GENERATION_PROMPTS,
)

SYSTEM = "You are an interactive CLI tool that helps users with software engineering tasks."
QUESTION = "What's the weather in Paris, and the time in Zürich?"
PREAMBLE = "Let me check both."
THOUGHT = "Two independent lookups: call both tools at once."
WEATHER, TIME = "18°C, cloudy", "14:05"
ANSWER = "Paris: 18°C and cloudy. Zürich: 14:05."
FOLLOW_UP = "And tomorrow?"
WEATHER_ARGS, TIME_ARGS = {"city": "Paris", "days": 2}, {"city": "Zürich"}
SCHEMAS = {
    "get_weather": (
        "Weather & forecast for a <city>, in °C",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city's name"},
                "days": {"type": "integer", "description": "Days of forecast", "default": 1},
            },
            "required": ["city"],
        },
    ),
    "get_time": (
        "The local time in a city",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    ),
}
CHAT_TOOLS = [
    {"type": "function", "function": {"name": name, "description": text, "parameters": schema}}
    for name, (text, schema) in SCHEMAS.items()
]


def claude_code() -> tuple[list[Turn], list[dict]]:
    """A Claude Code request (system blocks, a thinking block, tool_use and tool_result blocks),
    as the Messages adapter reads it."""
    request = CountTokensRequest(
        model="m",
        system=[
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": SYSTEM},
        ],
        tools=[
            {"name": name, "description": text, "input_schema": schema}
            for name, (text, schema) in SCHEMAS.items()
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>Be brief.</system-reminder>"},
                    {"type": "text", "text": QUESTION},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": THOUGHT, "signature": "sig"},
                    {"type": "text", "text": PREAMBLE},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather"}
                    | {"input": WEATHER_ARGS},
                    {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": TIME_ARGS},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": WEATHER},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_02",
                        "content": [{"type": "text", "text": TIME}],
                    },
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]},
            {"role": "user", "content": [{"type": "text", "text": FOLLOW_UP}]},
        ],
    )
    conversation = conversation_of(request)
    return conversation.turns, [tool.as_function() for tool in conversation.tools]


def codex() -> tuple[list[Turn], list[dict]]:
    """A Codex request (instructions, a developer message, reasoning, message, function_call and
    function_call_output items), as the Responses adapter reads it."""
    items = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text"} | {
            "text": "<permissions instructions>workspace-write</permissions instructions>"
        }]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": THOUGHT}]},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": PREAMBLE}
        ]},
        {"type": "function_call", "call_id": "call_a", "name": "get_weather",
         "arguments": json.dumps(WEATHER_ARGS, separators=(",", ":"), ensure_ascii=False)},
        {"type": "function_call", "call_id": "call_b", "name": "get_time",
         "arguments": json.dumps(TIME_ARGS, separators=(",", ":"), ensure_ascii=False)},
        {"type": "function_call_output", "call_id": "call_a", "output": WEATHER},
        {"type": "function_call_output", "call_id": "call_b", "output": TIME},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": ANSWER}
        ]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": FOLLOW_UP}
        ]},
    ]  # fmt: skip
    turns = [Turn("system", [TextPart(SYSTEM)]), *item_turns(items, lambda _: None)]
    return turns, CHAT_TOOLS


CLIENTS = {"claude_code": claude_code, "codex": codex}


def dumped(args: dict) -> str:
    return json.dumps(args, ensure_ascii=False)


def calls_as_written(family: str, text: dict[str, str]) -> list[str]:
    """The two past calls in the family's syntax; `text`: each call's arguments as sent (the
    JSON text DeepSeek's template joins to the prompt as it is)."""
    weather, time = dumped(WEATHER_ARGS), dumped(TIME_ARGS)
    return {
        "hermes": [
            f'<tool_call>\n{{"name": "get_weather", "arguments": {weather}}}\n</tool_call>\n'
            f'<tool_call>\n{{"name": "get_time", "arguments": {time}}}\n</tool_call><|im_end|>'
        ],
        "qwen3_coder": [
            "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
            "<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>\n"
            "<tool_call>\n<function=get_time>\n<parameter=city>\nZürich\n</parameter>\n"
            "</function>\n</tool_call><|im_end|>"
        ],
        "glm47": [
            "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
            "<arg_key>days</arg_key><arg_value>2</arg_value></tool_call>"
            "<tool_call>get_time<arg_key>city</arg_key><arg_value>Zürich</arg_value></tool_call>"
        ],
        "gemma4": [
            '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:2}<tool_call|>'
            '<|tool_call>call:get_time{city:<|"|>Zürich<|"|>}<tool_call|>'
        ],
        "kimi_k2": [
            "<|tool_calls_section_begin|>"
            f"<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{weather}"
            "<|tool_call_end|>"
            f"<|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{time}"
            "<|tool_call_end|><|tool_calls_section_end|>"
        ],
        "minimax_m2": [
            '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris'
            '</parameter>\n<parameter name="days">2</parameter>\n</invoke>\n'
            '<invoke name="get_time">\n<parameter name="city">Zürich</parameter>\n</invoke>\n'
            "</minimax:tool_call>"
        ],
        "deepseek": [
            "<｜tool▁calls▁begin｜>"
            f"<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{text['get_weather']}<｜tool▁call▁end｜>"
            f"<｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{text['get_time']}<｜tool▁call▁end｜>"
            "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"
        ],
        "pythonic": [
            '<|tool_call_start|>[get_weather(city="Paris", days=2), get_time(city="Zürich")]'
            "<|tool_call_end|>"
        ],
        "mistral": [f"[TOOL_CALLS]get_weather[ARGS]{weather}[TOOL_CALLS]get_time[ARGS]{time}</s>"],
        "harmony": [
            "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
            f"<|message|>{weather}<|call|>"
            "<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json"
            f"<|message|>{time}<|call|>"
        ],
        "llama3": [
            f'{{"name": "get_weather", "parameters": {weather}}}\n'
            f'{{"name": "get_time", "parameters": {time}}}<|eot_id|>'
        ],
        "gemma": [
            '```tool_code\nget_weather(city="Paris", days=2)\n```\n'
            '```tool_code\nget_time(city="Zürich")\n```<end_of_turn>'
        ],
        "json": [
            f'{{"name": "get_weather", "arguments": {weather}}}\n'
            f'{{"name": "get_time", "arguments": {time}}}<|im_end|>'
        ],
    }[family]


RESULTS_AS_WRITTEN = {
    "hermes": [
        f"<|im_start|>user\n<tool_response>\n{WEATHER}\n</tool_response>\n"
        f"<tool_response>\n{TIME}\n</tool_response><|im_end|>"
    ],
    "qwen3_coder": [
        f"<|im_start|>user\n<tool_response>\n{WEATHER}\n</tool_response>\n"
        f"<tool_response>\n{TIME}\n</tool_response>\n<|im_end|>"
    ],
    "glm47": [
        f"<|observation|><tool_response>{WEATHER}</tool_response>"
        f"<tool_response>{TIME}</tool_response><|assistant|>"
    ],
    "gemma4": [
        f'<|tool_response>response:get_weather{{value:<|"|>{WEATHER}<|"|>}}<tool_response|>'
        f'<|tool_response>response:get_time{{value:<|"|>{TIME}<|"|>}}<tool_response|>'
    ],
    "kimi_k2": [
        f"<|im_system|>tool<|im_middle|>## Return of functions.get_weather:0\n{WEATHER}<|im_end|>"
        f"<|im_system|>tool<|im_middle|>## Return of functions.get_time:1\n{TIME}<|im_end|>"
    ],
    "minimax_m2": [f"]~b]tool\n<response>{WEATHER}</response>\n<response>{TIME}</response>[e~["],
    "deepseek": [
        f"<｜tool▁output▁begin｜>{WEATHER}<｜tool▁output▁end｜>"
        f"<｜tool▁output▁begin｜>{TIME}<｜tool▁output▁end｜>"
    ],
    "pythonic": [
        f"<|im_start|>tool\n<|tool_response_start|>{WEATHER}<|tool_response_end|><|im_end|>",
        f"<|im_start|>tool\n<|tool_response_start|>{TIME}<|tool_response_end|><|im_end|>",
    ],
    "mistral": [f"[TOOL_RESULTS]{WEATHER}[/TOOL_RESULTS][TOOL_RESULTS]{TIME}[/TOOL_RESULTS]"],
    "harmony": [
        "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"
        f"{WEATHER}<|end|>",
        f"<|start|>functions.get_time to=assistant<|channel|>commentary<|message|>{TIME}<|end|>",
    ],
    "llama3": [
        f"<|start_header_id|>ipython<|end_header_id|>\n\n{WEATHER}<|eot_id|>",
        f"<|start_header_id|>ipython<|end_header_id|>\n\n{TIME}<|eot_id|>",
    ],
    "gemma": [
        f"<start_of_turn>user\n```tool_output\n{WEATHER}\n```\n```tool_output\n{TIME}\n```"
        "<end_of_turn>"
    ],
    "json": [f"<|im_start|>tool\n{WEATHER}<|im_end|>", f"<|im_start|>tool\n{TIME}<|im_end|>"],
}

# How each family shows the tools offered (get_weather's description keeps its <, & and °).
DESCRIPTION = SCHEMAS["get_weather"][0]
TOOLS_AS_WRITTEN = {
    "hermes": ["<tools>\n{", f'"description": "{DESCRIPTION}"', "</tools>"],
    "qwen3_coder": [
        f"<function>\n<name>get_weather</name>\n<description>{DESCRIPTION}</description>",
        "<parameter>\n<name>city</name>\n<type>string</type>",
        '<required>["city"]</required>',
    ],
    "glm47": ["<tools>\n{", f'"description": "{DESCRIPTION}"', "<arg_key>{key}</arg_key>"],
    "gemma4": [
        f'<|tool>declaration:get_weather{{description:<|"|>{DESCRIPTION}<|"|>,parameters:'
        '{type:<|"|>object<|"|>,properties:{city:{type:<|"|>string<|"|>',
        "<|tool>declaration:get_time{",
    ],
    "kimi_k2": [
        '<|im_system|>tool_declare<|im_middle|>[{"type":"function","function":'
        '{"name":"get_weather"',
        f'"description":"{DESCRIPTION}"',
    ],
    "minimax_m2": ['<tool>{"name": "get_weather"', f'"description": "{DESCRIPTION}"'],
    "deepseek": [f"### get_weather\nDescription: {DESCRIPTION}\n\nParameters: {{", "### get_time"],
    "pythonic": ['<|tool_list_start|>[{"name": "get_weather"', "}]<|tool_list_end|>"],
    "mistral": ['[AVAILABLE_TOOLS][{"type": "function"', "}][/AVAILABLE_TOOLS]"],
    "harmony": [
        "## functions\n\nnamespace functions {\n\n"
        f"// {DESCRIPTION}\ntype get_weather = (_: {{\n// The city's name\ncity: string,\n"
        "// Days of forecast\ndays?: number, // default: 1\n}) => any;\n\n",
        "type get_time = (_: {\ncity: string,\n}) => any;",
        "} // namespace functions<|end|>",
    ],
    "llama3": ['{\n    "type": "function",\n    "function": {\n        "name": "get_weather"'],
    "gemma": ['{"type": "function", "function": {"name": "get_weather"'],
    "json": ['{"type": "function", "function": {"name": "get_weather"'],
}

REASONING_AS_WRITTEN = {
    "hermes": f"<think>\n{THOUGHT}\n</think>\n\n{PREAMBLE}",
    "qwen3_coder": f"<think>\n{THOUGHT}\n</think>\n\n{PREAMBLE}",
    "glm47": f"<think>{THOUGHT}</think>{PREAMBLE}",
    "gemma4": f"<|channel>thought\n{THOUGHT}<channel|>{PREAMBLE}",
    "kimi_k2": f"<think>{THOUGHT}</think>{PREAMBLE}",
    "minimax_m2": f"<think>\n{THOUGHT}\n</think>\n\n{PREAMBLE}",
    "deepseek": f"<think>{THOUGHT}</think>{PREAMBLE}",
    "mistral": f"[THINK]{THOUGHT}[/THINK]{PREAMBLE}",
    "harmony": f"<|channel|>analysis<|message|>{THOUGHT}<|end|>",
}


def rendered(family: str, turns: list[Turn], tools: list[dict], **options) -> str:
    """The prompt as mlxserve builds it for a chat request (prepare._chat_prompt's steps)."""
    template = FAMILY_TEMPLATES[family]
    bos, eos = FAMILY_BOS_EOS[family]
    # These templates render `tools`: the messages go to them as they are (no tool syntax).
    messages = messages_with_tools(template_messages(turns), tools, None, template)
    return render_chat(template, messages, bos_token=bos, eos_token=eos, tools=tools, **options)


def in_order(text: str, pieces: list[str]) -> None:
    at = 0
    for piece in pieces:
        found = text.find(piece, at)
        assert found >= 0, f"{piece!r} missing (or out of order) in:\n{text}"
        at = found + len(piece)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("family", FAMILY_TEMPLATES)
def test_agent_history_renders_in_the_family_syntax(family, client):
    turns, tools = CLIENTS[client]()
    sent = {call.name: call.arguments for turn in turns for call in turn.tool_calls}
    prompt = rendered(family, turns, tools)
    # In the JSON families a call is the whole reply: text beside calls is not shown.
    in_order(prompt, [SYSTEM, QUESTION] + ([] if family in ("llama3", "json") else [PREAMBLE]))
    in_order(prompt, [QUESTION, *calls_as_written(family, sent)])
    in_order(prompt, [*calls_as_written(family, sent), *RESULTS_AS_WRITTEN[family]])
    in_order(prompt, [*RESULTS_AS_WRITTEN[family], ANSWER, FOLLOW_UP])
    in_order(prompt, TOOLS_AS_WRITTEN[family])
    assert prompt.endswith(FOLLOW_UP + _turn_end(family) + GENERATION_PROMPTS[family])
    assert THOUGHT not in prompt  # the templates leave a finished turn's reasoning out
    bos, _ = FAMILY_BOS_EOS[family]
    if "bos_token" in FAMILY_TEMPLATES[family]:
        assert prompt.startswith(bos)


def _turn_end(family: str) -> str:
    return {
        "hermes": "<|im_end|>\n",
        "qwen3_coder": "<|im_end|>\n",
        "glm47": "",
        "gemma4": "<turn|>\n",
        "kimi_k2": "<|im_end|>",
        "minimax_m2": "[e~[\n",
        "deepseek": "",
        "pythonic": "<|im_end|>\n",
        "mistral": "",
        "harmony": "<|end|>",
        "llama3": "<|eot_id|>",
        "gemma": "<end_of_turn>\n",
        "json": "<|im_end|>\n",
    }[family]


def history(upto_results: bool, family: str) -> list[dict]:
    """OpenAI chat messages with the assistant's reasoning (reasoning_content), the calls'
    arguments as the mapping Hugging Face templates take (DeepSeek's take the JSON text);
    `upto_results`: the agent loop is mid-turn, the calls' results are the last messages."""

    def call(id: str, name: str, arguments: dict) -> dict:
        arguments = dumped(arguments) if family == "deepseek" else arguments
        return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}

    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": PREAMBLE,
            "reasoning_content": THOUGHT,
            "tool_calls": [
                call("call_a", "get_weather", WEATHER_ARGS),
                call("call_b", "get_time", TIME_ARGS),
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": WEATHER},
        {"role": "tool", "tool_call_id": "call_b", "content": TIME},
    ]
    if upto_results:
        return messages
    return [
        *messages,
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": FOLLOW_UP},
    ]


@pytest.mark.parametrize("family", REASONING_AS_WRITTEN)
def test_reasoning_is_kept_for_the_turn_in_progress_only(family):
    template, (bos, eos) = FAMILY_TEMPLATES[family], FAMILY_BOS_EOS[family]
    options = {"bos_token": bos, "eos_token": eos, "tools": CHAT_TOOLS}
    mid_turn = render_chat(template, history(True, family), **options)
    assert REASONING_AS_WRITTEN[family] in mid_turn
    done = render_chat(template, history(False, family), **options)
    assert THOUGHT not in done and PREAMBLE in done
    assert done.endswith(GENERATION_PROMPTS[family])


def mid_turn(client: str) -> list[Turn]:
    """The client's history as the agent loop sends it mid-turn: up to the calls' results."""
    turns, _ = CLIENTS[client]()
    last_result = max(i for i, turn in enumerate(turns) if turn.role == "tool")
    return turns[: last_result + 1]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("family", REASONING_AS_WRITTEN)
def test_every_adapter_hands_the_turn_in_progress_reasoning_to_the_template(family, client):
    """Claude Code's thinking blocks and Codex's reasoning items reach the template, which
    shows them for the turn in progress (Qwen3, gpt-oss and the others drop earlier ones)."""
    _, tools = CLIENTS[client]()
    prompt = rendered(family, mid_turn(client), tools)
    assert REASONING_AS_WRITTEN[family].replace(PREAMBLE, "") in prompt


def test_chat_messages_carry_their_reasoning():
    for field in ("reasoning_content", "reasoning"):
        message = ChatMessage(role="assistant", content=PREAMBLE, **{field: THOUGHT})
        (prompt_message,) = template_messages([to_turn(message)])
        assert prompt_message["reasoning_content"] == prompt_message["thinking"] == THOUGHT
    assert to_turn(ChatMessage(role="user", content="q", reasoning=THOUGHT)).reasoning == ""


def test_clear_thinking_keeps_the_latest_turns_thinking():
    def request(keep) -> CountTokensRequest:
        thinking = {"type": "thinking", "thinking": THOUGHT, "signature": "s"}
        edits = [] if keep is None else [{"type": "clear_thinking_20251015", "keep": keep}]
        return CountTokensRequest(
            model="m",
            context_management={"edits": edits},
            messages=[
                {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": [thinking, {"type": "text", "text": "a"}]},
                {"role": "user", "content": FOLLOW_UP},
                {"role": "assistant", "content": [thinking, {"type": "text", "text": "b"}]},
            ],
        )

    def thought(keep) -> list[bool]:
        turns = conversation_of(request(keep)).turns
        return [bool(turn.reasoning) for turn in turns if turn.role == "assistant"]

    assert thought(None) == thought("all") == [True, True]
    assert thought({"type": "thinking_turns", "value": 1}) == [False, True]
    assert thought({"type": "thinking_turns", "value": 0}) == [False, False]
    with pytest.raises(RequestError, match="keep"):
        thought({"type": "thinking_turns", "value": -1})


@pytest.mark.parametrize("family", FAMILY_TEMPLATES)
def test_special_tokens_stay_whole(family):
    """A tiny byte-level tokenizer with the family's special tokens reads every one of them in
    the prompt as one token, and gives the prompt back."""
    turns, tools = claude_code()
    prompt = rendered(family, turns, tools)
    specials = FAMILY_SPECIALS[family]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE({p: i for i, p in enumerate(alphabet)}, []))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(specials)
    encoding = tokenizer.encode(prompt)
    assert tokenizer.decode(encoding.ids, skip_special_tokens=False) == prompt
    found = [token for token in encoding.tokens if token in specials]
    used = [s for s in specials if s in prompt]
    assert used and set(found) == set(used)
    bos, eos = FAMILY_BOS_EOS[family]
    assert eos in specials and (not bos or bos in specials)


def test_harmony_takes_the_reasoning_effort():
    turns, tools = codex()
    assert "\nReasoning: high\n" in rendered("harmony", turns, tools, reasoning_effort="high")
    assert "\nReasoning: medium\n" in rendered("harmony", turns, tools)


def test_thinking_switches_reach_the_templates():
    turns, tools = claude_code()
    off = rendered("hermes", turns, tools, reasoning_effort="none")
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert rendered("glm47", turns, tools, reasoning_effort="none").endswith(
        "<|assistant|></think>"
    )
    on = rendered("gemma4", turns, tools, reasoning_effort="high")
    assert on.startswith("<bos><|turn>system\n<|think|>")


# The template environment's fixes.


def test_tojson_takes_json_dumps_keywords_and_escapes_no_html():
    """GLM-4.7 and MiniMax-M2 call tojson(ensure_ascii=False); Jinja's own filter takes no such
    keyword, and it escapes <, >, & and ' (as \\u003c...), which these templates do not expect.
    The filter is transformers': json.dumps with its keywords, ensure_ascii off by default."""
    value = {"b": "Zürich <a & 'b'>", "a": [1, 2]}
    message = [{"role": "user", "content": "x"}]
    cases = {
        "{{ v | tojson }}": json.dumps(value, ensure_ascii=False),
        "{{ v | tojson(ensure_ascii=False) }}": json.dumps(value, ensure_ascii=False),
        "{{ v | tojson(ensure_ascii=True) }}": json.dumps(value),
        "{{ v | tojson(indent=2) }}": json.dumps(value, ensure_ascii=False, indent=2),
        "{{ v | tojson(separators=(',', ':'), sort_keys=True) }}": json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), sort_keys=True
        ),
    }
    for expression, expected in cases.items():
        template = "{% set v = " + repr(value) + " %}" + expression
        assert render_chat(template, message) == expected
    turns, tools = claude_code()
    for family in ("glm47", "minimax_m2"):
        assert f'"description": "{DESCRIPTION}"' in rendered(family, turns, tools)


def test_call_arguments_reach_templates_as_a_mapping():
    """Qwen3-Coder and Qwen 3.5 iterate a past call's arguments (`arguments|items`), as Hugging
    Face templates take them: a JSON object's text becomes a mapping. Printed, or joined to a
    string as DeepSeek's templates do, it is still the JSON text it was."""
    text = '{"city": "Zürich", "days": 2}'
    calls = [
        ToolCallPart("c1", "get_weather", text),
        ToolCallPart("c2", "note", "not json"),
        ToolCallPart("c3", "note", "[1, 2]"),
    ]
    turns = [Turn("user", [TextPart("hi")]), Turn("assistant", calls)]
    turns.append(Turn("tool", [ToolResultPart("c1", "ok")]))
    message = template_messages(turns)[1]
    mapping, invalid, array = (call["function"]["arguments"] for call in message["tool_calls"])
    assert isinstance(mapping, dict) and mapping == {"city": "Zürich", "days": 2}
    assert (invalid, array) == ("not json", "[1, 2]")  # not an object: the text as it came
    template = (
        "{% for c in messages[1].tool_calls %}{% set a = c.function.arguments %}"
        "{% if a is mapping %}{% for k, v in a | items %}{{ k }}={{ v }};{% endfor %}{% endif %}"
        "|{{ a }}|{{ '<' + a + '>' }}|{{ a is string }}|{{ a | tojson }}\n{% endfor %}"
    )
    lines = render_chat(template, template_messages(turns)).splitlines()
    assert lines[0] == f"city=Zürich;days=2;|{text}|<{text}>|False|{text}"
    assert lines[1] == '|not json|<not json>|True|"not json"'
    with pytest.raises(RequestError) as refused:  # arguments it cannot iterate: a 400
        rendered("qwen3_coder", turns, CHAT_TOOLS)
    assert refused.value.status == 400
    prompt = rendered("qwen3_coder", turns[:1] + [Turn("assistant", calls[:1])], CHAT_TOOLS)
    assert "<parameter=city>\nZürich\n</parameter>\n<parameter=days>\n2\n</parameter>" in prompt


def test_templates_may_change_their_own_lists_but_not_the_callers():
    """Kimi K2's template appends to a list it made; the immutable sandbox refused that. The
    template gets copies: what it changes is not the request's messages or tools."""
    template = (
        "{% set seen = [] %}{% do seen.append(1) %}{% set _ = seen.append(2) %}"
        "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}"
        "{% break %}{% endif %}{% do seen.append(i * 10) %}{% endfor %}{{ seen }}"
        "{% do messages.append({'role': 'user', 'content': 'added'}) %}"
        "{% do messages[0].update({'content': 'changed'}) %}{% do tools.pop() %}"
    )
    messages, tools = [{"role": "user", "content": "hi"}], [{"type": "function"}]
    assert render_chat(template, messages, tools=tools) == "[1, 2, 0, 20]"
    assert messages == [{"role": "user", "content": "hi"}] and tools == [{"type": "function"}]
    with pytest.raises(RequestError):  # the sandbox still guards attributes
        render_chat("{{ ''.__class__.__mro__ }}", messages)
    turns, tools = codex()
    assert "## Return of functions.get_time:1\n14:05" in rendered("kimi_k2", turns, tools)
