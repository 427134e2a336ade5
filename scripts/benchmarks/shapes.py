"""Where tokens are chosen, on a model of a published shape with random weights (nothing to
download, so it runs on a lent GPU as on a laptop): tok/s with every row on the host's C sampler
(`--sample-on host`) against rows chosen on the device (`--sample-on device`), greedy and sampled
at LM Studio's defaults without a seed, at 1, 8 and 32 streams; and mlx-lm's own batch_generate
on the same model and prompts.

    python scripts/bench.py shapes [--shape gemma3-270m | llama3-8b-4bit] [--iterations TOKENS]

The weights are bfloat16 on a GPU and float32 on the CPU; Llama's are quantized to 4 bits in
groups of 64, as mlx-community's 4-bit conversions are. Each figure is the better of two runs.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map
from mlx_lm.models import gemma3_text, llama
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from mlxserve.engine.base import EngineRequest
from mlxserve.engine.mlx.model import MLXModel
from mlxserve.sampling.params import SamplingParams

STREAMS = (1, 8, 32)
SHAPES = {
    "gemma3-270m": {
        "model_type": "gemma3_text", "hidden_size": 640, "num_hidden_layers": 18,
        "intermediate_size": 2048, "num_attention_heads": 4, "num_key_value_heads": 1,
        "head_dim": 256, "vocab_size": 262144, "sliding_window": 512,
        "sliding_window_pattern": 6, "rms_norm_eps": 1e-6,
    },
    "llama3-8b-4bit": {
        "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
        "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False, "quantization": {"group_size": 64, "bits": 4},
    },
}  # fmt: skip
ARCHITECTURES = {"gemma3_text": gemma3_text, "llama": llama}
BANNED = {2: -100.0}  # the end token, so every reply has its full length
KINDS = {
    "greedy": SamplingParams(temperature=0, repeat_penalty=1.0, logit_bias=BANNED),
    "sampled": SamplingParams(logit_bias=BANNED),
}
SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]


def make_model(directory: Path, shape: dict) -> None:
    """A word-per-token tokenizer as large as the vocabulary, and random weights."""
    words = SPECIAL + [f"w{i}" for i in range(shape["vocab_size"] - len(SPECIAL))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.save(str(directory / "tokenizer.json"))
    special = dict(zip(("pad_token", "bos_token", "eos_token", "unk_token"), SPECIAL, strict=True))
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    config = {**shape, "max_position_embeddings": 8192, "eos_token_id": [2], "bos_token_id": 1}
    (directory / "config.json").write_text(json.dumps(config))
    architecture = ARCHITECTURES[config["model_type"]]
    mx.random.seed(0)
    model = architecture.Model(architecture.ModelArgs.from_dict(config))
    dtype = mx.bfloat16 if mx.default_device() == mx.gpu else mx.float32
    model.update(tree_map(lambda p: (p * 4).astype(dtype), model.parameters()))
    if "quantization" in config:
        nn.quantize(model, **config["quantization"])
    mx.eval(model.parameters())
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(directory / "model.safetensors"), weights)


def prompt_ids(stream: int) -> list[int]:
    return [10 + 8 * stream + i for i in range(8)]


async def engine_rate(path: Path, streams: int, sample_on: str, params, tokens: int) -> float:
    model = await MLXModel.load(path, 2048, max_batch_size=max(streams, 8), sample_on=sample_on)

    async def one(stream: int, max_tokens: int) -> int:
        request = EngineRequest(prompt_ids(stream), params, max_tokens=max_tokens)
        return sum([len(event.token_ids) async for event in model.generate(request)])

    try:
        await one(0, 4)  # the first step compiles and allocates
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(n, tokens) for n in range(streams)))
        return sum(counts) / (time.perf_counter() - started)
    finally:
        await model.close()


def mlx_lm_rate(path: Path, streams: int, tokens: int) -> float:
    """mlx-lm's batch_generate, greedy, with its default batch sizes."""
    from mlx_lm import batch_generate, load

    model, tokenizer = load(str(path))
    prompts = [prompt_ids(n) for n in range(streams)]
    batch_generate(model, tokenizer, prompts[:1], max_tokens=4)
    started = time.perf_counter()
    result = batch_generate(model, tokenizer, prompts, max_tokens=tokens, return_token_ids=True)
    return sum(len(ids) for ids in result.token_ids) / (time.perf_counter() - started)


def run(args) -> dict:
    shape = getattr(args, "shape", None) or "gemma3-270m"
    tokens = getattr(args, "iterations", None) or 64
    directory = Path(tempfile.mkdtemp(prefix=f"bench-{shape}-"))
    make_model(directory, SHAPES[shape])
    print(f"{shape}, random weights, on {mx.default_device()}; {tokens} tokens a stream")
    results = {}
    for streams in STREAMS:
        for kind, params in KINDS.items():
            best = {"host": 0.0, "device": 0.0}
            for sample_on in ("host", "device") * 2:
                rate = asyncio.run(engine_rate(directory, streams, sample_on, params, tokens))
                best[sample_on] = max(best[sample_on], rate)
            results[f"{streams}-{kind}"] = best
            ratio = best["device"] / best["host"]
            print(
                f"{streams:3} streams {kind:8} host {best['host']:8.1f} tok/s, "
                f"device {best['device']:8.1f} tok/s ({ratio:.2f}x)"
            )
        peer = mlx_lm_rate(directory, streams, tokens)
        ours = results[f"{streams}-greedy"]
        results[f"{streams}-mlx_lm"] = peer
        print(
            f"{streams:3} streams greedy   mlx-lm batch_generate {peer:8.1f} tok/s: ours "
            f"{ours['host'] / peer:.2f}x (host), {ours['device'] / peer:.2f}x (device)"
        )
    return results
