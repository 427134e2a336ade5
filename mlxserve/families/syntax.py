"""Each family's tool-call syntax: the markers around a call block, how calls sit in it, how
the block is read back and how one call is written as a grammar.

A block is either one call (`per_call`: Qwen's `<tool_call>...</tool_call>`, each call its own
block) or a section of calls (`section`: Kimi's, DeepSeek's, MiniMax's, LFM2's); in some
families a reply that is only calls, without markers, is read too (`whole_reply`: the JSON
families and Llama 4's Python list). The opening marker is also
the lazy grammar's trigger under `tool_choice: auto`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from mlxserve.families.calls import (
    Parser,
    first_of,
    mlx_lm_parser,
    parse_deepseek,
    parse_gemma_reply,
    parse_harmony,
    parse_json_block,
    parse_json_reply,
    parse_tool_code,
    quoted_call_parser,
    xml_parser,
)


@dataclass(frozen=True)
class ToolSyntax:
    name: str
    opening: str | None  # the marker that starts a call block in free text
    closing: str | None  # the marker that ends it; None: the block runs to the reply's end
    parse: Parser  # the calls in a block's inside (between its markers)
    shape: str  # how one call is written (families.grammar.call_rule)
    block: str = "per_call"  # per_call | section
    whole_reply: bool = False  # a reply that is nothing but calls is read by `reply_parse`
    reply_parse: Parser = parse_json_reply
    separator: str = "\n"  # between calls (between blocks, for per_call)
    markers: tuple[str, ...] = ()  # literals of the syntax that may be one special token
    name_pattern: str | None = None  # where a call's name is known, in a block's inside
    json_key: str = "arguments"  # the JSON families' key for the arguments
    section_open: str = ""  # written after the opening, before the first call of a section
    section_close: str = ""  # written after the last call, before the closing
    ignored: str = ""  # text around calls that belongs to no one (harmony's role header)
    hint: str = ""  # how to call, for templates that do not describe tools themselves

    @property
    def json_arguments(self) -> bool:
        """Whether arguments are one JSON object (so they can stream as generated)."""
        return self.shape in ("json_object", "kimi", "deepseek", "mistral", "harmony")

    @property
    def streams_arguments(self) -> bool:
        """Whether a call's JSON arguments follow its name (and can stream as generated)."""
        return self.shape in ("kimi", "deepseek", "mistral", "harmony")

    def name_in(self, inside: str) -> str | None:
        if self.name_pattern is None:
            return None
        found = re.search(self.name_pattern, inside)
        return found.group(1) if found else None


JSON_CALL = '{"name": "<function-name>", "arguments": {<arguments>}}'
QWEN_XML = xml_parser(r"<function=([^>\s]+)>\n", r"\s*<parameter=([^>\s]+)>\n", "\n</parameter>")
MINIMAX_XML = xml_parser(
    r'<invoke name="([^"]+)">\n', r'\s*<parameter name="([^"]+)">', "</parameter>"
)
GLM_ARGS = xml_parser(
    r"^\s*([^<\s]+)\s*", r"\s*<arg_key>([^<]+)</arg_key>\s*<arg_value>", "</arg_value>"
)
JSON_HEAD = r'^\s*\{"name":\s*"([^"\\]+)"'

SYNTAXES = {
    syntax.name: syntax
    for syntax in (
        ToolSyntax(
            "hermes", "<tool_call>", "</tool_call>", parse_json_block, "json_object",
            markers=("<tool_call>", "</tool_call>"), name_pattern=JSON_HEAD,
            section_open="\n", section_close="\n",
            hint=f"wrap each call in tags: <tool_call>{JSON_CALL}</tool_call>",
        ),
        ToolSyntax(
            "qwen3_coder", "<tool_call>", "</tool_call>",
            first_of(QWEN_XML, mlx_lm_parser("qwen3_coder")),
            "qwen_xml", markers=("<tool_call>", "</tool_call>"),
            name_pattern=r"<function=([^>\s]+)>",
            hint="write <tool_call>\n<function=NAME>\n<parameter=P>\nVALUE\n</parameter>\n"
            "</function>\n</tool_call>",
        ),
        ToolSyntax(
            "glm47", "<tool_call>", "</tool_call>", first_of(GLM_ARGS, mlx_lm_parser("glm47")),
            "glm",
            markers=(
                "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>",
                "</arg_value>",
            ),
            name_pattern=r"^\s*([^<\s]+)\s*<arg_key>",
            hint="write <tool_call>NAME<arg_key>P</arg_key><arg_value>V</arg_value></tool_call>",
        ),
        ToolSyntax(
            "gemma4", "<|tool_call>", "<tool_call|>",
            first_of(quoted_call_parser('<|"|>'), mlx_lm_parser("gemma4")), "gemma4",
            separator="", markers=("<|tool_call>", "<tool_call|>", '<|"|>'),
            name_pattern=r"call:([\w\-]+)\{",
            hint='write <|tool_call>call:NAME{key:<|"|>text<|"|>,n:1}<tool_call|>',
        ),
        ToolSyntax(
            "function_gemma", "<start_function_call>", "<end_function_call>",
            quoted_call_parser("<escape>"), "function_gemma", separator="",
            markers=("<start_function_call>", "<end_function_call>", "<escape>"),
            name_pattern=r"call:(\w+)\{",
            hint="write <start_function_call>call:NAME{key:<escape>text<escape>}"
            "<end_function_call>",
        ),
        ToolSyntax(
            "kimi_k2", "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>",
            mlx_lm_parser("kimi_k2"), "kimi", block="section", separator="",
            markers=(
                "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>",
                "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>",
            ),
            name_pattern=r"functions\.([\w.\-]+):\d+<\|tool_call_argument_begin\|>",
        ),
        ToolSyntax(
            "minimax_m2", "<minimax:tool_call>", "</minimax:tool_call>",
            first_of(MINIMAX_XML, mlx_lm_parser("minimax_m2")), "minimax", block="section",
            separator="",
            markers=("<minimax:tool_call>", "</minimax:tool_call>"),
            name_pattern=r'<invoke name="([^"]+)">', section_open="\n",
        ),
        ToolSyntax(
            "deepseek", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", parse_deepseek,
            "deepseek", block="section", separator="",
            markers=(
                "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
                "<｜tool▁sep｜>", "<｜tool▁call▁end｜>",
            ),
            name_pattern=r"<｜tool▁call▁begin｜>([\w.\-]+)<｜tool▁sep｜>",
        ),
        ToolSyntax(
            "pythonic", "<|tool_call_start|>", "<|tool_call_end|>", mlx_lm_parser("pythonic"),
            "python", block="section", separator=", ",
            markers=("<|tool_call_start|>", "<|tool_call_end|>"),
            name_pattern=r"^\s*\[([\w.]+)\(", section_open="[", section_close="]",
            hint='write <|tool_call_start|>[NAME(key="value")]<|tool_call_end|>',
        ),
        ToolSyntax(
            "pythonic_list", None, None, mlx_lm_parser("pythonic"), "python", block="section",
            whole_reply=True, reply_parse=mlx_lm_parser("pythonic"), separator=", ",
            section_open="[", section_close="]",
            hint='reply with only a Python list of calls: [NAME(key="value")]',
        ),
        ToolSyntax(
            "mistral", "[TOOL_CALLS]", None, mlx_lm_parser("mistral"), "mistral",
            separator="", markers=("[TOOL_CALLS]", "[ARGS]"), name_pattern=r"([\w\-]+)\[ARGS\]",
            hint="write [TOOL_CALLS]NAME[ARGS]{arguments as JSON}",
        ),
        ToolSyntax(
            "mistral_json", "[TOOL_CALLS]", None, mlx_lm_parser("mistral"), "json_object",
            block="section", separator=", ", markers=("[TOOL_CALLS]",),
            section_open="[", section_close="]",
            hint=f"reply with [TOOL_CALLS] followed by a JSON list: [TOOL_CALLS][{JSON_CALL}]",
        ),
        ToolSyntax(
            "harmony", "<|channel|>commentary to=functions.", "<|call|>", parse_harmony,
            "harmony", separator="",
            markers=("<|channel|>", "<|constrain|>", "<|message|>", "<|call|>", "<|start|>"),
            name_pattern=r"([\w.\-]+)\s*(?:<\|constrain\|>\s*\w+\s*)?<\|message\|>",
            ignored="<|start|>assistant",
        ),
        ToolSyntax(
            "llama3", None, None, parse_json_reply, "json_object", whole_reply=True,
            json_key="parameters",
            hint='reply with only a JSON object: {"name": "<function-name>", "parameters": {...}}',
        ),
        ToolSyntax(
            "gemma", "```tool_code", "```", parse_tool_code, "json_object", whole_reply=True,
            reply_parse=parse_gemma_reply,
            hint=f"reply with only a JSON object: {JSON_CALL}",
        ),
        ToolSyntax(
            "json", None, None, parse_json_reply, "json_object", whole_reply=True,
            hint=f"reply with only a JSON object: {JSON_CALL}",
        ),
    )
}  # fmt: skip


def tools_prompt(tools: list[dict], syntax: ToolSyntax | None) -> str:
    """System-prompt text describing the tools, for templates that do not render `tools`."""
    specs = "\n".join(json.dumps(tool.get("function", tool)) for tool in tools)
    how = syntax.hint if syntax and syntax.hint else SYNTAXES["json"].hint
    return f"You can call these functions:\n{specs}\n\nTo call a function, {how}. " + (
        "Otherwise answer normally."
    )
