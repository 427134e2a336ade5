"""Whisper on MLX (`--engine mlx`; the default where MLX has a GPU) on the real Whisper base:
the server's transcription has the tokens, probabilities and word times that faster-whisper
gives on CTranslate2 for the same file and weights, through the official `openai` client."""

from __future__ import annotations

import faster_whisper
import httpx
import pytest
from faster_whisper.audio import pad_or_trim
from openai.types.audio import TranscriptionVerbose

from mlxserve.engine.whisper.audio import decode_audio
from mlxserve.engine.whisper.mlx_core import MlxWhisper
from mlxserve.models.store import find_model
from tests.server import ServerProcess
from tests.speech import MAX_WORD_ERROR_RATE, SENTENCES, speech_client, word_error_rate

pytestmark = pytest.mark.e2e

# Word times are read from cross-attention through a median filter and a warping path; the
# two engines' arithmetic (float32 on both) moves a boundary by at most a few 20 ms frames.
WORD_TIME_TOLERANCE = 0.1
# Whisper's special tokens: start of transcript, English, transcribe, previous text.
SOT, ENGLISH, TRANSCRIBE, PREVIOUS = 50258, 50259, 50359, 50361


@pytest.fixture(scope="module")
def mlx_server(models_dir, whisper_id):
    with ServerProcess(models_dir, model=whisper_id, engine="mlx") as running:
        yield running


@pytest.fixture(scope="module")
def ctranslate2(models_dir, whisper_id):
    """faster-whisper on CTranslate2, float32, on the same weights."""
    folder = find_model(models_dir, whisper_id).directory
    return faster_whisper.WhisperModel(str(folder), device="cpu", compute_type="float32")


@pytest.fixture(scope="module")
def reference(ctranslate2, clips):
    """faster-whisper called directly on the same WAV."""
    segments, _ = ctranslate2.transcribe(
        decode_audio(clips["stella"]), beam_size=5, word_timestamps=True
    )
    return list(segments)


def test_mlx_whisper_gives_ctranslate2s_tokens_and_word_times(
    mlx_server, whisper_id, clips, reference
):
    answer = speech_client(mlx_server).audio.transcriptions.create(
        model=whisper_id,
        file=("stella.wav", clips["stella"]),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert isinstance(answer, TranscriptionVerbose)
    assert [s.tokens for s in answer.segments] == [list(s.tokens) for s in reference]
    for served, expected in zip(answer.segments, reference, strict=True):
        assert served.avg_logprob == pytest.approx(expected.avg_logprob, abs=1e-3)
        assert served.no_speech_prob == pytest.approx(expected.no_speech_prob, abs=1e-3)
    expected_words = [w for s in reference for w in s.words]
    assert [w.word for w in answer.words] == [w.word.strip() for w in expected_words]
    for served, expected in zip(answer.words, expected_words, strict=True):
        assert abs(served.start - expected.start) <= WORD_TIME_TOLERANCE, served
        assert abs(served.end - expected.end) <= WORD_TIME_TOLERANCE, served
    loaded = httpx.get(f"{mlx_server.base_url}/api/v0/loaded").json()["data"]
    assert {m["model"]: m["engine"] for m in loaded}[whisper_id] == "mlx-whisper"


def test_mlx_whisper_samples_at_a_set_temperature(mlx_server, whisper_id, clips):
    """A temperature above 0 draws five candidates and keeps the likeliest (faster-whisper's
    best_of); sampling at 0.3 still hears the sentence."""
    answer = speech_client(mlx_server).audio.transcriptions.create(
        model=whisper_id,
        file=("fox.wav", clips["fox"]),
        response_format="verbose_json",
        temperature=0.3,
    )
    assert {s.temperature for s in answer.segments} == {0.3}
    assert word_error_rate(SENTENCES["fox"], answer.text) <= MAX_WORD_ERROR_RATE, answer.text


@pytest.fixture(scope="module")
def both_engines(models_dir, whisper_id, clips, ctranslate2):
    """The MLX core and CTranslate2 (float32), each with its encoding of the same window."""
    mlx = MlxWhisper(find_model(models_dir, whisper_id).directory)
    samples = decode_audio(clips["stella"])
    features = pad_or_trim(ctranslate2.feature_extractor(samples)[..., :-1])
    return [(engine.model, engine.encode(features)) for engine in (mlx, ctranslate2)]


@pytest.mark.parametrize(
    "options",
    [
        {"beam_size": 5, "num_hypotheses": 5},
        {"beam_size": 5, "num_hypotheses": 5, "max_initial_timestamp_index": 0},
        {"beam_size": 5, "max_length": 9},  # cut off before the end of the sentence
        {"beam_size": 1, "max_length": 12},
    ],
)
def test_beam_search_ranks_the_hypotheses_ctranslate2_ranks(both_engines, options):
    options |= {"return_scores": True, "return_no_speech_prob": True, "suppress_tokens": [-1]}
    prompts = ([SOT, ENGLISH, TRANSCRIBE], [PREVIOUS, 2555, 818, SOT, ENGLISH, TRANSCRIBE])
    for prompt in prompts:
        ours, theirs = (
            engine.generate(audio, [prompt], **options)[0] for engine, audio in both_engines
        )
        assert ours.sequences_ids == theirs.sequences_ids
        assert ours.scores == pytest.approx(theirs.scores, abs=1e-3)
        assert ours.no_speech_prob == pytest.approx(theirs.no_speech_prob, abs=1e-3)


def test_word_alignment_follows_ctranslate2s_path(both_engines):
    """Where each token's span starts, in 20 ms audio positions: the same path give or take
    one position (float rounding decides near-ties)."""
    tokens = [2555, 818, 45073, 293, 1029, 720, 281, 1565, 613, 721, 365, 720, 490, 264, 3531, 13]
    starts = []
    for engine, audio in both_engines:
        path = engine.align(audio, [SOT, ENGLISH, TRANSCRIBE], [tokens], 360)[0].alignments
        starts.append([t for (a, _), (b, t) in zip(path, path[1:], strict=False) if b != a])
    ours, theirs = starts
    assert len(ours) == len(theirs) == len(tokens)
    assert all(abs(a - b) <= 1 for a, b in zip(ours, theirs, strict=True)), starts
