"""Built-in chat templates, used when a model ships none (the Gemma 3 GGUF has none).

Each template is Hugging Face style Jinja: it reads `messages` (content as a string or a list of
`{"type": "text", "text": ...}` parts), `bos_token`, `eos_token` and `add_generation_prompt`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

# Architectures that share another's chat format.
ALIASES = {
    "gemma": "gemma3",
    "gemma2": "gemma3",
    "gemma3_text": "gemma3",
    # Qwen's vision models (Hugging Face and llama.cpp names) speak the text models' ChatML.
    "qwen2_vl": "qwen2",
    "qwen2_5_vl": "qwen2",
    "qwen2vl": "qwen2",
    "qwen3_vl": "qwen3",
    "qwen3vl": "qwen3",
}
TEMPLATES = ("gemma3", "llama", "qwen2", "qwen3", "mistral", "phi3")


@cache
def builtin_chat_template(architecture: str) -> str | None:
    """The chat template for a GGUF architecture name (gemma3, llama, qwen2, ...), or None."""
    name = ALIASES.get(architecture.lower(), architecture.lower())
    if name not in TEMPLATES:
        return None
    return resources.files(__name__).joinpath(f"{name}.jinja").read_text(encoding="utf-8")
