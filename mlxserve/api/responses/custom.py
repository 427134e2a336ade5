"""Custom (freeform) tools of the Responses API. The model is offered a function of one string,
`input`; a grammar format is written into the tool's description, a regular expression is also
enforced while the input is sampled (as the string's `pattern`), and every grammar is checked
against the finished input with llguidance over a vocabulary of single bytes."""

from __future__ import annotations

import functools
import json
import re

from llguidance import LLMatcher, LLTokenizer, TokenizerWrapper

from mlxserve.pipeline.errors import RequestError

INPUT = "input"  # the one argument a custom tool's function takes
SYNTAXES = {"lark": "Lark grammar", "regex": "regular expression"}
# A run of a JSON string's body that decodes on its own: plain characters and whole escapes (a
# surrogate pair whole, so no half of one is sent apart from the other).
STRING_RUN = re.compile(
    r'(?:[^"\\]|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[0-9a-fA-F]{4}'
    r"|\\u(?![dD][89abAB])[0-9a-fA-F]{4}|\\[^u])*"
)
INPUT_HEAD = re.compile(r'\s*\{\s*"input"\s*:\s*"')


def check_format(value, param: str) -> None:
    """A custom tool's `format`: absent, text, or a lark or regex grammar llguidance compiles."""
    kind = value.get("type") if isinstance(value, dict) else None
    if value is None or kind == "text":
        return
    grammar = value if kind == "grammar" else {}
    syntax, definition = grammar.get("syntax"), grammar.get("definition")
    if not (isinstance(syntax, str) and syntax in SYNTAXES and isinstance(definition, str)):
        raise RequestError(
            400,
            f'{param} must be {{"type": "text"}} or '
            '{"type": "grammar", "syntax": "lark" | "regex", "definition": "..."}',
            param,
            "invalid_value",
        )
    error = grammar_error(syntax, definition)
    if error:
        message = f"{param}.definition: not a valid {SYNTAXES[syntax]}: {error.splitlines()[0]}"
        raise RequestError(400, message, f"{param}.definition", "invalid_grammar")


def custom_function(name: str, tool: dict, description: str) -> dict:
    """A custom tool as the function a chat template shows and a grammar constrains."""
    grammar = _grammar_format(tool)
    described = [description]
    string = {"type": "string", "description": "The tool's whole input, as plain text."}
    if grammar is not None:
        syntax, definition = grammar
        described.append(f"The input must match this {SYNTAXES[syntax]}:\n{definition}")
        if syntax == "regex":
            string.update(_pattern(definition))
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": "\n\n".join(text for text in described if text),
            "parameters": {
                "type": "object",
                "properties": {INPUT: string},
                "required": [INPUT],
                "additionalProperties": False,
            },
        },
    }


def input_mismatch(tool: dict, text: str) -> str | None:
    """Why `text` does not match the tool's grammar, or None when it does (or has none)."""
    grammar = _grammar_format(tool)
    if grammar is None:
        return None
    matcher = LLMatcher(_byte_tokenizer(), _grammar(*grammar), log_level=0)
    if matcher.consume_tokens(list(text.encode())) and matcher.is_accepting():
        return None
    if matcher.is_error():
        return matcher.get_error().splitlines()[0]
    return "the input ends before the grammar allows"


def input_of(arguments: str) -> str | None:
    """The input in a custom tool's finished JSON arguments (None when they are not whole)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    text = value.get(INPUT) if isinstance(value, dict) else None
    return text if isinstance(text, str) else None


class StreamedInput:
    """A custom tool's input decoded from its JSON arguments as they arrive, so it can be sent
    as text deltas before the arguments are complete."""

    def __init__(self):
        self.arguments = ""
        self.decoded = ""
        self._start: int | None = None  # where the input string's body starts
        self._end = 0  # how far the body has been decoded

    def feed(self, piece: str) -> str:
        """The input text `piece` completes."""
        self.arguments += piece
        if self._start is None:
            head = INPUT_HEAD.match(self.arguments)
            if head is None:
                return ""
            self._start = self._end = head.end()
        run = STRING_RUN.match(self.arguments, self._end)  # matches, if only the empty run
        if not run.group():
            return ""
        try:
            text = json.loads(f'"{run.group()}"', strict=False)
        except ValueError:  # not JSON after all: the finished arguments will tell
            return ""
        self._end = run.end()
        self.decoded += text
        return text

    def finish(self) -> str:
        """The whole input: read from the finished arguments, or as far as it was decoded."""
        whole = input_of(self.arguments)
        return self.decoded if whole is None else whole


def _grammar_format(tool: dict) -> tuple[str, str] | None:
    value = tool.get("format")
    if isinstance(value, dict) and value.get("type") == "grammar":
        return value["syntax"], value["definition"]
    return None


def _pattern(regex: str) -> dict:
    """The regex as a JSON schema `pattern` (anchored: the whole input must match), where
    Python's `re` can read it too (the schema is checked with it before sampling)."""
    anchored = f"^(?:{regex})$"
    try:
        re.compile(anchored)
    except re.error:
        return {}
    return {"pattern": anchored}


@functools.lru_cache(maxsize=64)
def _grammar(syntax: str, definition: str) -> str:
    if syntax == "regex":
        return LLMatcher.grammar_from_regex(definition)
    return LLMatcher.grammar_from_lark(definition)


@functools.lru_cache(maxsize=64)
def grammar_error(syntax: str, definition: str) -> str:
    """llguidance's complaint about a grammar, "" when it compiles (clients send the same
    grammars every turn)."""
    return LLMatcher.validate_grammar(_grammar(syntax, definition))


class _ByteVocabulary:
    """The 256 byte values and an end token: a grammar run over it reads text byte by byte."""

    eos_token_id = 256
    bos_token_id = None
    special_token_ids = [256]
    tokens = [bytes([value]) for value in range(256)] + [b"<end>"]

    def __call__(self, text: str | bytes) -> list[int]:
        return list(text.encode() if isinstance(text, str) else text)


@functools.cache
def _byte_tokenizer() -> LLTokenizer:
    return LLTokenizer(TokenizerWrapper(_ByteVocabulary()), slices=[])
