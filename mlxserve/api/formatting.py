"""OpenAI response objects built from generated text and GenerationStats."""

from __future__ import annotations

import json
import time
import uuid
from json.encoder import encode_basestring

from mlxserve.engine.base import GenerationStats

TEXT_MARKER = "\u0000text\u0000"  # cannot occur in the envelope's own fields


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(stats: GenerationStats) -> dict:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.cached_prompt_tokens},
    }


class ResponseShape:
    """The envelope shared by one response's objects: id, object type, created time and model."""

    def __init__(self, kind: str, model: str):
        self.kind = kind  # "chat" or "text"
        self.id = new_id("chatcmpl" if kind == "chat" else "cmpl")
        self.model = model
        self.created = int(time.time())
        self._text_chunk_parts: tuple[str, str] | None = None

    def _envelope(self, object_type: str, choices: list[dict]) -> dict:
        return {
            "id": self.id,
            "object": object_type,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.model,
            "choices": choices,
        }

    def full(self, text: str, stats: GenerationStats, tool_calls: list[dict] | None = None) -> dict:
        if self.kind == "chat":
            message = {"role": "assistant", "content": text or None if tool_calls else text}
            if tool_calls:
                message["tool_calls"] = tool_calls
            choice = {"index": 0, "message": message, "logprobs": None}
            object_type = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
            object_type = "text_completion"
        choice["finish_reason"] = "tool_calls" if tool_calls else stats.finish_reason
        return {**self._envelope(object_type, [choice]), "usage": usage(stats)}

    def chunk(
        self,
        text: str | None,
        finish_reason: str | None = None,
        role: bool = False,
        tool_calls: list[dict] | None = None,
    ) -> dict:
        if self.kind == "chat":
            delta = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            if tool_calls:
                delta["tool_calls"] = tool_calls
            choice = {"index": 0, "delta": delta, "logprobs": None}
            object_type = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None}
            object_type = "text_completion"
        choice["finish_reason"] = finish_reason
        return self._envelope(object_type, [choice])

    def text_chunk_json(self, text: str) -> str:
        """A text chunk already serialized: the envelope is encoded once per response, so each
        streamed token costs one string escape rather than a whole JSON encode."""
        if self._text_chunk_parts is None:
            marker = json.dumps(TEXT_MARKER)
            encoded = json.dumps(self.chunk(TEXT_MARKER), ensure_ascii=False)
            self._text_chunk_parts = tuple(encoded.split(marker))
        prefix, suffix = self._text_chunk_parts
        # What json.dumps(text, ensure_ascii=False) gives, without a new encoder per call.
        return prefix + encode_basestring(text) + suffix

    def usage_chunk(self, stats: GenerationStats) -> dict:
        object_type = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._envelope(object_type, []), "usage": usage(stats)}
