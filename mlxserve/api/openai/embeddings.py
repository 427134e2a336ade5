"""/v1/embeddings (and /api/v0/embeddings): OpenAI's list of vectors, float or base64. The
pipeline bounds, admits and embeds the inputs (pipeline/embeddings.py); the answer, which may
hold hundreds of thousands of numbers, is built off the event loop."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from quart import Blueprint, Response

from mlxserve.api.http.parsing import answers, with_body
from mlxserve.api.openai.objects import Embedding, EmbeddingList, EmbeddingUsage
from mlxserve.api.shared.protocol import OpenAIModel
from mlxserve.api.state import server_state
from mlxserve.pipeline.embeddings import Embedded, check_inputs, embed, shortened
from mlxserve.pipeline.errors import RequestError

blueprint = Blueprint("embeddings", __name__)


class EmbeddingRequest(OpenAIModel):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, gt=0)
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data):
        """Inputs past the bounds are refused before any is validated: a huge list costs
        little."""
        value = data.get("input") if isinstance(data, dict) else None
        if isinstance(value, list) and value:
            check_inputs([value] if isinstance(value[0], int) else value)
        return data

    def batch(self) -> list[str] | list[list[int]]:
        if self.input in ("", []) or (
            isinstance(self.input, list) and ("" in self.input or [] in self.input)
        ):
            raise RequestError(400, "input must not be empty", "input", "empty_input")
        if isinstance(self.input, str):
            return [self.input]
        if isinstance(self.input[0], int):
            return [self.input]
        return self.input


@blueprint.post("/v1/embeddings")
@blueprint.post("/api/v0/embeddings")
@answers(EmbeddingList)
@with_body(EmbeddingRequest)
async def embeddings(body: EmbeddingRequest):
    """Vectors for each input."""
    state = server_state()
    embedded = await embed(state.registry, body.model, body.batch(), state.limits)
    text = await asyncio.to_thread(_answer_text, embedded, body)
    return Response(text, content_type="application/json")


def _answer_text(embedded: Embedded, body: EmbeddingRequest) -> str:
    """EmbeddingList's JSON, a row at a time: no one call holds the GIL (and so the event
    loop) for the whole of a large answer."""
    vectors = embedded.vectors
    if body.dimensions:
        vectors = shortened(vectors, body.dimensions)
    rows = ",".join(_row(i, v, body.encoding_format) for i, v in enumerate(vectors))
    tokens = embedded.prompt_tokens
    usage = EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens).json_text()
    model = json.dumps(embedded.loaded.identifier)
    return f'{{"object":"list","data":[{rows}],"model":{model},"usage":{usage}}}'


def _row(index: int, vector: np.ndarray, encoding_format: str) -> str:
    embedding = _encode(vector, encoding_format)
    return Embedding(object="embedding", index=index, embedding=embedding).json_text()


def _encode(vector: np.ndarray, encoding_format: str):
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
