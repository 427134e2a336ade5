"""GGUF to MLX conversion on tiny random GGUFs written in llama.cpp's conventions: every
architecture reproduces its reference model's logits, every GGML type dequantizes to exactly
what the `gguf` package gives, and the tokenizer, config and manifest come out right."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm import load
from mlx_lm.generate import generate_step

from mlxserve.models.convert import convert_model
from mlxserve.models.convert.rope import llama3_factors
from mlxserve.models.store import read_record
from tests.gguf_fixtures import (
    TINY_ARCHS,
    Q,
    dequantized,
    gguf_name,
    reference_model,
    to_gguf_layout,
    write_tiny_gguf,
)

PROMPT = [[2, 10, 50, 100, 200, 7, 33, 120, 121, 122, 9, 11]]
ALL_TYPES = [
    Q.F32,
    Q.F16,
    Q.BF16,
    Q.Q4_0,
    Q.Q4_1,
    Q.Q5_0,
    Q.Q5_1,
    Q.Q8_0,
    Q.Q2_K,
    Q.Q3_K,
    Q.Q4_K,
    Q.Q5_K,
    Q.Q6_K,
    Q.IQ4_NL,
    Q.IQ4_XS,
]
# K-quant rows hold 256 values, so the per-type model is 256 wide
WIDE = {"hidden_size": 256, "intermediate_size": 256, "head_dim": 64, "num_hidden_layers": 1}


def convert_tiny(tmp_path: Path, name: str, qtype=Q.F32, quantize="none", **overrides):
    arch = TINY_ARCHS[name]
    model, config, weights = reference_model(arch, **overrides)
    gguf_path = tmp_path / f"{name}-{qtype.name}.gguf"
    stored = write_tiny_gguf(gguf_path, arch, weights, config, qtype=qtype)
    record = convert_model(
        gguf_path,
        tmp_path / "models",
        f"test/{name}-{qtype.name.lower()}",
        quantize=quantize,
        progress=False,
    )
    return arch, model, config, stored, record


@pytest.mark.parametrize("name", sorted(TINY_ARCHS))
def test_architecture_matches_reference_logits(tmp_path, name):
    _, reference, config, _, record = convert_tiny(tmp_path, name)
    model, tokenizer = load(record.path)
    prompt = mx.array(PROMPT)
    expected, actual = reference(prompt), model(prompt)
    assert actual.shape == (1, len(PROMPT[0]), config["vocab_size"])
    np.testing.assert_allclose(np.array(actual), np.array(expected), atol=1e-4, rtol=1e-4)
    steps = islice(generate_step(prompt[0], model, sampler=argmax), 6)
    greedy = [int(token) for token, _ in steps]
    assert all(0 <= t < config["vocab_size"] for t in greedy)
    assert read_record(Path(record.path)).architecture == TINY_ARCHS[name].gguf_arch


def argmax(logits):
    return mx.argmax(logits, axis=-1)


@pytest.mark.parametrize("name", ["llama", "gemma3", "phi3"])
def test_weights_are_llamacpp_transforms_undone(tmp_path, name):
    """Re-applying llama.cpp's forward transforms to the converted weights gives the GGUF's."""
    arch, _, config, stored, record = convert_tiny(tmp_path, name)
    converted = mx.load(str(Path(record.path) / "model.safetensors"))
    for hf_name, values in converted.items():
        reference = dequantized(stored[gguf_name(hf_name, arch)])
        np.testing.assert_array_equal(
            to_gguf_layout(hf_name, np.array(values), arch, config), reference.reshape(values.shape)
        )
    if arch.norm_shift:  # Gemma: the stored norm is 1 + w, the converted one w
        stored_norm = dequantized(stored["blk.0.attn_norm.weight"])
        np.testing.assert_allclose(
            np.array(converted["model.layers.0.input_layernorm.weight"]),
            stored_norm - 1.0,
            atol=1e-7,
        )
    if arch.permute_qk:  # the q rows of each head are back in halves order, not interleaved
        q = np.array(converted["model.layers.0.self_attn.q_proj.weight"])
        assert not np.array_equal(q, dequantized(stored["blk.0.attn_q.weight"]))


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda q: q.name)
def test_tensor_type_dequantizes_like_gguf(tmp_path, qtype):
    arch, _, config, stored, record = convert_tiny(tmp_path, "llama", qtype, **WIDE)
    assert stored["blk.0.attn_q.weight"][1] == qtype
    converted = mx.load(str(Path(record.path) / "model.safetensors"))
    for hf_name, values in converted.items():
        assert values.dtype == mx.float32
        reference = dequantized(stored[gguf_name(hf_name, arch)]).reshape(values.shape)
        np.testing.assert_array_equal(
            to_gguf_layout(hf_name, np.array(values), arch, config), reference
        )
    model, _ = load(record.path)
    logits = model(mx.array(PROMPT))
    assert logits.shape == (1, len(PROMPT[0]), config["vocab_size"])
    assert bool(mx.all(mx.isfinite(logits)))


@pytest.mark.parametrize(
    "quantize,label,tolerance",
    [("8", "8bit", 0.05), ("4", "4bit", 0.6), ("bf16", "bf16", 0.1), ("f16", "f16", 0.02)],
)
def test_mlx_quantization(tmp_path, quantize, label, tolerance):
    _, reference, _, _, record = convert_tiny(tmp_path, "qwen3", quantize=quantize, **WIDE)
    assert record.quantization == label
    config = json.loads((Path(record.path) / "config.json").read_text())
    model, _ = load(record.path)
    logits = model(mx.array(PROMPT)).astype(mx.float32)
    expected = reference(mx.array(PROMPT))
    assert float(mx.abs(logits - expected).max()) < tolerance * float(mx.abs(expected).max())
    weights = mx.load(str(Path(record.path) / "model.safetensors"))
    if quantize in ("4", "8"):
        assert config["quantization"] == {"group_size": 64, "bits": int(quantize), "mode": "affine"}
        assert weights["model.layers.0.mlp.up_proj.weight"].dtype == mx.uint32
        assert "model.layers.0.mlp.up_proj.scales" in weights
    else:
        assert "quantization" not in config
        assert weights["model.layers.0.mlp.up_proj.weight"].dtype == getattr(
            mx, {"bf16": "bfloat16", "f16": "float16"}[quantize]
        )


def test_group_size_32(tmp_path):
    arch = TINY_ARCHS["llama"]
    _, config, weights = reference_model(arch)
    write_tiny_gguf(tmp_path / "m.gguf", arch, weights, config)
    record = convert_model(
        tmp_path / "m.gguf", tmp_path, "t/gs", quantize="4", group_size=32, progress=False
    )
    scales = mx.load(str(Path(record.path) / "model.safetensors"))[
        "model.layers.0.mlp.up_proj.scales"
    ]
    assert scales.shape == (128, 64 // 32)
    load(record.path)


def test_gemma_config_tokenizer_and_manifest(tmp_path):
    _, _, config, _, record = convert_tiny(tmp_path, "gemma3")
    directory = Path(record.path)
    written = json.loads((directory / "config.json").read_text())
    assert written["model_type"] == "gemma3_text"
    assert written["eos_token_id"] == [1, 5]  # <eos> and <end_of_turn>
    assert written["sliding_window"] == 8 and written["sliding_window_pattern"] == 6
    assert written["query_pre_attn_scalar"] == 16 and written["rope_local_base_freq"] == 10000.0
    assert "lm_head.weight" not in mx.load(str(directory / "model.safetensors"))
    generation = json.loads((directory / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [1, 5]
    assert not (directory / "chat_template.jinja").exists()
    _, tokenizer = load(record.path)
    assert tokenizer.eos_token_ids == {1, 5}
    assert tokenizer.encode("hello") == [2] + tokenizer.encode("hello", add_special_tokens=False)
    assert tokenizer.decode(tokenizer.encode("the model", add_special_tokens=False)) == "the model"
    manifest = json.loads((directory / "mlxserve.json").read_text())
    assert manifest == {
        **manifest,
        "id": "test/gemma3-f32",
        "format": "mlx",
        "type": "llm",
        "architecture": "gemma3",
        "quantization": "f32",
        "max_context_length": 512,
    }
    assert not any(p.name.startswith(".converting") for p in (tmp_path / "models").iterdir())


def test_bpe_tokenizer_and_chat_template(tmp_path):
    arch = TINY_ARCHS["qwen2"]
    _, config, weights = reference_model(arch)
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}"
    )
    write_tiny_gguf(tmp_path / "q.gguf", arch, weights, config, chat_template=template)
    record = convert_model(tmp_path / "q.gguf", tmp_path / "models", progress=False)
    assert record.id == "test-org/tiny-qwen2"
    directory = Path(record.path)
    assert (directory / "chat_template.jinja").read_text() == template
    _, tokenizer = load(record.path)
    ids = tokenizer.encode(" hello world<|im_end|>")
    assert len(ids) == 3 and ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(ids) == " hello world<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert json.loads((directory / "config.json").read_text())["eos_token_id"][-1] == im_end
    # Listed in tokenizer_config.json, so transformers does not parse tokenizer.json twice.
    config = json.loads((directory / "tokenizer_config.json").read_text())
    listed = {int(i): token["content"] for i, token in config["added_tokens_decoder"].items()}
    added = json.loads((directory / "tokenizer.json").read_text())["added_tokens"]
    assert listed == {token["id"]: token["content"] for token in added}
    assert listed[im_end] == "<|im_end|>"


def test_llama3_rope_freqs_become_rope_scaling(tmp_path):
    """llama.cpp writes Llama 3.1 RoPE scaling as a rope_freqs tensor; it must round-trip."""
    from gguf import GGUFWriter

    from tests.gguf_fixtures import add_metadata, add_tokenizer, encode

    arch = TINY_ARCHS["llama"]
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    reference, config, weights = reference_model(arch, rope_theta=500000.0, rope_scaling=scaling)
    writer = GGUFWriter(str(tmp_path / "l3.gguf"), "llama")
    add_metadata(writer, arch, config)
    add_tokenizer(writer, arch)
    factors = llama3_factors(16, 500000.0, scaling).astype(np.float32)
    writer.add_tensor("rope_freqs.weight", factors)
    rng = np.random.default_rng(0)
    for hf_name, values in weights.items():
        data, _ = encode(to_gguf_layout(hf_name, values, arch, config), Q.F32, rng)
        writer.add_tensor(gguf_name(hf_name, arch), data)
    for write in (
        writer.write_header_to_file,
        writer.write_kv_data_to_file,
        writer.write_tensors_to_file,
        writer.close,
    ):
        write()
    record = convert_model(tmp_path / "l3.gguf", tmp_path, "t/l3", progress=False)
    written = json.loads((Path(record.path) / "config.json").read_text())["rope_scaling"]
    assert written["type"] == "llama3" and written["factor"] == 8.0
    model, _ = load(record.path)
    long_prompt = mx.array([list(range(3, 200))])
    np.testing.assert_allclose(
        np.array(model(long_prompt)), np.array(reference(long_prompt)), atol=1e-4, rtol=1e-4
    )
