"""GGUF file to MLX model directory: config.json, tokenizer files, safetensors shards."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mlxserve.models.convert.gguf_arch import arch_spec, mlx_name, transform
from mlxserve.models.convert.gguf_reader import GGUFFile
from mlxserve.models.convert.quantize import QuantSpec
from mlxserve.models.convert.target import TargetModel
from mlxserve.models.convert.tokenizer import TokenizerInfo, write_tokenizer
from mlxserve.models.convert.writer import ShardWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertedModel:
    """What the manifest needs to know about a finished conversion."""

    architecture: str
    max_context_length: int
    quantization: str
    type: str = "llm"


def convert_gguf(gguf: GGUFFile, out_dir: Path, quant: QuantSpec, progress: bool) -> ConvertedModel:
    """Write the MLX form of `gguf` into the empty directory `out_dir`."""
    spec = arch_spec(gguf)
    config = spec.build_config(gguf)
    tokenizer = write_tokenizer(gguf, out_dir, config["max_position_embeddings"])
    target = TargetModel.from_config(config)
    writer = ShardWriter(out_dir)
    converted: set[str] = set()
    names = [n for n in gguf.tensors if mlx_name(spec, n) is not None]
    for gguf_name in tqdm(
        names, desc="converting", unit="tensor", file=sys.stderr, disable=not progress
    ):
        name = mlx_name(spec, gguf_name)
        values = transform(spec, gguf_name, gguf.load(gguf_name), config)
        target.check(name, values.shape)
        writer.add(quant.apply(name, values, target))
        converted.add(name)
    writer.close()
    target.check_complete(converted)
    write_configs(out_dir, config, tokenizer, quant)
    return ConvertedModel(gguf.architecture, config["max_position_embeddings"], quant.label)


def write_configs(out_dir: Path, config: dict, tokenizer: TokenizerInfo, quant: QuantSpec) -> None:
    """config.json, and generation_config.json so mlx-lm stops at every end-of-turn token."""
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_ids,
        "pad_token_id": tokenizer.pad_token_id,
    }
    ids = {key: value for key, value in ids.items() if value is not None and value != []}
    config = {**config, **ids}
    if (entry := quant.config_entry()) is not None:
        config["quantization"] = config["quantization_config"] = entry
    config = {key: value for key, value in config.items() if value is not None}
    (out_dir / "config.json").write_text(json.dumps(dict(sorted(config.items())), indent=2))
    (out_dir / "generation_config.json").write_text(json.dumps(ids, indent=2))
