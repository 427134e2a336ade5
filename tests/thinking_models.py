"""A tiny random model whose chat template opens a think block, on either engine: the server of
it is a session fixture (conftest's `thinking_server`) for the reasoning and Responses tests."""

from __future__ import annotations

import json
from pathlib import Path

from mlxserve.models.gguf_import import register_gguf
from tests.gguf_fixtures import TINY_ARCHS, reference_model, write_tiny_gguf
from tests.tiny_models import make_tiny_gemma

THINKER_ID = "test/tiny-thinker"
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)


def make_thinker(models: Path, engine: str) -> None:
    """THINKER_ID in the store `models`: MLX weights, or a GGUF for llama.cpp."""
    if engine == "mlx":
        directory = models / THINKER_ID
        make_tiny_gemma(directory, bytes_vocabulary=True, architecture="qwen3")
        config = json.loads((directory / "tokenizer_config.json").read_text())
        config["chat_template"] = THINKING_TEMPLATE
        (directory / "tokenizer_config.json").write_text(json.dumps(config))
    else:
        arch = TINY_ARCHS["qwen2"]
        _, config, weights = reference_model(arch)
        gguf = models / "thinker.gguf"
        write_tiny_gguf(gguf, arch, weights, config, chat_template=THINKING_TEMPLATE)
        register_gguf(gguf, models, THINKER_ID)
