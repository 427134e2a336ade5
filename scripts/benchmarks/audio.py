"""Transcription speed: /v1/audio/transcriptions against the same Whisper called directly (in a
plain Python process of its own), on the same file (about 40 s of espeak-ng speech: two
30-second windows) and the same Whisper base weights and settings (beam 5), for each engine:
the CTranslate2 engine (`--engine llamacpp`, the CPU default) against faster-whisper (int8),
and the MLX engine (`--engine mlx`, the default where MLX has a GPU) against faster-whisper's
transcribe() over the project's MLX Whisper. Runs alternate between server and direct, so a
machine busy with other work slows both alike. Reported as real-time factors (seconds of work
per second of audio, lower is faster) and their ratio, direct / server (1.0: no overhead).

    python scripts/bench.py audio [--iterations N]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from mlxserve.engine.whisper.audio import SAMPLE_RATE, decode_audio
from mlxserve.engine.whisper.model import BEAM_SIZE, CPU_COMPUTE_TYPE
from mlxserve.models.speech import ensure_whisper_base
from tests.server import ServerProcess

PARAGRAPH = (
    "Speech recognition turns spoken words into written text. A local server lets a program "
    "send a recording and read back what was said, without sending the audio anywhere else. "
    "The model listens to thirty seconds at a time, writes down the words it hears, and moves "
    "on to the next window until the recording ends. Short clips come back in a moment, and "
    "long ones take a little longer, but the memory it needs stays about the same. This "
    "paragraph is read by a synthetic voice, which sounds robotic but is easy to understand. "
    "To measure the speed of the server, the same recording is sent to it several times, and "
    "the same model is also called directly, with the same settings, in between. The two "
    "times are compared, and the difference is what the server adds on top of the model."
)


def spoken_paragraph(folder: Path) -> Path:
    path = folder / "paragraph.wav"
    subprocess.run(["espeak-ng", "-w", str(path), PARAGRAPH], check=True)
    return path


def server_seconds(client: httpx.Client, base_url: str, model: str, audio: bytes) -> float:
    start = time.perf_counter()
    reply = client.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("paragraph.wav", audio, "audio/wav")},
        data={"model": model},
    )
    reply.raise_for_status()
    assert reply.json()["text"]
    return time.perf_counter() - start


# Whisper as a user's script calls it, in a process of its own: each line on stdin starts a run
# (decode the file, transcribe, read every segment), each line on stdout is its seconds.
DIRECT_SCRIPT = """
import sys, time
from pathlib import Path
if sys.argv[5] == "mlx":
    from mlxserve.engine.whisper.mlx_core import MlxWhisper
    model = MlxWhisper(Path(sys.argv[1]))
else:
    from faster_whisper import WhisperModel
    model = WhisperModel(sys.argv[1], device="cpu", compute_type=sys.argv[2])
print("ready", flush=True)
for _ in sys.stdin:
    start = time.perf_counter()
    segments, _ = model.transcribe(sys.argv[3], beam_size=int(sys.argv[4]))
    assert "".join(segment.text for segment in segments)
    print(time.perf_counter() - start, flush=True)
"""
# The server's --engine for each Whisper engine measured.
ENGINES = {"ctranslate2": "llamacpp", "mlx": "mlx"}


def start_direct(model_dir: Path, audio_path: Path, engine: str) -> subprocess.Popen:
    args = [str(model_dir), CPU_COMPUTE_TYPE, str(audio_path), str(BEAM_SIZE), engine]
    child = subprocess.Popen(
        [sys.executable, "-c", DIRECT_SCRIPT, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    return child


def direct_seconds(child: subprocess.Popen) -> float:
    child.stdin.write("run\n")
    child.stdin.flush()
    return float(child.stdout.readline())


def run(args) -> dict:
    repeats = getattr(args, "iterations", None) or 3
    folder = Path(tempfile.mkdtemp(prefix="bench-audio-"))
    models_dir = folder / "models"
    model_id = ensure_whisper_base(models_dir)
    audio_path = spoken_paragraph(folder)
    duration = len(decode_audio(audio_path.read_bytes())) / SAMPLE_RATE
    print(f"audio: {duration:.1f} s of speech, {repeats} runs each (median)")
    result = {"audio_seconds": round(duration, 2)}
    for engine in ENGINES:
        result[engine] = compare(engine, models_dir, model_id, audio_path, repeats, duration)
    return result


def compare(engine, models_dir, model_id, audio_path, repeats, duration) -> dict:
    audio = audio_path.read_bytes()
    timings: dict[str, list[float]] = {"server": [], "direct": []}
    direct = start_direct(models_dir / model_id, audio_path, engine)
    server_engine = ENGINES[engine]
    with direct, ServerProcess(models_dir, model=model_id, engine=server_engine) as server:
        client = httpx.Client(timeout=900)
        measure = {
            "server": lambda: server_seconds(client, server.base_url, model_id, audio),
            "direct": lambda: direct_seconds(direct),
        }
        for run_once in measure.values():  # warm up both
            run_once()
        for repeat in range(repeats):
            order = ("server", "direct") if repeat % 2 == 0 else ("direct", "server")
            for name in order:
                timings[name].append(measure[name]())
    factors = {name: statistics.median(times) / duration for name, times in timings.items()}
    result = {
        "real_time_factor": {name: round(f, 3) for name, f in factors.items()},
        "server_speed_vs_direct": round(factors["direct"] / factors["server"], 3),
        "runs_seconds": {name: [round(t, 2) for t in times] for name, times in timings.items()},
    }
    print(f"  {engine}:")
    for name, factor in factors.items():
        print(f"    {name:>6}: real-time factor {factor:.3f} ({1 / factor:.1f}x real time)")
    ratio = result["server_speed_vs_direct"]
    print(f"    server speed / direct speed: {ratio:.3f} (target >= 0.95)")
    return result
