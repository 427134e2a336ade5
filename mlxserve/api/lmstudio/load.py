"""Loading a model by hand, as /api/v0 and /api/v1 both offer it: the options their load
requests share, and the load itself, timed, under an instance id no other model holds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from mlxserve.api.shared.protocol import OpenAIModel
from mlxserve.families.detect import check_tool_format
from mlxserve.models.loaded import LoadedModel
from mlxserve.models.registry import ModelRegistry
from mlxserve.pipeline.errors import RequestError


class LoadOptions(OpenAIModel):
    context_length: int | None = Field(None, ge=1)
    # mlxserve's: idle seconds before unloading, and the instance id to load under
    ttl: float | None = Field(None, gt=0)
    identifier: str | None = Field(None, min_length=1)
    tool_format: str | None = None  # a tool-call family, for a template that hides its own
    kv_bits: Literal[4, 8] | None = None  # a quantized KV cache; None: mlxserve.json's or --kv-bits
    kv_group_size: Literal[32, 64, 128] | None = None  # elements sharing one scale (MLX)

    @field_validator("tool_format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        return check_tool_format(value)


@dataclass
class LoadOutcome:
    loaded: LoadedModel
    seconds: float
    already_loaded: bool  # the instance id was loaded with this model before the request


async def load_instance(
    registry: ModelRegistry, model_id: str, options: LoadOptions
) -> LoadOutcome:
    """Load `model_id` under `options.identifier` (default: the model's id); a 409 when
    another model holds that instance id."""
    identifier = options.identifier or model_id
    holder = registry.loaded.get(identifier)
    if holder is not None and holder.record.id != model_id:
        message = f"instance id '{identifier}' is taken by model '{holder.record.id}'"
        raise RequestError(409, message, "identifier", "instance_id_taken")
    started = time.monotonic()
    loaded = await registry.load(
        model_id,
        context_length=options.context_length,
        ttl=options.ttl,
        identifier=identifier,
        tool_format=options.tool_format,
        kv_bits=options.kv_bits,
        kv_group_size=options.kv_group_size,
    )
    return LoadOutcome(loaded, time.monotonic() - started, holder is not None)
