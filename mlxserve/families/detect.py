"""Which tool-call syntax a model speaks: told from its chat template's markers first (as
mlx-lm's `_infer_tool_parser` and llama.cpp's chat-format detection do), then from the special
tokens of its vocabulary, and from its architecture only as the last resort. A model's
`tool_format` (its manifest, or `load --tool-format`) overrides all three for odd templates."""

from __future__ import annotations

from collections.abc import Collection

from mlxserve.families.syntax import SYNTAXES

# Checked in order: each family by markers its templates write (all must be present).
TEMPLATE_MARKS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("<|channel|>", "to="), "harmony"),
    (("<minimax:tool_call>",), "minimax_m2"),
    (("<|tool_call>", "<tool_call|>"), "gemma4"),
    (("<start_function_call>",), "function_gemma"),
    (("<arg_key>",), "glm47"),
    (("<|tool_call_start|>",), "pythonic"),
    (("<|tool_list_start|>",), "pythonic"),
    (("<tool_call>\n<function=",), "qwen3_coder"),
    (("<tool_call>\\n<function=",), "qwen3_coder"),
    (("<|tool_calls_section_begin|>",), "kimi_k2"),
    (("tool▁calls▁begin",), "deepseek"),
    (("[TOOL_CALLS]", "[ARGS]"), "mistral"),
    (("[TOOL_CALLS]",), "mistral_json"),
    (("<tool_call>",), "hermes"),
    (("<|python_tag|>",), "llama3"),
)
# Special tokens that name a family when the template does not (LFM2 conversions have the
# tokens but no tools in their template).
VOCABULARY_MARKS = (
    ("<|tool_calls_section_begin|>", "kimi_k2"),
    ("<|tool_call_start|>", "pythonic"),
    ("<minimax:tool_call>", "minimax_m2"),
    ("<|tool_call>", "gemma4"),
    ("[TOOL_CALLS]", "mistral_json"),
    ("<tool_call>", "hermes"),
)
ARCHITECTURES = {
    **dict.fromkeys(
        ("qwen2", "qwen3", "qwen2moe", "qwen3moe", "qwen3_moe", "qwen2_moe", "qwen2_vl",
         "qwen2_5_vl", "qwen2vl", "qwen3_vl", "qwen3vl"), "hermes"),
    **dict.fromkeys(("qwen3_next", "qwen3_5", "qwen3_5_moe", "qwen35", "qwen3next"), "qwen3_coder"),
    **dict.fromkeys(("glm4_moe", "glm4moe", "glm4_moe_lite"), "glm47"),
    **dict.fromkeys(("gemma4", "gemma4_text"), "gemma4"),
    **dict.fromkeys(("kimi_k2", "kimi_k25"), "kimi_k2"),
    **dict.fromkeys(("deepseek_v3", "deepseek2", "deepseek_v32"), "deepseek"),
    **dict.fromkeys(("minimax", "minimax_m2"), "minimax_m2"),
    **dict.fromkeys(("lfm2", "lfm2_moe"), "pythonic"),
    **dict.fromkeys(("llama4", "llama4_text"), "pythonic_list"),
    **dict.fromkeys(("gpt_oss", "gpt-oss"), "harmony"),
    **dict.fromkeys(("mistral3", "ministral3"), "mistral"),
    "mistral": "mistral_json",
    "llama": "llama3",
    **dict.fromkeys(("gemma2", "gemma3", "gemma3_text"), "gemma"),
}  # fmt: skip
MARKERS_TO_LOOK_UP = tuple(marker for marker, _ in VOCABULARY_MARKS)


def family_name(
    template: str | None,
    architecture: str,
    single_tokens: Collection[str] = (),
    override: str | None = None,
) -> str:
    """The family of a model. `single_tokens`: the markers of MARKERS_TO_LOOK_UP that are one
    token in its vocabulary."""
    if override:
        return override
    for marks, family in TEMPLATE_MARKS:
        if template and all(mark in template for mark in marks):
            return family
    for marker, family in VOCABULARY_MARKS:
        if marker in single_tokens:
            return family
    return ARCHITECTURES.get(architecture, "json")


def check_tool_format(name: str | None) -> str | None:
    """A tool format someone named, checked: None, or one of the families."""
    if name is not None and name not in SYNTAXES:
        raise ValueError(f"unknown tool format '{name}'; one of: {', '.join(sorted(SYNTAXES))}")
    return name
