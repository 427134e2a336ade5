"""Hugging Face model directory (config.json, *.safetensors, tokenizer files) to MLX format.

Weights are read lazily with `mx.load`, passed through the mlx-lm model class's `sanitize`,
then cast or quantized and written one tensor at a time. BERT-type embedding models are
handed to `mlxserve.models.convert.embedding`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from mlxserve.checkpoints import DTYPE_LABELS
from mlxserve.models.convert.errors import ConversionError
from mlxserve.models.convert.gguf_convert import ConvertedModel
from mlxserve.models.convert.quantize import QuantSpec
from mlxserve.models.convert.target import TargetModel
from mlxserve.models.convert.writer import ShardWriter

log = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
EMBEDDING_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")  # encoders, with rerankers
# mlx-lm model_type to the GGUF/llama.cpp architecture name the manifest uses
ARCHITECTURE_NAMES = {"gemma3_text": "gemma3", "gemma3": "gemma3"}


def read_hf_config(source: Path) -> dict:
    path = source / "config.json"
    if not path.is_file():
        raise ConversionError(f"{source} has no config.json (not a Hugging Face model directory)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path} is not valid JSON: {error.msg}") from error
    if "model_type" not in config:
        raise ConversionError(f"{path} has no model_type")
    return config


def convert_hf_dir(source: Path, out_dir: Path, quant: QuantSpec, progress: bool) -> ConvertedModel:
    """Write the MLX form of the Hugging Face model in `source` into the empty `out_dir`."""
    config = read_hf_config(source)
    if config["model_type"] in EMBEDDING_MODEL_TYPES:
        return _import_embedding(source, out_dir)
    if config.get("quantization_config") or config.get("quantization"):
        raise ConversionError("the checkpoint is already quantized; convert an unquantized one")
    if "vision_config" in config:
        from mlxserve.models.convert.vision import convert_vision_dir

        return convert_vision_dir(source, out_dir, config, quant)
    weight_files = sorted(source.glob("*.safetensors"))
    if not weight_files:
        raise ConversionError(
            f"{source} has no .safetensors weights (PyTorch .bin files need torch)"
        )
    _copy_tokenizer(source, out_dir)
    target = TargetModel.from_config(config)
    source_dtype = _write_weights(weight_files, target, out_dir, quant, progress)
    _write_config(out_dir, config, quant)
    label = quant.label if quant.mode != "none" else DTYPE_LABELS.get(source_dtype, source_dtype)
    context = int(
        config.get("max_position_embeddings")
        or config.get("text_config", {}).get("max_position_embeddings", 0)
    )
    architecture = ARCHITECTURE_NAMES.get(config["model_type"], config["model_type"])
    return ConvertedModel(architecture, context, label)


def _copy_tokenizer(source: Path, out_dir: Path) -> None:
    if not any((source / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise ConversionError(
            f"missing tokenizer: {source} has no tokenizer.json or tokenizer.model"
        )
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out_dir / name)


def _write_weights(
    weight_files: list[Path], target: TargetModel, out_dir: Path, quant: QuantSpec, progress: bool
) -> str:
    """Cast or quantize each tensor after the model's sanitize; return the source float dtype."""
    import mlx.core as mx

    weights = {}
    for path in weight_files:
        try:
            weights.update(mx.load(str(path)))
        except (RuntimeError, ValueError) as error:
            raise ConversionError(f"cannot read {path.name}: {error}") from error
    if hasattr(target.model, "sanitize"):
        weights = target.model.sanitize(weights)
    source_dtype = next(
        (
            str(w.dtype).removeprefix("mlx.core.")
            for w in weights.values()
            if mx.issubdtype(w.dtype, mx.floating)
        ),
        "float32",
    )
    writer = ShardWriter(out_dir)
    for name in tqdm(
        sorted(weights), desc="converting", unit="tensor", file=sys.stderr, disable=not progress
    ):
        values = weights.pop(name)  # drop each source tensor once written
        target.check(name, values.shape)
        writer.add(quant.apply(name, values, target))
    writer.close()
    target.check_complete(set(writer.names))
    return source_dtype


def _write_config(out_dir: Path, config: dict, quant: QuantSpec) -> None:
    config = {k: v for k, v in config.items() if k not in ("_name_or_path", "quantization_config")}
    if (entry := quant.config_entry()) is not None:
        config["quantization"] = config["quantization_config"] = entry
    if quant.mode in ("bf16", "f16", "affine"):
        config["torch_dtype"] = "float16" if quant.mode == "f16" else "bfloat16"
    (out_dir / "config.json").write_text(json.dumps(dict(sorted(config.items())), indent=2))


def _import_embedding(source: Path, out_dir: Path) -> ConvertedModel:
    try:
        from mlxserve.models.convert.embedding import import_embedding_model
    except ImportError as error:
        raise ConversionError("embedding models (BERT) are not supported by this build") from error
    fields = import_embedding_model(source, out_dir)
    return ConvertedModel(
        architecture=fields.get("architecture", "bert"),
        max_context_length=int(fields.get("max_context_length", 0)),
        quantization=fields.get("quantization", "f32"),
        type=fields.get("type", "embeddings"),
    )
