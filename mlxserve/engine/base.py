"""The small interface both engines (MLX, llama.cpp) implement, and the events they produce.

The API layer builds the prompt text (chat template applied), wraps it in an EngineRequest and
reads GenerationEvents back; it never touches tokens, logits or engine internals.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxserve.sampling.params import SamplingParams

# Where an image sits in a prompt's text; each engine puts its model's own image tokens there.
IMAGE_MARKER = "<__media__>"
# KV state an MLX model keeps for later prompts that share a prefix (least recently used goes).
PROMPT_CACHE_BYTES = 2 * 1024**3


class EngineError(Exception):
    """A failure inside an engine; the API turns it into an OpenAI-shaped error."""

    status = 500


class EngineUnavailable(EngineError):
    """The engine cannot serve right now (child process died, model unloading)."""

    status = 503


class InvalidRequest(EngineError):
    """A request value that only the engine can check (a logit_bias id beyond the vocabulary)."""

    status = 422

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class Unsupported(InvalidRequest):
    """A valid request this model or engine cannot serve as asked."""

    status = 400


class ContextLengthExceeded(InvalidRequest):
    """The prompt alone fills the loaded context window."""

    status = 400

    def __init__(self, prompt_tokens: int, context_length: int):
        super().__init__(
            f"the prompt has {prompt_tokens} tokens, which leaves no room in the model's "
            f"{context_length}-token context",
            param="messages",
        )
        self.code = "context_length_exceeded"
        self.prompt_tokens, self.context_length = prompt_tokens, context_length


@dataclass(frozen=True)
class Grammar:
    """A constraint on the output: an llguidance Lark grammar (JSON schemas inlined as `%json`).
    With a `trigger`, text is free until the trigger appears, and the grammar, which begins
    with the trigger, holds from there on (a lazy grammar)."""

    lark: str
    trigger: str | None = None


@dataclass(frozen=True)
class PromptImage:
    """An image of the conversation, decoded; the prompt text marks where it sits."""

    pixels: Any  # a PIL image in RGB
    digest: str  # sha256 of the bytes the client sent: the same image keys the same cache
    data: bytes = b""  # those bytes
    format: str = ""  # as Pillow names it: PNG, JPEG, WEBP, GIF...


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding a request asked for: drafts from its own context (prompt lookup),
    from a small draft model, or none."""

    prompt_lookup: bool | None = None  # None: the server's default
    draft_model: str | None = None  # the id the client named
    draft_path: str | None = None  # that model's directory, found by the pipeline


@dataclass
class DraftCounts:
    """Drafted tokens and what became of them, in LM Studio's terms."""

    drafted: int = 0
    accepted: int = 0
    rejected: int = 0  # per check, the first drafted token the model disagreed with
    ignored: int = 0  # drafted tokens after a rejected one, never checked

    def record(self, drafted: int, accepted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted
        rejected = int(accepted < drafted)
        self.rejected += rejected
        self.ignored += drafted - accepted - rejected


@dataclass
class EngineRequest:
    """One generation as an engine takes it: the prompt already rendered (or its ids), sampling,
    grammar and images. pipeline/prepare.py makes it from an API's GenerateRequest."""

    prompt: str | list[int]  # text (tokenized by the engine) or token ids
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None  # None: until the context window is full
    stop: list[str] = field(default_factory=list)  # never part of the output
    add_special_tokens: bool = True  # False when a chat template already wrote BOS
    request_id: str = ""
    prompt_tokens: list[int] | None = None  # the prompt's ids, kept by prompt_and_budget
    grammar: Grammar | None = None  # every sampled token must keep the output inside it
    # Special tokens whose text the output must show (a thinking model's channel markers);
    # the text of other special tokens is left out, as tokenizers do.
    visible_specials: tuple[str, ...] = ()
    images: list[PromptImage] = field(default_factory=list)  # in the order the prompt marks them
    engine_inputs: Any = None  # what an engine made of the images, kept with prompt_tokens
    speculation: Speculation = field(default_factory=Speculation)
    adapter: str | None = None  # a LoRA adapter loaded into the model, by name
    # Log-probabilities of each sampled token and of this many likeliest alternatives
    # (0 to 20); None: not asked for.
    top_logprobs: int | None = None
    # Made when the API has parsed the request: time to first token counts tokenizing too.
    arrived: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class RelevanceJob:
    """Documents to score by a model's yes-or-no answer (rerank): P(yes) over {yes, no} after
    `shared` followed by each continuation."""

    shared: list[int]  # the prompt's start: instruction and query, the same for every document
    continuations: list[list[int]]  # each non-empty: a document and the prompt's close
    yes_token: int
    no_token: int


@dataclass
class PairScores:
    """A cross-encoder's answer to a rerank: each (query, document) pair read together."""

    scores: Any  # numpy float array: P(relevant) of each document, in the documents' order
    tokens: int  # tokens read: each pair's query and document
    truncated: list[int]  # documents cut so that the pair fits the model's window


@dataclass(frozen=True)
class TokenLogprob:
    """A token as logprobs report it: its text, its bytes (part of a character, at times) and
    its log-probability; for a sampled token, the likeliest alternatives too."""

    text: str
    bytes: bytes
    logprob: float | None  # None: a prompt's first token, which nothing before it predicts
    top: tuple[TokenLogprob, ...] = ()


@dataclass
class GenerationStats:
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    time_to_first_token: float = 0.0  # seconds from request arrival to the first token
    generation_time: float = 0.0  # seconds from the first token to the last
    stop_reason: str = "eosFound"  # eosFound | stopStringFound | maxPredictedTokensReached
    stop_string: str | None = None  # the stop string that ended generation, if one did
    reasoning_tokens: int = 0  # of completion_tokens, those a thinking model thought in (pipeline)
    draft: DraftCounts | None = None  # set when the reply was decoded speculatively
    draft_model: str | None = None
    # Of completion_tokens, those a grammar fixed, decoded with the prompt (llamacpp/jump_forward)
    prefilled_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        """The decode rate: tokens after the first that came with the prompt's prefill."""
        decoded = self.completion_tokens - self.prefilled_tokens
        if decoded <= 1 or self.generation_time <= 0:
            return 0.0
        return (decoded - 1) / self.generation_time

    @property
    def finish_reason(self) -> str:
        return "length" if self.stop_reason == "maxPredictedTokensReached" else "stop"


@dataclass
class GenerationEvent:
    text: str = ""  # text produced since the previous event
    token_ids: list[int] = field(default_factory=list)  # tokens behind `text`
    stats: GenerationStats | None = None  # set on the final event only
    logprobs: list[TokenLogprob] = field(default_factory=list)  # per token, when asked for

    @property
    def is_final(self) -> bool:
        return self.stats is not None


class EngineModel(abc.ABC):
    """One loaded model on one engine. Created by the registry, closed on unload."""

    engine_name: str = ""  # "mlx" or "llama.cpp"
    context_length: int = 0  # tokens the loaded model accepts, prompt and output together
    parallel: int = 1  # sequences decoded at once; more requests wait in the engine's queue
    vocab_size: int | None = None  # for validating logit_bias token ids
    chat_template: str | None = None  # the model's own template, if it ships one
    bos_token: str = ""  # special-token strings that chat templates refer to
    eos_token: str = ""
    vision: bool = False  # accepts images
    # Whether sampling may go on unconstrained once a grammar allows no token: such an engine's
    # constrained replies are all checked after sampling.
    grammar_may_lapse: bool = False
    draft_model: str | None = None  # llama.cpp: the draft model its server was started with
    kv_bits: int | None = None  # bits per cached key and value element; None: full precision

    @abc.abstractmethod
    def generate(self, request: EngineRequest) -> AsyncIterator[GenerationEvent]:
        """Stream events; the last carries stats. Closing the iterator early cancels the request
        within one token."""

    @abc.abstractmethod
    async def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids exactly as generate() would see them."""

    async def detokenize(self, tokens: list[int]) -> str:
        """The text of token ids, as a prompt of them reads."""
        raise Unsupported(f"{self.engine_name} models here have no text to give back")

    async def prompt_and_budget(self, request: EngineRequest) -> tuple[list[int], int]:
        """The prompt's token ids and how many tokens may follow them: max_tokens, capped by
        the room left in the context. A prompt that leaves no room is refused. The ids are kept
        on the request, so the API's check before a response starts costs generate() nothing."""
        if request.prompt_tokens is None:
            prompt = request.prompt
            if isinstance(prompt, str):
                prompt = await self.tokenize(prompt, add_special_tokens=request.add_special_tokens)
            request.prompt_tokens = list(prompt)
        prompt = request.prompt_tokens
        room = self.context_length - len(prompt)
        if room <= 0 or not prompt:
            raise ContextLengthExceeded(len(prompt), self.context_length)
        return prompt, min(request.max_tokens or room, room)

    async def prompt_logprobs(self, tokens: list[int], top: int) -> list[TokenLogprob]:
        """Each prompt token's log-probability after the ones before it, with the `top` likeliest
        tokens at its place; the first token has none."""
        message = "the prompt's log-probabilities (echo with logprobs) need the MLX engine; "
        raise Unsupported(message + f"this model runs on {self.engine_name}", param="echo")

    async def special_ids(self, markers: Collection[str]) -> dict[int, str]:
        """The markers that are one token in this vocabulary, by token id (asked once each)."""
        known: dict[str, int | None] = self.__dict__.setdefault("_marker_ids", {})
        for marker in markers:
            if marker not in known:
                tokens = await self.tokenize(marker, add_special_tokens=False)
                known[marker] = tokens[0] if len(tokens) == 1 else None
        return {known[m]: m for m in markers if known[m] is not None}

    async def load_adapter(self, name: str, directory: Path) -> int:
        """Load a LoRA adapter beside the base weights; returns its bytes."""
        raise Unsupported(f"{self.engine_name} models here have no adapters", param="model")

    async def unload_adapter(self, name: str) -> None:
        """Free a LoRA adapter's weights; the base model stays loaded."""
        raise Unsupported(f"{self.engine_name} models here have no adapters", param="model")

    async def engine_counters(self) -> dict[str, int]:
        """What the engine itself reports about its work (for /metrics), such as `sequences`,
        the requests it holds now."""
        return {}

    async def grammar_support_error(self, grammar: Grammar | None = None) -> str | None:
        """Why this model cannot enforce `grammar` (or any grammar, when None), or None when it
        can: a request must never be sampled unconstrained for want of it."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Free the model's memory and stop its thread or child process."""

    def runtime_info(self) -> dict:
        """Engine name, version and formats, for /api/v0 responses."""
        return {"name": self.engine_name, "version": "", "supported_formats": []}


def config_vocab_size(config: dict) -> int:
    """A Hugging Face config's vocabulary size (a vision model's is its text model's)."""
    text_config = config.get("text_config") or {}
    return int(text_config.get("vocab_size") or config["vocab_size"])
