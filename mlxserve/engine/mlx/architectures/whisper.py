"""Whisper's encoder and decoder in MLX, with weights read from a CTranslate2 conversion (the
store's speech format), so one folder serves both the CPU engine and this one.

CTranslate2 keeps each attention's projections fused (query, key and value in one matrix for
self-attention; key and value in one for cross-attention) and names layers `layer_N`; the
module names here follow that layout so the weights load as they are."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

# CTranslate2's DataType numbering in model.bin (float32, int8, int16, int32, float16, bfloat16).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_BINARY_VERSION = 6


@dataclass(frozen=True)
class WhisperShape:
    n_mels: int
    width: int
    encoder_heads: int
    decoder_heads: int
    encoder_layers: int
    decoder_layers: int
    vocab_size: int
    audio_positions: int
    text_positions: int


class Attention(nn.Module):
    """Self-attention with fused query/key/value (`linear_0`) and output (`linear_1`), or
    cross-attention with query (`linear_0`), fused key/value over the audio (`linear_1`) and
    output (`linear_2`)."""

    def __init__(self, width: int, heads: int, cross: bool):
        super().__init__()
        self.heads = heads
        self.cross = cross
        self.layer_norm = nn.LayerNorm(width)
        self.linear_0 = nn.Linear(width, width if cross else 3 * width)
        self.linear_1 = nn.Linear(width, 2 * width if cross else width)
        if cross:
            self.linear_2 = nn.Linear(width, width)

    def _split(self, x: mx.array) -> mx.array:
        batch, length, width = x.shape
        return x.reshape(batch, length, self.heads, width // self.heads).transpose(0, 2, 1, 3)

    def audio_keys(self, audio: mx.array) -> tuple[mx.array, mx.array]:
        """The audio's keys, transposed for the query's product, and values: made contiguous
        once, as every decoding step reads them (strided views are copied at each use)."""
        keys, values = mx.split(self.linear_1(audio), 2, axis=-1)
        keys = self._split(keys).transpose(0, 1, 3, 2)
        return mx.contiguous(keys), mx.contiguous(self._split(values))

    def __call__(self, x, cache=None, audio_kv=None, mask=None):
        """x's attention output; the self-attention cache (keys, values) grown by x; and, for
        cross-attention, the pre-softmax scores, which word alignment reads."""
        h = self.layer_norm(x)
        scale = (h.shape[-1] // self.heads) ** -0.5
        if self.cross:
            q = self._split(self.linear_0(h))
            keys_t, values = audio_kv
            scores = (q * scale) @ keys_t
            out = mx.softmax(scores.astype(mx.float32), axis=-1).astype(values.dtype) @ values
            out, extra = self.linear_2(self._merge(out)), scores
        else:
            q, k, v = (self._split(p) for p in mx.split(self.linear_0(h), 3, axis=-1))
            if cache is not None:
                k, v = mx.concatenate([cache[0], k], axis=2), mx.concatenate([cache[1], v], axis=2)
            out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
            out, extra = self.linear_1(self._merge(out)), (k, v)
        return out, extra

    @staticmethod
    def _merge(x: mx.array) -> mx.array:
        batch, heads, length, depth = x.shape
        return x.transpose(0, 2, 1, 3).reshape(batch, length, heads * depth)


class FeedForward(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(width)
        self.linear_0 = nn.Linear(width, 4 * width)
        self.linear_1 = nn.Linear(4 * width, width)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_1(nn.gelu(self.linear_0(self.layer_norm(x))))


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.self_attention = Attention(width, heads, cross=False)
        self.ffn = FeedForward(width)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.self_attention(x)[0]
        return x + self.ffn(x)


class DecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.self_attention = Attention(width, heads, cross=False)
        self.attention = Attention(width, heads, cross=True)
        self.ffn = FeedForward(width)

    def __call__(self, x, cache, audio_kv, mask):
        out, cache = self.self_attention(x, cache, mask=mask)
        x = x + out
        out, scores = self.attention(x, audio_kv=audio_kv)
        x = x + out
        return x + self.ffn(x), cache, scores


class PositionTable(nn.Module):
    def __init__(self, positions: int, width: int):
        super().__init__()
        self.encodings = mx.zeros((positions, width))


class Encoder(nn.Module):
    def __init__(self, shape: WhisperShape):
        super().__init__()
        self.conv1 = nn.Conv1d(shape.n_mels, shape.width, 3, padding=1)
        self.conv2 = nn.Conv1d(shape.width, shape.width, 3, stride=2, padding=1)
        self.position_encodings = PositionTable(shape.audio_positions, shape.width)
        self.layer = [
            EncoderLayer(shape.width, shape.encoder_heads) for _ in range(shape.encoder_layers)
        ]
        self.layer_norm = nn.LayerNorm(shape.width)

    def __call__(self, mel: mx.array) -> mx.array:
        """mel: (batch, frames, n_mels), 3000 frames per 30 seconds; 1500 audio positions out."""
        x = nn.gelu(self.conv2(nn.gelu(self.conv1(mel))))
        x = x + self.position_encodings.encodings[: x.shape[1]]
        for layer in self.layer:
            x = layer(x)
        return self.layer_norm(x)


class Decoder(nn.Module):
    def __init__(self, shape: WhisperShape):
        super().__init__()
        self.embeddings = nn.Embedding(shape.vocab_size, shape.width)
        self.position_encodings = PositionTable(shape.text_positions, shape.width)
        self.layer = [
            DecoderLayer(shape.width, shape.decoder_heads) for _ in range(shape.decoder_layers)
        ]
        self.layer_norm = nn.LayerNorm(shape.width)

    def audio_keys(self, audio: mx.array) -> list[tuple[mx.array, mx.array]]:
        keys = [layer.attention.audio_keys(audio) for layer in self.layer]
        mx.eval(keys)
        return keys

    def __call__(self, tokens, audio_kv, caches=None):
        """Float32 logits for every position of `tokens` (batch, length), the caches grown by
        them, and each layer's cross-attention scores."""
        offset = 0 if caches is None else caches[0][0].shape[2]
        length = tokens.shape[1]
        x = self.embeddings(tokens) + self.position_encodings.encodings[offset : offset + length]
        mask = "causal" if length > 1 else None
        caches = caches or [None] * len(self.layer)
        grown, scores = [], []
        for layer, cache, kv in zip(self.layer, caches, audio_kv, strict=True):
            x, cache, layer_scores = layer(x, cache, kv, mask)
            grown.append(cache)
            scores.append(layer_scores)
        logits = self.embeddings.as_linear(self.layer_norm(x)).astype(mx.float32)
        return logits, grown, scores


class Whisper(nn.Module):
    def __init__(self, shape: WhisperShape):
        super().__init__()
        self.shape = shape
        self.encoder = Encoder(shape)
        self.decoder = Decoder(shape)


def load_ctranslate2_whisper(path: Path, dtype: mx.Dtype) -> Whisper:
    """A Whisper from a CTranslate2 model.bin, its weights cast to `dtype`."""
    arrays = read_ctranslate2(path / "model.bin")
    shape = _shape(arrays)
    model = Whisper(shape)
    weights = []
    for name, value in arrays.items():
        if value.ndim == 0 or name.startswith("decoder/projection"):
            continue  # settings stored as scalars; the output projection is the embedding
        if name.endswith("conv1/weight") or name.endswith("conv2/weight"):
            value = value.transpose(0, 2, 1)  # (out, in, width) -> MLX's (out, width, in)
        key = name.replace("/", ".").replace("gamma", "weight").replace("beta", "bias")
        weights.append((_layer_index(key), mx.array(value).astype(dtype)))
    model.load_weights(weights)
    mx.eval(model.parameters())
    return model


def read_ctranslate2(path: Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model.bin, with its aliases, as numpy arrays (views of
    one read of the file)."""
    data = memoryview(path.read_bytes())
    offset = 0

    def take(fmt: str):
        nonlocal offset
        values = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return values[0]

    def text() -> str:
        nonlocal offset
        length = take("<H")
        offset += length
        return bytes(data[offset - length : offset - 1]).decode()

    if take("<I") != _CT2_BINARY_VERSION:
        raise ValueError(f"{path}: not a CTranslate2 model of binary version 6")
    text(), take("<I")  # the spec's name and revision
    arrays = {}
    for _ in range(take("<I")):
        name = text()
        dims = [take("<I") for _ in range(take("<B"))]
        dtype, size = _CT2_DTYPES[take("<B")], take("<I")
        arrays[name] = np.frombuffer(data[offset : offset + size], dtype=dtype).reshape(dims)
        offset += size
    for _ in range(take("<I")):
        alias, target = text(), text()
        arrays[alias] = arrays[target]
    return arrays


def _shape(arrays: dict[str, np.ndarray]) -> WhisperShape:
    def count(prefix: str) -> int:
        names = {n.split("/")[1] for n in arrays if n.startswith(f"{prefix}/layer_")}
        return sum(name[6:].isdigit() for name in names)  # layer_N, not layer_norm

    vocab_size, width = arrays["decoder/embeddings/weight"].shape
    return WhisperShape(
        n_mels=arrays["encoder/conv1/weight"].shape[1],
        width=width,
        encoder_heads=int(arrays["encoder/num_heads"]),
        decoder_heads=int(arrays["decoder/num_heads"]),
        encoder_layers=count("encoder"),
        decoder_layers=count("decoder"),
        vocab_size=vocab_size,
        audio_positions=arrays["encoder/position_encodings/encodings"].shape[0],
        text_positions=arrays["decoder/position_encodings/encodings"].shape[0],
    )


def _layer_index(key: str) -> str:
    """`encoder.layer_3.ffn` -> `encoder.layer.3.ffn`: the layers are a list here."""
    parts = key.split(".")
    return ".".join(
        f"layer.{p.removeprefix('layer_')}" if p.startswith("layer_") and p[6:].isdigit() else p
        for p in parts
    )
