"""What a model's own files say, for the families that describe models (LM Studio's
/api/v1/models, Ollama's /api/show and /api/tags): its chat template, whether that template
takes tools, and a GGUF's parameter count label."""

from __future__ import annotations

import functools
import json
import struct
from pathlib import Path

from mlxserve.engine.base import EngineError
from mlxserve.gguf_header import read_scalar_fields
from mlxserve.models.engines import gguf_file_of
from mlxserve.models.store import ModelRecord
from mlxserve.models.templates import builtin_chat_template


def renders_tools(template: str | None, architecture: str) -> bool:
    """Whether the chat template the pipeline would use takes `tools` itself (the test
    `messages_with_tools` makes), rather than being told about them in a system message."""
    return "tools" in (template or builtin_chat_template(architecture) or "")


def model_file_facts(record: ModelRecord) -> tuple[str | None, str | None]:
    """The model's own chat template and, for a GGUF, its parameter count label ("270M")."""
    try:
        if record.format == "gguf":
            path = gguf_file_of(record)
            return _gguf_facts(path, path.stat().st_mtime_ns)
        return _mlx_template(record.directory), None
    except (OSError, ValueError, struct.error, EngineError):
        return None, None  # an unreadable model is still listed, without what its files say


@functools.lru_cache(maxsize=64)
def _gguf_facts(path: Path, mtime_ns: int) -> tuple[str | None, str | None]:
    """Read once per file version: walking a large vocabulary takes about a third of a second."""
    fields = read_scalar_fields(path)
    return fields.get("tokenizer.chat_template"), fields.get("general.size_label")


def _mlx_template(directory: Path) -> str | None:
    """Where the tokenizer finds it: chat_template.jinja, else tokenizer_config.json."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = directory / "tokenizer_config.json"
    data = json.loads(config.read_text()) if config.is_file() else {}
    template = data.get("chat_template") if isinstance(data, dict) else None
    return template if isinstance(template, str) else None
