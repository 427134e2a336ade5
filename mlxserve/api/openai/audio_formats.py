"""Transcriptions in OpenAI's response formats: `json` and `verbose_json` (segments, and words
when asked for) as pydantic answers, `text`, `srt` and `vtt` as text, and the stream's
`transcript.text.delta` / `transcript.text.done` events."""

from __future__ import annotations

import math
from typing import Literal

from quart import Response

from mlxserve.api.shared.protocol import Answer
from mlxserve.pipeline.transcription import SpokenSegment, Transcript

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
TEXT_MEDIA_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


class DurationUsage(Answer):
    type: Literal["duration"]
    seconds: float  # whole seconds of audio, rounded up, as OpenAI bills Whisper


class TranscriptWord(Answer):
    word: str
    start: float
    end: float


class TranscriptSegment(Answer):
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


class TranscriptionAnswer(Answer):
    text: str
    usage: DurationUsage | None = None


class VerboseTranscriptionAnswer(Answer):
    task: Literal["transcribe", "translate"]
    language: str  # the ISO 639-1 code Whisper detected or was given
    duration: float
    text: str
    segments: list[TranscriptSegment]
    words: list[TranscriptWord] | None = None
    usage: DurationUsage | None = None


class TextDeltaEvent(Answer):
    type: Literal["transcript.text.delta"]
    delta: str


class TextDoneEvent(Answer):
    type: Literal["transcript.text.done"]
    text: str


def full_text(segments: list[SpokenSegment]) -> str:
    return "".join(segment.text for segment in segments).strip()


def render(
    response_format: str,
    transcript: Transcript,
    segments: list[SpokenSegment],
    task: str,
    with_words: bool,
) -> Response | dict:
    """The answer in the asked format: a dict for JSON, a text response for the others."""
    if response_format == "verbose_json":
        return verbose_answer(transcript, segments, task, with_words).as_dict()
    if response_format == "json":
        return TranscriptionAnswer(text=full_text(segments), usage=_usage(transcript)).as_dict()
    text = {"text": _plain, "srt": srt, "vtt": vtt}[response_format](segments)
    media_type = TEXT_MEDIA_TYPES[response_format]
    return Response(text, content_type=f"{media_type}; charset=utf-8")


def verbose_answer(
    transcript: Transcript, segments: list[SpokenSegment], task: str, with_words: bool
) -> VerboseTranscriptionAnswer:
    words = {"words": _words(segments)} if with_words else {}
    return VerboseTranscriptionAnswer(
        task=task,
        language=transcript.language,
        duration=round(transcript.duration, 3),
        text=full_text(segments),
        segments=[_segment(s) for s in segments],
        usage=_usage(transcript),
        **words,
    )


def _words(segments: list[SpokenSegment]) -> list[TranscriptWord]:
    return [
        TranscriptWord(word=w.word.strip(), start=w.start, end=w.end)
        for segment in segments
        for w in segment.words
    ]


def _segment(segment: SpokenSegment) -> TranscriptSegment:
    return TranscriptSegment(
        id=segment.id,
        seek=segment.seek,
        start=segment.start,
        end=segment.end,
        text=segment.text,
        tokens=segment.tokens,
        temperature=segment.temperature,
        avg_logprob=segment.avg_logprob,
        compression_ratio=segment.compression_ratio,
        no_speech_prob=segment.no_speech_prob,
    )


def _usage(transcript: Transcript) -> DurationUsage:
    return DurationUsage(type="duration", seconds=math.ceil(transcript.duration))


def _plain(segments: list[SpokenSegment]) -> str:
    return full_text(segments) + "\n"


def srt(segments: list[SpokenSegment]) -> str:
    """SubRip: numbered cues, times as HH:MM:SS,mmm."""
    cues = [
        f"{number}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for number, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def vtt(segments: list[SpokenSegment]) -> str:
    """WebVTT: a header, then cues with times as HH:MM:SS.mmm."""
    cues = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in segments
    ]
    return "\n".join(["WEBVTT\n", *cues])


def _clock(seconds: float, separator: str) -> str:
    milliseconds = round(max(seconds, 0.0) * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"
