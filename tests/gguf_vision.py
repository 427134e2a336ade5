"""A tiny random-weight Gemma 3 vision projector ("mmproj") GGUF, for llama.cpp vision tests.

This is an independent writer of the layout llama.cpp's multimodal loader (tools/mtmd/clip.cpp)
reads for projector type "gemma3", the one convert_hf_to_gguf.py's Gemma3VisionModel writes: a
SigLIP vision encoder (`v.*`), then clip.cpp average-pools the patch grid, RMS-normalizes with
`mm.soft_emb_norm.weight` and projects into the text model's embedding space with
`mm.input_projection.weight`. Shapes below are numpy shapes, the reverse of ggml's `ne`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType

IMAGE_SIZE = 64
PATCH_SIZE = 8
# clip.cpp pools gemma3's patch grid 4x4 unless clip.vision.projector.scale_factor says otherwise
POOL = 4
# embeddings per image, whatever its size; llama.cpp adds <start_of_image>/<end_of_image> around
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE // POOL) ** 2
HIDDEN = 32
# must differ from HIDDEN: clip.cpp takes an ffn_down with HIDDEN-wide rows for a legacy file's
# swapped up/down
FFN = 64
HEADS = 2
BLOCKS = 2
EPS = 1e-6
# SigLIP's preprocessing: pixels scaled to [-1, 1]
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]


def encoder_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """SigLIP encoder tensors, patch embedding strong enough that the picture dominates."""

    def normal(scale: float, *shape: int) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    n_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    weights = {
        "v.patch_embd.weight": normal(0.5, HIDDEN, 3, PATCH_SIZE, PATCH_SIZE),
        "v.patch_embd.bias": normal(0.1, HIDDEN),
        "v.position_embd.weight": normal(0.1, n_patches, HIDDEN),
        "v.post_ln.weight": 1 + normal(0.1, HIDDEN),
        "v.post_ln.bias": normal(0.1, HIDDEN),
    }
    for block in range(BLOCKS):
        prefix = f"v.blk.{block}"
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            weights[f"{prefix}.{part}.weight"] = normal(HIDDEN**-0.5, HIDDEN, HIDDEN)
            weights[f"{prefix}.{part}.bias"] = normal(0.1, HIDDEN)
        for norm in ("ln1", "ln2"):
            weights[f"{prefix}.{norm}.weight"] = 1 + normal(0.1, HIDDEN)
            weights[f"{prefix}.{norm}.bias"] = normal(0.1, HIDDEN)
        weights[f"{prefix}.ffn_up.weight"] = normal(HIDDEN**-0.5, FFN, HIDDEN)
        weights[f"{prefix}.ffn_up.bias"] = normal(0.1, FFN)
        weights[f"{prefix}.ffn_down.weight"] = normal(FFN**-0.5, HIDDEN, FFN)
        weights[f"{prefix}.ffn_down.bias"] = normal(0.1, HIDDEN)
    return weights


def projector_weights(rng: np.random.Generator, text_hidden_size: int) -> dict[str, np.ndarray]:
    """The Gemma 3 projector. Token embeddings reach the text model at about unit scale per
    element; image embeddings some 30 times larger outweigh the text, so different images
    change the greedy text from its first token."""
    return {
        # stored with the +1 of Gemma3RMSNorm already added, as the converter does
        "mm.soft_emb_norm.weight": (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32),
        # (vision, text): clip.cpp transposes it before the matmul; the converter forces F16
        "mm.input_projection.weight": (
            32 * HIDDEN**-0.5 * rng.standard_normal((HIDDEN, text_hidden_size))
        ).astype(np.float16),
    }


def write_tiny_gemma3_mmproj(path: Path, text_hidden_size: int = 640, seed: int = 0) -> Path:
    """Write the projector; text_hidden_size must equal the paired text model's hidden size."""
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), "clip")
    writer.add_type("mmproj")
    writer.add_name("Tiny Gemma 3 vision")
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    writer.add_clip_projector_type("gemma3")
    writer.add_clip_has_vision_encoder(True)
    writer.add_vision_projection_dim(text_hidden_size)
    writer.add_vision_image_size(IMAGE_SIZE)
    writer.add_vision_patch_size(PATCH_SIZE)
    writer.add_vision_embedding_length(HIDDEN)
    writer.add_vision_feed_forward_length(FFN)
    writer.add_vision_block_count(BLOCKS)
    writer.add_vision_head_count(HEADS)
    writer.add_vision_attention_layernorm_eps(EPS)
    writer.add_vision_use_gelu(True)
    writer.add_vision_image_mean(IMAGE_MEAN)
    writer.add_vision_image_std(IMAGE_STD)
    tensors = {**encoder_weights(rng), **projector_weights(rng, text_hidden_size)}
    for name, values in tensors.items():
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
