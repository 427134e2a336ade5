"""The pipeline's output stage on recorded family outputs: text streams as soon as it cannot be
part of a call, calls arrive as typed events, and any split of a reply folds to the same result
as the whole-reply parsers give."""

from __future__ import annotations

import json

import pytest

from mlxserve.engine.base import GenerationStats
from mlxserve.families.syntax import SYNTAXES
from mlxserve.pipeline.events import Completion, TextDelta, ToolArgumentsDelta, ToolCallStart
from mlxserve.pipeline.output import OutputStage

STATS = GenerationStats(prompt_tokens=3, completion_tokens=5)
REPLIES = [
    ("hermes", 'Let me check.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'),
    (
        "hermes",
        '<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_call>{"name": "g"}</tool_call>',
    ),
    ("hermes", "No call here, just <tool_ talk."),
    ("hermes", "<tool_call>not json</tool_call> and text"),
    ("mistral_json", 'Sure [TOOL_CALLS][{"name": "f", "arguments": {"x": "y"}}]'),
    ("gemma", '```tool_code\nget_weather(city="Paris")\n```'),
    ("gemma", 'I will look.\n```tool_code\nget_weather(city="Rome")\n```'),
    ("json", '{"name": "f", "arguments": {"q": "\\u00e9t\\u00e9"}}'),
    ("llama3", '<|python_tag|>{"name": "f", "parameters": {"n": 2}}'),
    ("json", "{ this is not a call"),
    ("json", "Plain words."),
]


def parse_tool_calls(reply: str, family: str):
    """The reply read whole: its content and calls."""
    _, completion = run(family, [reply])
    return completion.content, completion.tool_calls


def run(family: str, pieces: list[str]) -> tuple[list, Completion]:
    stage = OutputStage(SYNTAXES[family] if family else None)
    events = [event for piece in pieces for event in stage.feed(piece)] + stage.finish(STATS)
    completion = Completion()
    for event in events:
        completion.add(event)
    return events, completion


@pytest.mark.parametrize(("family", "reply"), REPLIES)
def test_every_split_folds_to_the_whole_reply_parse(family, reply):
    content, calls = parse_tool_calls(reply, family)
    expected = [(c.name, c.arguments) for c in calls]
    for size in (1, 2, 3, 5, len(reply)):
        pieces = [reply[i : i + size] for i in range(0, len(reply), size)]
        _, completion = run(family, pieces)
        assert [(c.name, c.arguments) for c in completion.tool_calls] == expected
        assert completion.content == (content if calls else reply)
        assert completion.finish_reason == ("tool_calls" if calls else "stop")


def test_text_before_a_call_marker_streams_at_once():
    stage = OutputStage(SYNTAXES["hermes"])
    assert stage.feed("Checking the ") == [TextDelta("Checking the ")]
    assert stage.feed("weather <tool") == [TextDelta("weather ")]  # "<tool" may open a call
    started = stage.feed('_call>{"name": "w", "arguments": {"c": 1}}')  # named as soon as known
    assert len(started) == 1 and isinstance(started[0], ToolCallStart)
    assert started[0].name == "w"
    assert stage.feed("</tool_call>") == [ToolArgumentsDelta(0, '{"c": 1}')]


def test_a_json_family_reply_is_held_only_while_it_may_be_a_call():
    stage = OutputStage(SYNTAXES["json"])
    assert stage.feed("  {") == []
    held = OutputStage(SYNTAXES["json"])
    assert held.feed("Hel") == [TextDelta("Hel")]
    assert held.feed("lo {") == [TextDelta("lo {")]


def test_no_tool_family_passes_text_through():
    events, completion = run(None, ["<tool_call>", "{}"])
    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta("<tool_call>"),
        TextDelta("{}"),
    ]
    assert completion.text == "<tool_call>{}" and completion.finish_reason == "stop"


CONSTRAINED = [
    (
        "hermes",
        'Sure.<tool_call>\n{"name": "f", "arguments": {"q": "a}b", "n": [1, {"k": 2}]}}'
        "\n</tool_call>",
    ),
    ("json", '{"name": "f", "arguments": {}}\n{"name": "g", "arguments": {"s": "\\"}"}}'),
    ("llama3", '{"name": "f", "parameters": {"x": 1}}'),
    ("mistral_json", '[TOOL_CALLS][{"name": "f", "arguments": {"x": 1}}]'),
    ("gemma", 'I will look.\n```tool_code\nget_weather(city="Rome")\n```'),
    ("gemma", "Plain words."),
]


@pytest.mark.parametrize(("family", "reply"), CONSTRAINED)
def test_constrained_calls_stream_their_arguments_and_fold_like_the_whole_reply(family, reply):
    content, calls = parse_tool_calls(reply, family)
    for size in (1, 4, len(reply)):
        stage = OutputStage(SYNTAXES[family], constrained=True)
        pieces = [reply[i : i + size] for i in range(0, len(reply), size)]
        events = [e for piece in pieces for e in stage.feed(piece)] + stage.finish(STATS)
        completion = Completion()
        for event in events:
            completion.add(event)
        assert [c.name for c in completion.tool_calls] == [c.name for c in calls]
        arguments = [json.loads(c.arguments) for c in completion.tool_calls]
        assert arguments == [json.loads(c.arguments) for c in calls]
        assert completion.content == (content if calls else reply)
        deltas = [e for e in events if isinstance(e, ToolArgumentsDelta)]
        if size == 1 and family not in ("gemma", "mistral_json"):  # read whole
            assert len(deltas) > len(calls)  # arguments arrive as they are generated


def test_a_streamed_call_cut_short_ends_with_length():
    stage = OutputStage(SYNTAXES["hermes"], constrained=True)
    events = stage.feed('<tool_call>\n{"name": "f", "arguments": {"a": ')
    assert isinstance(events[0], ToolCallStart) and events[0].name == "f"
    cut = GenerationStats(
        prompt_tokens=3, completion_tokens=9, stop_reason="maxPredictedTokensReached"
    )
    assert stage.finish(cut)[-1].finish_reason == "length"
