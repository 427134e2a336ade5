"""Uploads decoded to what Whisper reads: 16 kHz mono float32, by PyAV (its wheel bundles
ffmpeg). The samples are counted as they come, so a small file of very long audio (a 25 MB
upload at a speech codec's bitrate can hold many hours) is refused before it fills memory."""

from __future__ import annotations

import io
import itertools

import numpy as np

from mlxserve.engine.base import EngineError

SAMPLE_RATE = 16_000  # what Whisper's feature extractor expects
MAX_AUDIO_SECONDS = 2 * 3600  # about 460 MB of samples at most


class AudioDecodeError(EngineError):
    """The upload is not audio PyAV can read, or holds none."""

    status = 400
    param = "file"
    code = "invalid_audio"


class AudioTooLong(EngineError):
    status = 413
    param = "file"
    code = "audio_too_long"


def decode_audio(data: bytes, max_seconds: float = MAX_AUDIO_SECONDS) -> np.ndarray:
    """The first audio stream's samples; a file cut short mid-stream gives what precedes the cut,
    as players do, and one with no audio before the cut is refused."""
    import av

    if not data:
        raise AudioDecodeError("file: the uploaded file is empty")
    try:
        container = av.open(io.BytesIO(data), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        raise AudioDecodeError(f"file: not a readable audio file ({exc})") from exc
    with container:
        if not container.streams.audio:
            raise AudioDecodeError("file: the file has no audio stream")
        pieces = _resampled(container, int(max_seconds * SAMPLE_RATE))
    if not pieces:
        raise AudioDecodeError("file: the file holds no audio samples (truncated?)")
    return np.concatenate(pieces)


def _resampled(container, max_samples: int) -> list[np.ndarray]:
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    pieces, count = [], 0
    try:
        for frame in itertools.chain(_frames(container), [None]):  # None flushes the resampler
            for piece in resampler.resample(frame):
                samples = piece.to_ndarray().reshape(-1)
                count += samples.size
                if count > max_samples:
                    raise AudioTooLong(
                        f"file: the audio is longer than {max_samples // SAMPLE_RATE // 60} "
                        "minutes, the most one request may transcribe; split it"
                    )
                pieces.append(samples)
    except av.FFmpegError:
        if not pieces:
            raise AudioDecodeError("file: no audio could be decoded from it") from None
    return pieces


def _frames(container):
    """Decoded frames until the data runs out or turns unreadable (a truncated upload)."""
    import av

    try:
        yield from container.decode(audio=0)
    except (av.FFmpegError, EOFError):
        return
