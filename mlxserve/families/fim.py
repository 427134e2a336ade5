"""Fill-in-the-middle formats: the special tokens each code model family was trained to infill
with, and the order it reads the text around the cursor in. A model speaks a format when all of
its markers are single tokens in its vocabulary."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FimFormat:
    name: str  # the families that use it, for messages and logs
    prefix: str
    suffix: str
    middle: str = ""  # empty: the format has no middle marker (Codestral's)
    suffix_first: bool = False  # suffix-prefix-middle order (SPM) rather than prefix-suffix-middle
    before_prefix: str = ""  # text the family's documented prompt puts after the prefix marker
    # Tokens that end a middle beyond the model's end of text (llama.cpp stops at them too).
    ends: tuple[str, ...] = ()

    @property
    def markers(self) -> tuple[str, ...]:
        return tuple(m for m in (self.prefix, self.suffix, self.middle) if m)

    def render(self, prefix: str, suffix: str, middle: str = "") -> str:
        """The raw prompt: the text before the cursor, the text after it, and `middle`, the part
        of the gap already typed, which the model's answer goes on from."""
        before = f"{self.prefix}{self.before_prefix}{prefix}"
        after = f"{self.suffix}{suffix}"
        ordered = after + before if self.suffix_first else before + after
        return f"{ordered}{self.middle}{middle}"


FORMATS: tuple[FimFormat, ...] = (
    FimFormat(
        "Qwen2.5-Coder, Qwen3-Coder, CodeGemma",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        ends=("<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|file_separator|>"),
    ),
    FimFormat(
        "StarCoder, StarCoder2",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        ends=("<file_sep>", "<fim_pad>"),
    ),
    # "<PRE> {prefix} <SUF>{suffix} <MID>": the spaces before SUF and MID are their tokens' own.
    FimFormat("CodeLlama", "▁<PRE>", "▁<SUF>", "▁<MID>", before_prefix=" ", ends=("▁<EOT>",)),
    FimFormat("DeepSeek-Coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    # Mistral's own tokenizer writes [SUFFIX]suffix[PREFIX]prefix, with no middle marker.
    FimFormat("Codestral", "[PREFIX]", "[SUFFIX]", suffix_first=True),
)
ALL_MARKERS = tuple(dict.fromkeys(m for f in FORMATS for m in (*f.markers, *f.ends)))


def fim_format(single_tokens: set[str]) -> FimFormat | None:
    """The first format whose markers are all single tokens, or None."""
    return next((f for f in FORMATS if set(f.markers) <= single_tokens), None)
