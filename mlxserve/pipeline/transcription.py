"""Speech to text: the speech model found (or loaded), the request counted into its queue (a
429 when full, as for generation), then the audio's facts and segments as the engine makes them,
within the server's time limit (--request-timeout, counted from the upload's arrival). The
engine runs one transcription at a time per model; others wait in its queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from mlxserve.engine.whisper.model import AudioFacts, SpokenSegment, TranscribeOptions
from mlxserve.models.loaded import LoadedModel
from mlxserve.models.registry import ModelRegistry
from mlxserve.models.speech import SPEECH_TYPE
from mlxserve.pipeline.deadline import deadline_from_now, until_deadline, within_deadline
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.prepare import ServerLimits

__all__ = ["AudioFacts", "SpokenSegment", "TranscribeOptions", "Transcript", "transcribe"]


@dataclass
class Transcript:
    """What a transcription has produced so far; `facts` is set before the first segment."""

    loaded: LoadedModel
    facts: AudioFacts | None = None

    @property
    def language(self) -> str:
        return self.facts.language if self.facts else ""

    @property
    def duration(self) -> float:
        return self.facts.duration if self.facts else 0.0


async def transcribe(
    registry: ModelRegistry,
    model: str,
    audio: bytes,
    options: TranscribeOptions,
    limits: ServerLimits,
) -> tuple[Transcript, AsyncIterator[SpokenSegment]]:
    """The transcript (its facts known once the audio is decoded) and its segments; the audio is
    decoded before this returns, so a bad file is refused before any answer starts."""
    seconds = limits.request_timeout
    deadline = deadline_from_now(seconds)
    async with until_deadline(deadline, seconds):
        loaded = await registry.resolve(model)
    if loaded.record.type != SPEECH_TYPE or not hasattr(loaded.engine, "transcribe"):
        message = f"model '{loaded.identifier}' is not a speech-to-text model"
        raise RequestError(400, message, "model", "model_not_speech")
    release = loaded.admit()
    transcript = Transcript(loaded)
    events = loaded.engine.transcribe(audio, options)
    try:
        async with until_deadline(deadline, seconds):
            transcript.facts = await anext(events)
    except BaseException:
        release()
        await events.aclose()
        raise
    return transcript, _segments(within_deadline(events, deadline, seconds), release)


async def _segments(events, release) -> AsyncIterator[SpokenSegment]:
    try:
        async for segment in events:
            yield segment
    finally:
        release()
        await events.aclose()
