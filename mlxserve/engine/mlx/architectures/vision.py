"""Vision-language models on the MLX engine. mlx-vlm supplies the model code (vision tower,
projector, language model) and the model's own processor resizes, normalises and expands each
image into its image tokens; the runner drives the language model like any mlx-lm model, with
the prompt's embeddings in place of its token ids during prefill."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import make_prompt_cache

from mlxserve.checkpoints import VISION_MODEL_TYPES
from mlxserve.engine.base import IMAGE_MARKER, PromptImage
from mlxserve.engine.mlx.tokenizer import load_tokenizer

# The text each family's processor turns into its image tokens.
PROCESSOR_MARKERS = {
    "gemma3": "<start_of_image>",
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>",
}
# Outputs of a processor that are not model inputs, or that mlx-vlm makes itself.
PROCESSOR_TEXT_FIELDS = ("input_ids", "attention_mask", "token_type_ids")


def is_vision_model(config: dict) -> bool:
    return "vision_config" in config and config.get("model_type") in VISION_MODEL_TYPES


@dataclass
class ImageInputs:
    """What the processor made of a prompt with images: model inputs such as pixel values
    and, for Qwen, each image's patch grid, as NumPy arrays until the runner takes them."""

    arrays: dict[str, np.ndarray]
    cache_key: list[int]  # the prompt's ids with each image's content hash in its first slot


@dataclass
class Embedded:
    """A sequence's whole-prompt embeddings and the extra inputs its language model needs."""

    embeddings: mx.array
    extras: dict = field(default_factory=dict)


class VisionLanguageModel:
    """An mlx-vlm model as the runner sees it: a cache maker, a prefill over prompt positions,
    and a batched decode step."""

    def __init__(self, model, processor, model_type: str, image_token_id: int):
        self.model = model
        self.processor = processor
        self.model_type = model_type
        self.image_token_id = image_token_id

    @classmethod
    def load(cls, path: Path, config: dict):
        """Model and processor from an MLX-format model directory; returns (model, tokenizer)."""
        from mlx_vlm.utils import load_model, load_processor

        model = load_model(path)
        processor = load_processor(path, add_detokenizer=False)
        image_token = config.get("image_token_index", config.get("image_token_id"))
        tokenizer = load_tokenizer(path, processor.tokenizer)
        return cls(model, processor, config["model_type"], int(image_token)), tokenizer

    @property
    def layers(self):
        return self.model.language_model.layers

    def make_cache(self) -> list:
        return make_prompt_cache(self.model.language_model)

    def process(self, prompt: str, images: list[PromptImage]) -> tuple[list[int], ImageInputs]:
        """The prompt's token ids with every image expanded into its image tokens."""
        text = prompt.replace(IMAGE_MARKER, PROCESSOR_MARKERS[self.model_type])
        outputs = self.processor(
            text=[text],
            images=[image.pixels for image in images],
            return_tensors="np",
            add_special_tokens=False,
        )
        ids = [int(t) for t in np.asarray(outputs["input_ids"])[0]]
        arrays = {
            name: np.asarray(value)
            for name, value in outputs.items()
            if name not in PROCESSOR_TEXT_FIELDS
        }
        return ids, ImageInputs(arrays, self._cache_key(ids, images))

    def _cache_key(self, ids: list[int], images: list[PromptImage]) -> list[int]:
        """Image tokens are the same id whatever the image shows: each image's first token is
        replaced in the key by a number from its content, so a cached prefix holding another
        image is never reused for this one."""
        key, runs = list(ids), iter(images)
        for position, token in enumerate(ids):
            starts_run = token == self.image_token_id and (
                position == 0 or ids[position - 1] != self.image_token_id
            )
            if starts_run:
                image = next(runs, None)
                digest = image.digest if image else hashlib.sha256(b"").hexdigest()
                key[position] = -1 - int(digest[:15], 16)  # never a real token id
        return key

    def prefill(self, sequence, start: int, end: int, cache: list) -> mx.array:
        """Logits for prompt positions start..end, filling the cache; the prompt is embedded
        (vision tower included) at its first chunk."""
        if sequence.embedded is None:
            sequence.embedded = self._embed(sequence.prompt_tokens, sequence.image_inputs)
            sequence.rope_delta = _rope_delta(sequence.embedded)
        embedded = sequence.embedded
        output = self.model.language_model(
            mx.array([sequence.prompt_tokens[start:end]]),
            inputs_embeds=embedded.embeddings[:, start:end],
            cache=cache,
            **embedded.extras,
        )
        return output.logits

    def decode(self, inputs: mx.array, cache: list, sequences: list) -> mx.array:
        """One step for the batch; Qwen's multimodal positions need each row's offset."""
        extras = {}
        if any(s.rope_delta is not None for s in sequences):
            extras["rope_deltas"] = mx.array([[s.rope_delta or 0] for s in sequences])
        return self.model.language_model(inputs, cache=cache, **extras).logits

    def _embed(self, prompt_tokens: list[int], inputs: ImageInputs | None) -> Embedded:
        """The whole prompt's embeddings: image features in the image tokens' places."""
        ids = mx.array([prompt_tokens])
        arrays = {k: mx.array(v) for k, v in (inputs.arrays if inputs else {}).items()}
        pixels = arrays.pop("pixel_values", None)
        features = self.model.get_input_embeddings(ids, pixels, mask=mx.ones_like(ids), **arrays)
        extras = {
            name: value
            for name, value in features.to_dict().items()
            if value is not None and name not in ("inputs_embeds", "attention_mask_4d")
        }
        return Embedded(features.inputs_embeds, extras)


def _rope_delta(embedded: Embedded) -> int | None:
    """How far a Qwen prompt's positions run behind its length (images take fewer positions
    than tokens); None for models without multimodal positions."""
    deltas = embedded.extras.get("rope_deltas")
    return None if deltas is None else int(deltas.reshape(-1)[0].item())
