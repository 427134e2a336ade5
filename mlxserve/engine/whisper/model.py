"""The Whisper engine: faster-whisper (CTranslate2) on the CPU, one transcription at a time on
the model's own worker thread, never on the event loop or an MLX inference thread.

Audio is decoded with PyAV (its wheel bundles ffmpeg) into 16 kHz mono float32; that array is
all a request holds besides the model, as faster-whisper reads it in 30-second windows and
hands each window's segments back as it finishes them."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mlxserve.engine.base import EngineError, EngineModel, InvalidRequest
from mlxserve.engine.whisper.audio import decode_audio

log = logging.getLogger(__name__)

# 8-bit weights: faster on a CPU than float32, and half the memory, for the same words.
CPU_COMPUTE_TYPE = "int8"
BEAM_SIZE = 5  # faster-whisper's default, kept so answers match it called directly
# Whisper's decoding fallback: hotter when a window's text repeats or reads as unlikely.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_END = object()


@dataclass(frozen=True)
class TranscribeOptions:
    task: str = "transcribe"  # or "translate" (into English)
    language: str | None = None  # ISO 639-1; None: detected from the first 30 seconds
    prompt: str | None = None  # text of a previous window, to carry names and style
    temperature: float | None = None  # None or 0: the fallback schedule from 0
    word_timestamps: bool = False


@dataclass(frozen=True)
class SpokenWord:
    word: str
    start: float
    end: float


@dataclass(frozen=True)
class SpokenSegment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[SpokenWord] = field(default_factory=list)


@dataclass(frozen=True)
class AudioFacts:
    """Known before the first segment: the audio's length and its (detected) language."""

    language: str
    duration: float


class WhisperModel(EngineModel):
    engine_name = "faster-whisper"
    context_length = 448  # decoder tokens per 30-second window

    def __init__(self, model_id: str, executor: ThreadPoolExecutor, model):
        self.model_id = model_id
        self._executor = executor  # one thread: transcriptions of this model run one at a time
        self._model = model

    @classmethod
    async def load(cls, model_id: str, path: Path, on_mlx: bool) -> WhisperModel:
        """`on_mlx`: Whisper's compute on MLX (`MlxWhisper`), else on CTranslate2."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        loop = asyncio.get_running_loop()
        loader = _load_mlx_whisper if on_mlx else _load_whisper
        model = await loop.run_in_executor(executor, loader, path)
        whisper = cls(model_id, executor, model)
        whisper.engine_name = "mlx-whisper" if on_mlx else "faster-whisper"
        return whisper

    async def transcribe(
        self, audio: bytes, options: TranscribeOptions
    ) -> AsyncIterator[AudioFacts | SpokenSegment]:
        """The audio's facts, then its segments as each is decoded. Closing the iterator early
        stops the work at the next segment."""
        if options.language and options.language not in self._model.supported_languages:
            message = f"language: '{options.language}' is not an ISO 639-1 code Whisper knows"
            raise InvalidRequest(message, "language")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def deliver(item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                for item in self._transcription(audio, options):
                    if stop.is_set():
                        return
                    deliver(item)
            except BaseException as exc:  # noqa: BLE001 - raised again on the event loop
                deliver(exc)
            finally:
                deliver(_END)

        loop.run_in_executor(self._executor, work)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def _transcription(self, audio: bytes, options: TranscribeOptions) -> Iterator:
        samples = decode_audio(audio)
        temperature = options.temperature or list(FALLBACK_TEMPERATURES)
        segments, info = self._model.transcribe(
            samples,
            language=options.language,
            task=options.task,
            initial_prompt=options.prompt or None,
            temperature=temperature,
            word_timestamps=options.word_timestamps,
            beam_size=BEAM_SIZE,
        )
        yield AudioFacts(language=info.language, duration=info.duration)
        for index, segment in enumerate(segments):  # OpenAI numbers segments from 0
            yield _spoken(index, segment)

    def generate(self, request):
        raise InvalidRequest(
            f"model '{self.model_id}' is a speech-to-text model; use /v1/audio/transcriptions",
            "model",
        )

    async def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        raise InvalidRequest(f"model '{self.model_id}' is a speech-to-text model", "model")

    async def special_ids(self, markers) -> dict[int, str]:
        return {}  # no chat markers: a speech model has no tool-call family to find

    async def close(self) -> None:
        # A transcription still running finishes its window first: waited for off the loop.
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self._model = None

    def runtime_info(self) -> dict:
        import faster_whisper

        version = faster_whisper.__version__
        if self.engine_name == "mlx-whisper":
            import mlx.core as mx

            version = f"mlx {mx.__version__}, faster-whisper {version}"
        return {"name": self.engine_name, "version": version, "supported_formats": ["ctranslate2"]}


def _load_whisper(path: Path):
    try:
        import ctranslate2
        from faster_whisper import WhisperModel as FasterWhisper
    except ImportError as exc:
        raise EngineError(f"{exc.name} is not installed: pip install 'mlxserve[speech]'") from exc

    ctranslate2.set_log_level(logging.ERROR)  # its notes on weight types are not for users
    return FasterWhisper(str(path), device="cpu", compute_type=CPU_COMPUTE_TYPE)


def _load_mlx_whisper(path: Path):
    try:
        from mlxserve.engine.whisper.mlx_core import MlxWhisper
    except ImportError as exc:
        raise EngineError(f"{exc.name} is not installed: pip install 'mlxserve[speech]'") from exc
    return MlxWhisper(path)


def _spoken(index: int, segment) -> SpokenSegment:
    words = [SpokenWord(w.word, w.start, w.end) for w in segment.words or []]
    return SpokenSegment(
        id=index,
        seek=segment.seek,
        start=segment.start,
        end=segment.end,
        text=segment.text,
        tokens=list(segment.tokens),
        temperature=segment.temperature or 0.0,
        avg_logprob=segment.avg_logprob,
        compression_ratio=segment.compression_ratio,
        no_speech_prob=segment.no_speech_prob,
        words=words,
    )
