"""Whisper on MLX, driven by faster-whisper: `MlxWhisperCore` answers the calls faster-whisper
makes of CTranslate2's Whisper (encode, detect_language, generate, align) with MLX's compute, so
windowing, the temperature fallback, prompts and word timing stay faster-whisper's own and the
two engines differ only in their arithmetic. Every call runs on the model's one worker thread,
which owns this model's MLX work."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from faster_whisper import WhisperModel as FasterWhisper
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.utils import get_logger
from tokenizers import Tokenizer

from mlxserve.engine.mlx.architectures.whisper import load_ctranslate2_whisper
from mlxserve.engine.whisper.mlx_alignment import token_alignment
from mlxserve.engine.whisper.mlx_decoding import (
    LogitRules,
    SpecialTokens,
    beam_search,
    sample,
)

MULTILINGUAL_VOCAB = 51865  # English-only Whisper models have one token fewer


@dataclass(frozen=True)
class GenerationResult:
    sequences_ids: list[list[int]]
    scores: list[float]
    no_speech_prob: float


@dataclass(frozen=True)
class AlignmentResult:
    alignments: list[tuple[int, int]]  # (text token, audio position) along the path
    text_token_probs: list[float]


class MlxWhisperCore:
    def __init__(self, path: Path):
        # Half precision on a GPU; the CPU backend computes float32 fastest.
        self.dtype = mx.float32 if mx.default_device() == mx.cpu else mx.float16
        self.model = load_ctranslate2_whisper(path, self.dtype)
        config = json.loads((path / "config.json").read_text())
        self.tokenizer = tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        ids = tokenizer.token_to_id
        self.special = SpecialTokens(
            eot=ids("<|endoftext|>"),
            sot=ids("<|startoftranscript|>"),
            no_timestamps=ids("<|notimestamps|>"),
            no_speech=ids("<|nospeech|>") or ids("<|nocaptions|>"),
        )
        self.is_multilingual = self.model.shape.vocab_size >= MULTILINGUAL_VOCAB
        self.n_mels = self.model.shape.n_mels
        self._languages = [(i, tokenizer.id_to_token(i)) for i in config["lang_ids"]]
        self._suppress = list(config["suppress_ids"])
        self._suppress_at_start = list(config.get("suppress_ids_begin", [self.special.eot]))
        self._alignment_heads = [tuple(pair) for pair in config["alignment_heads"]]
        self._rng = np.random.default_rng()

    def encode(self, features: np.ndarray, to_cpu: bool = False) -> mx.array:
        """(batch, n_mels, frames) log-mel features to the encoder's output (batch, 1500, width)."""
        mel = mx.array(np.ascontiguousarray(features.transpose(0, 2, 1))).astype(self.dtype)
        audio = self.model.encoder(mel)
        mx.eval(audio)
        return audio

    def detect_language(self, audio: mx.array) -> list[list[tuple[str, float]]]:
        """Per row, every language token with its probability after <|startoftranscript|>,
        likeliest first."""
        tokens = mx.full((audio.shape[0], 1), self.special.sot)
        logits = np.array(self.model.decoder(tokens, self._audio_keys(audio))[0][:, -1])
        ids = [i for i, _ in self._languages]
        answers = []
        for row in logits:
            probs = _softmax(row[ids])
            ranked = sorted(zip(probs, range(len(ids)), strict=True), reverse=True)
            answers.append([(self._languages[k][1], float(p)) for p, k in ranked])
        return answers

    def generate(self, audio: mx.array, prompts: list[list[int]], **options) -> list:
        return [
            self._generate_one(audio[row : row + 1], prompt, **options)
            for row, prompt in enumerate(prompts)
        ]

    def _generate_one(
        self,
        audio: mx.array,
        prompt: list[int],
        *,
        beam_size: int = 5,
        patience: float = 1.0,
        num_hypotheses: int = 1,
        length_penalty: float = 1.0,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        max_length: int = 448,
        suppress_blank: bool = True,
        suppress_tokens: tuple[int, ...] = (-1,),
        max_initial_timestamp_index: int = 50,
        sampling_topk: int = 1,
        sampling_temperature: float = 1.0,
        return_scores: bool = True,
        return_no_speech_prob: bool = True,
    ) -> GenerationResult:
        if repetition_penalty != 1.0 or no_repeat_ngram_size:
            raise ValueError("repetition penalties are not supported by the MLX Whisper engine")
        session = _DecoderSession(self.model.decoder, self._audio_keys(audio), prompt)
        rules = self._rules(prompt, suppress_blank, suppress_tokens, max_initial_timestamp_index)
        # CTranslate2's count: at most half the length (OpenAI's decoder samples at most half
        # the text context), and the prompt's last token starts the reply.
        new_tokens = min(max_length // 2, max_length - len(prompt) + 1)
        if beam_size == 1 and sampling_topk != 1:  # faster-whisper's fallback temperatures
            hypotheses = sample(
                session.step, session.first_logits, rules, num_hypotheses,
                sampling_temperature, new_tokens, self._rng,
            )  # fmt: skip
        else:
            hypotheses = beam_search(
                session.step, session.first_logits, rules, beam_size, patience, new_tokens
            )
        hypotheses.sort(key=lambda h: h.score(length_penalty), reverse=True)
        hypotheses = hypotheses[:num_hypotheses]
        no_speech = _softmax(session.logits_at(prompt.index(self.special.sot)))
        return GenerationResult(
            sequences_ids=[h.tokens for h in hypotheses],
            scores=[h.score(length_penalty) for h in hypotheses],
            no_speech_prob=float(no_speech[self.special.no_speech]),
        )

    def _rules(self, prompt, suppress_blank, suppress_tokens, max_initial_index) -> LogitRules:
        suppress = [t for t in suppress_tokens if t >= 0]
        if -1 in suppress_tokens:  # CTranslate2's "the model's default list"
            suppress += self._suppress
        return LogitRules(
            special=self.special,
            suppress=suppress,
            suppress_at_start=self._suppress_at_start if suppress_blank else [],
            timestamps=self.special.no_timestamps not in prompt,
            max_initial_timestamp_index=max_initial_index,
        )

    def align(
        self,
        audio: mx.array,
        start_sequence: list[int],
        text_tokens: list[list[int]],
        num_frames: int,
        median_filter_width: int = 7,
    ) -> list[AlignmentResult]:
        """Per list of text tokens, the path through the alignment heads' cross-attention that
        ties each token to an audio position, and each token's probability."""
        audio_kv = self._audio_keys(audio)
        results = []
        for tokens in text_tokens:
            sequence = [*start_sequence, self.special.no_timestamps, *tokens, self.special.eot]
            logits, _, scores = self.model.decoder(mx.array([sequence]), audio_kv)
            heads = mx.stack([scores[layer][0, head] for layer, head in self._alignment_heads])
            heads = np.array(heads[:, :, : num_frames // 2].astype(mx.float32))
            path = token_alignment(heads[:, len(start_sequence) : -1], median_filter_width)
            text = slice(len(start_sequence), len(start_sequence) + len(tokens))
            text_logits = np.array(logits[0, text, : self.special.eot])
            probs = [float(_softmax(row)[t]) for row, t in zip(text_logits, tokens, strict=True)]
            results.append(AlignmentResult(path, probs))
        return results

    def _audio_keys(self, audio: mx.array) -> list:
        return self.model.decoder.audio_keys(audio)


class _DecoderSession:
    """One prompt's decoder state: its self-attention caches, grown a step at a time for the
    rows (beams or samples) that go on."""

    def __init__(self, decoder, audio_kv, prompt: list[int]):
        self._decoder, self._audio_kv = decoder, audio_kv
        logits, self._caches, _ = decoder(mx.array([prompt]), audio_kv)
        self._prompt_logits = np.array(logits[0])
        self.first_logits = self._prompt_logits[-1:]

    def logits_at(self, position: int) -> np.ndarray:
        return self._prompt_logits[position]

    def step(self, tokens: list[int], sources: list[int]) -> np.ndarray:
        if sources != list(range(self._caches[0][0].shape[0])):
            rows = mx.array(sources)
            self._caches = [(keys[rows], values[rows]) for keys, values in self._caches]
        logits, self._caches, _ = self._decoder(
            mx.array(tokens)[:, None], self._audio_kv, self._caches
        )
        return np.array(logits[:, -1])


class MlxWhisper(FasterWhisper):
    """faster-whisper's WhisperModel with MLX in place of CTranslate2: the same transcribe(),
    its model attribute an `MlxWhisperCore`."""

    def __init__(self, path: Path):
        # faster-whisper's own __init__ is not called: it would load the weights in CTranslate2.
        self.logger = get_logger()
        self.model = MlxWhisperCore(path)
        self.hf_tokenizer = self.model.tokenizer  # the one the core read
        self.feat_kwargs = self._get_feature_kwargs(str(path))
        self.feature_extractor = FeatureExtractor(**self.feat_kwargs)
        self.input_stride = 2
        self.num_samples_per_token = self.feature_extractor.hop_length * self.input_stride
        self.frames_per_second = self.feature_extractor.sampling_rate // (
            self.feature_extractor.hop_length
        )
        self.tokens_per_second = self.feature_extractor.sampling_rate // (
            self.num_samples_per_token
        )
        self.time_precision = 0.02
        self.max_length = 448

    def encode(self, features: np.ndarray) -> mx.array:
        return self.model.encode(features if features.ndim == 3 else features[None])


def _softmax(logits: np.ndarray) -> np.ndarray:
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()
