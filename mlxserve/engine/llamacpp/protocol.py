"""llama.cpp's native /completion protocol: request bodies, streamed chunks and final stats.

One difference from OpenAI remains: llama.cpp applies presence and frequency penalties over its
last `repeat_last_n` tokens, prompt included, where OpenAI counts generated tokens only.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Collection

from mlxserve.engine.base import (
    IMAGE_MARKER,
    DraftCounts,
    GenerationEvent,
    GenerationStats,
    Grammar,
    PromptImage,
    TokenLogprob,
)
from mlxserve.sampling.params import BANNED_BIAS, SamplingParams

WORD_TRIGGER = 1  # llama.cpp's grammar trigger type for a plain string
STB_FORMATS = ("PNG", "JPEG", "BMP", "GIF")  # what llama.cpp decodes images with reads
STOP_REASONS = {"eos": "eosFound", "word": "stopStringFound", "limit": "maxPredictedTokensReached"}
# The GGUF header's end tokens: llama.cpp stops at each of them (they are end-of-generation ids).
END_TOKEN_FIELDS = ("eos", "eot", "eom")
REPLY_RULE = "mlxserve_reply"  # a grammar's own start rule, once wrapped by ending_with


def logit_bias_pairs(logit_bias: dict[int, float]) -> list[list]:
    """OpenAI's {id: bias} as llama.cpp's [[id, bias], ...]; -100 becomes a hard ban (`false`)."""
    return [
        [int(token), False if bias <= BANNED_BIAS else float(bias)]
        for token, bias in logit_bias.items()
    ]


def sampling_fields(sampling: SamplingParams) -> dict:
    """SamplingParams under llama.cpp's names. Temperature 0 also sets top_k 1: pure argmax."""
    return {
        "temperature": sampling.temperature,
        "top_k": 1 if sampling.is_greedy else sampling.top_k,
        "top_p": sampling.top_p,
        "min_p": sampling.min_p,
        "repeat_penalty": sampling.repeat_penalty,
        "repeat_last_n": sampling.repeat_last_n,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
        "logit_bias": logit_bias_pairs(sampling.logit_bias),
        "seed": -1 if sampling.seed is None else sampling.seed,
    }


def end_tokens(header: dict, vocab_size: int | None) -> tuple[int, ...]:
    """The model's end-of-generation tokens its GGUF header names (EOS, end of turn, end of
    message), each once."""
    found = []
    for kind in END_TOKEN_FIELDS:
        token = header.get(f"tokenizer.ggml.{kind}_token_id")
        valid = isinstance(token, int) and token >= 0 and (vocab_size is None or token < vocab_size)
        if valid and token not in found:
            found.append(token)
    return tuple(found)


def ending_with(lark: str, ends: Collection[int]) -> str:
    """`lark` that may also end with any of the `ends` tokens wherever it may end.

    llama.cpp's llguidance knows a single end token, the vocabulary's end-of-turn token (else its
    EOS), and masks the model's other end tokens, at which llama.cpp would stop just the same.
    A model that ends its reply with another one (Gemma 3 ends a JSON reply with <eos>, hardly
    ever with <end_of_turn>) then cannot end where the grammar lets it go on: after a tool call
    that allows more, it writes another call, up to the last the grammar allows or max_tokens.
    Named here, those tokens are the grammar's last, optional, element, so the reply ends where
    the model ends it, as on the MLX engine, whose llguidance knows all of the model's end
    tokens."""
    if not ends:
        return lark
    renamed, found = re.subn(r"^start:", f"{REPLY_RULE}:", lark, count=1, flags=re.MULTILINE)
    if not found:
        return lark
    tokens = " | ".join(f"<[{token}]>" for token in ends)
    return f"start: {REPLY_RULE} ({tokens})?\n{renamed}"


def grammar_fields(grammar: Grammar | None, ends: Collection[int] = ()) -> dict:
    """A grammar for llama.cpp's built-in llguidance; a lazy one waits for its trigger word."""
    if grammar is None:
        return {}
    fields = {"grammar": "%llguidance {}\n" + ending_with(grammar.lark, ends)}
    if grammar.trigger:
        fields["grammar_lazy"] = True
        fields["grammar_triggers"] = [{"type": WORD_TRIGGER, "value": grammar.trigger}]
    return fields


def multimodal_prompt(text: str, images: list[PromptImage], media_marker: str) -> dict:
    """A prompt with images: the text with llama.cpp's media marker where each image sits,
    and the images base64-encoded as the client sent them, or as PNG when llama.cpp's image
    reader (stb_image) does not read their format (WebP)."""
    encoded = [base64.b64encode(_readable_bytes(image)).decode("ascii") for image in images]
    return {"prompt_string": text.replace(IMAGE_MARKER, media_marker), "multimodal_data": encoded}


def _readable_bytes(image: PromptImage) -> bytes:
    if image.format in STB_FORMATS and image.data:
        return image.data
    buffer = io.BytesIO()
    image.pixels.save(buffer, format="PNG")
    return buffer.getvalue()


def completion_body(
    prompt_tokens: list[int] | dict,
    sampling: SamplingParams,
    n_predict: int,
    stop: list[str],
    grammar: Grammar | None = None,
    ends: Collection[int] = (),
    top_logprobs: int | None = None,
) -> dict:
    """A streaming /completion request over token ids, so the server sees exactly our tokens
    (or over a multimodal prompt); `ends`: the model's end tokens, which end a grammar too."""
    # n_probs gives each token's log-probability with that many alternatives (at least one).
    probs = {} if top_logprobs is None else {"n_probs": max(top_logprobs, 1)}
    return {
        "prompt": prompt_tokens,
        "n_predict": n_predict,
        "stop": [s for s in stop if s],
        "stream": True,
        "cache_prompt": True,
        "return_tokens": True,
        **sampling_fields(sampling),
        **grammar_fields(grammar, ends),
        **probs,
    }


def token_logprobs(chunk: dict, top: int) -> list[TokenLogprob]:
    """A chunk's tokens with their log-probabilities and `top` alternatives each, as llama.cpp
    reports them (from the model's own distribution: before bias, penalties and temperature)."""

    def entry(probability: dict, alternatives: tuple = ()) -> TokenLogprob:
        raw = bytes(probability.get("bytes") or probability.get("token", "").encode())
        return TokenLogprob(probability.get("token", ""), raw, probability["logprob"], alternatives)

    return [
        entry(p, tuple(entry(alt) for alt in p.get("top_logprobs", [])[:top]))
        for p in chunk.get("completion_probabilities", [])
    ]


def chunk_event(
    chunk: dict, visible: dict[int, str], top: int | None, stats: GenerationStats | None = None
) -> GenerationEvent:
    """A streamed chunk as an engine event; `top`: the alternatives asked for per token."""
    logprobs = [] if top is None else token_logprobs(chunk, top)
    return GenerationEvent(_chunk_text(chunk, visible), chunk.get("tokens", []), stats, logprobs)


def _chunk_text(chunk: dict, visible: dict[int, str]) -> str:
    """A chunk's text; llama.cpp leaves out special tokens' text, so a chunk of visible special
    tokens gets theirs (streamed chunks hold one token, except around partial characters)."""
    content = chunk.get("content", "")
    tokens = chunk.get("tokens") or []
    if not content and visible and tokens and all(t in visible for t in tokens):
        return "".join(visible[t] for t in tokens)
    return content


def stop_reason(final: dict, n_predict: int) -> str:
    """Map llama.cpp's stop_type; a slot that ran out of room counts as a length stop."""
    reason = STOP_REASONS.get(final.get("stop_type", ""))
    if reason is not None:
        return reason
    if final.get("truncated") or final.get("tokens_predicted", 0) >= n_predict:
        return "maxPredictedTokensReached"
    return "eosFound"


def final_stats(
    final: dict, n_predict: int, time_to_first_token: float, generation_time: float
) -> GenerationStats:
    """Token counts from llama.cpp's own counters; the timings are measured by the client."""
    timings = final.get("timings") or {}
    cached = int(timings.get("cache_n", 0))
    evaluated = timings.get("prompt_n")
    prompt_tokens = cached + int(evaluated) if evaluated is not None else final["tokens_evaluated"]
    return GenerationStats(
        prompt_tokens=prompt_tokens,
        completion_tokens=int(final.get("tokens_predicted", 0)),
        cached_prompt_tokens=cached,
        time_to_first_token=time_to_first_token,
        generation_time=generation_time,
        stop_reason=stop_reason(final, n_predict),
        stop_string=final.get("stopping_word") or None,
        draft=_draft_counts(timings),
    )


def _draft_counts(timings: dict) -> DraftCounts | None:
    """llama.cpp counts drafted and accepted tokens only: the rest count as rejected."""
    if "draft_n" not in timings:
        return None
    drafted, accepted = int(timings["draft_n"]), int(timings.get("draft_n_accepted", 0))
    return DraftCounts(drafted=drafted, accepted=accepted, rejected=drafted - accepted)


def error_message(payload: dict | str) -> str:
    """The message inside llama.cpp's {"error": {"message": ...}} bodies."""
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    return str(payload)
