"""Tool calls under tool_choice on both engines through the official SDK: forced calls are always
valid and match their tool's schema, streamed arguments arrive in pieces, and a call's result
goes back to the model for an answer (chat completions and responses). The calls are sampled
from a tiny Gemma 3 of random weights with the real one's vocabulary and template."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest
from tokenizers import Tokenizer


@pytest.fixture(scope="module")
def server(twin_server):
    return twin_server


WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def calls_of(client, model_id, tool_choice, seed: int, stream: bool, **extra) -> tuple[list, str]:
    """(name, arguments text) for each call, and the finish reason."""
    kwargs = {
        "model": model_id,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": tool_choice,
        "temperature": 1.0,
        "seed": seed,
        "max_tokens": 192,
        **extra,
    }
    if not stream:
        choice = client.chat.completions.create(**kwargs).choices[0]
        calls = choice.message.tool_calls or []
        return [(c.function.name, c.function.arguments) for c in calls], choice.finish_reason
    calls, reason = {}, None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if not chunk.choices:
            continue
        reason = chunk.choices[0].finish_reason or reason
        for delta in chunk.choices[0].delta.tool_calls or []:
            name, arguments, pieces = calls.get(delta.index, ("", "", 0))
            calls[delta.index] = (
                name + (delta.function.name or ""),
                arguments + (delta.function.arguments or ""),
                pieces + bool(delta.function.arguments),
            )
    return [calls[i] for i in sorted(calls)], reason


def test_required_and_named_calls_are_always_valid(client, model_id):
    named = {"type": "function", "function": {"name": "get_time"}}
    jobs = [
        (choice, seed, stream)
        for choice in ("required", named)
        for seed in range(4)
        for stream in (False, True)
    ]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda j: calls_of(client, model_id, j[0], 100 + j[1], j[2]), jobs))
    for (choice, _, _), (calls, reason) in zip(jobs, results, strict=True):
        assert reason == "tool_calls" and len(calls) >= 1
        for name, arguments, *_ in calls:
            assert name == "get_time" if choice != "required" else name in SCHEMAS
            jsonschema.validate(json.loads(arguments), SCHEMAS[name])


def test_streamed_arguments_arrive_in_pieces_and_equal_the_whole_call(client, model_id):
    named = {"type": "function", "function": {"name": "get_weather"}}
    whole, _ = calls_of(client, model_id, named, seed=7, stream=False, parallel_tool_calls=False)
    streamed, _ = calls_of(client, model_id, named, seed=7, stream=True, parallel_tool_calls=False)
    assert [(n, a) for n, a, _ in streamed] == whole
    assert streamed[0][2] > 1  # more than one arguments delta


def test_tool_choice_none_sends_no_tools_to_the_model(client, model_id):
    usage = {
        choice: client.chat.completions.create(
            model=model_id, messages=ASK, tools=TOOLS, tool_choice=choice, max_tokens=1
        ).usage.prompt_tokens
        for choice in ("none", "auto")
    }
    plain = client.chat.completions.create(model=model_id, messages=ASK, max_tokens=1)
    assert usage["none"] == plain.usage.prompt_tokens < usage["auto"]


def test_chat_round_trip_call_result_answer(client, model_id):
    first = client.chat.completions.create(
        model=model_id,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        temperature=0,
        max_tokens=64,
    )
    call = first.choices[0].message.tool_calls[0]
    history = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18}'},
    ]
    answer = client.chat.completions.create(
        model=model_id,
        messages=history,
        tools=TOOLS,
        tool_choice="none",
        temperature=0,
        max_tokens=8,
    )
    choice = answer.choices[0]
    assert choice.message.content and not choice.message.tool_calls
    alone = client.chat.completions.create(model=model_id, messages=ASK, max_tokens=1)
    # The call and its result are in the prompt, though the tools no longer are.
    assert answer.usage.prompt_tokens > alone.usage.prompt_tokens + 15


def test_responses_round_trip_with_a_forced_call(client, model_id):
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    first = client.responses.create(
        model=model_id,
        input="Weather in Oslo?",
        tools=tools,
        tool_choice="required",
        temperature=0,
        max_output_tokens=64,
    )
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    second = client.responses.create(
        model=model_id,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}],
        tools=tools,
        tool_choice="none",
        temperature=0,
        max_output_tokens=8,
    )
    assert second.output[0].type == "message" and second.output_text
    named = client.responses.create(
        model=model_id,
        input="Time?",
        tools=tools,
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=1.0,
        max_output_tokens=64,
    )
    assert named.output[-1].type == "function_call"


def test_auto_reply_that_opens_a_json_object_is_a_valid_call(
    client, model_id, models_dir, twin_ids
):
    """Gemma's call is the whole reply: under "auto" a reply that starts with `{` must be a call.
    The bias makes the random weights open with `{`; what follows is theirs."""
    vocabulary = Tokenizer.from_file(str(models_dir / twin_ids["mlx"] / "tokenizer.json"))
    brace = vocabulary.token_to_id("{")
    for seed, stream in ((31, False), (32, True)):
        calls, reason = calls_of(
            client,
            model_id,
            "auto",
            seed,
            stream,
            parallel_tool_calls=False,
            logit_bias={str(brace): 40},
        )
        assert reason == "tool_calls" and len(calls) == 1
        name, arguments, *_ = calls[0]
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])


# Schemas as agents send them: no additionalProperties, no argument at all, numbers unbounded.
OPEN_ENDED = {
    "type": "object",
    "properties": {"input": {"type": "integer"}, "note": {"type": "string", "maxLength": 8}},
    "required": ["input"],
}
NO_ARGUMENTS = {"type": "object", "properties": {}}
UNBOUNDED_NUMBERS = {
    "type": "object",
    "properties": {"count": {"type": "integer"}, "ratio": {"type": "number"}},
    "required": ["count", "ratio"],
}
AGENT_SEEDS = range(40, 44)


def forced_call(
    client, model_id, name: str, parameters: dict | None, seed: int, ask: str = "Call the tool."
) -> tuple[str, str]:
    """The arguments of a call forced at temperature 1.0 within 96 tokens, and the finish."""
    function = {"name": name, **({"parameters": parameters} if parameters is not None else {})}
    choice = client.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": ask}],
        tools=[{"type": "function", "function": function}],
        tool_choice={"type": "function", "function": {"name": name}},
        parallel_tool_calls=False,
        temperature=1.0,
        seed=seed,
        max_tokens=96,
    ).choices[0]
    return choice.message.tool_calls[0].function.arguments, choice.finish_reason


def sampled_calls(client, model_id, name: str, parameters, seeds=AGENT_SEEDS, **ask) -> list:
    with ThreadPoolExecutor(len(seeds)) as pool:
        return list(
            pool.map(lambda s: forced_call(client, model_id, name, parameters, s, **ask), seeds)
        )


def test_arguments_hold_only_the_declared_keys(client, model_id):
    for arguments, reason in sampled_calls(client, model_id, "record", OPEN_ENDED):
        assert reason == "tool_calls"
        jsonschema.validate(json.loads(arguments), {**OPEN_ENDED, "additionalProperties": False})


def test_a_tool_without_arguments_gets_an_empty_object(client, model_id):
    calls = sampled_calls(client, model_id, "get_goal", NO_ARGUMENTS, AGENT_SEEDS[:2])
    calls += sampled_calls(client, model_id, "ping", None, AGENT_SEEDS[2:])
    assert calls == [("{}", "tool_calls")] * 4


def test_unbounded_numbers_always_end(client, model_id):
    ask = "Measure pi and the speed of light, as precisely as you can."
    for arguments, reason in sampled_calls(client, model_id, "measure", UNBOUNDED_NUMBERS, ask=ask):
        assert reason == "tool_calls", arguments
        jsonschema.validate(json.loads(arguments), UNBOUNDED_NUMBERS)
