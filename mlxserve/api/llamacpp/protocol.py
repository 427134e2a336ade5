"""llama-server's /infill: the request (the text around the cursor, then /completion's sampling
options) and its answer, whole or as the chunks of a stream."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mlxserve.api.shared.protocol import (
    Answer,
    MinP,
    OpenAIModel,
    RepeatPenalty,
    Temperature,
    TopK,
    TopP,
    sampling_params,
)
from mlxserve.engine.base import GenerationStats
from mlxserve.pipeline.request import FillInMiddle
from mlxserve.sampling.params import SamplingParams


class InfillRequest(OpenAIModel):
    input_prefix: str = ""
    input_suffix: str = ""
    # Accepted for llama.vim and friends; other files' text is not part of the prompt here.
    input_extra: list[dict[str, Any]] | None = None
    prompt: str = ""  # the start of the middle, typed already: the answer goes on from it
    model: str = ""  # llama-server serves one model: empty picks the only loaded one
    n_predict: int = -1  # -1: until the context is full (or the server's --max-tokens)
    temperature: Temperature = None
    top_k: TopK = None
    top_p: TopP = None
    min_p: MinP = None
    repeat_penalty: RepeatPenalty = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    stream: bool = False

    @property
    def token_limit(self) -> int | None:
        return None if self.n_predict < 0 else self.n_predict

    def fill_in(self) -> FillInMiddle:
        return FillInMiddle(self.input_prefix, self.input_suffix, self.prompt, "input_suffix")

    def to_sampling_params(self) -> SamplingParams:
        seed = None if self.seed in (None, -1) else self.seed  # llama-server's -1: random
        return sampling_params(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=seed,
        )


class Timings(Answer):
    prompt_n: int
    prompt_ms: float
    prompt_per_token_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_token_ms: float
    predicted_per_second: float


class InfillAnswer(Answer):
    """The whole answer, or one chunk of a stream: text chunks carry `content` and `stop`
    false; the last (`stop` true) carries the figures."""

    content: str
    stop: bool
    model: str | None = None
    tokens_predicted: int | None = None
    tokens_evaluated: int | None = None
    tokens_cached: int | None = None
    stop_type: Literal["eos", "word", "limit"] | None = None
    stopping_word: str | None = None
    truncated: bool | None = None
    timings: Timings | None = None


def finished(content: str, model: str, stats: GenerationStats, stops: list[str]) -> InfillAnswer:
    """The answer's last part. A stop string the client did not send is one of the model's
    fill-in-the-middle end tokens: an end of text, as llama-server counts it."""
    if stats.stop_reason == "maxPredictedTokensReached":
        stop_type, word = "limit", ""
    elif stats.stop_string is not None and stats.stop_string in stops:
        stop_type, word = "word", stats.stop_string
    else:
        stop_type, word = "eos", ""
    return InfillAnswer(
        content=content,
        stop=True,
        model=model,
        tokens_predicted=stats.completion_tokens,
        tokens_evaluated=stats.prompt_tokens,
        tokens_cached=stats.cached_prompt_tokens,
        stop_type=stop_type,
        stopping_word=word,
        truncated=False,
        timings=timings(stats),
    )


def timings(stats: GenerationStats) -> Timings:
    evaluated = stats.prompt_tokens - stats.cached_prompt_tokens
    prompt_ms, predicted_ms = stats.time_to_first_token * 1000, stats.generation_time * 1000
    predicted = stats.completion_tokens
    return Timings(
        prompt_n=evaluated,
        prompt_ms=prompt_ms,
        prompt_per_token_ms=prompt_ms / evaluated if evaluated else 0.0,
        prompt_per_second=evaluated * 1000 / prompt_ms if prompt_ms else 0.0,
        predicted_n=predicted,
        predicted_ms=predicted_ms,
        predicted_per_token_ms=predicted_ms / predicted if predicted else 0.0,
        predicted_per_second=stats.tokens_per_second,
    )
