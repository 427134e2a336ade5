"""Tiny random-weight vision-language models in the Hugging Face/MLX layout (config, processor
configs, tokenizer, safetensors), one per family the MLX engine serves: Gemma 3 (SigLIP tower,
pooled projector), Qwen2-VL and Qwen2.5-VL (merged patches, multimodal RoPE) and Qwen3-VL
(deepstack features added inside the language model)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from mlxserve.models.store import ModelRecord, write_manifest
from tests.tiny_models import make_tiny_gemma

WORDS = [f"w{i}" for i in range(60)]
GEMMA_SPECIAL = [
    "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>",
]  # fmt: skip
QWEN_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>", "<unk>",
]  # fmt: skip
IMAGE_TOKENS = {
    "gemma3": 4,
    "qwen2_vl": 4,
    "qwen2_5_vl": 4,
    "qwen3_vl": 4,
}  # per square picture (Qwen: its aspect ratio counts)


def make_tiny_vlm(directory: Path, family: str, seed: int = 0) -> ModelRecord:
    """A 2-layer vision-language model of `family` (a key of FAMILIES) in the store."""
    directory.mkdir(parents=True, exist_ok=True)
    special = GEMMA_SPECIAL if family == "gemma3" else QWEN_SPECIAL
    vocabulary = special + ["user", "model", "assistant", "system"] + WORDS
    ids = {piece: i for i, piece in enumerate(vocabulary)}
    config, processor = FAMILIES[family](ids)
    (directory / "config.json").write_text(json.dumps(config))
    for name, content in processor.items():
        (directory / name).write_text(json.dumps(content))
    _write_tokenizer(directory, vocabulary, special, family)
    _write_weights(directory, config, family, seed)
    record = ModelRecord(
        id=f"{directory.parent.name}/{directory.name}",
        format="mlx",
        architecture=family,
        type="vlm",
        quantization="f32",
        max_context_length=512,
        path=str(directory),
    )
    write_manifest(directory, record)
    return record


def _gemma3(ids: dict[str, int]) -> tuple[dict, dict]:
    text = {
        "model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "head_dim": 16,
        "num_key_value_heads": 1, "vocab_size": len(ids), "sliding_window": 8,
        "sliding_window_pattern": 2, "mm_tokens_per_image": 4, "query_pre_attn_scalar": 16,
        "max_position_embeddings": 512,
    }  # fmt: skip
    vision = {
        "model_type": "siglip_vision_model", "num_hidden_layers": 2, "hidden_size": 32,
        "intermediate_size": 64, "num_attention_heads": 2, "patch_size": 8, "image_size": 32,
    }  # fmt: skip
    config = {
        "model_type": "gemma3", "text_config": text, "vision_config": vision,
        "image_token_index": ids["<image_soft_token>"], "mm_tokens_per_image": 4,
        "boi_token_index": ids["<start_of_image>"], "eoi_token_index": ids["<end_of_image>"],
        "hidden_size": 64, "pad_token_id": 0, "eos_token_id": [ids["<eos>"], ids["<end_of_turn>"]],
    }  # fmt: skip
    image = {
        "image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
        "do_resize": True, "size": {"height": 32, "width": 32}, "resample": 2,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "do_convert_rgb": True,
        "do_pan_and_scan": False, "image_seq_length": 4,
    }  # fmt: skip
    processor = {"processor_class": "Gemma3Processor", "image_seq_length": 4}
    return config, {"preprocessor_config.json": image, "processor_config.json": processor}


def _qwen2_vl(ids: dict[str, int]) -> tuple[dict, dict]:
    config, files = _qwen2_5_vl(ids)
    config["model_type"] = "qwen2_vl"
    config["vision_config"] = {
        "model_type": "qwen2_vl", "depth": 2, "embed_dim": 32, "hidden_size": 64,
        "num_heads": 2, "mlp_ratio": 2, "patch_size": 14, "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }  # fmt: skip
    files["preprocessor_config.json"]["processor_class"] = "Qwen2VLProcessor"
    files["processor_config.json"] = {"processor_class": "Qwen2VLProcessor"}
    return config, files


def _qwen2_5_vl(ids: dict[str, int]) -> tuple[dict, dict]:
    config = {
        "model_type": "qwen2_5_vl", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "vocab_size": len(ids), "max_position_embeddings": 512,
        "rope_theta": 10000.0, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "tie_word_embeddings": False, "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"], "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"], "eos_token_id": [ids["<|im_end|>"]],
        "vision_config": {
            "model_type": "qwen2_5_vl", "depth": 2, "hidden_size": 32, "intermediate_size": 64,
            "out_hidden_size": 64, "num_heads": 2, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "window_size": 56, "fullatt_block_indexes": [1],
        },
    }  # fmt: skip
    pixels = 56 * 56  # every picture becomes 4x4 patches, merged 2x2 into 4 image tokens
    image = {
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        "min_pixels": pixels, "max_pixels": pixels,
        "size": {"shortest_edge": pixels, "longest_edge": pixels},
        "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }  # fmt: skip
    processor = {"processor_class": "Qwen2_5_VLProcessor"}
    return config, {"preprocessor_config.json": image, "processor_config.json": processor}


def _qwen3_vl(ids: dict[str, int]) -> tuple[dict, dict]:
    text = {
        "model_type": "qwen3_vl_text", "hidden_size": 64, "num_hidden_layers": 2,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "rms_norm_eps": 1e-6, "vocab_size": len(ids), "rope_theta": 10000.0,
        "max_position_embeddings": 512, "tie_word_embeddings": False,
        "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3],
                         "mrope_interleaved": True},
    }  # fmt: skip
    vision = {
        "model_type": "qwen3_vl", "depth": 2, "hidden_size": 32, "intermediate_size": 64,
        "out_hidden_size": 64, "num_heads": 2, "patch_size": 16, "spatial_merge_size": 2,
        "temporal_patch_size": 2, "num_position_embeddings": 64, "deepstack_visual_indexes": [0],
    }  # fmt: skip
    config = {
        "model_type": "qwen3_vl", "text_config": text, "vision_config": vision,
        "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"], "eos_token_id": [ids["<|im_end|>"]],
        "tie_word_embeddings": False,
    }  # fmt: skip
    pixels = 64 * 64  # every picture becomes 4x4 patches, merged 2x2 into 4 image tokens
    image = {
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen3VLProcessor",
        "size": {"shortest_edge": pixels, "longest_edge": pixels},
        "patch_size": 16, "merge_size": 2, "temporal_patch_size": 2,
        "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
    }  # fmt: skip
    processor = {"processor_class": "Qwen3VLProcessor"}
    return config, {"preprocessor_config.json": image, "processor_config.json": processor}


FAMILIES = {
    "gemma3": _gemma3,
    "qwen2_vl": _qwen2_vl,
    "qwen2_5_vl": _qwen2_5_vl,
    "qwen3_vl": _qwen3_vl,
}


def _write_tokenizer(directory: Path, vocabulary: list[str], special: list[str], family: str):
    tokenizer = Tokenizer(models.WordLevel({p: i for i, p in enumerate(vocabulary)}, "<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.add_special_tokens(special)
    tokenizer.save(str(directory / "tokenizer.json"))
    if family == "gemma3":
        names = {"bos_token": "<bos>", "eos_token": "<end_of_turn>", "pad_token": "<pad>"}
        names |= {
            "extra_special_tokens": {
                "boi_token": "<start_of_image>",
                "eoi_token": "<end_of_image>",
                "image_token": "<image_soft_token>",
            }
        }
    else:
        names = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>", **names}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def _write_weights(directory: Path, config: dict, family: str, seed: int) -> None:
    from mlx_vlm.utils import get_model_and_args

    module, _ = get_model_and_args(config)
    model_config = module.ModelConfig.from_dict(dict(config))
    for part in ("text", "vision"):  # some families leave these as dicts
        value = getattr(model_config, f"{part}_config")
        if isinstance(value, dict):
            part_class = getattr(module, f"{part.title()}Config")
            setattr(model_config, f"{part}_config", part_class.from_dict(value))
    mx.random.seed(seed)
    model = module.Model(model_config)
    weights = dict(tree_flatten(model.parameters()))
    # Gemma's projector starts at ones: random values make the answer depend on the image.
    for name, value in weights.items():
        if "mm_input_projection" in name:
            weights[name] = mx.random.normal(value.shape)
    mx.save_safetensors(str(directory / "model.safetensors"), weights)


def png_bytes(color: tuple[int, int, int] | None = None, size=(48, 48), seed: int = 0) -> bytes:
    """A PNG of one colour, or of random pixels when no colour is given."""
    if color is None:
        noise = mx.random.randint(0, 256, (size[1], size[0], 3), key=mx.random.key(seed))
        image = Image.fromarray(noise.astype(mx.uint8).__array__())
    else:
        image = Image.new("RGB", size, color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_vision_store(root: Path, families) -> Path:
    """A store of tiny vision models of `families` (as test/<family>) and a text-only Gemma
    (test/text-only)."""
    for family in families:
        make_tiny_vlm(root / "test" / family, family)
    make_tiny_gemma(root / "test" / "text-only")
    return root
