"""/v1/audio/transcriptions and /v1/audio/translations: multipart uploads as OpenAI's SDK sends
them (`file`, `model`, `language`, `prompt`, `temperature`, `response_format`,
`timestamp_granularities[]`, `stream`), answered in the asked format or as a stream of
`transcript.text.delta` events ending with `transcript.text.done`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Literal

from pydantic import Field
from quart import Blueprint, request

from mlxserve.api.http.sse import sse_response
from mlxserve.api.openai.audio_formats import (
    ResponseFormat,
    TextDeltaEvent,
    TextDoneEvent,
    render,
)
from mlxserve.api.shared.protocol import OpenAIModel
from mlxserve.api.state import server_state
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.transcription import SpokenSegment, TranscribeOptions, transcribe

blueprint = Blueprint("audio", __name__)

MAX_AUDIO_BYTES = 25 * 1024**2  # OpenAI's upload limit for these endpoints


class TranscriptionRequest(OpenAIModel):
    """The form's fields besides `file`, in the order of OpenAI's reference."""

    model: str
    language: str | None = None  # ISO 639-1; transcriptions only
    prompt: str | None = None
    response_format: ResponseFormat = "json"
    temperature: float = Field(0.0, ge=0, le=1)
    timestamp_granularities: list[Literal["word", "segment"]] = ["segment"]
    stream: bool = False

    def options(self, task: str) -> TranscribeOptions:
        words = self.response_format == "verbose_json" and "word" in self.timestamp_granularities
        return TranscribeOptions(
            task=task,
            language=(self.language or None) if task == "transcribe" else None,
            prompt=self.prompt,
            temperature=self.temperature,
            word_timestamps=words,
        )


@blueprint.post("/v1/audio/transcriptions")
async def transcriptions():
    """Speech to text in the spoken language."""
    return await _answer("transcribe")


@blueprint.post("/v1/audio/translations")
async def translations():
    """Speech to English text."""
    return await _answer("translate")


async def _answer(task: str):
    fields, audio = await _read_upload()
    body = TranscriptionRequest.model_validate(fields)
    options = body.options(task)
    state = server_state()
    transcript, segments = await transcribe(
        state.registry, body.model, audio, options, state.limits
    )
    if body.stream:
        return await sse_response(_stream_events(segments), done_marker=False)
    collected = [segment async for segment in segments]
    return render(body.response_format, transcript, collected, task, options.word_timestamps)


async def _read_upload() -> tuple[dict, bytes]:
    """The form's fields (`name[]` keys as lists) and the file's bytes, within the size cap."""
    if request.mimetype != "multipart/form-data":
        message = f"send the audio as multipart/form-data, got '{request.mimetype or 'none'}'"
        raise RequestError(400, message, "file", "invalid_content_type")
    if (request.content_length or 0) > MAX_AUDIO_BYTES:
        raise _too_large(request.content_length)
    form, files = await request.form, await request.files
    upload = files.get("file")
    if upload is None:
        raise RequestError(400, "file: an audio file is required", "file", "missing_file")
    audio = upload.read(MAX_AUDIO_BYTES + 1)
    if len(audio) > MAX_AUDIO_BYTES:
        raise _too_large(len(audio))
    return _form_fields(form), audio


def _form_fields(form) -> dict:
    """Single values as strings; `name[]` keys, and a repeated granularity, as lists."""
    fields: dict = {}
    for key in form:
        name, values = key.removesuffix("[]"), form.getlist(key)
        listed = key.endswith("[]") or name == "timestamp_granularities"
        fields[name] = values if listed else values[0]
    return fields


def _too_large(size: int) -> RequestError:
    limit_mb = MAX_AUDIO_BYTES / 1024**2
    message = (
        f"file: the upload is {size / 1024**2:.1f} MB; audio files may be at most "
        f"{limit_mb:.0f} MB (split longer recordings, or compress them, e.g. as mp3)"
    )
    return RequestError(413, message, "file", "file_too_large")


async def _stream_events(segments: AsyncIterator[SpokenSegment]) -> AsyncIterator[dict]:
    """One delta per segment (the first without Whisper's leading space), then the whole."""
    text = ""
    async with aclosing(segments):  # a client that left frees the model's worker at once
        async for segment in segments:
            delta = segment.text if text else segment.text.lstrip()
            if not delta:
                continue
            text += delta
            yield TextDeltaEvent(type="transcript.text.delta", delta=delta).as_dict()
    yield TextDoneEvent(type="transcript.text.done", text=text.strip()).as_dict()
